//! One request's span as the OpenTelemetry SDK exports it: Istio's (Envoy's)
//! attribute names, the Telemetry `customTags`, CLIENT or SERVER kind.
//!
//! The span's ids were fixed when the request arrived (they went out in
//! the trace headers), so the span is written as finished `SpanData`
//! rather than through a `Tracer`, which would pick ids of its own.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use http::HeaderMap;
use opentelemetry::trace::{
    SpanContext as OtelSpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};
use weft_proto::proxy::v1::custom_tag::Value as TagValue;
use weft_proto::proxy::v1::{self as pb, telemetry::TraceMode};

use super::metrics::Reporter;
use super::trace::SpanContext;

/// What the request said about itself, for its span.
pub struct Facts<'a> {
    pub context: &'a SpanContext,
    pub reporter: Reporter,
    /// `<service host>/*`, as Istio names spans without a route name.
    pub name: String,
    pub start: SystemTime,
    pub elapsed: Duration,
    pub method: &'a str,
    pub path: &'a str,
    pub protocol: &'static str,
    /// 0: no response (the client left).
    pub status: u16,
    pub response_flags: String,
    pub node_id: &'a str,
    pub request_id: Option<&'a str>,
    pub cluster: Option<&'a str>,
    pub upstream: Option<SocketAddr>,
    /// Telemetry `customTags`, evaluated when the request arrived.
    pub tags: &'a [KeyValue],
}

pub fn build(facts: Facts<'_>, scope: &InstrumentationScope) -> SpanData {
    let mut attributes = vec![
        KeyValue::new("http.method", facts.method.to_string()),
        KeyValue::new("http.url", facts.path.to_string()),
        KeyValue::new("http.protocol", facts.protocol),
        KeyValue::new("http.status_code", i64::from(facts.status)),
        KeyValue::new("response_flags", facts.response_flags),
        KeyValue::new("node_id", facts.node_id.to_string()),
        KeyValue::new("component", "proxy"),
    ];
    if let Some(id) = facts.request_id {
        attributes.push(KeyValue::new("guid:x-request-id", id.to_string()));
    }
    if let Some(cluster) = facts.cluster {
        attributes.push(KeyValue::new("upstream_cluster", cluster.to_string()));
    }
    if let Some(host) = facts.upstream {
        attributes.push(KeyValue::new("upstream_address", host.to_string()));
    }
    attributes.extend(facts.tags.iter().cloned());
    let context = facts.context;
    let error = facts.status == 0 || facts.status >= 500;
    SpanData {
        span_context: OtelSpanContext::new(
            TraceId::from_bytes(context.trace_id),
            SpanId::from_bytes(context.span_id),
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        ),
        parent_span_id: context
            .parent_span_id
            .map_or(SpanId::INVALID, SpanId::from_bytes),
        parent_span_is_remote: context.parent_span_id.is_some(),
        span_kind: match facts.reporter {
            Reporter::Source => SpanKind::Client,
            Reporter::Destination => SpanKind::Server,
        },
        name: Cow::Owned(facts.name),
        start_time: facts.start,
        end_time: facts.start + facts.elapsed,
        attributes,
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status: if error {
            Status::error("")
        } else {
            Status::Unset
        },
        instrumentation_scope: scope.clone(),
    }
}

/// Whether `mode` (Telemetry `tracing[].match.mode`) has this side report.
pub fn reports(mode: i32, reporter: Reporter) -> bool {
    match TraceMode::try_from(mode).unwrap_or(TraceMode::ClientAndServer) {
        TraceMode::ClientAndServer => true,
        TraceMode::Client => reporter == Reporter::Source,
        TraceMode::Server => reporter == Reporter::Destination,
    }
}

/// The Telemetry `customTags` as span attributes: literals as written,
/// headers from the request, environment variables from this proxy's own
/// environment (each with its default when missing).
pub fn custom_tags(tags: &[pb::CustomTag], headers: &HeaderMap) -> Vec<KeyValue> {
    tags.iter()
        .filter_map(|tag| {
            let value = match tag.value.as_ref()? {
                TagValue::Literal(value) => value.clone(),
                TagValue::Header(source) => headers
                    .get(source.name.as_str())
                    .and_then(|v| v.to_str().ok())
                    .map_or_else(|| source.default_value.clone(), str::to_string),
                TagValue::Environment(source) => {
                    std::env::var(&source.name).unwrap_or_else(|_| source.default_value.clone())
                }
            };
            Some(KeyValue::new(tag.tag.clone(), value))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_proto::proxy::v1::CustomTagSource;

    #[test]
    fn custom_tags_take_headers_and_defaults() {
        let tags = vec![
            pb::CustomTag {
                tag: "team".into(),
                value: Some(TagValue::Literal("checkout".into())),
            },
            pb::CustomTag {
                tag: "user".into(),
                value: Some(TagValue::Header(CustomTagSource {
                    name: "x-user".into(),
                    default_value: "anonymous".into(),
                })),
            },
            pb::CustomTag {
                tag: "region".into(),
                value: Some(TagValue::Environment(CustomTagSource {
                    name: "WEFT_TEST_SURELY_UNSET_VARIABLE".into(),
                    default_value: "nowhere".into(),
                })),
            },
        ];
        let mut headers = HeaderMap::new();
        let shown = |list: Vec<KeyValue>| {
            list.into_iter()
                .map(|kv| format!("{}={}", kv.key, kv.value))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            shown(custom_tags(&tags, &headers)),
            ["team=checkout", "user=anonymous", "region=nowhere"]
        );
        headers.insert("x-user", http::HeaderValue::from_static("ada"));
        assert_eq!(shown(custom_tags(&tags, &headers))[1], "user=ada");
        assert!(reports(TraceMode::Server as i32, Reporter::Destination));
        assert!(!reports(TraceMode::Server as i32, Reporter::Source));
    }
}
