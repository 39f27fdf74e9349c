//! Istio `Telemetry` resources → each proxy's telemetry settings
//! (`weft.proxy.v1.Telemetry`): access logs on or off, trace sampling,
//! span reporting.
//!
//! Istio's hierarchy, field by field: a resource selecting the workload in
//! its own namespace, else the namespace's selector-less one, else the root
//! namespace's selector-less one. Where several resources tie at one level,
//! the first by name wins (Istio takes the oldest; Weft has no creation
//! times). Resources attached through `targetRef(s)` (gateways) are not
//! applied to sidecars, and say so in the warnings.
//!
//! `accessLogging`: merged across the levels as Istio does, per side
//! (`access_log_providers.rs`): the providers each side writes to, with
//! `disabled` and `filter.expression`. `telemetry_metrics.rs` merges the
//! `metrics` overrides.

use std::collections::BTreeMap;

use weft_api::Resource;
use weft_api::telemetry::Telemetry;
use weft_proto::proxy::v1::{self as pb, telemetry::AccessLog};

use crate::registry::{RootNamespace, namespace_or_default};

/// What one Telemetry resource sets; `None`: says nothing.
#[derive(Debug, Clone, Default, PartialEq)]
struct Settings {
    /// `accessLogging` entries; empty: says nothing.
    logging: Vec<super::access_log_providers::LogEntry>,
    sampling: Option<f64>,
    disable_span_reporting: Option<bool>,
    metrics: Vec<super::telemetry_metrics::Rule>,
    /// A `metrics` entry names `prometheus` (a MeshConfig whose default
    /// metrics providers exclude it still gets metrics here).
    names_prometheus: bool,
    /// Providers, customTags, match.mode (`trace_providers.rs`).
    tracing: super::trace_providers::TraceSettings,
}

#[derive(Debug)]
struct Entry {
    namespace: String,
    name: String,
    /// `None`: the whole namespace (or mesh, in the root namespace).
    selector: Option<BTreeMap<String, String>>,
    settings: Settings,
}

/// Every Telemetry resource that applies to sidecars, compiled once per
/// mesh change.
#[derive(Debug, Default)]
pub(super) struct Policies {
    /// Sorted by (namespace, name).
    entries: Vec<Entry>,
    /// MeshConfig `rootNamespace`.
    root: RootNamespace,
    /// MeshConfig `defaultProviders.accessLogging`.
    log_defaults: Vec<String>,
}

impl Policies {
    pub(super) fn build(resources: &[Resource], warnings: &mut Vec<String>) -> Self {
        let mut entries: Vec<Entry> = resources
            .iter()
            .filter_map(|resource| {
                let Resource::Telemetry(object) = resource else {
                    return None;
                };
                let label = resource.label();
                let spec = &object.spec;
                if spec.target_ref.is_some() || !spec.target_refs.is_empty() {
                    warnings.push(format!(
                        "{label}: targetRef(s) are not supported yet; the resource is not applied"
                    ));
                    return None;
                }
                Some(Entry {
                    namespace: namespace_or_default(&object.metadata.namespace).to_string(),
                    name: object.metadata.name.clone(),
                    selector: spec
                        .selector
                        .as_ref()
                        .map(|s| s.match_labels.clone())
                        .filter(|labels| !labels.is_empty()),
                    settings: settings(spec, &label, warnings),
                })
            })
            .collect();
        entries.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        Self {
            entries,
            root: RootNamespace::default(),
            log_defaults: Vec::new(),
        }
    }

    /// With MeshConfig's `defaultProviders.accessLogging`.
    pub(super) fn with_log_defaults(mut self, defaults: &[String]) -> Self {
        self.log_defaults = defaults.to_vec();
        self
    }

    /// Whether a Telemetry `metrics` entry for this proxy names prometheus.
    pub(super) fn names_prometheus(
        &self,
        namespace: &str,
        labels: &BTreeMap<String, String>,
    ) -> bool {
        self.levels(namespace, labels)
            .iter()
            .any(|s| s.names_prometheus)
    }

    /// Under MeshConfig's `rootNamespace`.
    pub(super) fn with_root(mut self, root: &str) -> Self {
        self.root = RootNamespace::new(root);
        self
    }

