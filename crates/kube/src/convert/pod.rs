//! A Pod → [`PodInfo`]: the facts weftd needs about one workload instance
//! (labels, service account, address, node, locality).

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Node, Pod};

/// One pod with an address.
#[derive(Debug, Clone, PartialEq)]
pub struct PodInfo {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub labels: BTreeMap<String, String>,
    pub service_account: String,
    pub address: IpAddr,
    pub node: String,
    /// "region/zone/subzone", empty when unknown.
    pub locality: String,
    /// `metadata.deletionTimestamp` is set: the pod is going away.
    pub terminating: bool,
    /// Its `Ready` condition is true (what a ServiceEntry selecting pods
    /// goes by; Services go by their EndpointSlices).
    pub ready: bool,
}

impl PodInfo {
    /// `None` for a pod without an IP yet (not scheduled or not started).
    pub fn from_pod(pod: &Pod, nodes: &BTreeMap<&str, &Node>) -> Option<Self> {
        let status = pod.status.as_ref()?;
        let address: IpAddr = status.pod_ip.as_deref()?.parse().ok()?;
        let spec = pod.spec.as_ref();
        let node = spec.and_then(|s| s.node_name.clone()).unwrap_or_default();
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        let node_labels = nodes
            .get(node.as_str())
            .and_then(|n| n.metadata.labels.as_ref());
        Some(Self {
            name: pod.metadata.name.clone()?,
            namespace: pod.metadata.namespace.clone()?,
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            locality: locality_of_pod(&labels, node_labels),
            labels,
            service_account: spec
                .and_then(|s| s.service_account_name.clone())
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "default".into()),
            address,
            node,
            terminating: pod.metadata.deletion_timestamp.is_some(),
            ready: status
                .conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == "Ready" && c.status == "True"),
        })
    }
}

/// Istio's rule: the pod label `istio-locality` wins (dots become `/`);
/// otherwise the node's `topology.kubernetes.io/region`, `.../zone` and
/// `topology.istio.io/subzone` labels, as `region/zone/subzone` (trailing
/// empty parts dropped).
pub fn locality_of_pod(
    pod_labels: &BTreeMap<String, String>,
    node_labels: Option<&BTreeMap<String, String>>,
) -> String {
    if let Some(given) = pod_labels.get("istio-locality")
        && !given.is_empty()
    {
        return given.replace('.', "/");
    }
    let Some(labels) = node_labels else {
        return String::new();
    };
    let part = |key: &str| labels.get(key).map_or("", String::as_str);
    let parts = [
        part("topology.kubernetes.io/region"),
        part("topology.kubernetes.io/zone"),
        part("topology.istio.io/subzone"),
    ];
    parts.join("/").trim_end_matches('/').to_string()
}
