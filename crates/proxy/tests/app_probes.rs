//! Istio's app probes on the status port (15020 `/app-health/...`): the
//! proxy replays each declared probe to a real app (HTTP, HTTPS with a
//! self-signed certificate, TCP, gRPC health) on the pod's address and
//! answers 200 only when the app is healthy.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use weft_testkit::client::{self, Http1Client};
use weft_testkit::free_addr;
use weft_testkit::proxy::{ProxyOptions, ProxyProcess};

const BIN: &str = env!("CARGO_BIN_EXE_weft-proxy");
const CONFIG: &str = "version: probes\n";

/// The app's HTTP answers, by path. `/healthy` also checks that the probe
/// carries the declared headers and nothing of the kubelet's request.
async fn app(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let headers = request.headers();
    let status = match request.uri().path() {
        "/healthy" => {
            let declared = headers.get("x-probe").is_some_and(|v| v == "yes")
                && headers.get("host").is_some_and(|v| v == "app.local")
                && headers
                    .get("user-agent")
                    .is_some_and(|v| v.as_bytes().starts_with(b"kube-probe/"));
            if declared && headers.get("x-from-caller").is_none() {
                StatusCode::OK
            } else {
                StatusCode::BAD_REQUEST
            }
        }
        "/sick" => StatusCode::INTERNAL_SERVER_ERROR,
        "/moved" => StatusCode::FOUND,
        "/slow" => {
            tokio::time::sleep(Duration::from_secs(5)).await;
            StatusCode::OK
        }
        _ => StatusCode::NOT_FOUND,
    };
    let mut response = Response::new(Full::new(Bytes::from_static(b"app\n")));
    *response.status_mut() = status;
    Ok(response)
}

/// Serves [`app`] over HTTP/1 on `ip`, through TLS when `tls` is given.
async fn serve_app(ip: IpAddr, tls: Option<tokio_rustls::TlsAcceptor>) -> SocketAddr {
    let listener = TcpListener::bind((ip, 0)).await.expect("bind app");
    let addr = listener.local_addr().expect("app address");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let tls = tls.clone();
            tokio::spawn(async move {
                let builder = hyper::server::conn::http1::Builder::new();
                let _ = match tls {
                    Some(acceptor) => match acceptor.accept(stream).await {
                        Ok(stream) => {
                            builder
                                .serve_connection(TokioIo::new(stream), service_fn(app))
                                .await
                        }
                        Err(_) => return,
                    },
                    None => {
                        builder
                            .serve_connection(TokioIo::new(stream), service_fn(app))
                            .await
                    }
                };
            });
        }
    });
    addr
}

/// A self-signed certificate no verifier would accept for this address.
fn self_signed() -> tokio_rustls::TlsAcceptor {
    let cert = rcgen::generate_simple_self_signed(vec!["app.invalid".to_string()]).expect("cert");
    let key = rustls_pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .expect("server config");
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

#[derive(Clone, PartialEq, prost::Message)]
struct HealthCheckRequest {
    #[prost(string, tag = "1")]
    service: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct HealthCheckResponse {
    #[prost(int32, tag = "1")]
    status: i32,
}

type GrpcBody =
    StreamBody<futures_util::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>>;

/// `grpc.health.v1.Health/Check` over HTTP/2: "" is SERVING, "down" is
/// NOT_SERVING, anything else is the NOT_FOUND error a real server gives.
async fn health(request: Request<Incoming>) -> Result<Response<GrpcBody>, Infallible> {
    let path_ok = request.uri().path() == "/grpc.health.v1.Health/Check";
    let body = request
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let service = (body.len() >= 5)
        .then(|| <HealthCheckRequest as prost::Message>::decode(&body[5..]).ok())
        .flatten()
        .map(|r| r.service);
    let (status, grpc_status) = match (path_ok, service.as_deref()) {
        (true, Some("")) => (Some(1), "0"),
        (true, Some("down")) => (Some(2), "0"),
        _ => (None, "5"),
    };
    let mut frames = Vec::new();
    if let Some(status) = status {
        let message = prost::Message::encode_to_vec(&HealthCheckResponse { status });
        let mut framed = vec![0u8];
        framed.extend((message.len() as u32).to_be_bytes());
        framed.extend(message);
        frames.push(Ok(Frame::data(Bytes::from(framed))));
    }
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", http::HeaderValue::from_static(grpc_status));
    frames.push(Ok(Frame::trailers(trailers)));
    let mut response = Response::new(StreamBody::new(futures_util::stream::iter(frames)));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    Ok(response)
}

async fn serve_health(ip: IpAddr) -> SocketAddr {
    let listener = TcpListener::bind((ip, 0)).await.expect("bind grpc");
    let addr = listener.local_addr().expect("grpc address");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service_fn(health))
                    .await;
            });
        }
    });
    addr
}

