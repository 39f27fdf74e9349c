//! A Service's EndpointSlices → the endpoints that get traffic.
//!
//! The health rule (Kubernetes' own, which kube-proxy applies; Istio sends
//! the same states to Envoy as HEALTHY / DRAINING and Envoy ends up with the
//! same choice, since draining hosts only take traffic when nothing healthy
//! is left):
//! - `ready` (or unset, which the API defines as ready) → gets traffic;
//! - `serving` and `terminating` → gets traffic only when no endpoint of the
//!   service is ready (a rolling update's last pods finish their work);
//! - anything else (not ready, or terminating and no longer serving) → none.
//!
//! FQDN slices are skipped, as Istio does (istio#34995): their addresses
//! are names, not IPs. An address listed in two slices (a slice being
//! replaced) counts once.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::{ClusterSnapshot, KubeEndpoint, KubeService};

pub fn select(
    service: &KubeService,
    slices: &[&EndpointSlice],
    pods: &ClusterSnapshot,
) -> Vec<KubeEndpoint> {
    let mut ready = Vec::new();
    let mut draining = Vec::new();
    let mut seen = BTreeSet::new();
    for slice in slices {
        if slice.address_type == "FQDN" {
            continue;
        }
        // Slice port name → port; service ports are matched by name.
        let slice_ports: BTreeMap<&str, u32> = slice
            .ports
            .iter()
            .flatten()
            .filter_map(|p| {
                Some((
                    p.name.as_deref().unwrap_or(""),
                    u32::try_from(p.port?).ok()?,
                ))
            })
            .collect();
        let ports: BTreeMap<String, u32> = service
            .ports
            .iter()
            .filter_map(|p| Some((p.name.clone(), *slice_ports.get(p.name.as_str())?)))
            .collect();
        for endpoint in slice.endpoints.iter().flatten() {
            let conditions = endpoint.conditions.clone().unwrap_or_default();
            let is_ready = conditions.ready.unwrap_or(true);
            let serving = conditions.serving.unwrap_or(is_ready);
            let terminating = conditions.terminating.unwrap_or(false);
            let target = if is_ready && !terminating {
                &mut ready
            } else if serving && terminating {
                &mut draining
            } else {
                continue;
            };
            let pod = endpoint
                .target_ref
                .as_ref()
                .filter(|r| r.kind.as_deref() == Some("Pod"))
                .and_then(|r| {
                    let namespace = r.namespace.as_deref().unwrap_or(service.namespace.as_str());
                    pods.pod(namespace, r.name.as_deref()?)
                });
            for address in &endpoint.addresses {
                let Ok(address) = address.parse::<IpAddr>() else {
                    continue;
                };
                if !seen.insert(address) {
                    continue;
                }
                let node = endpoint
                    .node_name
                    .clone()
                    .or_else(|| pod.map(|p| p.node.clone()))
                    .unwrap_or_default();
                let locality = pod.map(|p| p.locality.clone()).unwrap_or_default();
                let mut labels = pod.map(|p| p.labels.clone()).unwrap_or_default();
                add_topology_labels(&mut labels, &locality, &node);
                target.push(KubeEndpoint {
                    address,
                    ports: ports.clone(),
                    labels,
                    pod: pod.map(|p| p.name.clone()).unwrap_or_default(),
                    service_account: pod.map(|p| p.service_account.clone()).unwrap_or_default(),
                    locality,
                    draining: !is_ready || terminating,
                });
            }
        }
    }
    let mut chosen = if ready.is_empty() { draining } else { ready };
    chosen.sort_by_key(|e| e.address);
    chosen
}

/// Istio's endpoint labels: the locality's parts and the node's hostname
/// beside the pod's own (`failoverPriority` and subsets can name them).
fn add_topology_labels(labels: &mut BTreeMap<String, String>, locality: &str, node: &str) {
    let mut parts = locality.split('/');
    for key in [
        "topology.kubernetes.io/region",
        "topology.kubernetes.io/zone",
        "topology.istio.io/subzone",
    ] {
        if let Some(part) = parts.next().filter(|p| !p.is_empty()) {
            labels
                .entry(key.to_string())
                .or_insert_with(|| part.to_string());
        }
    }
    if !node.is_empty() {
        labels
            .entry("kubernetes.io/hostname".to_string())
            .or_insert_with(|| node.to_string());
    }
}
