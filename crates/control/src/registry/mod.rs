//! Workloads and services, from every source (placeholder: being built).

use std::collections::BTreeMap;
use std::net::IpAddr;

use weft_proto::discovery::v1::Node;

/// One instance of a workload: a connected proxy's app, or a WorkloadEntry.
#[derive(Debug, Clone, PartialEq)]
pub struct Workload {
    pub name: String,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    pub service_account: String,
    pub address: IpAddr,
}

impl Workload {
    /// The workload a proxy registers with its Hello; `None` without a
    /// usable address.
    pub fn from_node(node: &Node) -> Option<Self> {
        Some(Self {
            name: node.workload.clone(),
            namespace: node.namespace.clone(),
            labels: node.labels.clone(),
            service_account: node.service_account.clone(),
            address: node.address.parse().ok()?,
        })
    }
}
