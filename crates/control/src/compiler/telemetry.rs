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
//! `accessLogging`: an entry with `disabled: true` turns logs off; an entry
//! naming the `envoy` provider (or none: the default provider) turns them
//! on; other providers are not supported and are left out with a warning.
//! `match.mode` and `filter.expression` make the per-side settings (see
//! `telemetry_metrics.rs`, which also merges `metrics` overrides).

use std::collections::BTreeMap;

use weft_api::Resource;
use weft_api::telemetry::Telemetry;
use weft_proto::proxy::v1::{self as pb, telemetry::AccessLog};

use crate::registry::{RootNamespace, namespace_or_default};

/// The access-log provider every Istio mesh has (Envoy's file log).
const ENVOY_PROVIDER: &str = "envoy";

/// What one Telemetry resource sets; `None`: says nothing.
#[derive(Debug, Clone, Default, PartialEq)]
struct Settings {
    access_log: Option<AccessLog>,
    sampling: Option<f64>,
    disable_span_reporting: Option<bool>,
    /// Client and server access-log sides, from the same level as
    /// `access_log`.
    access_sides: Option<[pb::AccessLogSide; 2]>,
    metrics: Vec<super::telemetry_metrics::Rule>,
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
        }
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
        let levels: Vec<&Settings> = [workload, level(namespace), level(self.root.as_str())]
            .into_iter()
            .flatten()
            .map(|e| &e.settings)
            .collect();
        let access_log = levels.iter().find_map(|s| s.access_log);
        let access_sides = levels
            .iter()
            .find(|s| s.access_log.is_some())
            .and_then(|s| s.access_sides.clone());
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
            random_sampling_percentage: sampling.unwrap_or(0.0),
            has_random_sampling_percentage: sampling.is_some(),
            disable_span_reporting: disable_span_reporting.unwrap_or(false),
            ..Default::default()
        };
        tracing.apply(&mut telemetry);
        Some(telemetry)
    }
}

fn settings(spec: &Telemetry, label: &str, warnings: &mut Vec<String>) -> Settings {
    let mut out = Settings {
        metrics: super::telemetry_metrics::rules(spec, label, warnings),
        ..Settings::default()
    };
    if !spec.access_logging.is_empty() {
        let is_envoy = |a: &weft_api::telemetry::AccessLogging| {
            a.providers.is_empty() || a.providers.iter().any(|p| p.name == ENVOY_PROVIDER)
        };
        let disabled = spec.access_logging.iter().any(|a| a.disabled == Some(true));
        let envoy = spec.access_logging.iter().any(is_envoy);
        let sides = super::telemetry_metrics::access_sides(spec, is_envoy);
        let all = sides.iter().all(|s| !s.disabled && s.filter.is_empty());
        out.access_sides = (!all).then_some(sides.clone());
        out.access_log = if sides.iter().all(|s| s.disabled) && (disabled || envoy) {
            Some(AccessLog::Disabled)
        } else if envoy {
            Some(AccessLog::Enabled)
        } else {
            warnings.push(format!(
                "{label}: spec.accessLogging: only the {ENVOY_PROVIDER:?} provider is supported; left out"
            ));
            None
        };
    }
    if let Some(tracing) = spec.tracing.first() {
        out.sampling = tracing.random_sampling_percentage;
        out.disable_span_reporting = tracing.disable_span_reporting;
    }
    out.tracing = super::trace_providers::TraceSettings::from_spec(spec, label, warnings);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policies(yaml: &str) -> (Policies, Vec<String>) {
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
