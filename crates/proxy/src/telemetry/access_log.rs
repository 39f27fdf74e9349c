//! The access log: one line per HTTP request or TCP connection, in Istio's
//! default TEXT format or as JSON with the same fields, to stdout or a file.
//!
//! The line is formatted on the data path (a few hundred bytes) and handed
//! to a writer thread through a bounded queue; when the queue is full the
//! line is dropped and counted rather than slowing traffic down.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::flags::ResponseFlags;

/// Lines waiting for the writer at most.
const QUEUE: usize = 16 * 1024;
/// How long a line may wait in the writer's buffer (Envoy flushes its
/// file logs every second; tests and `tail -f` like it sooner).
const FLUSH_INTERVAL: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Format {
    #[default]
    Text,
    Json,
}

impl std::str::FromStr for Format {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text.to_ascii_lowercase().as_str() {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            other => Err(format!(
                "access log format {other:?}: expected text or json"
            )),
        }
    }
}

/// Everything one line says. `None` prints as `-`.
#[derive(Debug, Default)]
pub struct Entry<'a> {
    pub start: Option<SystemTime>,
    pub method: Option<&'a str>,
    pub path: Option<&'a str>,
    pub protocol: Option<&'a str>,
    pub response_code: u16,
    pub response_flags: ResponseFlags,
    pub response_code_details: Option<&'a str>,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub duration_ms: u64,
    pub upstream_service_time_ms: Option<u64>,
    pub forwarded_for: Option<&'a str>,
    pub user_agent: Option<&'a str>,
    pub request_id: Option<&'a str>,
    pub authority: Option<&'a str>,
    pub upstream_host: Option<SocketAddr>,
    pub upstream_cluster: Option<&'a str>,
    pub downstream_local: Option<SocketAddr>,
    pub downstream_remote: Option<SocketAddr>,
    pub requested_server_name: Option<&'a str>,
    pub route_name: Option<&'a str>,
    /// Kept only when a custom format reads headers (`%REQ(..)%`).
    pub request_headers: Option<&'a http::HeaderMap>,
    pub response_headers: Option<&'a http::HeaderMap>,
}

impl Entry<'_> {
    /// Istio's default format (MeshConfig `accessLogFormat` unset).
    pub fn text(&self) -> String {
        let mut line = String::with_capacity(320);
        let _ = write!(
            line,
            "[{}] \"{} {} {}\" {} {} {} - \"-\" {} {} {} {} \"{}\" \"{}\" \"{}\" \"{}\" \"{}\" {} - {} {} {} {}",
            Time(self.start),
            Dash(self.method),
            Dash(self.path),
            Dash(self.protocol),
            self.response_code,
            Flags(self.response_flags),
            Dash(self.response_code_details),
            self.bytes_received,
            self.bytes_sent,
            self.duration_ms,
            Number(self.upstream_service_time_ms),
            Dash(self.forwarded_for),
            Dash(self.user_agent),
            Dash(self.request_id),
            Dash(self.authority),
            Addr(self.upstream_host),
            Dash(self.upstream_cluster),
            Addr(self.downstream_local),
            Addr(self.downstream_remote),
            Dash(self.requested_server_name),
            Dash(self.route_name),
        );
        line
    }

    /// The same fields as JSON (Istio's `accessLogEncoding: JSON` names).
    pub fn json(&self) -> String {
        let addr = |v: Option<SocketAddr>| v.map(|a| a.to_string());
        let flags = self.response_flags.codes();
        serde_json::json!({
            "start_time": self.start.map(rfc3339_millis),
            "method": self.method,
            "path": self.path,
            "protocol": self.protocol,
            "response_code": self.response_code,
            "response_flags": flags,
            "response_code_details": self.response_code_details,
            "connection_termination_details": null,
            "upstream_transport_failure_reason": null,
            "bytes_received": self.bytes_received,
            "bytes_sent": self.bytes_sent,
            "duration": self.duration_ms,
            "upstream_service_time": self.upstream_service_time_ms,
            "x_forwarded_for": self.forwarded_for,
            "user_agent": self.user_agent,
            "request_id": self.request_id,
            "authority": self.authority,
            "upstream_host": addr(self.upstream_host),
            "upstream_cluster": self.upstream_cluster,
            "upstream_local_address": null,
            "downstream_local_address": addr(self.downstream_local),
            "downstream_remote_address": addr(self.downstream_remote),
            "requested_server_name": self.requested_server_name,
            "route_name": self.route_name,
        })
        .to_string()
    }
}

