//! Telemetry `tracing[]`: which providers get spans, how many traces are
//! sampled, and the `customTags` added to every span, as Istio writes them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::ProviderRef;
use crate::field::FieldErrors;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Tracing {
    #[serde(default, rename = "match", skip_serializing_if = "Option::is_none")]
    pub match_: Option<TracingMatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub providers: Vec<ProviderRef>,
    /// 0..100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub random_sampling_percentage: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_span_reporting: Option<bool>,
    /// Span attribute name → where its value comes from.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub custom_tags: BTreeMap<String, CustomTag>,
    /// v1alpha1 only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_request_id_for_trace_sampling: Option<bool>,
    /// Newer Istio: add Istio's own tags (on by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_istio_tags: Option<bool>,
    /// Newer Istio: neither read nor write trace headers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_context_propagation: Option<bool>,
}

/// `match: {mode: ...}`: which side of the proxy the entry is for.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TracingMatch {
    #[serde(default)]
    pub mode: WorkloadMode,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum WorkloadMode {
    #[default]
    ClientAndServer,
    /// Outbound requests (the proxy is the client).
    Client,
    /// Inbound requests (the proxy is the server).
    Server,
}

/// One `customTags` value: exactly one of the three sources.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CustomTag {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub literal: Option<Literal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<FromSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<FromSource>,
    /// Newer Istio: an access-log formatter expression (`%REQ(...)%`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub formatter: Option<Literal>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Literal {
    #[serde(default)]
    pub value: String,
}

/// A request header or an environment variable of the proxy, with the
/// value used when it is missing.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FromSource {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub default_value: String,
}

impl Tracing {
    pub(super) fn validate(&self, path: &str, errors: &mut FieldErrors) {
        if let Some(percent) = self.random_sampling_percentage
            && !(0.0..=100.0).contains(&percent)
        {
            errors.push(
                format!("{path}.randomSamplingPercentage"),
                format!("must be in range [0.0, 100.0], got {percent}"),
            );
        }
        for (tag, value) in &self.custom_tags {
            let at = format!("{path}.customTags[{tag:?}]");
            if tag.is_empty() {
                errors.push(at.clone(), "the tag name must not be empty");
            }
            let sources = [
                value.literal.is_some(),
                value.environment.is_some(),
                value.header.is_some(),
                value.formatter.is_some(),
            ];
            match sources.iter().filter(|set| **set).count() {
                1 => {}
                0 => errors.push(
                    at.clone(),
                    "one of literal, environment, header or formatter is required",
                ),
                _ => errors.push(
                    at.clone(),
                    "only one of literal, environment, header or formatter may be set",
                ),
            }
            for (field, source) in [
                ("environment", &value.environment),
                ("header", &value.header),
            ] {
                if let Some(source) = source
                    && source.name.is_empty()
                {
                    errors.push(format!("{at}.{field}.name"), "Required value");
                }
            }
            if let Some(header) = &value.header
                && http_header_name(&header.name).is_err()
            {
                errors.push(
                    format!("{at}.header.name"),
                    format!("{:?} is not an HTTP header name", header.name),
                );
            }
        }
    }
}

fn http_header_name(name: &str) -> Result<(), ()> {
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if !name.is_empty() && name.bytes().all(token) {
        Ok(())
    } else {
        Err(())
    }
}

#[cfg(test)]
mod tests {
    use crate::decode::decode_str;

    #[test]
    fn custom_tags_decode_and_each_needs_one_source_with_a_name() {
        let yaml = r#"apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: t, namespace: shop}
spec:
  tracing:
  - match: {mode: SERVER}
    providers: [{name: otel}]
    customTags:
      team: {literal: {value: checkout}}
      user: {header: {name: x-user, defaultValue: anonymous}}
      region: {environment: {name: REGION}}
"#;
        let decoded = decode_str(yaml, "t.yaml");
        assert!(decoded.problems.is_empty(), "{:?}", decoded.problems);
        let bad = yaml
            .replace("{literal: {value: checkout}}", "{}")
            .replace("name: x-user,", "name: 'x user',")
            .replace("{name: REGION}", "{defaultValue: eu}");
        let problems: Vec<String> = decode_str(&bad, "t.yaml")
            .problems
            .iter()
            .map(ToString::to_string)
            .collect();
        let all = problems.join("\n");
        for expected in [
            r#"spec.tracing[0].customTags["team"]: one of literal"#,
            r#"spec.tracing[0].customTags["user"].header.name: "x user" is not"#,
            r#"spec.tracing[0].customTags["region"].environment.name: Required value"#,
        ] {
            assert!(all.contains(expected), "{expected} not in {all}");
        }
        let mode = yaml.replace("SERVER", "SIDEWAYS");
        assert!(!decode_str(&mode, "t.yaml").problems.is_empty());
    }
}
