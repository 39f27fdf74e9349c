//! Trace context: start or continue a W3C (`traceparent`/`tracestate`) or
//! B3 (single `b3` header, or `x-b3-*` headers) trace, decide sampling, and
//! hand the next hop this proxy's span as its parent.
//!
//! The header formats are OpenTelemetry's: `TraceContextPropagator` from
//! `opentelemetry_sdk` for W3C, the B3 propagator of `opentelemetry-zipkin`
//! for B3. What stays here is the proxy's policy: which style a request
//! arrived with (it leaves with `traceparent` plus that style), when this
//! proxy decides sampling, and `x-request-id`.
//!
//! Each proxy makes one span per request: a CLIENT span on the source side,
//! a SERVER span on the destination side. The incoming context is the
//! parent; the outgoing headers carry the new span, so an application that
//! forwards the headers (as Istio requires) links the whole call tree into
//! one trace. An incoming sampling decision is always honoured; without one
//! (B3's deferred decision, or no context) the proxy samples at its
//! configured rate. `x-request-id` is generated (a UUID v4) when absent.

use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::Context;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{
    SpanContext as OtelSpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState,
};
use opentelemetry_http::{HeaderExtractor, HeaderInjector};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator};
// The OpenTelemetry project's B3 propagator lives in the Zipkin exporter
// crate, deprecated upstream with that exporter; no maintained B3
// propagator exists for opentelemetry 0.33 elsewhere.
#[allow(deprecated)]
use opentelemetry_zipkin::{B3Encoding, Propagator as B3Propagator};

pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const B3: HeaderName = HeaderName::from_static("b3");
const B3_TRACE_ID: HeaderName = HeaderName::from_static("x-b3-traceid");
const B3_PARENT_SPAN_ID: HeaderName = HeaderName::from_static("x-b3-parentspanid");
#[cfg(test)]
const B3_SPAN_ID: HeaderName = HeaderName::from_static("x-b3-spanid");
#[cfg(test)]
const B3_SAMPLED: HeaderName = HeaderName::from_static("x-b3-sampled");

/// The B3 propagator marks "the caller left the decision to you" and
/// "debug" with trace-flag bits of its own (W3C defines only `sampled`).
const B3_DEFERRED: u8 = 0x02;
const B3_DEBUG: u8 = 0x04;

/// Which propagation style the request arrived with (and leaves with, in
/// addition to `traceparent`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Style {
    W3c,
    B3Single,
    B3Multi,
}

/// This proxy's span for one request.
#[derive(Debug, Clone)]
pub struct SpanContext {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    /// The incoming span, if the request continued a trace.
    pub parent_span_id: Option<[u8; 8]>,
    pub sampled: bool,
}

impl SpanContext {
    /// As OpenTelemetry writes it (`tracestate` is the caller's, passed on).
    fn otel(&self, state: TraceState) -> OtelSpanContext {
        let flags = if self.sampled {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::default()
        };
        OtelSpanContext::new(
            TraceId::from_bytes(self.trace_id),
            SpanId::from_bytes(self.span_id),
            flags,
            false,
            state,
        )
    }
}

/// Reads the incoming context, decides sampling (`percent` for new
/// decisions), writes this proxy's span into the headers for the next hop,
/// and makes sure an `x-request-id` is present.
pub fn continue_or_start(headers: &mut HeaderMap, percent: f64) -> SpanContext {
    let ids = RandomIdGenerator::default();
    if !headers.contains_key(REQUEST_ID)
        && let Ok(value) = HeaderValue::from_bytes(&uuid_v4(ids.new_trace_id()))
    {
        headers.insert(REQUEST_ID, value);
    }
    let (incoming, style) = read(headers);
    let span_id = ids.new_span_id().to_bytes();
    let span = match &incoming {
        Some(found) => {
            let flags = found.trace_flags().to_u8();
            let decided = flags & B3_DEFERRED == 0;
            SpanContext {
                trace_id: found.trace_id().to_bytes(),
                span_id,
                parent_span_id: Some(found.span_id().to_bytes()),
                sampled: if decided {
                    found.is_sampled() || flags & B3_DEBUG != 0
                } else {
                    sample(&ids, percent)
                },
            }
        }
        None => SpanContext {
            trace_id: ids.new_trace_id().to_bytes(),
            span_id,
            parent_span_id: None,
            sampled: sample(&ids, percent),
        },
    };
    let state = incoming
        .map(|found| found.trace_state().clone())
        .unwrap_or_default();
    write(headers, &span, state, style);
    span
}

/// The first valid context among W3C, B3 single, B3 multi, and the B3
/// style to write back: B3 headers that came with `traceparent` (a proxy
/// before this one writes both) are rewritten too, never left stale.
fn read(headers: &HeaderMap) -> (Option<OtelSpanContext>, Style) {
    let valid = |cx: Context| {
        let span = cx.span();
        let found = span.span_context();
        found.is_valid().then(|| found.clone())
    };
    let extractor = HeaderExtractor(headers);
    let b3 = if headers.contains_key(B3) {
        Style::B3Single
    } else if headers.contains_key(B3_TRACE_ID) {
        Style::B3Multi
    } else {
        Style::W3c
    };
    if headers.contains_key(TRACEPARENT)
        && let Some(found) = valid(TraceContextPropagator::new().extract(&extractor))
    {
        return (Some(found), b3);
    }
    if b3 == Style::W3c {
        return (None, Style::W3c);
    }
    match valid(b3_propagator(b3).extract(&extractor)) {
        Some(found) => (Some(found), b3),
        None => (None, Style::W3c),
    }
}

#[allow(deprecated)]
fn b3_propagator(style: Style) -> B3Propagator {
    B3Propagator::with_encoding(match style {
        Style::B3Single => B3Encoding::SingleHeader,
        _ => B3Encoding::MultipleHeader,
    })
}