async fn probe(status_port: SocketAddr, path: &str) -> (StatusCode, String) {
    let mut request = client::request(Method::GET, "kubelet", path, client::empty());
    // What a caller adds must never reach the app.
    request
        .headers_mut()
        .insert("x-from-caller", http::HeaderValue::from_static("1"));
    let reply = Http1Client::connect(status_port)
        .await
        .expect("connect to the status port")
        .send(request)
        .await
        .expect("probe");
    (reply.status, reply.text())
}

#[tokio::test]
async fn each_probe_answers_with_the_apps_health() {
    // The "pod address": an address the proxy is told (--address) and the
    // apps listen on, never 127.0.0.1, so a replay to loopback would fail.
    let pod_ip = free_addr().ip();
    assert_ne!(pod_ip.to_string(), "127.0.0.1");
    let http = serve_app(pod_ip, None).await;
    let https = serve_app(pod_ip, Some(self_signed())).await;
    let grpc = serve_health(pod_ip).await;
    let open = TcpListener::bind((pod_ip, 0)).await.expect("bind tcp");
    let closed = TcpListener::bind((pod_ip, 0))
        .await
        .expect("bind")
        .local_addr()
        .expect("address")
        .port(); // dropped: connections to it are refused
    let (port, open_port, tls_port, grpc_port) = (
        http.port(),
        open.local_addr().expect("tcp").port(),
        https.port(),
        grpc.port(),
    );
    let probers = serde_json::json!({
        "/app-health/web/livez": {"httpGet": {"path": "/healthy", "port": port, "scheme": "HTTP",
            "httpHeaders": [{"name": "X-Probe", "value": "yes"}, {"name": "Host", "value": "app.local"}]},
            "timeoutSeconds": 1},
        "/app-health/web/readyz": {"httpGet": {"path": "/sick", "port": port}, "timeoutSeconds": 1},
        "/app-health/web/startupz": {"httpGet": {"path": "/slow", "port": port}, "timeoutSeconds": 1},
        "/app-health/moved/livez": {"httpGet": {"path": "/moved", "port": port.to_string()}},
        "/app-health/tls/livez": {"httpGet": {"path": "/sick", "port": tls_port, "scheme": "HTTPS"}},
        "/app-health/tls/readyz": {"httpGet": {"path": "/moved", "port": tls_port, "scheme": "HTTPS"}},
        "/app-health/db/livez": {"tcpSocket": {"port": open_port}},
        "/app-health/db/readyz": {"tcpSocket": {"port": closed}},
        "/app-health/rpc/livez": {"grpc": {"port": grpc_port}},
        "/app-health/rpc/readyz": {"grpc": {"port": grpc_port, "service": "down"}},
        "/app-health/rpc/startupz": {"grpc": {"port": grpc_port, "service": "unknown"}},
    });
    // No --merged-metrics: probes alone are reason enough to serve 15020.
    let status_port = free_addr();
    let mut options = ProxyOptions::new(Path::new(BIN), CONFIG);
    options.args = vec![
        "--app-probers".into(),
        probers.to_string(),
        "--status".into(),
        status_port.to_string(),
        "--address".into(),
        pod_ip.to_string(),
    ];
    let proxy = ProxyProcess::spawn_ready(options, Duration::from_secs(20))
        .await
        .expect("proxy ready");

    for (path, expected) in [
        ("/app-health/web/livez", StatusCode::OK),
        ("/app-health/web/readyz", StatusCode::INTERNAL_SERVER_ERROR),
        ("/app-health/moved/livez", StatusCode::OK),
        ("/app-health/tls/livez", StatusCode::INTERNAL_SERVER_ERROR),
        ("/app-health/tls/readyz", StatusCode::OK),
        ("/app-health/db/livez", StatusCode::OK),
        ("/app-health/db/readyz", StatusCode::SERVICE_UNAVAILABLE),
        ("/app-health/rpc/livez", StatusCode::OK),
        ("/app-health/rpc/readyz", StatusCode::INTERNAL_SERVER_ERROR),
        (
            "/app-health/rpc/startupz",
            StatusCode::INTERNAL_SERVER_ERROR,
        ),
        // Only declared paths: nothing else reaches the app.
        ("/app-health/web/other", StatusCode::NOT_FOUND),
        ("/app-health/web/livez/", StatusCode::NOT_FOUND),
        ("/stats/prometheus", StatusCode::NOT_FOUND),
    ] {
        let (status, text) = probe(status_port, path).await;
        assert_eq!(status, expected, "{path}: {text}\n{}", proxy.logs());
    }
    let (_, text) = probe(status_port, "/app-health/rpc/readyz").await;
    assert!(text.contains("NOT_SERVING"), "{text}");
    let (_, text) = probe(status_port, "/app-health/web/readyz").await;
    assert!(text.contains("500"), "{text}");

    // timeoutSeconds: 1 against an app that takes 5 s.
    let started = Instant::now();
    let (status, text) = probe(status_port, "/app-health/web/startupz").await;
    let took = started.elapsed();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{text}");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(3000),
        "answered after {took:?}"
    );

    // Probes are GETs, as the kubelet's.
    let post = client::request(
        Method::POST,
        "kubelet",
        "/app-health/web/livez",
        client::empty(),
    );
    let reply = Http1Client::connect(status_port)
        .await
        .expect("connect")
        .send(post)
        .await
        .expect("post");
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    drop(open);
}

