//! Mesh state → each proxy's config (placeholder: being built).

use weft_api::Resource;
use weft_proto::discovery::v1::Node;
use weft_proto::proxy::v1::ProxyConfig;

use crate::registry::Workload;

/// Everything proxy-independent, compiled once per mesh change.
#[derive(Debug, Default)]
pub struct MeshIndex {}

impl MeshIndex {
    pub fn build(_resources: &[Resource], _workloads: &[Workload]) -> Self {
        Self {}
    }

    /// The config of one proxy.
    pub fn proxy_config(&self, _node: &Node) -> ProxyConfig {
        ProxyConfig::default()
    }
}
