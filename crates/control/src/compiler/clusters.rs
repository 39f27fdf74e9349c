//! Clusters: per service port one with every endpoint, and one per
//! DestinationRule subset with the endpoints carrying the subset's labels.
//! Which rule applies depends on the caller ([`rules`]): the mesh-wide map
//! holds each service's clusters as its own namespace sees them, and
//! [`RuleClusters`] the variants other callers get.
//! Connection-pool limits and outlier detection are mapped in [`limits`],
//! the load balancer in [`balancer`].

pub(super) mod balancer;
pub(super) mod limits;
mod rules;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use weft_api::Resource;
use weft_api::networking::{DestinationRule, TrafficPolicy};
use weft_proto::proxy::v1 as pb;

use self::rules::DestinationRules;
use super::hosts::HostIndex;
use super::ports::{cluster_name, upstream_protocol};
use crate::registry::{
    EndpointDef, Registry, Resolution, ServiceDef, ServicePortDef, labels_match,
};

/// Istio's `connectionPool.tcp.connectTimeout` default.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A cluster as one proxy gets it ([`RuleClusters::resolve_chosen`]).
pub(super) struct Resolved {
    pub cluster: pb::Cluster,
    /// The DestinationRule chosen for the proxy selects it by
    /// `workloadSelector`.
    pub by_selector: bool,
}

/// The clusters that depend on the caller's DestinationRule, for the
/// per-proxy step ([`RuleClusters::resolve`]).
///
/// Shared (`Arc`) so that an index patched for an endpoint change copies
/// only the maps of the rules whose clusters it rebuilt.
#[derive(Debug, Default, Clone)]
pub(super) struct RuleClusters {
    rules: Arc<DestinationRules>,
    /// Cluster name → the service it was built for.
    service_of: Arc<HashMap<String, usize>>,
    /// Per service: its namespace and the rule the base map was built with
    /// (the one a caller in the service's own namespace, without labels,
    /// gets).
    base_rule: Arc<Vec<(String, Option<usize>)>>,
    /// Clusters built under each other rule, by rule.
    by_rule: BTreeMap<usize, Arc<BTreeMap<String, pb::Cluster>>>,
    /// Clusters without any rule, for services whose base has one.
    no_rule: Arc<BTreeMap<String, pb::Cluster>>,
    /// Subset clusters put in the base map only so that routes naming them
    /// find them; the base rule does not define them.
    borrowed: Arc<BTreeSet<String>>,
}

impl RuleClusters {
    /// The cluster `name` as a proxy in `namespace` with `labels` gets it,
    /// `base` being the mesh-wide map. A subset the proxy's rule does not
    /// define is an empty cluster: requests to it fail, as in Istio.
    pub(super) fn resolve(
        &self,
        name: &str,
        base: &BTreeMap<String, Arc<pb::Cluster>>,
        namespace: &str,
        labels: &BTreeMap<String, String>,
    ) -> Option<pb::Cluster> {
        self.resolve_chosen(name, base, namespace, labels)
            .map(|r| r.cluster)
    }

    /// [`resolve`](Self::resolve), also telling whether the DestinationRule
    /// chosen for the proxy selects it by `workloadSelector` (which decides
    /// where a TLS credential may come from), from the one choice made.
    pub(super) fn resolve_chosen(
        &self,
        name: &str,
        base: &BTreeMap<String, Arc<pb::Cluster>>,
        namespace: &str,
        labels: &BTreeMap<String, String>,
    ) -> Option<Resolved> {
        let held = base.get(name)?;
        let Some(&service) = self.service_of.get(name) else {
            return Some(Resolved {
                cluster: (**held).clone(),
                by_selector: false,
            });
        };
        let (service_namespace, base_rule) = &self.base_rule[service];
        let chosen = self
            .rules
            .choose(service, service_namespace, namespace, labels);
        let found = if chosen == *base_rule {
            (!self.borrowed.contains(name)).then(|| (**held).clone())
        } else {
            match chosen {
                Some(id) => self.by_rule.get(&id).and_then(|m| m.get(name)).cloned(),
                None => self.no_rule.get(name).cloned(),
            }
        };
        Some(Resolved {
            cluster: found.unwrap_or_else(|| empty(name, &held.service, &held.subset)),
            by_selector: chosen.is_some_and(|id| self.rules.rule(id).selector.is_some()),
        })
    }