#[tokio::test]
async fn probes_share_the_merged_metrics_port() {
    let http = serve_app(IpAddr::from([127, 0, 0, 1]), None).await;
    let merged = free_addr();
    let probers = serde_json::json!({
        "/app-health/web/readyz": {"httpGet": {"path": "/moved", "port": http.port()}},
    });
    let mut options = ProxyOptions::new(Path::new(BIN), CONFIG);
    options.args = vec![
        "--merged-metrics".into(),
        merged.to_string(),
        "--app-probers".into(),
        probers.to_string(),
    ];
    let proxy = ProxyProcess::spawn_ready(options, Duration::from_secs(20))
        .await
        .expect("proxy ready");
    // Without --address the probe goes to 127.0.0.1.
    let (status, text) = probe(merged, "/app-health/web/readyz").await;
    assert_eq!(status, StatusCode::OK, "{text}\n{}", proxy.logs());
    let metrics = client::get(merged, "metrics", "/stats/prometheus")
        .await
        .expect("scrape");
    assert_eq!(metrics.status, StatusCode::OK);
    assert!(metrics.text().contains("weft_config_reloads_total"));
}

#[tokio::test]
async fn a_bad_prober_table_stops_the_proxy_at_start() {
    // Read from Istio's environment variable, as injection sets it.
    let log = tempfile::NamedTempFile::new().expect("log");
    let status = tokio::process::Command::new(BIN)
        .args(["--config", "/dev/null", "--status"])
        .arg(free_addr().to_string())
        .env(
            "ISTIO_KUBE_APP_PROBERS",
            r#"{"/app-health/app/livez": {"httpGet": {"port": "http", "path": "/"}}}"#,
        )
        .stdout(std::process::Stdio::null())
        .stderr(log.reopen().expect("log"))
        .kill_on_drop(true)
        .status();
    let status = tokio::time::timeout(Duration::from_secs(20), status)
        .await
        .expect("exits")
        .expect("ran");
    assert!(!status.success());
    let mut text = String::new();
    std::io::Read::read_to_string(&mut log.reopen().expect("log"), &mut text).expect("read");
    assert!(
        text.contains("ISTIO_KUBE_APP_PROBERS") || text.contains("app-probers"),
        "{text}"
    );
    assert!(
        text.contains("httpGet.port") && text.contains("/app-health/app/livez"),
        "{text}"
    );
}
