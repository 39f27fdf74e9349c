//! The service registry: every service and endpoint the mesh knows, from
//! every source, in one plain shape.
//!
//! Sources (today [`service_entry`]: ServiceEntry + WorkloadEntry + connected
//! proxies; later Kubernetes Services, EndpointSlices and Pods) only *add*
//! [`ServiceDef`]s and [`EndpointDef`]s to a [`Registry`]. The compiler reads
//! nothing else, so a new source never changes the compiler.
//!
//! Contract: after [`Registry::build`], services are sorted by
//! `(hostname, namespace)`, each `(hostname, namespace)` appears once, every
//! non-wildcard service has at least one VIP, and no VIP belongs to two
//! services.

mod kube;
mod patch;
mod service_entry;
mod vip;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use weft_api::Resource;
use weft_kube::convert::ClusterSnapshot;
use weft_proto::discovery::v1::Node;

pub use vip::{AUTO_VIP_RANGE, auto_vip};

/// Where Istio keeps mesh-wide config (root Sidecar, ...).
pub const ROOT_NAMESPACE: &str = "istio-system";

/// MeshConfig's `rootNamespace` as the compiler's parts hold it: the
/// namespace whose resources speak for the whole mesh, Istio's
/// [`ROOT_NAMESPACE`] unless MeshConfig names another.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RootNamespace(Option<String>);

impl RootNamespace {
    pub fn new(name: &str) -> Self {
        Self((!name.is_empty() && name != ROOT_NAMESPACE).then(|| name.to_string()))
    }

    pub fn as_str(&self) -> &str {
        self.0.as_deref().unwrap_or(ROOT_NAMESPACE)
    }
}
/// Namespace of a resource or proxy that does not name one.
pub const DEFAULT_NAMESPACE: &str = "default";

/// One instance of a workload: a connected proxy's app, or a WorkloadEntry.
#[derive(Debug, Clone, PartialEq)]
pub struct Workload {
    pub name: String,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    pub service_account: String,
    pub address: IpAddr,
    /// Ports the workload serves (from the proxy's Hello).
    pub ports: Vec<WorkloadPort>,
    /// "region/zone/subzone", empty when unknown.
    pub locality: String,
}

/// A port a workload serves; `name` matches a service port's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadPort {
    pub name: String,
    pub port: u32,
}

impl Workload {
    /// The workload a proxy registers with its Hello; `None` without a
    /// usable address.
    pub fn from_node(node: &Node) -> Option<Self> {
        Some(Self {
            name: node.workload.clone(),
            namespace: namespace_or_default(&node.namespace).to_string(),
            labels: node.labels.clone(),
            service_account: node.service_account.clone(),
            address: node.address.parse().ok()?,
            ports: node
                .ports
                .iter()
                .map(|p| WorkloadPort {
                    name: p.name.clone(),
                    port: p.port,
                })
                .collect(),
            locality: node.locality.clone(),
        })
    }
}

/// An endpoint's locality: as given, else from the Kubernetes topology
/// labels Istio reads (`topology.kubernetes.io/region`, `.../zone`,
/// `topology.istio.io/subzone`).
pub fn locality_of(given: &str, labels: &BTreeMap<String, String>) -> String {
    if !given.is_empty() {
        return given.to_string();
    }
    let part = |key: &str| labels.get(key).map_or("", String::as_str);
    let parts = [
        part("topology.kubernetes.io/region"),
        part("topology.kubernetes.io/zone"),
        part("topology.istio.io/subzone"),
    ];
    if parts.iter().all(|p| p.is_empty()) {
        return String::new();
    }
    parts.join("/").trim_end_matches('/').to_string()
}

/// `""` means the default namespace, as Kubernetes has it.
pub fn namespace_or_default(namespace: &str) -> &str {
    if namespace.is_empty() {
        DEFAULT_NAMESPACE
    } else {
        namespace
    }
}

/// What a service port carries, in Istio's vocabulary (ServiceEntry
/// `protocol`; on Kubernetes the port name prefix or `appProtocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PortProtocol {
    Http,
    Http2,
    Grpc,
    GrpcWeb,
    Https,
    Tls,
    Tcp,
    Mongo,
    Mysql,
    Redis,
    Udp,
    /// Not declared or not known: detect from the first bytes.
    Unknown,
}

impl PortProtocol {
    /// Case-insensitive, as Istio parses it.
    pub fn parse(name: &str) -> Self {
        match name.to_ascii_lowercase().as_str() {
            "http" | "http_proxy" => Self::Http,
            "http2" => Self::Http2,
            "grpc" => Self::Grpc,
            "grpc-web" => Self::GrpcWeb,
            "https" => Self::Https,
            "tls" => Self::Tls,
            "tcp" => Self::Tcp,
            "mongo" => Self::Mongo,
            "mysql" => Self::Mysql,
            "redis" => Self::Redis,
            "udp" => Self::Udp,
            _ => Self::Unknown,
        }
    }
}

