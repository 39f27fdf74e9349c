//! AuthorizationPolicy analyzer.

use serde_json::Value;

use std::collections::BTreeSet;

use super::{
    Input, MULTIPLE_CUSTOM_PROVIDERS, Message, NO_MATCHING_WORKLOADS,
    REFERENCED_RESOURCE_NOT_FOUND, string_map, strings,
};
use super::{ROOT_NAMESPACE, labels_match};

/// IST0127: a policy whose selector (or, without one, whose namespace)
/// has no workload to apply to; IST0101: a source `namespaces` /
/// `notNamespaces` pattern that matches no namespace — checked only when
/// the input declares Namespaces, since otherwise they are not known.
pub fn policies(input: &Input, out: &mut Vec<Message>) {
    let workloads = input.workloads();
    let declared = input.core("Namespace").next().is_some();
    let namespaces = input.namespaces();
    for policy in input.istio("AuthorizationPolicy") {
        // Policies attached by targetRef are another analyzer's business.
        if policy.spec.get("targetRef").is_some() || policy.spec.get("targetRefs").is_some() {
            continue;
        }
        let selector = string_map(policy.spec.pointer("/selector/matchLabels"));
        let mesh_wide = policy.namespace == ROOT_NAMESPACE;
        let applies = workloads.iter().any(|(namespace, labels)| {
            (mesh_wide || *namespace == policy.namespace) && labels_match(&selector, labels)
        });
        // A mesh-wide policy without selector applies to whatever joins.
        let everything = mesh_wide && selector.is_empty();
        if !applies && !everything {
            let pairs: Vec<String> = selector.iter().map(|(k, v)| format!("{k}={v}")).collect();
            out.push(policy.message(
                NO_MATCHING_WORKLOADS,
                format!(
                    "No matching workloads for this resource with the following labels: {}",
                    pairs.join(",")
                ),
            ));
        }
        if !declared {
            continue;
        }
        let sources = policy
            .spec
            .get("rules")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .flat_map(|rule| {
                rule.get("from")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
            })
            .filter_map(|from| from.get("source"));
        for source in sources {
            for key in ["namespaces", "notNamespaces"] {
                for pattern in strings(source.get(key)) {
                    if !namespaces.iter().any(|ns| matches(&pattern, ns)) {
                        out.push(policy.message(
                            REFERENCED_RESOURCE_NOT_FOUND,
                            format!("Referenced namespace not found: {pattern:?}"),
                        ));
                    }
                }
            }
        }
    }
}

/// WEFT0003: a workload that CUSTOM policies send to more than one
/// provider. Istio configures one ext_authz filter per workload and so
/// takes one provider; Weft asks each policy's own, which a config written
/// for Istio does not expect. Reported on each policy involved.
pub fn custom_providers(input: &Input, out: &mut Vec<Message>) {
    let custom: Vec<_> = input
        .istio("AuthorizationPolicy")
        .filter(|p| p.spec.get("action").and_then(Value::as_str) == Some("CUSTOM"))
        .filter(|p| p.spec.get("targetRef").is_none() && p.spec.get("targetRefs").is_none())
        .filter_map(|p| {
            let provider = p.spec.pointer("/provider/name")?.as_str()?.to_string();
            let selector = string_map(p.spec.pointer("/selector/matchLabels"));
            Some((p, provider, selector))
        })
        .collect();
    for (namespace, name, labels) in input.workloads_named() {
        let applying: Vec<_> = custom
            .iter()
            .filter(|(p, _, selector)| {
                (p.namespace == ROOT_NAMESPACE || p.namespace == namespace)
                    && labels_match(selector, &labels)
            })
            .collect();
        let providers: BTreeSet<&str> = applying.iter().map(|(_, n, _)| n.as_str()).collect();
        if providers.len() < 2 {
            continue;
        }
        let list: Vec<&str> = providers.into_iter().collect();
        for (policy, _, _) in applying {
            out.push(policy.message(
                MULTIPLE_CUSTOM_PROVIDERS,
                format!(
                    "workload {namespace}/{name} is sent by CUSTOM policies to {} providers ({}); \
                     Istio allows one provider per workload, Weft asks each policy's own",
                    list.len(),
                    list.join(", ")
                ),
            ));
        }
    }
}

/// Istio's namespace patterns: exact, `*`, `prefix*` or `*suffix`.
fn matches(pattern: &str, namespace: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    if let Some(prefix) = pattern.strip_suffix('*') {
        return namespace.starts_with(prefix);
    }
    if let Some(suffix) = pattern.strip_prefix('*') {
        return namespace.ends_with(suffix);
    }
    pattern == namespace
}
