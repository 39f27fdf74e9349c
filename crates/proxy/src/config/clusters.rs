//! Compiled clusters and their endpoints, as data: what a request is
//! balanced over, with the limits, outlier detection and balancing policy
//! each cluster declares. Their runtime (counters, ejections, the
//! balancer) is built from these in `balance/`, beside the snapshot.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use weft_proto::proxy::v1 as pb;

use super::cluster::{compile_balancing, compile_limits, compile_outlier};
use super::policies::{Balancing, Limits, OutlierPolicy};
use super::snapshot::{DEFAULT_CONNECT_TIMEOUT, Problems, UpstreamProtocol, duration};

/// Istio's name for traffic sent where it was addressed.
pub const PASSTHROUGH_CLUSTER: &str = "PassthroughCluster";
/// Istio's name for traffic that has nowhere to go.
pub const BLACK_HOLE_CLUSTER: &str = "BlackHoleCluster";

pub struct Cluster {
    pub name: String,
    pub service: String,
    pub subset: String,
    pub upstream_protocol: UpstreamProtocol,
    pub connect_timeout: Duration,
    pub endpoints: Vec<Endpoint>,
    /// Connection-pool limits (DestinationRule `connectionPool`).
    pub limits: Limits,
    /// Outlier detection, when configured.
    pub outlier: Option<OutlierPolicy>,
    /// The DestinationRule's loadBalancer.
    pub balancing: Balancing,
    /// DNS names of endpoints the proxy holds no address for (not resolved
    /// yet, or every lookup failed): named when a request finds no endpoint.
    pub unresolved: Vec<String>,
    /// Endpoint index by address (the first of a repeated address).
    by_addr: HashMap<SocketAddr, usize>,
}

impl Cluster {
    /// A cluster without endpoints, for traffic that has nowhere to go.
    pub fn black_hole() -> Self {
        Self::new(
            BLACK_HOLE_CLUSTER.to_string(),
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
            PASSTHROUGH_CLUSTER.to_string(),
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
                dialled: None,
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
        let mut by_addr = HashMap::new();
        for (index, endpoint) in endpoints.iter().enumerate() {
            by_addr.entry(endpoint.address).or_insert(index);
        }
        Self {
            name,
            service,
            subset: String::new(),
            upstream_protocol,
            connect_timeout,
            endpoints,
            limits: Limits::default(),
            outlier: None,
            balancing: Balancing::default(),
            unresolved: Vec::new(),
            by_addr,
        }
    }

    /// Whether `addr` is an endpoint with a Weft proxy (peer metadata goes
    /// to it and to nobody else).
    pub fn is_mesh_endpoint(&self, addr: SocketAddr) -> bool {
        self.endpoint(addr).is_some_and(|e| e.mesh)
    }

    /// The endpoint at `addr`.
    pub fn endpoint(&self, addr: SocketAddr) -> Option<&Endpoint> {
        self.endpoints.get(*self.by_addr.get(&addr)?)
    }

    /// Why the cluster has no endpoint, when DNS is the reason: "DNS name
    /// \"api.example.com\" has no address" (empty otherwise).
    pub fn unresolved_reason(&self) -> String {
        match self.unresolved.as_slice() {
            [] => String::new(),
            names => format!(
                "; DNS name(s) {} resolved to no address",
                names
                    .iter()
                    .map(|n| format!("{n:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
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
    /// Where clients dial the workload when `address` is its proxy's
    /// inbound listener (PASSTHROUGH clusters match it to the dialled
    /// address).
    pub dialled: Option<SocketAddr>,
}

pub(super) fn compile_clusters(
    config: &pb::ProxyConfig,
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
        let mut unresolved = Vec::new();
        for (e_index, endpoint) in cluster.endpoints.iter().enumerate() {
            if !endpoint.hostname.is_empty() {
                // A name the proxy's resolver has no answer for (answers
                // replace it before the config is compiled).
                unresolved.push(endpoint.hostname.clone());
                continue;
            }
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
                    // Unparsable: no match by dialled address, as if unset.
                    dialled: endpoint.dialled.parse().ok(),
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
        compiled.unresolved = unresolved;
        compiled.limits = compile_limits(
            cluster.connection_pool.as_ref(),
            &format!("{path}.connectionPool"),
            problems,
        );
        compiled.outlier = compile_outlier(
            cluster.outlier_detection.as_ref(),
            &format!("{path}.outlierDetection"),
            problems,
        );
        compiled.balancing = compile_balancing(
            cluster.load_balancer.as_ref(),
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
