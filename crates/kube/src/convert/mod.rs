//! Kubernetes objects → plain data weftd's registry reads (pure: no client,
//! no clock, unit-tested on objects written in the tests).
//!
//! [`snapshot`] joins what the reflectors hold (Services, EndpointSlices,
//! Pods, Nodes) into one [`ClusterSnapshot`]: every Service as a
//! [`KubeService`] with its endpoints already chosen (see
//! [`endpoints`] for the health rule), and every Pod with an address as a
//! [`PodInfo`] (the facts admission and identity need). Two snapshots of
//! the same cluster state are equal whatever order the objects came in, so
//! a relist or an API-server restart that changes nothing is seen as
//! nothing (the caller compares before it publishes).

pub mod endpoints;
pub mod pod;
pub mod secret;
pub mod service;

use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

pub use pod::{PodInfo, locality_of_pod};
pub use service::{ServiceKind, protocol_of};

/// Everything of the cluster's discovery state weftd serves.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClusterSnapshot {
    /// Sorted by (namespace, name).
    pub services: Vec<KubeService>,
    /// Pods with an IP, sorted by (namespace, name).
    pub pods: Vec<PodInfo>,
    /// Secrets shaped as TLS credentials (Gateway `credentialName`), by
    /// (namespace, name); other Secrets are not kept.
    pub credentials: BTreeMap<(String, String), secret::TlsCredential>,
}

impl ClusterSnapshot {
    /// The pod `namespace/name`, if it has an address.
    pub fn pod(&self, namespace: &str, name: &str) -> Option<&PodInfo> {
        self.pods
            .binary_search_by(|p| (p.namespace.as_str(), p.name.as_str()).cmp(&(namespace, name)))
            .ok()
            .map(|i| &self.pods[i])
    }
}

/// A Kubernetes Service as the mesh sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct KubeService {
    pub name: String,
    pub namespace: String,
    /// `<name>.<namespace>.svc.<cluster domain>`.
    pub hostname: String,
    pub kind: ServiceKind,
    pub ports: Vec<KubePort>,
    /// `networking.istio.io/exportTo`, split on commas; empty = everywhere.
    pub export_to: Vec<String>,
    /// `spec.selector`; `None` for a Service without one (its endpoints
    /// are managed by hand).
    pub selector: Option<BTreeMap<String, String>>,
    /// The endpoints that get traffic (see [`endpoints::select`]).
    pub endpoints: Vec<KubeEndpoint>,
}

/// A Service port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubePort {
    /// The port's name (`""` for a single unnamed port).
    pub name: String,
    pub port: u32,
    /// Istio's protocol name (`HTTP`, `HTTP2`, `GRPC`, `GRPC-Web`, `HTTPS`,
    /// `TLS`, `TCP`, `Mongo`, `MySQL`, `Redis`, `UDP`), `None` to detect.
    pub protocol: Option<&'static str>,
    /// A numeric `targetPort`; a named one is resolved per endpoint from the
    /// EndpointSlice's ports.
    pub target_port: Option<u32>,
}

/// One address serving a Service.
#[derive(Debug, Clone, PartialEq)]
pub struct KubeEndpoint {
    pub address: IpAddr,
    /// Service port name → the port this endpoint listens on.
    pub ports: BTreeMap<String, u32>,
    /// The pod's labels plus the topology labels Istio adds.
    pub labels: BTreeMap<String, String>,
    /// The pod's name (`""` for an endpoint without a pod).
    pub pod: String,
    pub service_account: String,
    /// "region/zone/subzone", empty when unknown.
    pub locality: String,
    /// Ready, or serving while terminating (chosen only when no endpoint
    /// of the service is ready).
    pub draining: bool,
}

/// Joins the objects into a snapshot; `cluster_domain` is usually
/// `cluster.local`.
///
/// Objects are borrowed (`Service` or the reflector's `Arc<Service>`), so
/// a rebuild copies only what the snapshot keeps.
pub fn snapshot<S, E, P, N>(
    services: &[S],
    slices: &[E],
    pods: &[P],
    nodes: &[N],
    cluster_domain: &str,
) -> ClusterSnapshot
where
    S: Borrow<Service>,
    E: Borrow<EndpointSlice>,
    P: Borrow<Pod>,
    N: Borrow<Node>,
{
    let nodes: BTreeMap<&str, &Node> = nodes
        .iter()
        .map(Borrow::borrow)
        .filter_map(|n: &Node| Some((n.metadata.name.as_deref()?, n)))
        .collect();
    let mut pod_infos: Vec<PodInfo> = pods
        .iter()
        .filter_map(|p| PodInfo::from_pod(p.borrow(), &nodes))
        .collect();
    pod_infos.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    let mut by_service: BTreeMap<(&str, &str), Vec<&EndpointSlice>> = BTreeMap::new();
    for slice in slices.iter().map(Borrow::borrow) {
        let slice: &EndpointSlice = slice;
        let Some(namespace) = slice.metadata.namespace.as_deref() else {
            continue;
        };
        if let Some(service) = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("kubernetes.io/service-name"))
        {
            by_service
                .entry((namespace, service.as_str()))
                .or_default()
                .push(slice);
        }
    }
    let snapshot_pods = ClusterSnapshot {
        services: Vec::new(),
        pods: pod_infos,
        credentials: BTreeMap::new(),
    };
    let mut services: Vec<KubeService> = services
        .iter()
        .map(Borrow::borrow)
        .filter_map(|svc: &Service| {
            let namespace = svc.metadata.namespace.as_deref()?;
            let name = svc.metadata.name.as_deref()?;
            let mut service = service::convert(svc, cluster_domain)?;
            let slices = by_service
                .get(&(namespace, name))
                .map_or(&[][..], Vec::as_slice);
            service.endpoints = endpoints::select(&service, slices, &snapshot_pods);
            Some(service)
        })
        .collect();
    services.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    ClusterSnapshot {
        services,
        pods: snapshot_pods.pods,
        credentials: BTreeMap::new(),
    }
}

#[cfg(test)]
mod tests;
