//! Istio's application probes on the status port (15020):
//! `/app-health/<container>/livez|readyz|startupz`.
//!
//! Injection moves an app container's httpGet/tcpSocket/grpc probes here and
//! hands the originals to the proxy in Istio's `ISTIO_KUBE_APP_PROBERS`
//! JSON. The kubelet's plain-text probe then reaches the proxy (15020 is
//! never captured) instead of the app's port, where STRICT mTLS would
//! refuse it; the proxy replays the probe to the app from inside the pod and
//! answers with the outcome.
//!
//! Contract:
//! - the table is fixed at start: a caller picks a path and nothing else, so
//!   a probe can reach only the ports and hosts the pod spec named, with the
//!   headers it named (nothing of the caller's request is forwarded);
//! - undeclared paths are 404;
//! - healthy (2xx/3xx for HTTP, as the kubelet counts them; a connection for
//!   TCP; `SERVING` for gRPC) is 200, an app that answers otherwise is 500,
//!   an app that cannot be reached in `timeoutSeconds` is 503;
//! - replays go to the pod's own address (`--address`, the kubelet's
//!   target) or 127.0.0.1, from the proxy's UID, which capture returns
//!   untouched: they are never looped back into the sidecar.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, StatusCode, header};
use http_body_util::Empty;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::grpc_health;

/// Every declared path starts so (Istio's prefix).
pub const PREFIX: &str = "/app-health/";
/// The kubelet's default and minimum `timeoutSeconds`.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
/// What the replayed HTTP probe says it is: apps that single out the
/// kubelet's probes (by the `kube-probe/` prefix) still recognise it.
const USER_AGENT: &str = "kube-probe/weft-proxy";

/// The probes the proxy answers for, by path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProberTable(BTreeMap<String, Prober>);