/// ServiceEntry `resolution`: how the proxy finds endpoints.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Resolution {
    /// Forward to the address the client dialed.
    #[default]
    None,
    /// Endpoints are listed (or selected).
    Static,
    /// Endpoints (or the host itself) are DNS names resolved by the proxy;
    /// every address is an endpoint (`DNS`).
    Dns,
    /// As `Dns`, but only the first address of an answer is used for new
    /// connections (`DNS_ROUND_ROBIN`, Envoy's LOGICAL_DNS).
    DnsRoundRobin,
}

/// ServiceEntry `location`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Location {
    #[default]
    MeshExternal,
    MeshInternal,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePortDef {
    pub number: u32,
    pub name: String,
    pub protocol: PortProtocol,
    /// Where endpoints listen when they do not say (`targetPort`).
    pub target_port: Option<u32>,
}

/// A service, whatever source it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceDef {
    /// As written by the user: FQDN, short name or `*.suffix` wildcard.
    pub hostname: String,
    pub namespace: String,
    pub vips: Vec<IpAddr>,
    /// ServiceEntry `addresses` given as ranges: captured TCP to any
    /// address in one is for this service.
    pub cidrs: Vec<ipnet::IpNet>,
    pub ports: Vec<ServicePortDef>,
    /// Istio `exportTo` values as written (`*`, `.`, `~`, namespaces).
    pub export_to: Vec<String>,
    pub resolution: Resolution,
    pub location: Location,
    /// `vips` is the one weftd allocated (the service declared none), not
    /// a declared address: DNS proxying answers it only where traffic to
    /// it can be routed (not for `resolution: NONE`).
    pub auto_vip: bool,
}

impl ServiceDef {
    pub fn id(&self) -> ServiceId {
        ServiceId {
            hostname: self.hostname.clone(),
            namespace: self.namespace.clone(),
        }
    }

    pub fn is_wildcard(&self) -> bool {
        self.hostname.starts_with('*')
    }
}

/// A service's identity: the same host may exist in several namespaces.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceId {
    pub hostname: String,
    pub namespace: String,
}

/// One address serving a service.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointDef {
    /// Unspecified (0.0.0.0) for a DNS endpoint, which has `hostname`.
    pub address: IpAddr,
    /// A DNS name the proxy resolves (ServiceEntry endpoints of a `DNS`
    /// entry); empty for an address.
    pub hostname: String,
    /// Service port name → the port this endpoint listens on; overrides the
    /// service port's `target_port`.
    pub ports: BTreeMap<String, u32>,
    pub labels: BTreeMap<String, String>,
    /// Relative load-balancing weight; 0 means 1.
    pub weight: u32,
    pub workload: String,
    pub service_account: String,
    /// "region/zone/subzone", empty when unknown.
    pub locality: String,
}

impl EndpointDef {
    /// A connected proxy's or a WorkloadEntry's workload as an endpoint:
    /// its named ports, labels, account and locality.
    pub fn of_workload(w: &Workload) -> Self {
        Self {
            address: w.address,
            hostname: String::new(),
            ports: w
                .ports
                .iter()
                .filter(|p| !p.name.is_empty())
                .map(|p| (p.name.clone(), p.port))
                .collect(),
            labels: w.labels.clone(),
            weight: 0,
            workload: w.name.clone(),
            service_account: w.service_account.clone(),
            locality: locality_of(&w.locality, &w.labels),
        }
    }

    /// The port this endpoint serves `port` on.
    pub fn port_for(&self, port: &ServicePortDef) -> u32 {
        self.ports
            .get(&port.name)
            .copied()
            .or(port.target_port)
            .unwrap_or(port.number)
    }
}

/// All services and their endpoints.
///
/// Parts are behind `Arc` so that a registry patched for a WorkloadEntry
/// change ([`patch`](Registry::patch_workload_entries)) shares all but the
/// changed services' endpoints with the one before, and comparing the two
/// is a pointer comparison for what was not touched.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Registry {
    services: Arc<Vec<ServiceDef>>,
    ids: Arc<BTreeSet<ServiceId>>,
    endpoints: BTreeMap<ServiceId, Arc<Vec<EndpointDef>>>,
    workload_groups: Vec<WorkloadGroupDef>,
    warnings: Vec<String>,
    /// ServiceEntries whose endpoints a `workloadSelector` picks: what a
    /// WorkloadEntry change can touch.
    selectors: Arc<Vec<patch::Selector>>,
    /// Services from a Kubernetes cluster (which select WorkloadEntries
    /// too): a registry with any is not patched.
    from_cluster: bool,
    /// Services where two endpoints had the same address and ports and one
    /// was dropped: which one stays depends on every candidate, so a
    /// change there is not patched.
    deduplicated: Arc<BTreeSet<ServiceId>>,
}

