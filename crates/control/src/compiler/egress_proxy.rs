//! Sidecar `outboundTrafficPolicy.egressProxy`: under ALLOW_ANY, traffic to
//! destinations no service declares goes to this service's cluster (an
//! egress proxy) instead of passing through to where it was dialled.
//!
//! As in Istio, the host is taken as written (a registry host) and the
//! cluster must be one the proxy sees (the Sidecar's egress hosts must
//! include it); otherwise weftd warns and unknown traffic passes through.

use weft_api::networking::EgressProxy;
use weft_proto::proxy::v1 as pb;

use super::ports::cluster_name;

/// The cluster unknown destinations go to; empty: passthrough.
pub(super) fn cluster(
    egress: Option<&EgressProxy>,
    policy: pb::OutboundTrafficPolicy,
    clusters: &[pb::Cluster],
    warnings: &mut Vec<String>,
) -> String {
    let Some(egress) = egress else {
        return String::new();
    };
    if policy != pb::OutboundTrafficPolicy::AllowAny {
        // Validation refuses this in a Sidecar; kept for a policy that
        // reaches here otherwise. REGISTRY_ONLY refuses instead.
        warnings.push(format!(
            "Sidecar outboundTrafficPolicy.egressProxy {:?}: applies only with mode ALLOW_ANY; ignored",
            egress.host
        ));
        return String::new();
    }
    let port = egress.port.as_ref().map_or(0, |p| p.number);
    let name = cluster_name(port, &egress.subset, &egress.host);
    if clusters.iter().any(|c| c.name == name) {
        name
    } else {
        warnings.push(format!(
            "Sidecar outboundTrafficPolicy.egressProxy: no cluster {name:?} visible to this proxy (is the service in the Sidecar's egress hosts, with that port and subset?); unknown destinations pass through"
        ));
        String::new()
    }
}