    /// The settings for a proxy of `namespace` with `labels`; `None` when
    /// no Telemetry resource says anything about it (its flags decide).
    pub(super) fn for_node(
        &self,
        namespace: &str,
        labels: &BTreeMap<String, String>,
    ) -> Option<pb::Telemetry> {
        let levels = self.levels(namespace, labels);
        // Root first: Istio merges access logging mesh → namespace → workload.
        let logging: Vec<&[_]> = levels
            .iter()
            .rev()
            .map(|s| s.logging.as_slice())
            .filter(|l| !l.is_empty())
            .collect();
        let (access_log, access_sides, providers) = if logging.is_empty() {
            (None, None, Vec::new())
        } else {
            use super::access_log_providers::{merge, selected, side};
            let client = merge(&logging, &self.log_defaults, true);
            let server = merge(&logging, &self.log_defaults, false);
            let on = !client.is_empty() || !server.is_empty();
            (
                Some(if on {
                    AccessLog::Enabled
                } else {
                    AccessLog::Disabled
                }),
                Some([side(&client), side(&server)]),
                selected(&client, &server),
            )
        };
        let sampling = levels.iter().find_map(|s| s.sampling);
        let disable_span_reporting = levels.iter().find_map(|s| s.disable_span_reporting);
        // Root first: Istio applies metric overrides mesh → namespace → workload.
        let rules: Vec<&[_]> = levels.iter().rev().map(|s| s.metrics.as_slice()).collect();
        let (client_metrics, server_metrics) = super::telemetry_metrics::merge(&rules);
        let tracing =
            super::trace_providers::TraceSettings::merge(levels.iter().map(|s| &s.tracing));
        if access_log.is_none()
            && sampling.is_none()
            && disable_span_reporting.is_none()
            && client_metrics.is_none()
            && server_metrics.is_none()
            && tracing.is_empty()
        {
            return None;
        }
        let [client_access_log, server_access_log] =
            access_sides.map_or([None, None], |s| s.map(Some));
        let mut telemetry = pb::Telemetry {
            client_metrics,
            server_metrics,
            client_access_log,
            server_access_log,
            access_log: access_log.unwrap_or(AccessLog::Unspecified) as i32,
            access_log_providers: providers,
            random_sampling_percentage: sampling.unwrap_or(0.0),
            has_random_sampling_percentage: sampling.is_some(),
            disable_span_reporting: disable_span_reporting.unwrap_or(false),
            ..Default::default()
        };
        tracing.apply(&mut telemetry);
        Some(telemetry)
    }

    /// The settings of the levels that apply, the most specific first.
    fn levels(&self, namespace: &str, labels: &BTreeMap<String, String>) -> Vec<&Settings> {
        let workload = self.entries.iter().find(|e| {
            e.namespace == namespace
                && e.selector
                    .as_ref()
                    .is_some_and(|s| crate::registry::labels_match(s, labels))
        });
        let level = |ns: &str| {
            self.entries
                .iter()
                .find(|e| e.namespace == ns && e.selector.is_none())
        };
        [workload, level(namespace), level(self.root.as_str())]
            .into_iter()
            .flatten()
            .map(|e| &e.settings)
            .collect()
    }
}

fn settings(spec: &Telemetry, label: &str, warnings: &mut Vec<String>) -> Settings {
    let mut out = Settings {
        metrics: super::telemetry_metrics::rules(spec, label, warnings),
        ..Settings::default()
    };
    out.logging = super::access_log_providers::entries(spec);
    out.names_prometheus = spec
        .metrics
        .iter()
        .any(|m| m.providers.iter().any(|p| p.name == "prometheus"));
    if let Some(tracing) = spec.tracing.first() {
        out.sampling = tracing.random_sampling_percentage;
        out.disable_span_reporting = tracing.disable_span_reporting;
    }
    out.tracing = super::trace_providers::TraceSettings::from_spec(spec, label, warnings);
    out
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// The Telemetry resources of `yaml`, compiled, and their warnings.
    pub(in crate::compiler) fn policies(yaml: &str) -> (Policies, Vec<String>) {
        let decoded = weft_api::decode_str(yaml, "t.yaml");
        assert!(decoded.problems.is_empty(), "{:?}", decoded.problems);
        let mut warnings = Vec::new();
        (Policies::build(&decoded.resources, &mut warnings), warnings)
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const MESH: &str = r#"
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-default, namespace: istio-system}
spec:
  accessLogging: [{providers: [{name: envoy}]}]
  tracing: [{randomSamplingPercentage: 10}]
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: quiet, namespace: shop}
spec:
  accessLogging: [{disabled: true}]
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: web-loud, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  accessLogging: [{providers: [{name: envoy}]}]
  tracing: [{disableSpanReporting: true}]
"#;

    #[test]
    fn workload_over_namespace_over_root_field_by_field() {
        let (policies, warnings) = policies(MESH);
        assert!(warnings.is_empty(), "{warnings:?}");
        let elsewhere = policies.for_node("default", &labels(&[])).expect("root");
        assert_eq!(elsewhere.access_log(), AccessLog::Enabled);
        assert!(elsewhere.has_random_sampling_percentage);
        assert_eq!(elsewhere.random_sampling_percentage, 10.0);

        let shop = policies
            .for_node("shop", &labels(&[("app", "db")]))
            .expect("namespace");
        assert_eq!(shop.access_log(), AccessLog::Disabled);
        assert_eq!(shop.random_sampling_percentage, 10.0, "from the root");

        let web = policies
            .for_node("shop", &labels(&[("app", "web")]))
            .expect("workload");
        assert_eq!(web.access_log(), AccessLog::Enabled);
        assert!(web.disable_span_reporting);
    }

    #[test]
    fn nothing_applies_without_resources_and_gateways_are_left_out() {
        let (policies, _) = policies(MESH.split("---").nth(1).expect("doc"));
        assert_eq!(policies.for_node("default", &labels(&[])), None);
        let (policies, warnings) = policies_with_target_ref();
        assert_eq!(policies.for_node("default", &labels(&[])), None);
        assert!(warnings[0].contains("targetRef"), "{warnings:?}");
    }

    fn policies_with_target_ref() -> (Policies, Vec<String>) {
        policies(
            r#"
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: gw, namespace: default}
spec:
  targetRef: {group: gateway.networking.k8s.io, kind: Gateway, name: edge}
  accessLogging: [{disabled: true}]
"#,
        )
    }
}
