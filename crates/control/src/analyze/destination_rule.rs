//! DestinationRule analyzers.

use serde_json::Value;

use super::{
    Input, Message, NO_SERVER_CERT_VERIFICATION_DESTINATION, NO_SERVER_CERT_VERIFICATION_PORT,
};

/// IST0128 / IST0129: TLS origination (SIMPLE or MUTUAL) without
/// `caCertificates` does not verify the server. A `credentialName` only
/// counts on a DestinationRule with a `workloadSelector` (a gateway's),
/// the only place the proxy can read that secret.
pub fn ca_certificates(input: &Input, out: &mut Vec<Message>) {
    for rule in input.istio("DestinationRule") {
        let host = rule.spec.get("host").and_then(Value::as_str).unwrap_or("");
        let selected = rule.spec.get("workloadSelector").is_some();
        let policy = rule.spec.get("trafficPolicy");
        if let Some(mode) = unverified(policy.and_then(|p| p.get("tls")), selected) {
            out.push(rule.message(
                NO_SERVER_CERT_VERIFICATION_DESTINATION,
                format!(
                    "DestinationRule {} in namespace {} has TLS mode set to {mode} but no caCertificates are set to validate server identity for host: {host}",
                    rule.name, rule.namespace
                ),
            ));
        }
        let ports = policy
            .and_then(|p| p.get("portLevelSettings"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten();
        for settings in ports {
            if let Some(mode) = unverified(settings.get("tls"), selected) {
                let port = settings
                    .pointer("/port/number")
                    .and_then(Value::as_u64)
                    .unwrap_or(0);
                out.push(rule.message(
                    NO_SERVER_CERT_VERIFICATION_PORT,
                    format!(
                        "DestinationRule {} in namespace {} has TLS mode set to {mode} but no caCertificates are set to validate server identity for host: {host} at port {port}",
                        rule.name, rule.namespace
                    ),
                ));
            }
        }
    }
}

/// The TLS mode when `tls` originates TLS without verifying the server.
fn unverified(tls: Option<&Value>, selected: bool) -> Option<&str> {
    let tls = tls?;
    let mode = tls.get("mode").and_then(Value::as_str)?;
    let set = |key: &str| {
        tls.get(key)
            .and_then(Value::as_str)
            .is_some_and(|v| !v.is_empty())
    };
    let originates = mode.eq_ignore_ascii_case("SIMPLE") || mode.eq_ignore_ascii_case("MUTUAL");
    (originates && !set("caCertificates") && !(set("credentialName") && selected)).then_some(mode)
}
