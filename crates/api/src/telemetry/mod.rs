//! Telemetry (`telemetry.istio.io`): access logging, tracing and metrics
//! settings for a workload, a namespace, or (in the root namespace) the
//! whole mesh. Weft applies `accessLogging` (with its `filter`), `metrics`
//! overrides (see [`metrics`]) and `tracing` (providers, sampling,
//! `customTags`: [`tracing`]); the rest is accepted as written.

pub mod metrics;
pub mod tracing;

pub use self::tracing::{CustomTag, Tracing, TracingMatch, WorkloadMode};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::common::WorkloadSelector;
use crate::field::FieldErrors;
use crate::meta::ObjectMeta;
use crate::resource::{Group, Spec};
use crate::security::target_ref::PolicyTargetReference;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Telemetry {
    /// Without it (and without targetRefs) the resource covers the
    /// namespace, or the mesh in the root namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<PolicyTargetReference>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target_refs: Vec<PolicyTargetReference>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tracing: Vec<Tracing>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<metrics::Metrics>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub access_logging: Vec<AccessLogging>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProviderRef {
    #[serde(default)]
    pub name: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccessLogging {
    /// `{mode: CLIENT|SERVER|CLIENT_AND_SERVER}`.
    #[serde(default, rename = "match", skip_serializing_if = "Option::is_none")]
    pub match_: Option<Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub providers: Vec<ProviderRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
    /// Only requests (and TCP connections) for which the expression is
    /// true are logged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<AccessLogFilter>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccessLogFilter {
    /// CEL over the request's (or connection's) attributes.
    #[serde(default)]
    pub expression: String,
}

impl Spec for Telemetry {
    const KIND: &'static str = "Telemetry";
    const GROUP: Group = Group::Telemetry;

    fn validate(&self, _meta: &ObjectMeta, errors: &mut FieldErrors) {
        if let Some(selector) = &self.selector {
            selector.validate("spec.selector", errors);
        }
        for (index, tracing) in self.tracing.iter().enumerate() {
            tracing.validate(&format!("spec.tracing[{index}]"), errors);
        }
        for (index, entry) in self.metrics.iter().enumerate() {
            entry.validate(&format!("spec.metrics[{index}]"), errors);
        }
        for (index, entry) in self.access_logging.iter().enumerate() {
            let mode = entry
                .match_
                .as_ref()
                .and_then(|m| m.get("mode"))
                .and_then(|m| m.as_str());
            if let Some(mode) = mode
                && !metrics::MODES.contains(&mode)
            {
                errors.push(
                    format!("spec.accessLogging[{index}].match.mode"),
                    format!(
                        "unknown mode {mode:?}; one of {}",
                        metrics::MODES.join(", ")
                    ),
                );
            }
            if let Some(filter) = &entry.filter
                && let Err(message) = metrics::check_expression(&filter.expression)
            {
                errors.push(
                    format!("spec.accessLogging[{index}].filter.expression"),
                    format!("not a CEL expression: {message}"),
                );
            }
        }
        let providers = self
            .tracing
            .iter()
            .enumerate()
            .map(|(i, t)| (format!("spec.tracing[{i}]"), &t.providers))
            .chain(
                self.metrics
                    .iter()
                    .enumerate()
                    .map(|(i, m)| (format!("spec.metrics[{i}]"), &m.providers)),
            )
            .chain(
                self.access_logging
                    .iter()
                    .enumerate()
                    .map(|(i, a)| (format!("spec.accessLogging[{i}]"), &a.providers)),
            );
        for (path, list) in providers {
            for (index, provider) in list.iter().enumerate() {
                if provider.name.is_empty() {
                    errors.push(format!("{path}.providers[{index}].name"), "Required value");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::decode::decode_str;

    #[test]
    fn telemetry_decodes_and_checks_sampling() {
        let yaml = "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {name: t, namespace: shop}\nspec:\n  selector: {matchLabels: {app: web}}\n  accessLogging: [{providers: [{name: envoy}]}]\n  tracing: [{randomSamplingPercentage: 50}]\n";
        let decoded = decode_str(yaml, "t.yaml");
        assert!(decoded.problems.is_empty(), "{:?}", decoded.problems);
        assert_eq!(decoded.resources[0].kind(), "Telemetry");
        let bad = yaml.replace("50", "150");
        let decoded = decode_str(&bad, "t.yaml");
        assert_eq!(decoded.problems.len(), 1, "{:?}", decoded.problems);
        assert!(
            decoded.problems[0]
                .to_string()
                .contains("spec.tracing[0].randomSamplingPercentage"),
            "{}",
            decoded.problems[0]
        );
    }
}
