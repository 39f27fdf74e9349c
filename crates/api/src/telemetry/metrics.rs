//! Telemetry `metrics` (Istio's standard metrics customised) and the CEL
//! expressions Telemetry carries (`tagOverrides` values, the access-log
//! `filter.expression`).
//!
//! Everything is decoded as Istio writes it; names that are enums in
//! Istio's API (`metric`, `mode`, `operation`) stay strings here so that a
//! wrong one is reported with its field path rather than as a decoding
//! failure of the whole resource.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::field::FieldErrors;
use crate::telemetry::ProviderRef;

/// Istio's standard metrics as `match.metric` names them, with the
/// Prometheus family each is exposed as.
pub const STANDARD_METRICS: [(&str, &str); 10] = [
    ("REQUEST_COUNT", "istio_requests_total"),
    ("REQUEST_DURATION", "istio_request_duration_milliseconds"),
    ("REQUEST_SIZE", "istio_request_bytes"),
    ("RESPONSE_SIZE", "istio_response_bytes"),
    (
        "TCP_OPENED_CONNECTIONS",
        "istio_tcp_connections_opened_total",
    ),
    (
        "TCP_CLOSED_CONNECTIONS",
        "istio_tcp_connections_closed_total",
    ),
    ("TCP_SENT_BYTES", "istio_tcp_sent_bytes_total"),
    ("TCP_RECEIVED_BYTES", "istio_tcp_received_bytes_total"),
    ("GRPC_REQUEST_MESSAGES", "istio_request_messages_total"),
    ("GRPC_RESPONSE_MESSAGES", "istio_response_messages_total"),
];

/// `match.metric` meaning every standard metric.
pub const ALL_METRICS: &str = "ALL_METRICS";

