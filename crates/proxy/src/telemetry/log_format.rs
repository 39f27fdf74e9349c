//! Envoy format strings for the access log (MeshConfig `accessLogFormat`,
//! `envoyFileAccessLog.logFormat`): text with `%COMMAND(args):max%`
//! operators, or a JSON object whose values are such strings.
//!
//! A format is parsed once when the pushed settings change, not per
//! request; rendering walks the parsed pieces. Envoy rejects a listener
//! naming an operator it does not know ("Not supported field in
//! StreamInfo"); weftd refuses such a MeshConfig at apply time, and should
//! one reach the proxy anyway the parse error keeps Istio's default format.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use http::HeaderMap;
use weft_proto::proxy::v1 as pb;

use super::access_log::{AccessLogSink, Entry, Format, rfc3339_millis};

/// A parsed format.
#[derive(Debug, Clone, PartialEq)]
pub enum LogFormat {
    Text(Vec<Piece>),
    /// Field name → its format, in the order given.
    Json(Vec<(String, Vec<Piece>)>),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Piece {
    Literal(String),
    Op(Op),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// `%START_TIME%`, or with a strftime-like pattern.
    StartTime(Option<String>),
    /// `%REQ(X?Y):Z%`: header X, else Y, cut to Z characters.
    Req(Header),
    Resp(Header),
    ResponseCode,
    ResponseFlags,
    ResponseCodeDetails,
    Duration,
    BytesReceived,
    BytesSent,
    Protocol,
    UpstreamHost,
    UpstreamCluster,
    UpstreamLocalAddress,
    DownstreamRemoteAddress,
    DownstreamLocalAddress,
    DownstreamPeerUriSan,
    RequestedServerName,
    RouteName,
    UpstreamTransportFailureReason,
    ConnectionTerminationDetails,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Header {
    pub name: String,
    pub alt: Option<String>,
    pub max: Option<usize>,
}

/// A rendered value: typed for JSON, `-` when missing in text.
enum Value<'a> {
    Missing,
    Str(std::borrow::Cow<'a, str>),
    Num(u64),
}

impl LogFormat {
    pub fn text(format: &str) -> Result<Self, String> {
        parse(format).map(Self::Text)
    }

    /// `labels`: field name and format string pairs.
    pub fn json<'a>(labels: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Self, String> {
        labels
            .into_iter()
            .map(|(name, format)| {
                parse(format)
                    .map(|pieces| (name.to_string(), pieces))
                    .map_err(|err| format!("{name}: {err}"))
            })
            .collect::<Result<_, _>>()
            .map(Self::Json)
    }

    /// Whether rendering reads headers beyond those the entry keeps anyway.
    pub fn reads_headers(&self) -> bool {
        let mut pieces: Box<dyn Iterator<Item = &Piece>> = match self {
            Self::Text(pieces) => Box::new(pieces.iter()),
            Self::Json(fields) => Box::new(fields.iter().flat_map(|(_, p)| p.iter())),
        };
        pieces.any(|p| matches!(p, Piece::Op(Op::Req(_) | Op::Resp(_))))
    }

    pub fn render(&self, entry: &Entry<'_>) -> String {
        match self {
            Self::Text(pieces) => render_text(pieces, entry),
            Self::Json(fields) => {
                let mut object = serde_json::Map::with_capacity(fields.len());
                for (name, pieces) in fields {
                    let value = match pieces.as_slice() {
                        // A lone operator keeps its type, as Envoy's JSON
                        // formatter does: numbers stay numbers, missing is null.
                        [Piece::Op(op)] => match value(op, entry) {
                            Value::Missing => serde_json::Value::Null,
                            Value::Num(n) => n.into(),
                            Value::Str(s) => s.into_owned().into(),
                        },
                        _ => render_text(pieces, entry).into(),
                    };
                    object.insert(name.clone(), value);
                }
                serde_json::Value::Object(object).to_string()
            }
        }
    }
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

/// Parses one format string. A `%` always starts an operator (Envoy has no
/// escape for it either).
pub fn parse(format: &str) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut rest = format;
    while let Some(at) = rest.find('%') {
        if at > 0 {
            pieces.push(Piece::Literal(rest[..at].to_string()));
        }
        let body = &rest[at + 1..];
        let end = closing(body)
            .ok_or_else(|| format!("unterminated command operator at {:?}", &rest[at..]))?;
        pieces.push(Piece::Op(operator(&body[..end])?));
        rest = &body[end + 1..];
    }
    if !rest.is_empty() {
        pieces.push(Piece::Literal(rest.to_string()));
    }
    Ok(pieces)
}

/// The `%` that closes an operator, skipping those inside `( )` (a
/// START_TIME pattern holds its own `%`s).
fn closing(body: &str) -> Option<usize> {
    let mut depth = 0usize;
    for (i, c) in body.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            '%' if depth == 0 => return Some(i),
            _ => {}
        }
    }
    None
}