    /// Applies `secure` (mesh TLS of endpoints) to every cluster held here.
    pub(super) fn for_each_mut(
        &mut self,
        mut secure: impl FnMut(&mut BTreeMap<String, pb::Cluster>),
    ) {
        for map in self.by_rule.values_mut() {
            secure(Arc::make_mut(map));
        }
        secure(Arc::make_mut(&mut self.no_rule));
    }

    /// Service `index`'s clusters rebuilt for `endpoints` (the service and
    /// every rule unchanged): the variants held here are replaced, and the
    /// clusters the mesh-wide map holds for it are returned. `secure`
    /// (mesh TLS of endpoints) is applied to every rebuilt cluster, as a
    /// full build does.
    pub(super) fn rebuild_service(
        &mut self,
        index: usize,
        service: &ServiceDef,
        endpoints: &[EndpointDef],
        mut secure: impl FnMut(&mut BTreeMap<String, pb::Cluster>),
    ) -> BTreeMap<String, pb::Cluster> {
        let base = self.base_rule[index].1;
        // Warnings depend on the rules only, which did not change: said
        // by the full build already.
        let built = variants(
            &self.rules,
            index,
            service,
            endpoints,
            base,
            &mut Vec::new(),
        );
        let mut base_map: BTreeMap<String, pb::Cluster> = by_name(built.base);
        secure(&mut base_map);
        for (id, list) in built.others {
            let mut map = by_name(list);
            secure(&mut map);
            let held = Arc::make_mut(self.by_rule.entry(id).or_default());
            for (name, cluster) in map {
                // A subset only another rule defines: the base map holds
                // the first such rule's (`borrowed`), as `build` puts it.
                if !base_map.contains_key(&name) {
                    base_map.insert(name.clone(), cluster.clone());
                }
                held.insert(name, cluster);
            }
        }
        if !built.no_rule.is_empty() {
            let mut map = by_name(built.no_rule);
            secure(&mut map);
            Arc::make_mut(&mut self.no_rule).extend(map);
        }
        base_map
    }
}

fn by_name(clusters: Vec<pb::Cluster>) -> BTreeMap<String, pb::Cluster> {
    clusters.into_iter().map(|c| (c.name.clone(), c)).collect()
}

/// One service's clusters under each rule a caller may get.
struct Variants {
    /// Under the rule of the service's own namespace (the base map's).
    base: Vec<pb::Cluster>,
    /// Under each other candidate rule, in candidate order.
    others: Vec<(usize, Vec<pb::Cluster>)>,
    /// Without any rule, when the base has one and some caller gets none.
    no_rule: Vec<pb::Cluster>,
}

fn variants(
    rules: &DestinationRules,
    index: usize,
    service: &ServiceDef,
    endpoints: &[EndpointDef],
    base: Option<usize>,
    warnings: &mut Vec<String>,
) -> Variants {
    let build_under = |rule: Option<usize>, warnings: &mut Vec<String>| {
        service_clusters(
            service,
            endpoints,
            rule.map(|id| &rules.rule(id).spec),
            warnings,
        )
    };
    let mut out = Variants {
        base: build_under(base, warnings),
        others: Vec::new(),
        no_rule: Vec::new(),
    };
    let candidates = rules.candidates(index);
    if candidates.is_empty() {
        return out;
    }
    // Other callers' variants; their warnings are the same rule's
    // (already said) or another rule's, said once by the caller.
    for &id in candidates.iter().filter(|id| Some(**id) != base) {
        out.others.push((id, build_under(Some(id), warnings)));
    }
    if base.is_some() && rules.some_caller_gets_none(index, &service.namespace) {
        out.no_rule = build_under(None, &mut Vec::new());
    }
    out
}

