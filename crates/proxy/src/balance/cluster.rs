//! Each cluster's runtime, built beside the snapshot it belongs to: the
//! connection-pool counters ([`Breaker`]), outlier ejections ([`Outlier`])
//! and the balancer ([`Balancer`]: hash tables, in-flight counts, slow
//! start). The config side (`config::Cluster`) is plain data; this is what
//! enforces it.
//!
//! Contract: [`Clusters::build`] makes one [`Live`] per cluster of a
//! snapshot (its named clusters and the workload ports'), carrying over from
//! the runtime it replaces what must survive a reload: outlier ejections and
//! counters, and when each endpoint joined (slow start). Other counters
//! start afresh. A cluster made up per connection (passthrough, black hole)
//! gets a fresh runtime of its own.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use super::limits::Breaker;
use super::outlier::{Eligible, Outlier};
use super::{Balancer, Load, Member};
use crate::config::{BLACK_HOLE_CLUSTER, Cluster, Endpoint, PASSTHROUGH_CLUSTER, Policy, Snapshot};

/// One cluster's runtime state.
pub struct Live {
    /// Connection-pool limits and their counters.
    pub breaker: Arc<Breaker>,
    /// Outlier detection and its per-endpoint state.
    pub outlier: Option<Outlier>,
    balancer: Balancer,
    /// The endpoint addresses the balancer's indexes refer to.
    addresses: Vec<SocketAddr>,
    /// Where clients dial an endpoint → its address, for endpoints reached
    /// elsewhere (their proxy's inbound listener): PASSTHROUGH sends a
    /// connection for the dialled address to its endpoint.
    dialled: HashMap<SocketAddr, SocketAddr>,
}

impl Live {
    /// The runtime for `cluster`, carrying state over from `before` (the
    /// same cluster's runtime under the config being replaced).
    pub fn new(cluster: &Cluster, before: Option<&Live>) -> Self {
        let members: Vec<Member> = cluster
            .endpoints
            .iter()
            .map(|e| Member {
                address: e.address,
                weight: e.weight,
                priority: e.priority,
            })
            .collect();
        let balancing = &cluster.balancing;
        let mut balancer = Balancer::new(&members, balancing.policy, balancing.hash.clone());
        if let Some(warmup) = balancing.warmup {
            // New endpoints warm up, those already serving keep their start
            // time; a cluster new to this proxy starts warm, as Envoy's does.
            let now = Instant::now();
            let joined = cluster
                .endpoints
                .iter()
                .map(|e| {
                    let before = &before?.balancer;
                    match before.index_of(e.address) {
                        Some(_) => before.joined(e.address),
                        None => Some(now),
                    }
                })
                .collect();
            balancer = balancer.with_warmup(warmup, joined);
        }
        let outlier = cluster.outlier.clone().map(|policy| {
            let outlier = Outlier::new(policy, cluster.endpoints.iter().map(|e| e.address));
            if let Some(old) = before.and_then(|b| b.outlier.as_ref()) {
                outlier.carry_from(old);
            }
            outlier
        });
        Self {
            breaker: Arc::new(Breaker::new(cluster.name.clone(), cluster.limits.clone())),
            outlier,
            balancer,
            addresses: cluster.endpoints.iter().map(|e| e.address).collect(),
            dialled: cluster
                .endpoints
                .iter()
                .filter_map(|e| Some((e.dialled?, e.address)))
                .collect(),
        }
    }

