//! Which of a proxy's labels can change its config.
//!
//! The compiler reads a proxy's labels only through label selectors
//! (Sidecar and DestinationRule `workloadSelector`, Gateway `selector`,
//! AuthorizationPolicy / RequestAuthentication / PeerAuthentication /
//! Telemetry `selector`, VirtualService `sourceLabels`), always as "every
//! pair of the selector is on the proxy". A pair that no selector of the
//! mesh names can therefore not change any proxy's config: replicas of
//! deployments that differ only in such labels (`app`, `version`,
//! `pod-template-hash`...) share one compilation per build
//! ([`crate::push::mesh`]) instead of one per label set.
//!
//! The pairs are collected generously — every string map under a key named
//! `selector`, `matchLabels`, `labels` or `sourceLabels`, anywhere in any
//! resource but the endpoint kinds (ServiceEntry, WorkloadEntry,
//! WorkloadGroup, whose labels describe workloads, never a proxy's view) —
//! so a selector field added later is covered without a change here. Too
//! many pairs only means more shapes; too few would be wrong.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;
use weft_api::Resource;

/// Keys whose string maps are (or may be) label selectors.
const SELECTOR_KEYS: [&str; 4] = ["selector", "matchLabels", "labels", "sourceLabels"];

/// Every `(label, value)` pair some selector of the mesh names.
#[derive(Debug, Default)]
pub struct SelectorLabels {
    pairs: BTreeSet<(String, String)>,
}

impl SelectorLabels {
    pub fn collect(resources: &[Resource]) -> Self {
        let mut pairs = BTreeSet::new();
        for resource in resources {
            if matches!(
                resource,
                Resource::ServiceEntry(_) | Resource::WorkloadEntry(_) | Resource::WorkloadGroup(_)
            ) {
                continue;
            }
            walk(&resource.to_value(), &mut pairs);
        }
        Self { pairs }
    }

    /// The labels of `labels` some selector names: the only ones that can
    /// change a config compiled for them.
    pub fn relevant(&self, labels: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        labels
            .iter()
            .filter(|(key, value)| self.pairs.contains(&((*key).clone(), (*value).clone())))
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect()
    }
}

fn walk(value: &Value, pairs: &mut BTreeSet<(String, String)>) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map {
                if SELECTOR_KEYS.contains(&key.as_str())
                    && let Value::Object(labels) = inner
                {
                    for (label, value) in labels {
                        if let Value::String(value) = value {
                            pairs.insert((label.clone(), value.clone()));
                        }
                    }
                }
                walk(inner, pairs);
            }
        }
        Value::Array(items) => items.iter().for_each(|item| walk(item, pairs)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_pairs_a_selector_names_are_relevant() {
        let yaml = "
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: wide, namespace: app}
spec:
  workloadSelector: {labels: {app: ratings}}
  egress: [{hosts: ['*/*']}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny, namespace: app}
spec:
  selector: {matchLabels: {tier: db}}
  action: DENY
  rules: [{}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: r, namespace: app}
spec:
  hosts: [r]
  http:
  - match: [{sourceLabels: {version: v2}}]
    route: [{destination: {host: r}}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: vm, namespace: app}
spec: {address: 10.0.0.1, labels: {app: vm}}
";
        let decoded = weft_api::decode_str(yaml, "t.yaml");
        assert!(decoded.problems.is_empty(), "{:?}", decoded.problems);
        let selectors = SelectorLabels::collect(&decoded.resources);
        let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let proxy = labels(&[
            ("app", "ratings"),
            ("tier", "db"),
            ("version", "v2"),
            ("pod-template-hash", "abc"),
        ]);
        assert_eq!(
            selectors.relevant(&proxy),
            labels(&[("app", "ratings"), ("tier", "db"), ("version", "v2")])
        );
        // A WorkloadEntry's labels select nothing on a proxy.
        assert!(selectors.relevant(&labels(&[("app", "vm")])).is_empty());
        assert!(
            selectors
                .relevant(&labels(&[("app", "reviews")]))
                .is_empty()
        );
    }
}
