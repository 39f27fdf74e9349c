//! A workload with a real sidecar for the authorization and JWT tests: a
//! network namespace whose nat rules send connections for the workload's
//! ports (18080 HTTP, 19000 TCP) to the proxy's inbound capture port 15006,
//! as Istio's init container does; weftd, the proxy and the app all run in
//! it. Callers dial 127.0.0.5:<port> (any address but 127.0.0.1 is
//! captured) from a source address of their choosing.
//!
//! Needs root, `ip` and `iptables`; under `CI=true` it fails rather than skip.

#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use weft_testkit::free_addr;
use weft_testkit::netns::{NetNs, privileged_or_skip};
use weft_testkit::proxy::{ProxyOptions, ProxyProcess};
use weft_testkit::weftd::WeftdProcess;

pub const WEFTD: &str = env!("CARGO_BIN_EXE_weftd");
pub const HTTP_PORT: u16 = 18080;
pub const TCP_PORT: u16 = 19000;
/// The workload as callers reach it (captured to the proxy).
pub const WORKLOAD_IP: &str = "127.0.0.5";

/// Runs `body` inside a fresh namespace with the capture rules; false when
/// the test is skipped (not root, outside CI).
pub fn in_namespace<F, Fut>(test: &str, body: F) -> bool
where
    F: FnOnce() -> Fut + Send,
    Fut: Future<Output = ()>,
{
    if !privileged_or_skip(test) {
        return false;
    }
    let tag: String = test
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(8)
        .collect();
    let netns = NetNs::create(&format!("az{tag}")).expect("create namespace");
    let rules: [&[&str]; 3] = [
        &["-d", "127.0.0.1/32", "-j", "RETURN"],
        &["--dport", "18080", "-j", "REDIRECT", "--to-ports", "15006"],
        &["--dport", "19000", "-j", "REDIRECT", "--to-ports", "15006"],
    ];
    for rule in rules {
        let mut argv = vec!["iptables", "-t", "nat", "-A", "OUTPUT", "-p", "tcp"];
        argv.extend_from_slice(rule);
        netns.exec(&argv).expect("install nat rule");
    }
    netns
        .run(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(body())
        })
        .expect("enter namespace");
    true
}

/// weftd, the app (HTTP on 18080 echoing what it got, TCP echo on 19000)
/// and its sidecar `web` (namespace `default`, label `app=web`).
pub struct Workload {
    pub weftd: WeftdProcess,
    pub proxy: ProxyProcess,
    _app: tokio::task::JoinHandle<()>,
    _tcp: tokio::task::JoinHandle<()>,
    _state: tempfile::TempDir,
}

impl Workload {
    /// Applies `yaml` (policies), then starts the sidecar, so its first
    /// config already holds them.
    pub async fn start(yaml: &str, namespace: &str, labels: &[&str]) -> Self {
        let state = tempfile::tempdir().expect("tempdir");
        let weftd = WeftdProcess::start(
            Path::new(WEFTD),
            &state.path().join("store"),
            free_addr(),
            free_addr(),
        )
        .await
        .expect("weftd");
        if !yaml.is_empty() {
            let reply = weftd.apply(yaml).await.expect("apply");
            assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        }
        let app = serve_app(HTTP_PORT).await;
        let tcp = tcp_echo(TCP_PORT).await;
        let binary: PathBuf = Path::new(WEFTD).with_file_name("weft-proxy");
        let http_port = format!("{HTTP_PORT}/http");
        let tcp_port = format!("{TCP_PORT}/tcp");
        let mut args = vec![
            "--node-id",
            "web-1",
            "--workload",
            "web",
            "--namespace",
            namespace,
            "--port",
            &http_port,
            "--port",
            &tcp_port,
            "--capture",
        ];
        for label in labels {
            args.extend(["--label", label]);
        }
        let mut proxy =
            ProxyProcess::spawn(ProxyOptions::control_plane(&binary, weftd.grpc, &args))
                .expect("proxy");
        proxy
            .wait_ready(Duration::from_secs(20))
            .await
            .unwrap_or_else(|err| panic!("proxy ready: {err}\n{}", proxy.logs()));
        Self {
            weftd,
            proxy,
            _app: app,
            _tcp: tcp,
            _state: state,
        }
    }

    /// Applies more YAML and waits until `probe` holds (a push takes a
    /// moment to arrive).
    pub async fn apply_until<F, Fut>(&self, yaml: &str, probe: F)
    where
        F: Fn() -> Fut,
        Fut: Future<Output = bool>,
    {
        let reply = self.weftd.apply(yaml).await.expect("apply");
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        let deadline = Instant::now() + Duration::from_secs(10);
        while !probe().await {
            assert!(
                Instant::now() < deadline,
                "policy not in effect after 10 s\nproxy log:\n{}",
                self.proxy.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The app's HTTP side (HTTP/1.1 and HTTP/2) on 127.0.0.1:<port>, the
/// inbound target.
async fn serve_app(port: u16) -> tokio::task::JoinHandle<()> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("bind app port");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(TokioIo::new(stream), service_fn(echo_request))
                .await;
            });
        }
    })
}

/// Answers `path=<path and query>` and, one per line, every request header
/// `name: value`, so tests see exactly what reached the app.
async fn echo_request(
    request: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut text = format!(
        "path={}\n",
        request.uri().path_and_query().map_or("/", |p| p.as_str())
    );
    for (name, value) in request.headers() {
        text.push_str(&format!(
            "{name}: {}\n",
            value.to_str().unwrap_or("<binary>")
        ));
    }
    Ok(Response::new(Full::new(Bytes::from(text))))
}

async fn tcp_echo(port: u16) -> tokio::task::JoinHandle<()> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("bind tcp port");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                while let Ok(n) = stream.read(&mut buf).await {
                    if n == 0 || stream.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    })
}

/// What the caller got.
pub struct Answer {
    pub status: StatusCode,
    pub body: String,
}

/// One HTTP/1.1 request to the workload from `source` (an address on lo).
pub async fn call(
    source: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> anyhow::Result<Answer> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source.parse()?, 0))?;
    let target: SocketAddr = format!("{WORKLOAD_IP}:{HTTP_PORT}").parse()?;
    let stream = socket.connect(target).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, "web.default.svc.cluster.local");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = sender
        .send_request(request.body(Full::new(Bytes::new()))?)
        .await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    Ok(Answer {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

pub async fn get(path: &str) -> Answer {
    call("127.0.0.1", "GET", path, &[])
        .await
        .unwrap_or_else(|err| panic!("GET {path}: {err}"))
}

/// Writes to the workload's TCP port and reads until the connection ends
/// or 2 s pass: the echo on success, nothing when the proxy closed it.
pub async fn tcp_exchange(payload: &[u8]) -> Vec<u8> {
    let target = format!("{WORKLOAD_IP}:{TCP_PORT}");
    let mut stream = tokio::net::TcpStream::connect(&target)
        .await
        .expect("connect to the workload's TCP port");
    let _ = stream.write_all(payload).await;
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while got.len() < payload.len() {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
    got
}
