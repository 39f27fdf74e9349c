//! Envoy format strings rendered for one access-log record: the parsed
//! format (`config/log_format.rs`, parsed once per snapshot) walked piece
//! by piece, as one text line or a JSON object of typed fields.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use http::HeaderMap;

use super::access_log::{Entry, rfc3339_millis};

pub use crate::config::log_format::{Header, LogFormat, Op, Piece, parse};

/// A rendered value: typed for JSON, `-` when missing in text.
enum Value<'a> {
    Missing,
    Str(std::borrow::Cow<'a, str>),
    Num(u64),
}

impl LogFormat {
    pub fn render(&self, entry: &Entry<'_>) -> String {
        match self {
            Self::Text(pieces) => render_text(pieces, entry),
            Self::Json(fields) => {
                let mut object = serde_json::Map::with_capacity(fields.len());
                for (name, pieces) in fields {
                    object.insert(name.clone(), field(pieces, entry));
                }
                serde_json::Value::Object(object).to_string()
            }
        }
    }
}

/// One field's value: a lone operator keeps its type, as Envoy's JSON
/// formatter does (numbers stay numbers, missing is null); anything else
/// is the rendered text.
pub fn field(pieces: &[Piece], entry: &Entry<'_>) -> serde_json::Value {
    match pieces {
        [Piece::Op(op)] => match value(op, entry) {
            Value::Missing => serde_json::Value::Null,
            Value::Num(n) => n.into(),
            Value::Str(s) => s.into_owned().into(),
        },
        _ => render_text(pieces, entry).into(),
    }
}

/// A text format's line.
pub fn text(pieces: &[Piece], entry: &Entry<'_>) -> String {
    render_text(pieces, entry)
}

fn render_text(pieces: &[Piece], entry: &Entry<'_>) -> String {
    let mut line = String::with_capacity(256);
    for piece in pieces {
        match piece {
            Piece::Literal(text) => line.push_str(text),
            Piece::Op(op) => match value(op, entry) {
                Value::Missing => line.push('-'),
                Value::Str(s) if s.is_empty() => line.push('-'),
                Value::Str(s) => line.push_str(&s),
                Value::Num(n) => {
                    let _ = write!(line, "{n}");
                }
            },
        }
    }
    line
}

fn value<'a>(op: &'a Op, entry: &'a Entry<'a>) -> Value<'a> {
    let text = |v: Option<&'a str>| v.map_or(Value::Missing, |s| Value::Str(s.into()));
    let addr = |v: Option<std::net::SocketAddr>| {
        v.map_or(Value::Missing, |a| Value::Str(a.to_string().into()))
    };
    match op {
        Op::StartTime(None) => entry
            .start
            .map_or(Value::Missing, |t| Value::Str(rfc3339_millis(t).into())),
        Op::StartTime(Some(pattern)) => entry
            .start
            .map_or(Value::Missing, |t| Value::Str(strftime(pattern, t).into())),
        Op::Req(header) => request_header(header, entry),
        // Weft sets no such response header; the entry knows the time.
        Op::Resp(header) if header.name == "x-envoy-upstream-service-time" => entry
            .upstream_service_time_ms
            .map_or(Value::Missing, Value::Num),
        Op::Resp(header) => lookup(entry.response_headers, header),
        Op::ResponseCode => Value::Num(entry.response_code.into()),
        Op::ResponseFlags => {
            if entry.response_flags.is_empty() {
                Value::Missing
            } else {
                Value::Str(entry.response_flags.codes().into())
            }
        }
        Op::ResponseCodeDetails => text(entry.response_code_details),
        Op::Duration => Value::Num(entry.duration_ms),
        Op::BytesReceived => Value::Num(entry.bytes_received),
        Op::BytesSent => Value::Num(entry.bytes_sent),
        Op::Protocol => text(entry.protocol),
        Op::UpstreamHost => addr(entry.upstream_host),
        Op::UpstreamCluster => text(entry.upstream_cluster),
        Op::DownstreamRemoteAddress => addr(entry.downstream_remote),
        Op::DownstreamLocalAddress => addr(entry.downstream_local),
        Op::RequestedServerName => text(entry.requested_server_name),
        Op::RouteName => text(entry.route_name),
        // Not known to the entry today: printed as Envoy prints an unset value.
        Op::UpstreamLocalAddress
        | Op::DownstreamPeerUriSan
        | Op::UpstreamTransportFailureReason
        | Op::ConnectionTerminationDetails => Value::Missing,
    }
}

/// The entry's own request fields answer the common pseudo-headers even
/// when the record kept no header map.
fn request_header<'a>(header: &'a Header, entry: &'a Entry<'a>) -> Value<'a> {
    let known = |name: &str| -> Option<&'a str> {
        match name {
            ":method" => entry.method,
            ":path" => entry.path,
            ":authority" | "host" => entry.authority,
            "user-agent" => entry.user_agent,
            "x-forwarded-for" => entry.forwarded_for,
            "x-request-id" => entry.request_id,
            _ => None,
        }
    };
    let found = known(&header.name).or_else(|| header.alt.as_deref().and_then(known));
    match found {
        Some(text) => Value::Str(cut(text, header.max).into()),
        None => lookup(entry.request_headers, header),
    }
}

fn lookup<'a>(headers: Option<&'a HeaderMap>, header: &Header) -> Value<'a> {
    let Some(headers) = headers else {
        return Value::Missing;
    };
    let found = headers
        .get(header.name.as_str())
        .or_else(|| header.alt.as_deref().and_then(|alt| headers.get(alt)))
        .and_then(|v| v.to_str().ok());
    match found {
        Some(text) => Value::Str(cut(text, header.max).into()),
        None => Value::Missing,
    }
}

fn cut(text: &str, max: Option<usize>) -> &str {
    match max {
        Some(max) => text
            .char_indices()
            .nth(max)
            .map_or(text, |(i, _)| &text[..i]),
        None => text,
    }
}

/// The `%START_TIME(pattern)%` subset Weft writes: `%Y %m %d %H %M %S %s
/// %3f %6f %9f %z %%`, UTC; other specifiers are copied as written.
fn strftime(pattern: &str, time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let stamp = rfc3339_millis(time);
    // rfc3339_millis is `YYYY-MM-DDTHH:MM:SS.mmmZ`: reuse its civil date.
    let part = |range: std::ops::Range<usize>| stamp.get(range).unwrap_or("");
    let mut out = String::with_capacity(pattern.len() + 16);
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('Y') => out.push_str(part(0..4)),
            Some('m') => out.push_str(part(5..7)),
            Some('d') => out.push_str(part(8..10)),
            Some('H') => out.push_str(part(11..13)),
            Some('M') => out.push_str(part(14..16)),
            Some('S') => out.push_str(part(17..19)),
            Some('s') => {
                let _ = write!(out, "{}", since.as_secs());
            }
            Some('z') => out.push_str("+0000"),
            Some('%') => out.push('%'),
            Some(d @ ('3' | '6' | '9')) if chars.peek() == Some(&'f') => {
                chars.next();
                let nanos = format!("{:09}", since.subsec_nanos());
                let digits = d.to_digit(10).unwrap_or(9) as usize;
                out.push_str(&nanos[..digits]);
            }
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

#[cfg(test)]
#[path = "log_format_tests.rs"]
mod tests;