fn operator(token: &str) -> Result<Op, String> {
    let (name, args, max) = match token.find('(') {
        Some(open) => {
            let close = token
                .rfind(')')
                .filter(|&c| c > open)
                .ok_or_else(|| format!("%{token}%: missing ')'"))?;
            let max = match token[close + 1..].strip_prefix(':') {
                Some(n) => Some(
                    n.parse::<usize>()
                        .map_err(|_| format!("%{token}%: length {n:?} is not a number"))?,
                ),
                None if token[close + 1..].is_empty() => None,
                None => return Err(format!("%{token}%: unexpected text after ')'")),
            };
            (&token[..open], Some(&token[open + 1..close]), max)
        }
        None => (token, None, None),
    };
    let plain = |op: Op| match args {
        None => Ok(op),
        Some(_) => Err(format!("%{token}%: {name} takes no argument")),
    };
    match name {
        "START_TIME" => Ok(Op::StartTime(
            args.filter(|a| !a.is_empty()).map(str::to_string),
        )),
        "REQ" | "RESP" => {
            let args = args.ok_or_else(|| format!("%{token}%: {name} needs (header)"))?;
            let (main, alt) = match args.split_once('?') {
                Some((main, alt)) => (main, Some(alt.trim().to_ascii_lowercase())),
                None => (args, None),
            };
            let main = main.trim().to_ascii_lowercase();
            if main.is_empty() {
                return Err(format!("%{token}%: empty header name"));
            }
            let header = Header {
                name: main,
                alt,
                max,
            };
            Ok(if name == "REQ" {
                Op::Req(header)
            } else {
                Op::Resp(header)
            })
        }
        "RESPONSE_CODE" => plain(Op::ResponseCode),
        "RESPONSE_FLAGS" => plain(Op::ResponseFlags),
        "RESPONSE_CODE_DETAILS" => plain(Op::ResponseCodeDetails),
        "DURATION" => plain(Op::Duration),
        "BYTES_RECEIVED" => plain(Op::BytesReceived),
        "BYTES_SENT" => plain(Op::BytesSent),
        "PROTOCOL" => plain(Op::Protocol),
        "UPSTREAM_HOST" => plain(Op::UpstreamHost),
        "UPSTREAM_CLUSTER" => plain(Op::UpstreamCluster),
        "UPSTREAM_LOCAL_ADDRESS" => plain(Op::UpstreamLocalAddress),
        "DOWNSTREAM_REMOTE_ADDRESS" => plain(Op::DownstreamRemoteAddress),
        "DOWNSTREAM_LOCAL_ADDRESS" => plain(Op::DownstreamLocalAddress),
        "DOWNSTREAM_PEER_URI_SAN" => plain(Op::DownstreamPeerUriSan),
        "REQUESTED_SERVER_NAME" => plain(Op::RequestedServerName),
        "ROUTE_NAME" => plain(Op::RouteName),
        "UPSTREAM_TRANSPORT_FAILURE_REASON" => plain(Op::UpstreamTransportFailureReason),
        "CONNECTION_TERMINATION_DETAILS" => plain(Op::ConnectionTerminationDetails),
        _ => Err(format!("%{token}%: unknown command operator {name}")),
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

/// The last pushed format and its parse, and the file it is written to:
/// a new snapshot with the same settings reuses them, so requests never
/// parse and files are opened once.
#[derive(Default)]
pub struct Cache(arc_swap::ArcSwapOption<Parsed>);

/// What the pushed settings make of access-log lines.
#[derive(Clone, Default)]
pub struct Pushed {
    pub format: Option<Arc<LogFormat>>,
    /// The selected provider's own destination (else the proxy's sink).
    pub sink: Option<Arc<AccessLogSink>>,
}

struct Parsed {
    text: String,
    labels: Vec<(String, String)>,
    path: String,
    pushed: Pushed,
}

impl Cache {
    pub fn get(&self, pushed: &pb::Telemetry) -> Pushed {
        if pushed.access_log_text_format.is_empty()
            && pushed.access_log_labels.is_empty()
            && pushed.access_log_path.is_empty()
        {
            return Pushed::default();
        }
        let same = |p: &Parsed| {
            p.text == pushed.access_log_text_format
                && p.path == pushed.access_log_path
                && p.labels.len() == pushed.access_log_labels.len()
                && p.labels
                    .iter()
                    .zip(&pushed.access_log_labels)
                    .all(|((n, f), l)| *n == l.name && *f == l.format)
        };
        if let Some(parsed) = &*self.0.load()
            && same(parsed)
        {
            return parsed.pushed.clone();
        }
        let labels: Vec<(String, String)> = pushed
            .access_log_labels
            .iter()
            .map(|l| (l.name.clone(), l.format.clone()))
            .collect();
        let format = if !labels.is_empty() {
            LogFormat::json(labels.iter().map(|(n, f)| (n.as_str(), f.as_str()))).map(Some)
        } else if !pushed.access_log_text_format.is_empty() {
            LogFormat::text(&pushed.access_log_text_format).map(Some)
        } else {
            Ok(None)
        };
        let format = match format {
            Ok(format) => format.map(Arc::new),
            Err(err) => {
                tracing::warn!(%err, "pushed access log format refused; writing Istio's default");
                None
            }
        };
        let sink = match pushed.access_log_path.as_str() {
            "" => None,
            path => {
                let path = if path == "/dev/stdout" { "-" } else { path };
                match AccessLogSink::open(path, Format::Text) {
                    Ok(sink) => Some(Arc::new(sink)),
                    Err(err) => {
                        tracing::warn!(%err, "access log provider path unusable; writing to the proxy's own log");
                        None
                    }
                }
            }
        };
        let result = Pushed { format, sink };
        self.0.store(Some(Arc::new(Parsed {
            text: pushed.access_log_text_format.clone(),
            labels,
            path: pushed.access_log_path.clone(),
            pushed: result.clone(),
        })));
        result
    }
}

#[cfg(test)]
#[path = "log_format_tests.rs"]
mod tests;