    /// An endpoint under the cluster's policy without request context (TCP,
    /// mirrors), skipping those outlier detection ejected. `None` when the
    /// cluster has no endpoints or all are ejected (response flag UH).
    pub fn pick_endpoint<'c>(&self, cluster: &'c Cluster) -> Option<&'c Endpoint> {
        cluster.endpoint(self.choose(None, None, &[])?)
    }

    /// The address for one try of a request: `hash` from [`Self::affinity`],
    /// `original_dst` the address a captured client dialled (PASSTHROUGH
    /// goes there), `tried` the addresses earlier tries used, avoided while
    /// another endpoint is eligible.
    pub fn choose(
        &self,
        hash: Option<u64>,
        original_dst: Option<SocketAddr>,
        tried: &[SocketAddr],
    ) -> Option<SocketAddr> {
        self.choose_in(hash, original_dst, tried, &[])
    }

    /// As [`Self::choose`], the priority levels (for locality balancing:
    /// localities) of the endpoints in `elsewhere` taking no traffic while
    /// another level has healthy endpoints (retryRemoteLocalities).
    pub fn choose_in(
        &self,
        hash: Option<u64>,
        original_dst: Option<SocketAddr>,
        tried: &[SocketAddr],
        elsewhere: &[SocketAddr],
    ) -> Option<SocketAddr> {
        if let (Policy::Passthrough, Some(dst), None) = (self.balancer.policy(), original_dst, hash)
        {
            return Some(self.dialled.get(&dst).copied().unwrap_or(dst));
        }
        let tried: Vec<usize> = tried
            .iter()
            .filter_map(|a| self.balancer.index_of(*a))
            .collect();
        let skip: Vec<u32> = elsewhere
            .iter()
            .filter_map(|a| self.balancer.level_of(self.balancer.index_of(*a)?))
            .collect();
        let eligible = match &self.outlier {
            None => Eligible::All,
            Some(outlier) => outlier.eligible(Instant::now()),
        };
        let index = match &eligible {
            Eligible::All => self.balancer.pick_among(None, hash, &tried, &skip),
            Eligible::None => None,
            Eligible::Except(ejected) => {
                self.balancer.pick_among(Some(ejected), hash, &tried, &skip)
            }
        }?;
        self.addresses.get(index).copied()
    }

    /// The request's consistent-hash key (`None` without a hash policy or
    /// when the key is missing) and a `set-cookie` value to add to the
    /// response when the proxy generated the hash cookie.
    pub fn affinity(
        &self,
        headers: &http::HeaderMap,
        query: Option<&str>,
        peer: Option<IpAddr>,
    ) -> (Option<u64>, Option<String>) {
        self.balancer.affinity(headers, query, peer)
    }

    /// Counts a request in flight on `addr` (for LEAST_REQUEST) until the
    /// returned guard is dropped.
    pub fn track(&self, addr: SocketAddr) -> Option<Load> {
        self.balancer.track(addr)
    }

    /// How many endpoints outlier detection has ejected now.
    pub fn ejected(&self) -> usize {
        let Some(outlier) = &self.outlier else {
            return 0;
        };
        let now = Instant::now();
        self.addresses
            .iter()
            .filter(|addr| outlier.is_ejected(**addr, now))
            .count()
    }
}

/// The runtime of every cluster of one snapshot.
#[derive(Default)]
pub struct Clusters {
    /// By the compiled cluster's address: the exact cluster of this
    /// snapshot, found with one pointer hash. Sound as a key: the state
    /// stores a runtime before its snapshot and callers hold the cluster
    /// before they load the runtime, so the runtime they see belongs to
    /// the cluster's snapshot or a later one, whose clusters were all
    /// allocated while the caller's was alive (no address is shared).
    by_cluster: HashMap<usize, Arc<Live>>,
    /// By name, to carry state into the next snapshot's runtime.
    by_name: HashMap<String, Arc<Live>>,
}

impl Clusters {
    /// The runtime for `snapshot`, carrying state over from `previous`.
    pub fn build(snapshot: &Snapshot, previous: Option<&Clusters>) -> Self {
        let mut built = Self::default();
        let all = snapshot
            .clusters()
            .chain(snapshot.inbound_ports().map(|port| &port.cluster));
        for cluster in all {
            let before = previous.and_then(|p| p.by_name.get(&cluster.name));
            let live = Arc::new(Live::new(cluster, before.map(Arc::as_ref)));
            built
                .by_cluster
                .insert(Arc::as_ptr(cluster).addr(), live.clone());
            built.by_name.insert(cluster.name.clone(), live);
        }
        built
    }