/// Values written straight into the line, `-` when absent or empty.
struct Dash<'a>(Option<&'a str>);
struct Addr(Option<SocketAddr>);
struct Number(Option<u64>);
struct Time(Option<SystemTime>);
struct Flags(ResponseFlags);

impl std::fmt::Display for Dash<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0.filter(|s| !s.is_empty()).unwrap_or("-"))
    }
}

impl std::fmt::Display for Addr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(addr) => addr.fmt(f),
            None => f.write_str("-"),
        }
    }
}

impl std::fmt::Display for Number {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(n) => n.fmt(f),
            None => f.write_str("-"),
        }
    }
}

impl std::fmt::Display for Time {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(time) => f.write_str(&rfc3339_millis(time)),
            None => f.write_str("-"),
        }
    }
}

impl std::fmt::Display for Flags {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_empty() {
            f.write_str("-")
        } else {
            f.write_str(&self.0.codes())
        }
    }
}

/// One record's destinations: every provider of the snapshot covering its
/// side, each with its format.
pub struct AccessLogger<'a> {
    /// The proxy's own sink (`--access-log`, else stdout).
    sink: &'a AccessLogSink,
    /// The encoding of Istio's default line (pushed, else the sink's).
    format: Format,
    targets: std::sync::Arc<super::log_targets::Resolved>,
    client: bool,
}

impl<'a> AccessLogger<'a> {
    /// `client`: the record is of the outbound side.
    pub fn new(
        sink: &'a AccessLogSink,
        format: Option<Format>,
        targets: std::sync::Arc<super::log_targets::Resolved>,
        client: bool,
    ) -> Self {
        Self {
            format: format.unwrap_or(sink.format),
            sink,
            targets,
            client,
        }
    }

    /// Whether some provider writes this side's records.
    pub fn writes(&self) -> bool {
        self.targets
            .logs
            .providers
            .iter()
            .any(|p| p.covers(self.client))
    }

    /// Whether the record should keep its header maps for its line.
    pub fn reads_headers(&self) -> bool {
        self.targets.logs.reads_headers()
    }

    pub fn log(&self, entry: &Entry<'_>) {
        use super::log_targets::Sink;
        use crate::config::access_logs::LogKind;
        let providers = self.targets.logs.providers.iter();
        for (provider, sink) in providers.zip(&self.targets.sinks) {
            if !provider.covers(self.client) {
                continue;
            }
            match (&provider.kind, sink) {
                (LogKind::File { format, .. }, Sink::Own | Sink::File(..)) => {
                    let sink = match sink {
                        Sink::File(_, file) => file,
                        _ => self.sink,
                    };
                    match format {
                        Some(format) => sink.send(format.render(entry)),
                        None => sink.log_as(entry, self.format),
                    }
                }
                (
                    LogKind::Otel {
                        body, attributes, ..
                    },
                    Sink::Otel(logs),
                ) => {
                    let body = match body {
                        Some(pieces) => super::log_format::text(pieces, entry),
                        None => entry.text(),
                    };
                    let attributes = attributes
                        .iter()
                        .map(|(name, pieces)| {
                            (
                                name.clone(),
                                otel_value(super::log_format::field(pieces, entry)),
                            )
                        })
                        .collect();
                    logs.emit(entry.start, body, attributes);
                }
                _ => {}
            }
        }
    }
}

/// A rendered field as an OpenTelemetry value: numbers stay numbers; a
/// value the record does not know is `-`, as in Envoy's text.
fn otel_value(value: serde_json::Value) -> opentelemetry::logs::AnyValue {
    use opentelemetry::logs::AnyValue;
    match value {
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => AnyValue::Int(i),
            None => AnyValue::from(n.to_string()),
        },
        serde_json::Value::String(s) => AnyValue::from(s),
        serde_json::Value::Bool(b) => AnyValue::Boolean(b),
        serde_json::Value::Null => AnyValue::from("-".to_string()),
        other => AnyValue::from(other.to_string()),
    }
}

