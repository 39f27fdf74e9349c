//! Compiled clusters and their endpoints: what a request is balanced
//! over, with the limits, outlier state and balancer each cluster carries.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use weft_proto::proxy::v1 as pb;

use super::cluster::{compile_balancer, compile_limits, compile_outlier, members};
use super::snapshot::{DEFAULT_CONNECT_TIMEOUT, Problems, Snapshot, UpstreamProtocol, duration};
use crate::balance::limits::{Breaker, Limits};
use crate::balance::outlier::{Eligible, Outlier};
use crate::balance::{Balancer, Load, Policy};

pub struct Cluster {
    pub name: String,
    pub service: String,
    pub subset: String,
    pub upstream_protocol: UpstreamProtocol,
    pub connect_timeout: Duration,
    pub endpoints: Vec<Endpoint>,
    /// Connection-pool limits and their counters. Runtime state lives with
    /// the compiled cluster, so a config reload starts them afresh.
    pub breaker: Arc<Breaker>,
    /// Outlier detection and its per-endpoint state (also reset by reloads).
    pub outlier: Option<Outlier>,
    /// The DestinationRule's loadBalancer, with its hash table and the
    /// per-endpoint in-flight counts.
    balancer: Balancer,
}

impl Cluster {
    /// A cluster without endpoints, for traffic that has nowhere to go.
    pub fn black_hole() -> Self {
        Self::new(
            "BlackHoleCluster".to_string(),
            String::new(),
            UpstreamProtocol::ClientProtocol,
            DEFAULT_CONNECT_TIMEOUT,
            Vec::new(),
        )
    }

    /// A one-endpoint cluster for traffic that goes where it was addressed
    /// (Istio's PassthroughCluster).
    pub fn passthrough(address: SocketAddr) -> Self {
        Self::new(
            "PassthroughCluster".to_string(),
            String::new(),
            UpstreamProtocol::ClientProtocol,
            DEFAULT_CONNECT_TIMEOUT,
            vec![Endpoint {
                address,
                labels: BTreeMap::new(),
                weight: 1,
                priority: 0,
                workload: None,
                mesh: false,
            }],
        )
    }

    pub(super) fn new(
        name: String,
        service: String,
        upstream_protocol: UpstreamProtocol,
        connect_timeout: Duration,
        endpoints: Vec<Endpoint>,
    ) -> Self {
        // One endpoint or none (built-in clusters): the policy is moot.
        let balancer = Balancer::new(&members(&endpoints), Policy::RoundRobin, None);
        let breaker = Arc::new(Breaker::new(name.clone(), Limits::default()));
        Self {
            name,
            service,
            subset: String::new(),
            upstream_protocol,
            connect_timeout,
            endpoints,
            breaker,
            outlier: None,
            balancer,
        }
    }

    /// Whether `addr` is an endpoint with a Weft proxy (peer metadata goes
    /// to it and to nobody else), found through the balancer's index.
    pub fn is_mesh_endpoint(&self, addr: SocketAddr) -> bool {
        self.endpoint(addr).is_some_and(|e| e.mesh)
    }