/// A WorkloadGroup, kept as metadata only: Weft does not auto-register VMs
/// from it yet (a VM joins by connecting its proxy, or by a WorkloadEntry).
#[derive(Debug, Clone, PartialEq)]
pub struct WorkloadGroupDef {
    pub name: String,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    pub service_account: String,
}

impl Registry {
    /// Every source, merged: ServiceEntries with their inline or selected
    /// endpoints (WorkloadEntries and connected `workloads`).
    pub fn build(resources: &[Resource], workloads: &[Workload]) -> Self {
        Self::build_with_cluster(resources, &ClusterSnapshot::default(), workloads)
    }

    /// [`build`](Self::build) with a Kubernetes cluster's Services (added
    /// first: they win over ServiceEntries for their host) and its Pods
    /// (selectable by ServiceEntries, like connected workloads).
    pub fn build_with_cluster(
        resources: &[Resource],
        cluster: &ClusterSnapshot,
        workloads: &[Workload],
    ) -> Self {
        let mut registry = Self {
            from_cluster: !cluster.services.is_empty(),
            ..Self::default()
        };
        kube::collect(cluster, resources, workloads, &mut registry);
        let mut workloads = workloads.to_vec();
        workloads.extend(kube::pod_workloads(cluster));
        service_entry::collect(resources, &workloads, &mut registry);
        kube::add_aliases(cluster, &mut registry);
        registry.finish();
        registry
    }

    /// Adds a service; the first definition of a `(hostname, namespace)`
    /// wins, later ones are reported.
    pub fn add_service(&mut self, service: ServiceDef, source: &str) {
        if !Arc::make_mut(&mut self.ids).insert(service.id()) {
            self.warnings.push(format!(
                "{source}: host {:?} is already defined in namespace {:?}; ignored",
                service.hostname, service.namespace
            ));
            return;
        }
        Arc::make_mut(&mut self.services).push(service);
    }

    pub fn add_endpoint(&mut self, service: ServiceId, endpoint: EndpointDef) {
        Arc::make_mut(self.endpoints.entry(service).or_default()).push(endpoint);
    }

    /// Sorts, removes VIP conflicts, and allocates VIPs for services that
    /// have none. Call once after all sources have added theirs.
    pub fn finish(&mut self) {
        let services = Arc::make_mut(&mut self.services);
        services.sort_by(|a, b| (&a.hostname, &a.namespace).cmp(&(&b.hostname, &b.namespace)));
        vip::resolve(services, &mut self.warnings);
        let deduplicated = Arc::make_mut(&mut self.deduplicated);
        for (id, endpoints) in &mut self.endpoints {
            let endpoints = Arc::make_mut(endpoints);
            let before = endpoints.len();
            // Deterministic order, one entry per address and ports: a
            // workload both listed in a WorkloadEntry and connected is still
            // one endpoint, while workloads sharing an IP on different ports
            // (several on one host or VM) stay distinct.
            endpoints.sort_by(|a, b| {
                (a.address, &a.ports, &a.workload).cmp(&(b.address, &b.ports, &b.workload))
            });
            endpoints.dedup_by(|later, first| {
                later.address == first.address && later.ports == first.ports
            });
            if endpoints.len() != before {
                deduplicated.insert(id.clone());
            }
        }
    }

    pub fn services(&self) -> &[ServiceDef] {
        &self.services
    }

    pub fn endpoints(&self, service: &ServiceId) -> &[EndpointDef] {
        self.endpoints.get(service).map_or(&[], |e| e.as_slice())
    }

    /// Whether `service` has the same endpoints here as in `other`; a
    /// pointer comparison when one registry was patched from the other
    /// and the service was not touched.
    pub fn same_endpoints(&self, other: &Registry, service: &ServiceId) -> bool {
        match (self.endpoints.get(service), other.endpoints.get(service)) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b) || a == b,
            (a, b) => a.map_or(&[][..], |e| e.as_slice()) == b.map_or(&[][..], |e| e.as_slice()),
        }
    }

    /// Whether both have the same services (a pointer comparison when one
    /// was patched from the other).
    pub fn same_services(&self, other: &Registry) -> bool {
        Arc::ptr_eq(&self.services, &other.services) || self.services == other.services
    }

    pub fn workload_groups(&self) -> &[WorkloadGroupDef] {
        &self.workload_groups
    }

    /// Problems found while building (duplicates, conflicting VIPs, ...).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }
}

/// `a ⊆ b`: every label of the selector is on the workload.
pub fn labels_match(
    selector: &BTreeMap<String, String>,
    labels: &BTreeMap<String, String>,
) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

#[cfg(test)]
mod tests;
