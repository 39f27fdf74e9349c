//! Telemetry `metrics` overrides, compiled
//! for one proxy (the hierarchy itself is in `telemetry.rs`).
//!
//! Metrics follow Istio: the overrides of the root namespace's resource,
//! then the namespace's, then the workload's are applied in that order, each
//! resource's in list order; a later `disabled` replaces an earlier one
//! (so `disabled: false` undoes a parent's `true`), a later operation on a
//! tag replaces an earlier one on the same tag. CLIENT is the outbound side
//! of the proxy (reporter=source), SERVER the inbound side.
//!
//! Only the `prometheus` provider (Istio's default metrics provider, also
//! what an entry without providers uses) is implemented; entries naming
//! only other providers are left out with a warning, and so are custom
//! metrics and `reportingInterval`.

use weft_api::telemetry::Telemetry;
use weft_api::telemetry::metrics::{ALL_METRICS, STANDARD_METRICS};
use weft_proto::proxy::v1::{self as pb, StandardMetric};

const PROMETHEUS: &str = "prometheus";

/// One override of one resource, with its names resolved.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Rule {
    metrics: Vec<StandardMetric>,
    client: bool,
    server: bool,
    disabled: Option<bool>,
    /// In the resource's (sorted) key order; `None`: REMOVE.
    tags: Vec<(String, Option<String>)>,
}

fn standard(name: &str) -> Option<StandardMetric> {
    StandardMetric::from_str_name(name).filter(|metric| *metric != StandardMetric::Unspecified)
}

fn all_metrics() -> Vec<StandardMetric> {
    STANDARD_METRICS
        .iter()
        .filter_map(|(name, _)| standard(name))
        .collect()
}

/// Whether `mode` (absent: CLIENT_AND_SERVER) covers the client and the
/// server side.
fn sides(mode: Option<&str>) -> (bool, bool) {
    match mode {
        Some("CLIENT") => (true, false),
        Some("SERVER") => (false, true),
        _ => (true, true),
    }
}

/// The overrides of one resource that Weft applies, in order.
pub(super) fn rules(spec: &Telemetry, label: &str, warnings: &mut Vec<String>) -> Vec<Rule> {
    let mut out = Vec::new();
    for (index, entry) in spec.metrics.iter().enumerate() {
        let path = format!("spec.metrics[{index}]");
        if let Some(interval) = &entry.reporting_interval {
            warnings.push(format!(
                "{label}: {path}.reportingInterval {interval}: not implemented; Prometheus reads Weft's metrics when it scrapes"
            ));
        }
        let others: Vec<&str> = entry
            .providers
            .iter()
            .map(|p| p.name.as_str())
            .filter(|name| *name != PROMETHEUS)
            .collect();
        if !others.is_empty() {
            warnings.push(format!(
                "{label}: {path}.providers {others:?}: only the {PROMETHEUS:?} metrics provider is implemented; left out"
            ));
        }
        if !entry.providers.is_empty() && others.len() == entry.providers.len() {
            continue;
        }
        for (o, item) in entry.overrides.iter().enumerate() {
            let selector = item.match_.clone().unwrap_or_default();
            if let Some(custom) = &selector.custom_metric {
                warnings.push(format!(
                    "{label}: {path}.overrides[{o}].match.customMetric {custom:?}: custom metrics are not implemented; the override is left out"
                ));
                continue;
            }
            let metrics = match selector.metric.as_deref() {
                None | Some(ALL_METRICS) => all_metrics(),
                Some(name) => standard(name).into_iter().collect(),
            };
            let (client, server) = sides(selector.mode.as_deref());
            let tags = item
                .tag_overrides
                .iter()
                .map(|(name, tag)| {
                    let value = (!tag.is_remove()).then(|| tag.value.clone().unwrap_or_default());
                    (name.clone(), value)
                })
                .collect();
            out.push(Rule {
                metrics,
                client,
                server,
                disabled: item.disabled,
                tags,
            });
        }
    }
    out
}

/// One side's metrics after applying `levels` (root first) in order;
/// `None` when nothing changes.
fn merge_side(levels: &[&[Rule]], client: bool) -> Option<pb::MetricOverrides> {
    let mut merged: Vec<pb::MetricOverride> = Vec::new();
    for rule in levels.iter().flat_map(|rules| rules.iter()) {
        if !(if client { rule.client } else { rule.server }) {
            continue;
        }
        for metric in &rule.metrics {
            let position = match merged.iter().position(|m| m.metric == *metric as i32) {
                Some(position) => position,
                None => {
                    merged.push(pb::MetricOverride {
                        metric: *metric as i32,
                        ..Default::default()
                    });
                    merged.len() - 1
                }
            };
            let entry = &mut merged[position];
            if let Some(disabled) = rule.disabled {
                entry.disabled = disabled;
            }
            for (name, value) in &rule.tags {
                let tag = pb::TagOverride {
                    name: name.clone(),
                    remove: value.is_none(),
                    value: value.clone().unwrap_or_default(),
                };
                match entry.tags.iter_mut().find(|t| t.name == *name) {
                    Some(existing) => *existing = tag,
                    None => entry.tags.push(tag),
                }
            }
        }
    }
    merged.retain(|m| m.disabled || !m.tags.is_empty());
    merged.sort_by_key(|m| m.metric);
    (!merged.is_empty()).then_some(pb::MetricOverrides { metrics: merged })
}