/// Every cluster of every service, by name, as a caller in the service's
/// own namespace sees it; and the variants other callers get.
pub(super) fn build(
    registry: &Registry,
    hosts: &HostIndex,
    resources: &[Resource],
    root: &str,
    warnings: &mut Vec<String>,
) -> (BTreeMap<String, pb::Cluster>, RuleClusters) {
    let rules = DestinationRules::build(resources, hosts, root);
    // The same rule may be compiled for several callers: each warning once.
    let mut said = Vec::new();
    let warnings_out = warnings;
    let warnings = &mut said;
    let empty_labels = BTreeMap::new();
    let mut clusters = BTreeMap::new();
    let mut out = RuleClusters::default();
    let mut service_of = HashMap::new();
    let mut base_rule = Vec::with_capacity(registry.services().len());
    let mut borrowed = BTreeSet::new();
    let mut by_rule: BTreeMap<usize, BTreeMap<String, pb::Cluster>> = BTreeMap::new();
    let mut no_rule = BTreeMap::new();
    for (index, service) in registry.services().iter().enumerate() {
        let endpoints = registry.endpoints(&service.id());
        let base = rules.choose(index, &service.namespace, &service.namespace, &empty_labels);
        base_rule.push((service.namespace.clone(), base));
        let built = variants(&rules, index, service, endpoints, base, warnings);
        for cluster in built.base {
            service_of.insert(cluster.name.clone(), index);
            clusters.insert(cluster.name.clone(), cluster);
        }
        for (id, list) in built.others {
            let map = by_rule.entry(id).or_default();
            for cluster in list {
                service_of.insert(cluster.name.clone(), index);
                if !clusters.contains_key(&cluster.name) {
                    borrowed.insert(cluster.name.clone());
                    clusters.insert(cluster.name.clone(), cluster.clone());
                }
                map.insert(cluster.name.clone(), cluster);
            }
        }
        no_rule.extend(by_name(built.no_rule));
    }
    out.service_of = Arc::new(service_of);
    out.base_rule = Arc::new(base_rule);
    out.borrowed = Arc::new(borrowed);
    out.by_rule = by_rule
        .into_iter()
        .map(|(id, map)| (id, Arc::new(map)))
        .collect();
    out.no_rule = Arc::new(no_rule);
    out.rules = Arc::new(rules);
    for warning in said {
        if !warnings_out.contains(&warning) {
            warnings_out.push(warning);
        }
    }
    (clusters, out)
}

/// One service's clusters under `rule`: per port the one with every
/// endpoint, and one per subset.
fn service_clusters(
    service: &ServiceDef,
    endpoints: &[EndpointDef],
    rule: Option<&DestinationRule>,
    warnings: &mut Vec<String>,
) -> Vec<pb::Cluster> {
    let top = rule.and_then(|r| r.traffic_policy.as_deref());
    let mut out = Vec::new();
    for port in &service.ports {
        out.push(cluster(service, port, "", endpoints, &[top], warnings));
        for subset in rule.map_or(&[][..], |r| r.subsets.as_slice()) {
            let selected: Vec<EndpointDef> = endpoints
                .iter()
                .filter(|e| labels_match(&subset.labels, &e.labels))
                .cloned()
                .collect();
            let policies = [subset.traffic_policy.as_deref(), top];
            out.push(cluster(
                service,
                port,
                &subset.name,
                &selected,
                &policies,
                warnings,
            ));
        }
    }
    out
}