/// True for `percent` of calls.
fn sample(ids: &RandomIdGenerator, percent: f64) -> bool {
    if percent >= 100.0 {
        return true;
    }
    let draw = u64::from_be_bytes(ids.new_span_id().to_bytes()) as f64 / u64::MAX as f64;
    percent > 0.0 && draw * 100.0 < percent
}

fn write(headers: &mut HeaderMap, span: &SpanContext, state: TraceState, style: Style) {
    let cx = Context::new().with_remote_span_context(span.otel(state));
    TraceContextPropagator::new().inject_context(&cx, &mut HeaderInjector(headers));
    // The propagator writes `tracestate` even when empty; a caller without
    // one should not gain one.
    if headers.get(TRACESTATE).is_some_and(|v| v.is_empty()) {
        headers.remove(TRACESTATE);
    }
    if style == Style::W3c {
        return;
    }
    b3_propagator(style).inject_context(&cx, &mut HeaderInjector(headers));
    // The B3 propagator does not write the parent; Zipkin's UI uses it.
    if style == Style::B3Multi {
        match span
            .parent_span_id
            .and_then(|parent| HeaderValue::from_str(&hex(&parent)).ok())
        {
            Some(parent) => {
                headers.insert(B3_PARENT_SPAN_ID, parent);
            }
            None => {
                headers.remove(B3_PARENT_SPAN_ID);
            }
        }
    }
}

/// Lower-case hex of `bytes` into `out` (twice as long).
fn hex_into(bytes: &[u8], out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (byte, pair) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        pair[0] = DIGITS[usize::from(byte >> 4)];
        pair[1] = DIGITS[usize::from(byte & 0xf)];
    }
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    let mut out = vec![b'0'; bytes.len() * 2];
    hex_into(bytes, &mut out);
    String::from_utf8(out).unwrap_or_default()
}

/// A random UUID (version 4, RFC 9562) from 128 random bits, as text.
fn uuid_v4(random: TraceId) -> [u8; 36] {
    let mut bytes = random.to_bytes();
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let mut text = [b'-'; 36];
    hex_into(&bytes[0..4], &mut text[0..8]);
    hex_into(&bytes[4..6], &mut text[9..13]);
    hex_into(&bytes[6..8], &mut text[14..18]);
    hex_into(&bytes[8..10], &mut text[19..23]);
    hex_into(&bytes[10..16], &mut text[24..36]);
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(HeaderName, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(name.clone(), HeaderValue::from_str(value).expect("value"));
        }
        map
    }

    #[test]
    fn a_w3c_parent_is_continued_with_its_decision_and_state() {
        let mut map = headers(&[
            (
                TRACEPARENT,
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
            ),
            (TRACESTATE, "vendor=abc"),
        ]);
        let span = continue_or_start(&mut map, 100.0);
        assert_eq!(hex(&span.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(
            span.parent_span_id.map(|p| hex(&p)).as_deref(),
            Some("00f067aa0ba902b7")
        );
        assert!(!span.sampled, "the caller's 'not sampled' wins over 100%");
        let sent = map[TRACEPARENT].to_str().expect("ascii");
        assert_eq!(
            sent,
            format!(
                "00-4bf92f3577b34da6a3ce929d0e0e4736-{}-00",
                hex(&span.span_id)
            )
        );
        assert_eq!(map["tracestate"], "vendor=abc");
        let id = map[REQUEST_ID].to_str().expect("ascii");
        assert_eq!((id.len(), &id[14..15]), (36, "4"), "{id}");
    }

    #[test]
    fn b3_single_and_multi_are_continued_in_their_own_style() {
        let mut single = headers(&[(B3, "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1")]);
        let span = continue_or_start(&mut single, 0.0);
        assert!(span.sampled);
        assert!(
            single[B3]
                .to_str()
                .expect("b3")
                .starts_with("80f198ee56343ba864fe8b2a57d3eff7-")
        );
        let mut multi = headers(&[
            (B3_TRACE_ID, "463ac35c9f6413ad"),
            (B3_SPAN_ID, "a2fb4a1d1a96d312"),
            (B3_SAMPLED, "1"),
        ]);
        let span = continue_or_start(&mut multi, 0.0);
        assert_eq!(hex(&span.trace_id), "0000000000000000463ac35c9f6413ad");
        assert_eq!(multi[B3_PARENT_SPAN_ID], "a2fb4a1d1a96d312");
        assert_eq!(multi[B3_SPAN_ID].to_str().expect("id"), hex(&span.span_id));
        assert_eq!(multi[B3_SAMPLED], "1");
        assert!(multi.contains_key(TRACEPARENT));
    }

    #[test]
    fn a_deferred_b3_decision_is_ours() {
        let mut deferred = headers(&[(B3, "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1")]);
        assert!(!continue_or_start(&mut deferred, 0.0).sampled);
        let mut debug = headers(&[(B3, "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-d")]);
        assert!(continue_or_start(&mut debug, 0.0).sampled);
    }

    #[test]
    fn a_new_trace_samples_at_the_rate() {
        let mut fresh = HeaderMap::new();
        let never = continue_or_start(&mut fresh, 0.0);
        assert!(!never.sampled && never.parent_span_id.is_none());
        assert!(fresh.contains_key(TRACEPARENT));
        assert!(!fresh.contains_key(TRACESTATE), "no empty tracestate");
        assert!(continue_or_start(&mut HeaderMap::new(), 100.0).sampled);
        let mut bad = headers(&[(TRACEPARENT, "00-zz-00f067aa0ba902b7-01")]);
        assert!(continue_or_start(&mut bad, 0.0).parent_span_id.is_none());
    }
}
