//! Sidecar `outboundTrafficPolicy.egressProxy` (`egress_proxy_cluster`):
//! the cluster ALLOW_ANY traffic to unknown destinations goes to instead
//! of passing through. HTTP (`http/route.rs`) and opaque TCP/TLS
//! (`outbound.rs`) both ask [`cluster`].

use std::collections::HashMap;
use std::sync::Arc;

use weft_proto::proxy::v1 as pb;

use super::snapshot::Problems;
use super::{Cluster, Snapshot};

/// The egress proxy's cluster, when the config names one and ALLOW_ANY
/// applies.
pub fn cluster(snapshot: &Snapshot) -> Option<&Arc<Cluster>> {
    let name = &snapshot.config.egress_proxy_cluster;
    if name.is_empty() || snapshot.outbound_policy != pb::OutboundTrafficPolicy::AllowAny {
        return None;
    }
    snapshot.cluster(name)
}

/// The named cluster must be one of the config's.
pub(super) fn check(
    config: &pb::ProxyConfig,
    clusters: &HashMap<String, Arc<Cluster>>,
    problems: &mut Problems,
) {
    let name = &config.egress_proxy_cluster;
    if !name.is_empty() && !clusters.contains_key(name) {
        problems.push(
            "egressProxyCluster",
            format!("{name:?} is not a cluster of this config"),
        );
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{Snapshot, parse_config};

    fn compile(yaml: &str) -> Result<Snapshot, String> {
        let config = parse_config(yaml, "t.yaml").map_err(|e| e.to_string())?;
        Snapshot::compile(config, "t.yaml").map_err(|e| e.to_string())
    }

    #[test]
    fn the_cluster_must_exist_and_applies_only_under_allow_any() {
        let err = compile("egressProxyCluster: nowhere\n")
            .err()
            .expect("refused");
        assert!(
            err.contains("egressProxyCluster: \"nowhere\" is not a cluster"),
            "{err}"
        );
        let yaml = "clusters: [{name: egress, endpoints: [{address: 127.0.0.1:1}]}]
egressProxyCluster: egress
";
        let snapshot = compile(yaml).expect("valid");
        assert_eq!(
            super::cluster(&snapshot).map(|c| c.name.as_str()),
            Some("egress")
        );
        let closed =
            compile(&format!("{yaml}outboundTrafficPolicy: REGISTRY_ONLY\n")).expect("valid");
        assert!(super::cluster(&closed).is_none());
    }
}