/// Client and server sides' metrics for levels given root first.
pub(super) fn merge(
    levels: &[&[Rule]],
) -> (Option<pb::MetricOverrides>, Option<pb::MetricOverrides>) {
    (merge_side(levels, true), merge_side(levels, false))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use weft_proto::proxy::v1::{self as pb, StandardMetric};

    use crate::compiler::telemetry::tests::policies;

    fn tags(
        overrides: &pb::MetricOverrides,
        metric: StandardMetric,
    ) -> Vec<(String, bool, String)> {
        overrides
            .metrics
            .iter()
            .find(|m| m.metric == metric as i32)
            .map(|m| {
                m.tags
                    .iter()
                    .map(|t| (t.name.clone(), t.remove, t.value.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn disabled(overrides: Option<&pb::MetricOverrides>, metric: StandardMetric) -> bool {
        overrides.is_some_and(|o| {
            o.metrics
                .iter()
                .any(|m| m.metric == metric as i32 && m.disabled)
        })
    }

    const HIERARCHY: &str = r#"
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-default, namespace: istio-system}
spec:
  metrics:
  - overrides:
    - match: {metric: REQUEST_SIZE}
      disabled: true
    - tagOverrides:
        destination_canonical_revision: {operation: REMOVE}
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: shop, namespace: shop}
spec:
  metrics:
  - providers: [{name: prometheus}]
    overrides:
    - match: {metric: REQUEST_COUNT, mode: CLIENT}
      tagOverrides:
        request_host: {value: request.host}
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: web, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  metrics:
  - overrides:
    - match: {metric: REQUEST_SIZE, mode: SERVER}
      disabled: false
    - match: {metric: REQUEST_COUNT}
      tagOverrides:
        request_host: {value: "request.headers['x-host']"}
        destination_canonical_revision: {value: "'v-any'"}
  - providers: [{name: stackdriver}]
    overrides: [{disabled: true}]
"#;

    #[test]
    fn overrides_merge_root_then_namespace_then_workload() {
        let (policies, warnings) = policies(HIERARCHY);
        assert!(
            warnings.len() == 1 && warnings[0].contains("stackdriver"),
            "{warnings:?}"
        );
        let root = policies
            .for_node("default", &BTreeMap::new())
            .expect("mesh-wide");
        let client = root.client_metrics.as_ref().expect("client");
        assert!(disabled(Some(client), StandardMetric::RequestSize));
        assert_eq!(
            tags(client, StandardMetric::TcpSentBytes),
            [("destination_canonical_revision".into(), true, String::new())]
        );
        assert_eq!(root.client_metrics, root.server_metrics);

        let shop = policies
            .for_node("shop", &BTreeMap::new())
            .expect("namespace");
        let (client, server) = (shop.client_metrics.unwrap(), shop.server_metrics.unwrap());
        assert_eq!(
            tags(&client, StandardMetric::RequestCount),
            [
                ("destination_canonical_revision".into(), true, String::new()),
                ("request_host".into(), false, "request.host".into()),
            ]
        );
        assert_eq!(
            tags(&server, StandardMetric::RequestCount).len(),
            1,
            "CLIENT mode leaves the server side alone"
        );

        let web = BTreeMap::from([("app".to_string(), "web".to_string())]);
        let web = policies.for_node("shop", &web).expect("workload");
        let (client, server) = (web.client_metrics.unwrap(), web.server_metrics.unwrap());
        assert!(disabled(Some(&client), StandardMetric::RequestSize));
        assert!(
            !disabled(Some(&server), StandardMetric::RequestSize),
            "the workload's disabled: false undoes the root's true"
        );
        assert_eq!(
            tags(&client, StandardMetric::RequestCount),
            [
                (
                    "destination_canonical_revision".into(),
                    false,
                    "'v-any'".into()
                ),
                (
                    "request_host".into(),
                    false,
                    "request.headers['x-host']".into()
                ),
            ],
            "the workload's operations replace the parents' on the same tag"
        );
    }

    #[test]
    fn custom_metrics_and_reporting_interval_are_warned() {
        let (policies, warnings) = policies(
            r#"
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: custom, namespace: shop}
spec:
  metrics:
  - reportingInterval: 10s
    overrides:
    - match: {customMetric: my_metric}
      disabled: true
"#,
        );
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[0].contains("reportingInterval"), "{warnings:?}");
        assert!(warnings[1].contains("customMetric"), "{warnings:?}");
        assert_eq!(policies.for_node("shop", &BTreeMap::new()), None);
    }
}