/// Where lines go, and in which format.
pub struct AccessLogSink {
    format: Format,
    queue: SyncSender<String>,
    dropped: AtomicU64,
}

impl AccessLogSink {
    /// `-` is stdout; anything else a file, appended to.
    pub fn open(path: &str, format: Format) -> std::io::Result<Self> {
        let out: Box<dyn std::io::Write + Send> = if path == "-" {
            Box::new(std::io::stdout())
        } else {
            Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|err| {
                        std::io::Error::new(err.kind(), format!("access log {path}: {err}"))
                    })?,
            )
        };
        let (queue, lines) = sync_channel(QUEUE);
        std::thread::Builder::new()
            .name("weft-access-log".into())
            .spawn(move || write_lines(lines, out))?;
        Ok(Self {
            format,
            queue,
            dropped: AtomicU64::new(0),
        })
    }

    pub fn log(&self, entry: &Entry<'_>) {
        self.log_as(entry, self.format);
    }

    /// [`log`](Self::log) in `format` rather than the sink's own (the
    /// pushed MeshConfig `accessLogEncoding`).
    pub fn log_as(&self, entry: &Entry<'_>, format: Format) {
        let line = match format {
            Format::Text => entry.text(),
            Format::Json => entry.json(),
        };
        self.send(line);
    }

    pub(super) fn send(&self, line: String) {
        if let Err(TrySendError::Full(_)) = self.queue.try_send(line) {
            let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if dropped.is_power_of_two() {
                tracing::warn!(dropped, "access log writer is behind; lines dropped");
            }
        }
    }
}

/// Writes lines as they come into a buffer that reaches the file when
/// full or [`FLUSH_INTERVAL`] after its oldest line: one write per batch,
/// not per request.
fn write_lines(lines: Receiver<String>, out: Box<dyn std::io::Write + Send>) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, out);
    let mut oldest: Option<Instant> = None;
    loop {
        let wait = oldest.map_or(Duration::from_secs(3600), |t| {
            FLUSH_INTERVAL.saturating_sub(t.elapsed())
        });
        match lines.recv_timeout(wait) {
            Ok(line) => {
                if writeln!(out, "{line}").is_err() {
                    return;
                }
                oldest.get_or_insert_with(Instant::now);
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                let _ = out.flush();
                return;
            }
        }
        if oldest.is_some_and(|t| t.elapsed() >= FLUSH_INTERVAL) {
            if out.flush().is_err() {
                return;
            }
            oldest = None;
        }
    }
}

/// `2026-11-24T19:15:19.123Z`, as Envoy's `%START_TIME%`.
pub fn rfc3339_millis(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60,
        since.subsec_millis()
    )
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian
/// (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flags::ResponseFlag;

    #[test]
    fn text_follows_istios_default_format() {
        let entry = Entry {
            start: Some(UNIX_EPOCH + Duration::from_millis(1_700_000_000_123)),
            method: Some("GET"),
            path: Some("/status/418"),
            protocol: Some("HTTP/1.1"),
            response_code: 503,
            response_flags: ResponseFlag::UpstreamOverflow.into(),
            response_code_details: Some("upstream_reset_before_response_started"),
            bytes_sent: 81,
            duration_ms: 2,
            request_id: Some("abc"),
            authority: Some("web:80"),
            upstream_cluster: Some("outbound|80||web"),
            route_name: Some("default"),
            ..Entry::default()
        };
        assert_eq!(
            entry.text(),
            "[2023-11-14T22:13:20.123Z] \"GET /status/418 HTTP/1.1\" 503 UO \
             upstream_reset_before_response_started - \"-\" 0 81 2 - \"-\" \"-\" \"abc\" \
             \"web:80\" \"-\" outbound|80||web - - - - default"
        );
        let json: serde_json::Value = serde_json::from_str(&entry.json()).expect("json");
        assert_eq!(json["response_flags"], "UO");
        assert_eq!(json["upstream_cluster"], "outbound|80||web");
    }
}