    /// An endpoint under the cluster's policy without request context (TCP,
    /// mirrors), skipping those outlier detection ejected. `None` when the
    /// cluster has no endpoints or all are ejected (response flag UH).
    pub fn pick_endpoint(&self) -> Option<&Endpoint> {
        self.endpoint(self.choose(None, None, &[])?)
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
        if let (Policy::Passthrough, Some(dst), None) = (self.balancer.policy(), original_dst, hash)
        {
            return Some(dst);
        }
        let tried: Vec<usize> = tried
            .iter()
            .filter_map(|a| self.balancer.index_of(*a))
            .collect();
        let eligible = match &self.outlier {
            None => Eligible::All,
            Some(outlier) => outlier.eligible(Instant::now()),
        };
        let index = match &eligible {
            Eligible::All => self.balancer.pick(None, hash, &tried),
            Eligible::None => None,
            Eligible::Except(ejected) => self.balancer.pick(Some(ejected), hash, &tried),
        }?;
        self.endpoints.get(index).map(|e| e.address)
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

    /// The endpoint at `addr`, found through the balancer's index.
    pub fn endpoint(&self, addr: SocketAddr) -> Option<&Endpoint> {
        self.endpoints.get(self.balancer.index_of(addr)?)
    }

    /// How many endpoints outlier detection has ejected now.
    pub fn ejected(&self) -> usize {
        let Some(outlier) = &self.outlier else {
            return 0;
        };
        let now = Instant::now();
        self.endpoints
            .iter()
            .filter(|e| outlier.is_ejected(e.address, now))
            .count()
    }
}

pub struct Endpoint {
    pub address: SocketAddr,
    pub labels: BTreeMap<String, String>,
    pub weight: u32,
    /// 0 is the highest (locality-aware failover); see `Balancer::pick`.
    pub priority: u32,
    /// Telemetry's view of the workload behind it (from `labels`), built
    /// once per config rather than per request; None without labels.
    pub workload: Option<Arc<crate::workload::Workload>>,
    /// A workload with a Weft proxy: peer metadata may be sent to it.
    pub mesh: bool,
}

pub(super) fn compile_clusters(
    config: &pb::ProxyConfig,
    previous: Option<&Snapshot>,
    problems: &mut Problems,
) -> HashMap<String, Arc<Cluster>> {
    let mut clusters = HashMap::new();
    for (index, cluster) in config.clusters.iter().enumerate() {
        let path = format!("clusters[{index}]");
        if cluster.name.is_empty() {
            problems.push(format!("{path}.name"), "is required");
            continue;
        }
        let upstream_protocol = match pb::UpstreamProtocol::try_from(cluster.upstream_protocol) {
            Ok(pb::UpstreamProtocol::UseClientProtocol) | Err(_) => {
                UpstreamProtocol::ClientProtocol
            }
            Ok(pb::UpstreamProtocol::Http1) => UpstreamProtocol::Http1,
            Ok(pb::UpstreamProtocol::Http2PriorKnowledge) => UpstreamProtocol::Http2,
        };
        let connect_timeout = duration(
            cluster.connect_timeout.as_ref(),
            &format!("{path}.connectTimeout"),
            problems,
        )
        .unwrap_or(DEFAULT_CONNECT_TIMEOUT);
        let mut endpoints = Vec::new();
        for (e_index, endpoint) in cluster.endpoints.iter().enumerate() {
            match endpoint.address.parse::<SocketAddr>() {
                Ok(address) => endpoints.push(Endpoint {
                    address,
                    labels: endpoint.labels.clone(),
                    weight: endpoint.weight.max(1),
                    priority: endpoint.priority,
                    workload: (!endpoint.labels.is_empty()).then(|| {
                        Arc::new(crate::workload::Workload::from_labels(
                            endpoint.labels.iter(),
                        ))
                    }),
                    mesh: endpoint.mesh,
                }),
                Err(_) => problems.push(
                    format!("{path}.endpoints[{e_index}].address"),
                    format!("{:?} is not an ip:port address", endpoint.address),
                ),
            }
        }
        let mut compiled = Cluster::new(
            cluster.name.clone(),
            cluster.service.clone(),
            upstream_protocol,
            connect_timeout,
            endpoints,
        );
        compiled.subset = cluster.subset.clone();
        let limits = compile_limits(
            cluster.connection_pool.as_ref(),
            &format!("{path}.connectionPool"),
            problems,
        );
        compiled.breaker = Arc::new(Breaker::new(cluster.name.clone(), limits));
        compiled.outlier = compile_outlier(
            cluster.outlier_detection.as_ref(),
            &format!("{path}.outlierDetection"),
            problems,
        )
        .map(|policy| Outlier::new(policy, compiled.endpoints.iter().map(|e| e.address)));
        let before = previous.and_then(|p| p.cluster(&cluster.name));
        if let (Some(outlier), Some(old)) =
            (&compiled.outlier, before.and_then(|c| c.outlier.as_ref()))
        {
            outlier.carry_from(old);
        }
        let balancer = compile_balancer(
            cluster.load_balancer.as_ref(),
            &compiled.endpoints,
            &format!("{path}.loadBalancer"),
            problems,
        );
        compiled.balancer = super::cluster::with_warmup(
            balancer,
            cluster.load_balancer.as_ref(),
            &compiled.endpoints,
            before.map(|c| &c.balancer),
            &format!("{path}.loadBalancer"),
            problems,
        );
        if clusters
            .insert(cluster.name.clone(), Arc::new(compiled))
            .is_some()
        {
            problems.push(
                format!("{path}.name"),
                format!("duplicate cluster {:?}", cluster.name),
            );
        }
    }
    clusters
}
