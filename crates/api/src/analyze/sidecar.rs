//! Sidecar analyzer.

use std::collections::BTreeMap;

use super::labels_match;
use super::{
    CONFLICTING_SIDECAR_SELECTORS, INEFFECTIVE_POLICY, Input, MULTIPLE_SIDECARS_WITHOUT_SELECTOR,
    Message, Object, REFERENCED_RESOURCE_NOT_FOUND, string_map,
};

/// IST0101: a workload selector that selects nothing in its namespace;
/// IST0110: a workload selected by several Sidecars; IST0111: several
/// Sidecars without a selector in one namespace (which one applies is
/// undefined); IST0167: a Sidecar in an ambient-mode namespace, where no
/// sidecar reads it.
pub fn selectors(input: &Input, out: &mut Vec<Message>) {
    let workloads = input.workloads_named();
    let ambient: Vec<&str> = input
        .core("Namespace")
        .filter(|ns| {
            ns.labels.get("istio.io/dataplane-mode").map(String::as_str) == Some("ambient")
                && !ns.labels.contains_key("istio-injection")
                && !ns.labels.contains_key("istio.io/rev")
        })
        .map(|ns| ns.name.as_str())
        .collect();
    let mut unselected: BTreeMap<&str, Vec<&Object>> = BTreeMap::new();
    // Workload (namespace, name) → the Sidecars selecting it.
    let mut selecting: BTreeMap<(&str, &str), Vec<&Object>> = BTreeMap::new();
    for sidecar in input.istio("Sidecar") {
        if ambient.contains(&sidecar.namespace.as_str()) {
            out.push(sidecar.message(
                INEFFECTIVE_POLICY,
                format!(
                    "The policy has no impact: namespace {} is in ambient mode, where workloads have no sidecar",
                    sidecar.namespace
                ),
            ));
        }
        let selector = string_map(sidecar.spec.pointer("/workloadSelector/labels"));
        if selector.is_empty() {
            unselected
                .entry(&sidecar.namespace)
                .or_default()
                .push(sidecar);
            continue;
        }
        let selected: Vec<&(String, String, BTreeMap<String, String>)> = workloads
            .iter()
            .filter(|(namespace, _, labels)| {
                *namespace == sidecar.namespace && labels_match(&selector, labels)
            })
            .collect();
        if selected.is_empty() {
            let pairs: Vec<String> = selector.iter().map(|(k, v)| format!("{k}={v}")).collect();
            out.push(sidecar.message(
                REFERENCED_RESOURCE_NOT_FOUND,
                format!("Referenced selector not found: \"{}\"", pairs.join(",")),
            ));
        }
        for (namespace, name, _) in selected {
            selecting
                .entry((namespace, name))
                .or_default()
                .push(sidecar);
        }
    }
    for ((namespace, workload), sidecars) in selecting.iter().filter(|(_, s)| s.len() > 1) {
        let names: Vec<&str> = sidecars.iter().map(|s| s.name.as_str()).collect();
        for sidecar in sidecars {
            out.push(sidecar.message(
                CONFLICTING_SIDECAR_SELECTORS,
                format!(
                    "The Sidecars {names:?} in namespace {namespace:?} select the same workload {workload:?}, which can lead to undefined behavior."
                ),
            ));
        }
    }
    for (namespace, sidecars) in unselected.iter().filter(|(_, s)| s.len() > 1) {
        let names: Vec<&str> = sidecars.iter().map(|s| s.name.as_str()).collect();
        for sidecar in sidecars {
            out.push(sidecar.message(
                MULTIPLE_SIDECARS_WITHOUT_SELECTOR,
                format!(
                    "The Sidecars {names:?} in namespace {namespace:?} have no workload selector, which can lead to undefined behavior."
                ),
            ));
        }
    }
}