/// `match.mode` values; CLIENT is the outbound side of a proxy, SERVER the
/// inbound side.
pub const MODES: [&str; 3] = ["CLIENT_AND_SERVER", "CLIENT", "SERVER"];

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Metrics {
    /// Without: MeshConfig `defaultProviders.metrics` (Istio's
    /// `prometheus`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub providers: Vec<ProviderRef>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overrides: Vec<MetricsOverride>,
    /// A duration; Weft's Prometheus metrics are read when scraped, so it
    /// does not apply (warned).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reporting_interval: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetricsOverride {
    /// Without: every standard metric on both sides.
    #[serde(default, rename = "match", skip_serializing_if = "Option::is_none")]
    pub match_: Option<MetricSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tag_overrides: BTreeMap<String, TagOverride>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetricSelector {
    /// One of [`STANDARD_METRICS`] or [`ALL_METRICS`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<String>,
    /// A metric of the user's own (not supported: warned).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_metric: Option<String>,
    /// One of [`MODES`]; without: CLIENT_AND_SERVER.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TagOverride {
    /// UPSERT (default) or REMOVE.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<String>,
    /// CEL over the request's attributes; only with UPSERT.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

impl TagOverride {
    pub fn is_remove(&self) -> bool {
        self.operation.as_deref() == Some("REMOVE")
    }
}

/// Checks that `source` is a CEL expression; the error is the parser's.
pub fn check_expression(source: &str) -> Result<(), String> {
    if source.trim().is_empty() {
        return Err("empty expression".to_string());
    }
    cel::Program::compile(source)
        .map(|_| ())
        .map_err(|errors| errors.to_string().trim().replace('\n', "; "))
}

/// Prometheus label names: what a `tagOverrides` key must be.
fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl Metrics {
    pub(super) fn validate(&self, path: &str, errors: &mut FieldErrors) {
        if let Some(interval) = &self.reporting_interval {
            errors.check_duration(format!("{path}.reportingInterval"), interval, None);
        }
        for (index, entry) in self.overrides.iter().enumerate() {
            let path = format!("{path}.overrides[{index}]");
            if let Some(selector) = &entry.match_ {
                selector.validate(&format!("{path}.match"), errors);
            }
            for (name, tag) in &entry.tag_overrides {
                let path = format!("{path}.tagOverrides.{name}");
                if !is_label_name(name) {
                    errors.push(
                        path.clone(),
                        "must be a Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*)",
                    );
                }
                tag.validate(&path, errors);
            }
        }
    }
}

impl MetricSelector {
    fn validate(&self, path: &str, errors: &mut FieldErrors) {
        match (&self.metric, &self.custom_metric) {
            (Some(_), Some(_)) => errors.push(
                path.to_string(),
                "metric and customMetric are mutually exclusive",
            ),
            (Some(metric), None)
                if metric != ALL_METRICS && !STANDARD_METRICS.iter().any(|(m, _)| m == metric) =>
            {
                errors.push(
                    format!("{path}.metric"),
                    format!(
                        "unknown metric {metric:?}; one of {ALL_METRICS}, {}",
                        STANDARD_METRICS.map(|(m, _)| m).join(", ")
                    ),
                );
            }
            _ => {}
        }
        if let Some(mode) = &self.mode
            && !MODES.contains(&mode.as_str())
        {
            errors.push(
                format!("{path}.mode"),
                format!("unknown mode {mode:?}; one of {}", MODES.join(", ")),
            );
        }
    }
}

impl TagOverride {
    fn validate(&self, path: &str, errors: &mut FieldErrors) {
        match self.operation.as_deref() {
            None | Some("UPSERT") => match self.value.as_deref() {
                None | Some("") => errors.push(
                    format!("{path}.value"),
                    "value must be set when operation is UPSERT",
                ),
                Some(value) => {
                    if let Err(message) = check_expression(value) {
                        errors.push(
                            format!("{path}.value"),
                            format!("not a CEL expression: {message}"),
                        );
                    }
                }
            },
            Some("REMOVE") => {
                if self.value.is_some() {
                    errors.push(
                        format!("{path}.value"),
                        "value must not be set when operation is REMOVE",
                    );
                }
            }
            Some(other) => errors.push(
                format!("{path}.operation"),
                format!("unknown operation {other:?}; one of UPSERT, REMOVE"),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::decode::decode_str;

    fn problems(spec: &str) -> Vec<String> {
        let yaml = format!(
            "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {{name: t, namespace: istio-system}}\nspec:\n{spec}"
        );
        decode_str(&yaml, "t.yaml")
            .problems
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    /// The forms of Istio's "customize metrics" and access-log docs.
    #[test]
    fn istio_doc_forms_decode_unchanged() {
        let spec = r#"  metrics:
  - providers: [{name: prometheus}]
    overrides:
    - match: {metric: REQUEST_COUNT, mode: CLIENT}
      tagOverrides:
        request_host: {value: "request.host"}
        destination_port: {value: "string(destination.port)"}
        user_agent: {operation: UPSERT, value: "request.headers['user-agent']"}
        literal: {value: "'fixed'"}
        destination_canonical_revision: {operation: REMOVE}
    - match: {metric: ALL_METRICS}
      disabled: true
    - match: {customMetric: my_metric}
      disabled: true
    reportingInterval: 15s
  accessLogging:
  - providers: [{name: envoy}]
    match: {mode: SERVER}
    filter: {expression: "response.code >= 400 || has(request.headers.x_debug)"}
"#;
        assert_eq!(problems(spec), Vec::<String>::new());
    }

    #[test]
    fn bad_overrides_are_reported_with_field_paths() {
        let spec = r#"  metrics:
  - overrides:
    - match: {metric: REQUEST_COUNTS, mode: BOTH}
      tagOverrides:
        a: {operation: UPSERT}
        b: {operation: REMOVE, value: "request.host"}
        c: {value: "request.host =="}
        d: {operation: REPLACE, value: "'x'"}
        bad-name: {value: "'x'"}
  accessLogging:
  - filter: {expression: "response.code >="}
"#;
        let found = problems(spec);
        let expect = [
            "spec.metrics[0].overrides[0].match.metric: unknown metric \"REQUEST_COUNTS\"",
            "spec.metrics[0].overrides[0].match.mode: unknown mode \"BOTH\"",
            "spec.metrics[0].overrides[0].tagOverrides.a.value: value must be set when operation is UPSERT",
            "spec.metrics[0].overrides[0].tagOverrides.b.value: value must not be set when operation is REMOVE",
            "spec.metrics[0].overrides[0].tagOverrides.c.value: not a CEL expression:",
            "spec.metrics[0].overrides[0].tagOverrides.d.operation: unknown operation \"REPLACE\"",
            "spec.metrics[0].overrides[0].tagOverrides.bad-name: must be a Prometheus label name",
            "spec.accessLogging[0].filter.expression: not a CEL expression:",
        ];
        for expected in expect {
            assert!(
                found.iter().any(|p| p.contains(expected)),
                "{expected:?} not in {found:#?}"
            );
        }
        assert_eq!(found.len(), expect.len(), "{found:#?}");
    }

    /// What Weft does not implement is a warning at decoding (apply,
    /// validate) and in `weft analyze`, never silence.
    #[test]
    fn unimplemented_metric_fields_are_warned() {
        let yaml = "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {name: t, namespace: shop}\nspec:\n  metrics:\n  - providers: [{name: prometheus}, {name: stackdriver}]\n    reportingInterval: 10s\n    overrides: [{match: {customMetric: mine}, disabled: true}]\n";
        let decoded = decode_str(yaml, "t.yaml");
        assert!(decoded.problems.is_empty(), "{:?}", decoded.problems);
        let warnings: Vec<String> = decoded.warnings.iter().map(ToString::to_string).collect();
        for field in [
            "spec.metrics[0].providers[1].name",
            "spec.metrics[0].reportingInterval",
            "spec.metrics[0].overrides[0].match.customMetric",
        ] {
            assert!(
                warnings.iter().any(|w| w.contains(field)),
                "{field} not warned: {warnings:#?}"
            );
        }
        assert_eq!(
            warnings.len(),
            3,
            "prometheus itself is not warned: {warnings:#?}"
        );
    }
}
