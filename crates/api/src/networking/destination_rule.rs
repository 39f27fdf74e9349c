//! DestinationRule: policies applied to traffic after routing.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::traffic_policy::TrafficPolicy;
use super::types::{check_export_to, check_wildcard_host, is_dns1123_label};
use crate::common::WorkloadSelector;
use crate::field::FieldErrors;
use crate::meta::ObjectMeta;
use crate::resource::{Group, Spec};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DestinationRule {
    #[serde(default)]
    pub host: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_policy: Option<Box<TrafficPolicy>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subsets: Vec<Subset>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub export_to: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_selector: Option<WorkloadSelector>,
}

/// A named group of a service's endpoints, selected by labels.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Subset {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_policy: Option<Box<TrafficPolicy>>,
}

impl Spec for DestinationRule {
    const KIND: &'static str = "DestinationRule";
    const GROUP: Group = Group::Networking;

    fn validate(&self, _meta: &ObjectMeta, errors: &mut FieldErrors) {
        if self.host.is_empty() {
            errors.push("spec.host", "Required value");
        } else {
            check_wildcard_host("spec.host", &self.host, errors);
        }
        if let Some(policy) = &self.traffic_policy {
            policy.validate("spec.trafficPolicy", errors);
        }
        let mut names = BTreeSet::new();
        for (i, subset) in self.subsets.iter().enumerate() {
            let path = format!("spec.subsets[{i}]");
            if subset.name.is_empty() {
                errors.push(format!("{path}.name"), "Required value");
            } else if !is_dns1123_label(&subset.name) {
                errors.push(format!("{path}.name"), "subset name is invalid");
            } else if !names.insert(subset.name.as_str()) {
                errors.push(format!("{path}.name"), "duplicate subset names");
            }
            for key in subset.labels.keys() {
                if key.is_empty() || key.contains('*') {
                    errors.push(
                        format!("{path}.labels"),
                        format!("invalid label key {key:?}"),
                    );
                }
            }
            if let Some(policy) = &subset.traffic_policy {
                policy.validate(&format!("{path}.trafficPolicy"), errors);
            }
        }
        check_export_to("spec.exportTo", &self.export_to, errors);
        if let Some(selector) = &self.workload_selector {
            selector.validate("spec.workloadSelector", errors);
        }
    }
}

#[cfg(test)]
mod tests {

    fn problems(spec: &str) -> Vec<(String, String)> {
        crate::decode::spec_problems::<super::DestinationRule>(spec)
    }

    #[test]
    fn valid_rule_decodes() {
        let spec = "  host: reviews\n  trafficPolicy:\n    loadBalancer: {simple: LEAST_REQUEST}\n    connectionPool: {tcp: {maxConnections: 100, connectTimeout: 30ms}}\n    outlierDetection: {consecutive5xxErrors: 7, interval: 5m, baseEjectionTime: 15m}\n    tls: {mode: ISTIO_MUTUAL}\n  subsets:\n  - name: v1\n    labels: {version: v1}\n";
        assert_eq!(problems(spec), vec![]);
    }

    #[test]
    fn warmup_ranges_and_required_duration() {
        let spec = "  host: r\n  trafficPolicy:\n    loadBalancer:\n      warmup: {minimumPercent: 150.0, aggression: -1}\n";
        let paths: Vec<String> = problems(spec).into_iter().map(|(p, _)| p).collect();
        assert!(paths.contains(&"spec.trafficPolicy.loadBalancer.warmup.duration".to_string()));
        assert!(
            paths.contains(&"spec.trafficPolicy.loadBalancer.warmup.minimumPercent".to_string())
        );
        assert!(paths.contains(&"spec.trafficPolicy.loadBalancer.warmup.aggression".to_string()));
    }

    #[test]
    fn host_required_and_subsets_unique() {
        let found = problems("  subsets:\n  - name: v1\n  - name: v1\n");
        assert!(found.contains(&("spec.host".into(), "Required value".into())));
        assert!(found.contains(&(
            "spec.subsets[1].name".into(),
            "duplicate subset names".into()
        )));
    }

    #[test]
    fn unknown_enum_and_field_rejected() {
        assert_eq!(
            problems("  host: r\n  trafficPolicy: {loadBalancer: {simple: FASTEST}}\n").len(),
            1
        );
        assert_eq!(
            problems("  host: r\n  trafficPolicy: {tls: {mode: SIMPLE, sniName: x}}\n").len(),
            1
        );
    }
}
