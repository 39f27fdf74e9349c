//! Envoy format strings for the access log (MeshConfig `accessLogFormat`,
//! a provider's `logFormat`), parsed: text with `%COMMAND(args):max%`
//! operators, or a JSON object whose values are such strings. Parsed once
//! when a snapshot is built; `telemetry/log_format.rs` renders them.

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
