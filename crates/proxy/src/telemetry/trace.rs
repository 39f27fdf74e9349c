//! Trace context: start or continue a W3C (`traceparent`/`tracestate`) or
//! B3 (single `b3` header, or `x-b3-*` headers) trace, decide sampling, and
//! hand the next hop this proxy's span as its parent.
//!
//! Each proxy makes one span per request: a CLIENT span on the source side,
//! a SERVER span on the destination side. The incoming context is the
//! parent; the outgoing headers carry the new span, so an application that
//! forwards the headers (as Istio requires) links the whole call tree into
//! one trace. An incoming sampling decision is always honoured; without one
//! the proxy samples at its configured rate. `x-request-id` is generated
//! (a UUID v4) when absent.

use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::trace::TraceId;
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator};

pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const B3: HeaderName = HeaderName::from_static("b3");
const B3_TRACE_ID: HeaderName = HeaderName::from_static("x-b3-traceid");
const B3_SPAN_ID: HeaderName = HeaderName::from_static("x-b3-spanid");
const B3_PARENT_SPAN_ID: HeaderName = HeaderName::from_static("x-b3-parentspanid");
const B3_SAMPLED: HeaderName = HeaderName::from_static("x-b3-sampled");
const B3_FLAGS: HeaderName = HeaderName::from_static("x-b3-flags");

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

/// What an incoming request carried.
struct Incoming {
    trace_id: [u8; 16],
    span_id: Option<[u8; 8]>,
    /// `None`: the caller left the decision to us.
    sampled: Option<bool>,
    style: Style,
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
    let incoming = read_w3c(headers)
        .or_else(|| read_b3_single(headers))
        .or_else(|| read_b3_multi(headers));
    let span_id = ids.new_span_id().to_bytes();
    let (trace_id, parent_span_id, sampled, style) = match incoming {
        Some(found) => (
            found.trace_id,
            found.span_id,
            found.sampled.unwrap_or_else(|| sample(&ids, percent)),
            found.style,
        ),
        None => (
            ids.new_trace_id().to_bytes(),
            None,
            sample(&ids, percent),
            Style::W3c,
        ),
    };
    let span = SpanContext {
        trace_id,
        span_id,
        parent_span_id,
        sampled,
    };
    write(headers, &span, style);
    span
}

/// True for `percent` of calls.
fn sample(ids: &RandomIdGenerator, percent: f64) -> bool {
    if percent >= 100.0 {
        return true;
    }
    let draw = u64::from_be_bytes(ids.new_span_id().to_bytes()) as f64 / u64::MAX as f64;
    percent > 0.0 && draw * 100.0 < percent
}

fn read_w3c(headers: &HeaderMap) -> Option<Incoming> {
    let value = headers.get(TRACEPARENT)?.to_str().ok()?;
    let mut parts = value.trim().split('-');
    let (version, trace, span, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if version.len() != 2 || version == "ff" || flags.len() != 2 {
        return None;
    }
    let trace_id = hex_array::<16>(trace).filter(|id| *id != [0; 16])?;
    let span_id = hex_array::<8>(span).filter(|id| *id != [0; 8])?;
    let flags = u8::from_str_radix(flags, 16).ok()?;
    Some(Incoming {
        trace_id,
        span_id: Some(span_id),
        sampled: Some(flags & 1 == 1),
        style: Style::W3c,
    })
}

/// `b3: {traceid}-{spanid}[-{sampled}[-{parentspanid}]]`, or `b3: 0|1|d`.
fn read_b3_single(headers: &HeaderMap) -> Option<Incoming> {
    let value = headers.get(B3)?.to_str().ok()?;
    let mut parts = value.trim().split('-');
    let trace = parts.next()?;
    let span = parts.next()?;
    Some(Incoming {
        trace_id: b3_trace_id(trace)?,
        span_id: Some(hex_array::<8>(span)?),
        sampled: parts.next().and_then(b3_sampled),
        style: Style::B3Single,
    })
}

fn read_b3_multi(headers: &HeaderMap) -> Option<Incoming> {
    let get = |name: HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    let trace_id = b3_trace_id(get(B3_TRACE_ID)?)?;
    let debug = get(B3_FLAGS) == Some("1");
    Some(Incoming {
        trace_id,
        span_id: get(B3_SPAN_ID).and_then(hex_array::<8>),
        sampled: if debug {
            Some(true)
        } else {
            get(B3_SAMPLED).and_then(b3_sampled)
        },
        style: Style::B3Multi,
    })
}

/// 64-bit B3 trace ids are left-padded to 128 bits, as Zipkin does.
fn b3_trace_id(text: &str) -> Option<[u8; 16]> {
    let id = match text.len() {
        16 => {
            let low = hex_array::<8>(text)?;
            let mut id = [0; 16];
            id[8..].copy_from_slice(&low);
            id
        }
        32 => hex_array::<16>(text)?,
        _ => return None,
    };
    (id != [0; 16]).then_some(id)
}

fn b3_sampled(text: &str) -> Option<bool> {
    match text {
        "1" | "d" | "true" => Some(true),
        "0" | "false" => Some(false),
        _ => None,
    }
}

fn write(headers: &mut HeaderMap, span: &SpanContext, style: Style) {
    if let Ok(value) = HeaderValue::from_bytes(&traceparent(span)) {
        headers.insert(TRACEPARENT, value);
    }
    if style == Style::W3c {
        return;
    }
    let trace = hex(&span.trace_id);
    let id = hex(&span.span_id);
    let sampled = if span.sampled { "1" } else { "0" };
    let mut set = |name: HeaderName, value: String| {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    };
    match style {
        Style::W3c => {}
        Style::B3Single => set(B3, format!("{trace}-{id}-{sampled}")),
        Style::B3Multi => {
            set(B3_TRACE_ID, trace);
            set(B3_SPAN_ID, id);
            match span.parent_span_id {
                Some(parent) => set(B3_PARENT_SPAN_ID, hex(&parent)),
                None => {
                    headers.remove(B3_PARENT_SPAN_ID);
                }
            }
            headers.insert(
                B3_SAMPLED,
                HeaderValue::from_static(if span.sampled { "1" } else { "0" }),
            );
        }
    }
}

fn hex_array<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != N * 2 {
        return None;
    }
    let mut out = [0; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(out)
}

/// `00-{trace id}-{span id}-{flags}`, written in place: every request
/// sends one, and the formatting machinery costs more than the proxying.
fn traceparent(span: &SpanContext) -> [u8; 55] {
    let mut text = *b"00-00000000000000000000000000000000-0000000000000000-00";
    hex_into(&span.trace_id, &mut text[3..35]);
    hex_into(&span.span_id, &mut text[36..52]);
    if span.sampled {
        text[54] = b'1';
    }
    text
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
    fn a_w3c_parent_is_continued_with_its_decision() {
        let mut map = headers(&[(
            TRACEPARENT,
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
        )]);
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
    }

    #[test]
    fn a_new_trace_samples_at_the_rate() {
        let never = continue_or_start(&mut HeaderMap::new(), 0.0);
        assert!(!never.sampled && never.parent_span_id.is_none());
        assert!(continue_or_start(&mut HeaderMap::new(), 100.0).sampled);
        let mut bad = headers(&[(TRACEPARENT, "00-zz-00f067aa0ba902b7-01")]);
        assert!(continue_or_start(&mut bad, 0.0).parent_span_id.is_none());
    }
}