/// One original probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prober {
    pub check: Check,
    pub timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    Http(HttpCheck),
    Tcp { host: Option<String>, port: u16 },
    Grpc { port: u16, service: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpCheck {
    /// Where to connect instead of the pod's address (`httpGet.host`).
    pub host: Option<String>,
    pub port: u16,
    pub path: String,
    pub https: bool,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

/// The table and where its probes go.
#[derive(Debug, Clone)]
pub struct AppProbers {
    table: ProberTable,
    /// The pod's address: what the kubelet would have probed.
    destination: IpAddr,
    tls: Arc<rustls::ClientConfig>,
}

/// A replayed probe's outcome, with a line saying why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Healthy(String),
    /// The app answered, and not healthily.
    Failing(String),
    /// The app could not be reached or did not answer in time.
    Unreachable(String),
}

impl Verdict {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Healthy(_) => StatusCode::OK,
            Self::Failing(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Unreachable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    pub fn text(&self) -> &str {
        match self {
            Self::Healthy(text) | Self::Failing(text) | Self::Unreachable(text) => text,
        }
    }
}

// Istio's JSON, read into the types above. Unknown fields are refused: a
// probe option silently dropped would probe something other than asked.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct WireProber {
    http_get: Option<WireHttpGet>,
    tcp_socket: Option<WireTcp>,
    grpc: Option<WireGrpc>,
    timeout_seconds: Option<i64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct WireHttpGet {
    path: Option<String>,
    port: serde_json::Value,
    host: Option<String>,
    scheme: Option<String>,
    http_headers: Option<Vec<WireHeader>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireHeader {
    name: String,
    value: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireTcp {
    port: serde_json::Value,
    host: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireGrpc {
    port: serde_json::Value,
    service: Option<String>,
}

impl ProberTable {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }
}

/// Parses `ISTIO_KUBE_APP_PROBERS` (empty text: no probes). Errors name the
/// path and field at fault.
pub fn parse_probers(text: &str) -> Result<ProberTable, String> {
    if text.trim().is_empty() {
        return Ok(ProberTable::default());
    }
    let mut reader = serde_json::Deserializer::from_str(text);
    let wire: BTreeMap<String, WireProber> = serde_path_to_error::deserialize(&mut reader)
        .map_err(|err| {
            format!(
                "app probers (ISTIO_KUBE_APP_PROBERS) at {}: {}",
                err.path(),
                err.inner()
            )
        })?;
    let mut table = BTreeMap::new();
    for (path, prober) in wire {
        let prober = prober
            .into_prober()
            .map_err(|err| format!("app prober {path:?}: {err}"))?;
        if !path.starts_with(PREFIX) || path.len() == PREFIX.len() {
            return Err(format!(
                "app prober {path:?}: paths start with {PREFIX} (e.g. /app-health/app/livez)"
            ));
        }
        table.insert(path, prober);
    }
    Ok(ProberTable(table))
}

impl WireProber {
    fn into_prober(self) -> Result<Prober, String> {
        let timeout = match self.timeout_seconds {
            None | Some(0) => DEFAULT_TIMEOUT,
            Some(seconds) if seconds > 0 => Duration::from_secs(seconds.unsigned_abs()),
            Some(seconds) => return Err(format!("timeoutSeconds: {seconds} is negative")),
        };
        let check = match (self.http_get, self.tcp_socket, self.grpc) {
            (Some(http), None, None) => Check::Http(http.into_check()?),
            (None, Some(tcp), None) => Check::Tcp {
                host: tcp.host.filter(|h| !h.is_empty()),
                port: port("tcpSocket.port", &tcp.port)?,
            },
            (None, None, Some(grpc)) => Check::Grpc {
                port: port("grpc.port", &grpc.port)?,
                service: grpc.service.unwrap_or_default(),
            },
            _ => return Err("exactly one of httpGet, tcpSocket and grpc is expected".into()),
        };
        Ok(Prober { check, timeout })
    }
}

impl WireHttpGet {
    fn into_check(self) -> Result<HttpCheck, String> {
        let https = match self
            .scheme
            .as_deref()
            .map(str::to_ascii_uppercase)
            .as_deref()
        {
            None | Some("" | "HTTP") => false,
            Some("HTTPS") => true,
            Some(other) => return Err(format!("httpGet.scheme: {other:?} is not HTTP or HTTPS")),
        };
        let path = match self.path.filter(|p| !p.is_empty()) {
            None => "/".to_string(),
            Some(path) if path.starts_with('/') => path,
            Some(path) => format!("/{path}"),
        };
        http::uri::PathAndQuery::try_from(path.as_str())
            .map_err(|err| format!("httpGet.path {path:?}: {err}"))?;
        let mut headers = Vec::new();
        for h in self.http_headers.unwrap_or_default() {
            let name = HeaderName::try_from(h.name.as_str())
                .map_err(|err| format!("httpGet.httpHeaders {:?}: {err}", h.name))?;
            let value = HeaderValue::try_from(h.value.as_str())
                .map_err(|err| format!("httpGet.httpHeaders {:?}: {err}", h.name))?;
            headers.push((name, value));
        }
        Ok(HttpCheck {
            host: self.host.filter(|h| !h.is_empty()),
            port: port("httpGet.port", &self.port)?,
            path,
            https,
            headers,
        })
    }
}

/// A port number (or a number written as a string); a port name is refused:
/// only the injector knows the container's ports, and it resolves them.
fn port(field: &str, value: &serde_json::Value) -> Result<u16, String> {
    let number = match value {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(s) => s.parse::<u64>().ok(),
        _ => None,
    };
    number
        .and_then(|n| u16::try_from(n).ok())
        .filter(|n| *n > 0)
        .ok_or_else(|| {
            format!("{field}: {value} is not a port number (named ports are resolved at injection)")
        })
}

impl AppProbers {
    /// `address` is the pod's (`--address`); without one (or if it is not
    /// an IP) probes go to 127.0.0.1.
    pub fn new(table: ProberTable, address: Option<&str>) -> Result<Self, String> {
        let destination = address
            .and_then(|a| a.parse::<IpAddr>().ok())
            .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
        Ok(Self {
            table,
            destination,
            tls: Arc::new(insecure_client_config()?),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.table.paths()
    }

    /// The outcome of the probe declared at `path`, or None if none is.
    pub async fn answer(&self, path: &str) -> Option<Verdict> {
        let prober = self.table.0.get(path)?;
        let timeout = prober.timeout;
        let verdict = tokio::time::timeout(timeout, self.replay(&prober.check))
            .await
            .unwrap_or_else(|_| {
                Verdict::Unreachable(format!("no answer within {}s", timeout.as_secs()))
            });
        if !matches!(verdict, Verdict::Healthy(_)) {
            tracing::debug!(path, outcome = verdict.text(), "app probe failed");
        }
        Some(verdict)
    }

    async fn replay(&self, check: &Check) -> Verdict {
        match check {
            Check::Http(http) => self.http(http).await,
            Check::Tcp { host, port } => {
                let target = self.target(host.as_deref(), *port);
                match connect(&target).await {
                    Ok(_) => Verdict::Healthy(format!("connected to {target}")),
                    Err(err) => Verdict::Unreachable(format!("cannot connect to {target}: {err}")),
                }
            }
            Check::Grpc { port, service } => {
                let address = SocketAddr::new(self.destination, *port);
                grpc_health::check(address, service).await
            }
        }
    }

    /// `host:port` as the kubelet would connect (an IPv6 host bracketed).
    fn target(&self, host: Option<&str>, port: u16) -> String {
        match host {
            Some(host) if host.contains(':') && !host.starts_with('[') => {
                format!("[{host}]:{port}")
            }
            Some(host) => format!("{host}:{port}"),
            None => SocketAddr::new(self.destination, port).to_string(),
        }
    }

    async fn http(&self, check: &HttpCheck) -> Verdict {
        let target = self.target(check.host.as_deref(), check.port);
        let scheme = if check.https { "https" } else { "http" };
        let url = format!("{scheme}://{target}{}", check.path);
        let stream = match connect(&target).await {
            Ok(stream) => stream,
            Err(err) => return Verdict::Unreachable(format!("cannot connect to {target}: {err}")),
        };
        let request = match request(check, &target) {
            Ok(request) => request,
            Err(err) => {
                return Verdict::Failing(format!("cannot build the probe for {url}: {err}"));
            }
        };
        let status = if check.https {
            let host = check
                .host
                .clone()
                .unwrap_or_else(|| self.destination.to_string());
            let name = match ServerName::try_from(host) {
                Ok(name) => name,
                Err(err) => return Verdict::Failing(format!("{url}: {err}")),
            };
            let connector = tokio_rustls::TlsConnector::from(self.tls.clone());
            match connector.connect(name, stream).await {
                Ok(tls) => exchange(tls, request).await,
                Err(err) => {
                    return Verdict::Unreachable(format!("TLS handshake with {target}: {err}"));
                }
            }
        } else {
            exchange(stream, request).await
        };
        match status {
            // The kubelet counts redirects as success too.
            Ok(status) if status.is_success() || status.is_redirection() => {
                Verdict::Healthy(format!("GET {url}: {status}"))
            }
            Ok(status) => Verdict::Failing(format!("GET {url}: the app answered {status}")),
            Err(err) => Verdict::Unreachable(format!("GET {url}: {err}")),
        }
    }
}

async fn connect(target: &str) -> std::io::Result<TcpStream> {
    let stream = TcpStream::connect(target).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// The probe's GET: its path and headers, a `Host` of the target unless
/// the probe names one, the kubelet's `Accept`.
fn request(check: &HttpCheck, target: &str) -> Result<Request<Empty<Bytes>>, http::Error> {
    let mut builder = Request::get(check.path.as_str());
    let named = |name: &HeaderName| check.headers.iter().any(|(n, _)| n == name);
    if !named(&header::HOST) {
        builder = builder.header(header::HOST, target);
    }
    if !named(&header::USER_AGENT) {
        builder = builder.header(header::USER_AGENT, USER_AGENT);
    }
    if !named(&header::ACCEPT) {
        builder = builder.header(header::ACCEPT, "*/*");
    }
    for (name, value) in &check.headers {
        builder = builder.header(name, value);
    }
    builder.body(Empty::new())
}

/// Sends `request` over `io` (HTTP/1.1) and returns the answer's status;
/// the body is not read (the status is the verdict).
async fn exchange<IO>(io: IO, request: Request<Empty<Bytes>>) -> Result<StatusCode, String>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = http1::handshake(TokioIo::new(io))
        .await
        .map_err(|err| err.to_string())?;
    let driver = tokio::spawn(connection);
    let answer = sender.send_request(request).await;
    driver.abort();
    answer.map(|r| r.status()).map_err(|err| err.to_string())
}

/// HTTPS probes verify nothing, as the kubelet's do: the app's certificate
/// is often self-signed, and the probe only asks whether it answers.
fn insecure_client_config() -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|err| err.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(crate::tls::AcceptAny::new(provider)))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn istio_json_is_read_with_ports_timeouts_and_headers() {
        let table = parse_probers(
            r#"{
              "/app-health/app/livez": {"httpGet": {"path": "healthz", "port": 8080, "scheme": "HTTPS",
                  "httpHeaders": [{"name": "X-Probe", "value": "1"}]}, "timeoutSeconds": 3},
              "/app-health/app/readyz": {"tcpSocket": {"port": "9090"}},
              "/app-health/app/startupz": {"grpc": {"port": 7070, "service": "shop"}, "timeoutSeconds": 0}
            }"#,
        )
        .expect("parses");
        let live = &table.0["/app-health/app/livez"];
        assert_eq!(live.timeout, Duration::from_secs(3));
        let Check::Http(http) = &live.check else {
            panic!("{live:?}")
        };
        assert_eq!(
            (http.port, http.path.as_str(), http.https),
            (8080, "/healthz", true)
        );
        assert_eq!(http.headers.len(), 1);
        let ready = &table.0["/app-health/app/readyz"];
        assert_eq!(
            ready.check,
            Check::Tcp {
                host: None,
                port: 9090
            }
        );
        assert_eq!(ready.timeout, DEFAULT_TIMEOUT);
        let startup = &table.0["/app-health/app/startupz"];
        assert_eq!(
            startup.check,
            Check::Grpc {
                port: 7070,
                service: "shop".into()
            }
        );
        assert!(parse_probers("").expect("empty").is_empty());
    }

    #[test]
    fn bad_tables_are_refused_naming_the_path_and_field() {
        let named = parse_probers(r#"{"/app-health/app/livez": {"tcpSocket": {"port": "http"}}}"#)
            .expect_err("named port");
        assert!(
            named.contains("/app-health/app/livez") && named.contains("tcpSocket.port"),
            "{named}"
        );
        let unknown = parse_probers(r#"{"/app-health/a/livez": {"exec": {"command": ["true"]}}}"#)
            .expect_err("exec");
        assert!(unknown.contains("exec"), "{unknown}");
        let two = parse_probers(
            r#"{"/app-health/a/livez": {"tcpSocket": {"port": 1}, "grpc": {"port": 2}}}"#,
        )
        .expect_err("two checks");
        assert!(two.contains("exactly one"), "{two}");
        let outside =
            parse_probers(r#"{"/stats": {"tcpSocket": {"port": 1}}}"#).expect_err("prefix");
        assert!(outside.contains("/app-health/"), "{outside}");
        let scheme =
            parse_probers(r#"{"/app-health/a/livez": {"httpGet": {"port": 1, "scheme": "FTP"}}}"#)
                .expect_err("scheme");
        assert!(scheme.contains("httpGet.scheme"), "{scheme}");
    }
}
