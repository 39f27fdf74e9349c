//! What MeshConfig's tracing settings say beyond their validation: the
//! parts of the `zipkin` and `opentelemetry` providers Weft does not apply,
//! and `defaultProviders.tracing` naming providers Weft cannot export to.

use super::MeshConfig;
use super::providers::{ExtensionProvider, Kind};

/// Istio's path for Zipkin v2 spans.
pub const ZIPKIN_DEFAULT_PATH: &str = "/api/v2/spans";
/// The OTLP/HTTP path for traces.
pub const OTLP_HTTP_DEFAULT_PATH: &str = "/v1/traces";

/// The fields of a zipkin or opentelemetry provider that are not applied.
pub(super) fn provider_warnings(provider: &ExtensionProvider, path: &str, out: &mut Vec<String>) {
    let mut say =
        |field: &str| out.push(format!("{path}.{field}: not implemented by Weft; ignored"));
    if let Some(zipkin) = &provider.zipkin {
        if zipkin.max_tag_length.is_some() {
            say("maxTagLength");
        }
        if zipkin.enable_64bit_trace_id {
            say("enable64bitTraceId");
        }
        if zipkin.trace_context_option.is_some() {
            say("traceContextOption");
        }
    }
    if let Some(otel) = &provider.opentelemetry {
        if otel.max_tag_length.is_some() {
            say("maxTagLength");
        }
        if otel.resource_detectors.is_some() {
            say("resourceDetectors");
        }
        if otel.dynatrace_sampler.is_some() {
            say("dynatraceSampler");
        }
        if let Some(http) = &otel.http {
            if !http.headers.is_empty() {
                say("http.headers");
            }
            if http.timeout.is_some() {
                say("http.timeout");
            }
        }
    }
}

/// `defaultProviders.tracing`: the first name is used (as in Istio); a
/// kind Weft cannot export to means no spans.
pub(super) fn default_warnings(config: &MeshConfig, names: &[String], out: &mut Vec<String>) {
    for (index, name) in names.iter().enumerate() {
        let path = format!("defaultProviders.tracing[{index}]");
        if index > 0 {
            out.push(format!(
                "{path}: {name:?} is not used: proxies report spans to one provider, the first"
            ));
            continue;
        }
        match config.provider_kind(name) {
            Some(Kind::Zipkin | Kind::OpenTelemetry) | None => {}
            Some(kind) => out.push(format!(
                "{path}: {name:?} is a {} provider, which Weft does not implement: proxies \
                 report no spans",
                kind.key()
            )),
        }
    }
}