    /// The runtime of `cluster`: this snapshot's, else (a request that
    /// started under the previous snapshot) the one of the same name, else
    /// a fresh one (a cluster made up for one connection).
    pub fn live(&self, cluster: &Cluster) -> Arc<Live> {
        if let Some(live) = self.by_cluster.get(&std::ptr::from_ref(cluster).addr()) {
            return live.clone();
        }
        match self.by_name.get(&cluster.name) {
            Some(live) if !is_made_up(cluster) => live.clone(),
            _ => Arc::new(Live::new(cluster, None)),
        }
    }

    /// A cluster's runtime by name (admin and metrics listings).
    pub fn named(&self, name: &str) -> Option<&Arc<Live>> {
        self.by_name.get(name)
    }
}

/// Passthrough and black-hole clusters are made per connection, each with
/// its own destination: they never share a runtime.
fn is_made_up(cluster: &Cluster) -> bool {
    [PASSTHROUGH_CLUSTER, BLACK_HOLE_CLUSTER].contains(&cluster.name.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_config;

    fn snapshot(yaml: &str) -> Snapshot {
        let config = parse_config(yaml, "t.yaml").expect("parses");
        Snapshot::compile(config, "t.yaml").expect("valid")
    }

    const WEB: &str = "outbound|80||web";

    fn two_endpoints(outlier: &str) -> String {
        format!(
            "
clusters:
- name: {WEB}
  loadBalancer: {{policy: ROUND_ROBIN}}
  {outlier}
  endpoints:
  - {{address: 127.0.0.1:8001, weight: 2}}
  - {{address: 127.0.0.1:8002}}
"
        )
    }

    #[test]
    fn weighted_round_robin_follows_weights() {
        let snapshot = snapshot(&two_endpoints(""));
        let clusters = Clusters::build(&snapshot, None);
        let cluster = snapshot.cluster(WEB).expect("cluster");
        let live = clusters.live(cluster);
        let picks: Vec<u16> = (0..6)
            .map(|_| live.pick_endpoint(cluster).map_or(0, |e| e.address.port()))
            .collect();
        assert_eq!(picks.iter().filter(|p| **p == 8001).count(), 4);
        assert_eq!(picks.iter().filter(|p| **p == 8002).count(), 2);
    }

    #[test]
    fn a_reload_keeps_ejections_and_starts_counters_afresh() {
        use crate::balance::limits::Resource;
        use crate::balance::outlier::TryResult;
        let yaml = two_endpoints("outlierDetection: {consecutive5xxErrors: 1}");
        let first = snapshot(&yaml);
        let before = Clusters::build(&first, None);
        let old = before.live(first.cluster(WEB).expect("cluster"));
        let ejected: SocketAddr = "127.0.0.1:8001".parse().expect("addr");
        let outlier = old.outlier.as_ref().expect("outlier detection");
        assert!(
            outlier
                .record(ejected, TryResult::Status(503), Instant::now())
                .is_some()
        );
        let _held = old.breaker.acquire(Resource::Request).expect("a slot");

        let second = snapshot(&yaml);
        let after = Clusters::build(&second, Some(&before));
        let cluster = second.cluster(WEB).expect("cluster");
        let live = after.live(cluster);
        assert_eq!(live.ejected(), 1, "the ejection survives the reload");
        assert_eq!(live.breaker.count(Resource::Request), 0);
        for _ in 0..4 {
            assert_eq!(
                live.choose(None, None, &[]),
                Some("127.0.0.1:8002".parse().expect("addr"))
            );
        }
        // A cluster made up for one connection never shares a runtime.
        let passthrough = Cluster::passthrough(ejected);
        assert_eq!(
            after.live(&passthrough).choose(None, None, &[]),
            Some(ejected)
        );
    }
}
