//! DestinationRule analyzers.

use std::collections::BTreeMap;

use serde_json::Value;

use super::labels_match;
use super::{
    Input, Message, NO_SERVER_CERT_VERIFICATION_DESTINATION, NO_SERVER_CERT_VERIFICATION_PORT,
    Object, SUBSET_SELECTS_NOTHING, UNKNOWN_DESTINATION_RULE_HOST, hosts, string_map, strings,
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

/// Where a host's endpoints come from, as far as the input tells.
struct Backing {
    host: String,
    /// Label sets of the endpoints, `None` when they are not known (a
    /// ServiceEntry selecting workloads while the input has none: its
    /// proxies may simply not be connected to this analysis).
    endpoints: Option<Vec<BTreeMap<String, String>>>,
}

/// IST0174: a DestinationRule for a host no Service or ServiceEntry
/// defines; IST0173: a subset whose labels select none of the host's
/// endpoints (Pods get their Node's non-empty topology labels, as Istio
/// gives them).
pub fn selected_endpoints(input: &Input, out: &mut Vec<Message>) {
    let backings = backings(input);
    for rule in input.istio("DestinationRule") {
        let host = rule.spec.get("host").and_then(Value::as_str).unwrap_or("");
        let wanted = hosts::fqdn(&rule.namespace, host);
        let Some(backing) = backings.iter().find(|b| {
            b.host == wanted || (b.host.starts_with('*') && hosts::overlap(&b.host, &wanted))
        }) else {
            out.push(rule.message(
                UNKNOWN_DESTINATION_RULE_HOST,
                format!("DestinationRule for non-existent service {host}"),
            ));
            continue;
        };
        let Some(endpoints) = &backing.endpoints else {
            continue;
        };
        let subsets = rule
            .spec
            .get("subsets")
            .and_then(Value::as_array)
            .into_iter()
            .flatten();
        for subset in subsets {
            let labels = string_map(subset.get("labels"));
            if !endpoints
                .iter()
                .any(|endpoint| labels_match(&labels, endpoint))
            {
                let name = subset.get("name").and_then(Value::as_str).unwrap_or("");
                out.push(rule.message(
                    SUBSET_SELECTS_NOTHING,
                    format!(
                        "The subset {name:?} of DestinationRule {} selects no endpoint of {host}",
                        rule.name
                    ),
                ));
            }
        }
    }
}

fn backings(input: &Input) -> Vec<Backing> {
    let nodes: BTreeMap<&str, &Object> = input.core("Node").map(|n| (n.name.as_str(), n)).collect();
    let pods: Vec<(&str, BTreeMap<String, String>)> = input
        .core("Pod")
        .map(|pod| {
            let mut labels = pod.labels.clone();
            let node = pod
                .spec
                .get("nodeName")
                .and_then(Value::as_str)
                .and_then(|n| nodes.get(n));
            for (key, value) in node.map(|n| &n.labels).into_iter().flatten() {
                if key.starts_with("topology.") && !value.is_empty() {
                    labels.entry(key.clone()).or_insert_with(|| value.clone());
                }
            }
            (pod.namespace.as_str(), labels)
        })
        .collect();
    let workloads = input.workloads();
    let mut out: Vec<Backing> = input
        .core("Service")
        .map(|service| {
            let selector = string_map(service.spec.get("selector"));
            let endpoints = pods
                .iter()
                .filter(|(namespace, labels)| {
                    *namespace == service.namespace
                        && !selector.is_empty()
                        && labels_match(&selector, labels)
                })
                .map(|(_, labels)| labels.clone())
                .collect();
            Backing {
                host: hosts::fqdn(&service.namespace, &service.name),
                endpoints: Some(endpoints),
            }
        })
        .collect();
    for entry in input.istio("ServiceEntry") {
        let inline: Vec<BTreeMap<String, String>> = entry
            .spec
            .get("endpoints")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|e| string_map(e.get("labels")))
            .collect();
        let selector = string_map(entry.spec.pointer("/workloadSelector/labels"));
        // No endpoints listed or selected: DNS or pass-through resolution,
        // whose addresses carry no labels to judge.
        let endpoints = if selector.is_empty() {
            (!inline.is_empty()).then_some(inline)
        } else if workloads.is_empty() {
            None
        } else {
            Some(
                workloads
                    .iter()
                    .filter(|(namespace, labels)| {
                        *namespace == entry.namespace && labels_match(&selector, labels)
                    })
                    .map(|(_, labels)| labels.clone())
                    .collect(),
            )
        };
        for host in strings(entry.spec.get("hosts")) {
            out.push(Backing {
                host: hosts::fqdn(&entry.namespace, &host),
                endpoints: endpoints.clone(),
            });
        }
    }
    out
}