fn cluster(
    service: &ServiceDef,
    port: &ServicePortDef,
    subset: &str,
    endpoints: &[EndpointDef],
    policies: &[Option<&TrafficPolicy>],
    warnings: &mut Vec<String>,
) -> pb::Cluster {
    let name = cluster_name(port.number, subset, &service.hostname);
    let dns = match service.resolution {
        Resolution::Dns => pb::DnsResolution::All,
        Resolution::DnsRoundRobin => pb::DnsResolution::First,
        Resolution::None | Resolution::Static => pb::DnsResolution::Static,
    };
    let mut endpoints: Vec<pb::Endpoint> = endpoints
        .iter()
        .filter_map(|e| {
            let number = u16::try_from(e.port_for(port)).ok()?;
            let (address, hostname) = if e.hostname.is_empty() {
                (
                    SocketAddr::new(e.address, number).to_string(),
                    String::new(),
                )
            } else {
                (String::new(), e.hostname.clone())
            };
            Some(pb::Endpoint {
                address,
                labels: e.labels.clone(),
                weight: e.weight,
                priority: 0,
                locality: e.locality.clone(),
                identity: String::new(),
                mesh: false,
                port: if hostname.is_empty() {
                    0
                } else {
                    u32::from(number)
                },
                hostname,
                dialled: String::new(),
            })
        })
        .collect();
    // A DNS entry without endpoints: the proxy resolves the host itself
    // (Istio's behaviour), on the port's target port.
    if dns != pb::DnsResolution::Static
        && endpoints.is_empty()
        && subset.is_empty()
        && !service.is_wildcard()
    {
        endpoints.push(pb::Endpoint {
            hostname: service.hostname.clone(),
            port: port.target_port.unwrap_or(port.number),
            ..Default::default()
        });
    }
    let mut load_balancer = balancer::load_balancer(policies, port.number, &name, warnings);
    // `resolution: NONE`: the connection goes where the client sent it
    // (Istio's ORIGINAL_DST), as the declared service. Endpoints, when
    // known (a headless Kubernetes Service's pods), stay: they carry each
    // pod's mesh TLS decision, and the proxy matches them by the address
    // the client dialled rather than balancing across them.
    if service.resolution == Resolution::None {
        load_balancer.get_or_insert_with(Default::default).policy =
            pb::load_balancer::Policy::Passthrough as i32;
    }
    pb::Cluster {
        dns_resolution: dns as i32,
        load_balancer,
        name,
        upstream_protocol: limits::upstream_protocol(
            policies,
            port.number,
            port.protocol,
            upstream_protocol(port.protocol),
        ) as i32,
        // Unset when no DestinationRule says: MeshConfig's connectTimeout
        // is filled in for the whole mesh (`mesh_defaults`).
        connect_timeout: connect_timeout(policies, port.number).map(Into::into),
        endpoints,
        service: service.hostname.clone(),
        subset: subset.to_string(),
        connection_pool: limits::connection_pool(policies, port.number),
        outlier_detection: limits::outlier_detection(policies, port.number),
        tls: super::tls::client_tls(policies, port.number),
    }
}

/// The address ranges a proxy matches a dialled address against for
/// `service`: its own `cidrs`, plus for `resolution: NONE` each endpoint
/// address on its own. A headless Kubernetes Service has no VIP; clients
/// dial a pod's address (found by DNS), so the pods' addresses are what
/// identifies the service, as Istio's per-endpoint listeners do.
pub(super) fn match_ranges(service: &ServiceDef, endpoints: &[EndpointDef]) -> Vec<String> {
    let mut ranges: Vec<String> = service.cidrs.iter().map(ToString::to_string).collect();
    if service.resolution == Resolution::None {
        for endpoint in endpoints.iter().filter(|e| e.hostname.is_empty()) {
            let single = ipnet::IpNet::from(endpoint.address).to_string();
            if !ranges.contains(&single) {
                ranges.push(single);
            }
        }
    }
    ranges
}

/// An empty cluster for a route destination nothing defines: requests to it
/// fail (no healthy upstream) rather than going somewhere else.
pub(super) fn empty(name: &str, host: &str, subset: &str) -> pb::Cluster {
    pb::Cluster {
        name: name.to_string(),
        connect_timeout: Some(DEFAULT_CONNECT_TIMEOUT.into()),
        service: host.to_string(),
        subset: subset.to_string(),
        ..Default::default()
    }
}

/// The first `connectTimeout` set, most specific policy first (subset, then
/// the rule), each checking its `portLevelSettings` for `port` before its
/// top level; `None` when none sets it.
fn connect_timeout(policies: &[Option<&TrafficPolicy>], port: u32) -> Option<Duration> {
    policies.iter().flatten().find_map(|policy| {
        let port_level = policy
            .port_level_settings
            .iter()
            .filter(|p| p.port.as_ref().is_some_and(|s| s.number == port))
            .find_map(|p| p.connection_pool.as_ref());
        [port_level, policy.connection_pool.as_ref()]
            .into_iter()
            .flatten()
            .find_map(|pool| {
                let tcp = pool.tcp.as_ref()?;
                weft_api::field::parse_duration(&tcp.connect_timeout)
            })
    })
}
