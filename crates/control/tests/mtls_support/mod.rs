//! Shared by the mTLS tests: weftd with its CA, proxies holding (or not)
//! a workload certificate, an echo backend that shows what the server side
//! learnt, and a relay that records the bytes between two sidecars.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use weft_testkit::backend::{Served, serve};
use weft_testkit::client::{Http1Client, Reply};
use weft_testkit::free_addr;
use weft_testkit::proxy::{ProxyOptions, ProxyProcess};
use weft_testkit::weftd::WeftdProcess;

pub const WEFTD: &str = env!("CARGO_BIN_EXE_weftd");
pub const SERVER_ID: &str = "spiffe://cluster.local/ns/default/sa/httpbin";
pub const CLIENT_ID: &str = "spiffe://cluster.local/ns/default/sa/sleep";

pub fn proxy_binary() -> PathBuf {
    weft_testkit::cli::sibling(WEFTD, "weft-proxy")
}

pub struct Control {
    pub weftd: WeftdProcess,
    pub dir: tempfile::TempDir,
}

impl Control {
    pub async fn start(extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let weftd = WeftdProcess::start_with(
            Path::new(WEFTD),
            &dir.path().join("state"),
            free_addr(),
            free_addr(),
            extra,
        )
        .await
        .expect("weftd starts");
        Self { weftd, dir }
    }

    /// Kills weftd; [`restart_weftd`](Self::restart_weftd) brings it back.
    pub async fn kill_weftd(&mut self) {
        self.weftd.kill().await.expect("kill weftd");
    }

    /// weftd again on the same addresses and state directory (without the
    /// first start's extra flags).
    pub async fn restart_weftd(&mut self) {
        let (grpc, xds, api) = (self.weftd.grpc, self.weftd.xds, self.weftd.api);
        self.weftd = WeftdProcess::start_at(
            Path::new(WEFTD),
            &self.dir.path().join("state"),
            grpc,
            xds,
            api,
            &[],
        )
        .await
        .expect("weftd restarts");
    }

    /// A token file for `sa` in the default namespace, through a
    /// WorkloadGroup named after it ([`group_yaml`]).
    pub async fn token_file(&self, sa: &str) -> PathBuf {
        self.bound_token_file(sa, None).await
    }

    /// [`token_file`](Self::token_file) bound to `address`: weftd
    /// registers the proxy there whatever address it connects from.
    pub async fn bound_token_file(&self, sa: &str, address: Option<&str>) -> PathBuf {
        self.apply(&group_yaml(sa)).await;
        let bound = address.map(|a| a.parse().expect("an IP address"));
        let token = self
            .weftd
            .mint_token_with("default", sa, bound, None)
            .await
            .expect("token")
            .token;
        let path = self.dir.path().join(format!("{sa}.token"));
        std::fs::write(&path, token).expect("write token");
        path
    }

    pub async fn apply(&self, yaml: &str) {
        let reply = self.weftd.apply(yaml).await.expect("apply");
        assert_eq!(reply.status, 200, "apply: {}", reply.text());
    }

    /// A proxy fed by weftd for service account `sa` (also its node id)
    /// with a token (so a certificate) and `args`, once it is ready.
    /// A claimed `--address` is bound into the token, as weftd registers a
    /// proxy at its bound address or the one it connects from, nothing else.
    pub async fn ready_proxy(&self, sa: &str, args: &[&str]) -> ProxyProcess {
        let address = args
            .iter()
            .position(|arg| *arg == "--address")
            .and_then(|at| args.get(at + 1).copied());
        let token = self.bound_token_file(sa, address).await;
        let args = [&["--node-id", sa, "--service-account", sa], args].concat();
        let binary = proxy_binary();
        let options = self.secure_options(&binary, &token, &args);
        ProxyProcess::spawn_ready(options, Duration::from_secs(20))
            .await
            .unwrap_or_else(|err| panic!("proxy {args:?}: {err:#}"))
    }

    /// How a proxy with `token` reaches weftd: its TLS port, the held root.
    pub fn secure_options<'a>(
        &self,
        binary: &'a Path,
        token: &Path,
        args: &[&str],
    ) -> ProxyOptions<'a> {
        ProxyOptions::secure(binary, self.weftd.xds, &self.weftd.root_cert, token, args)
    }

    /// Options for a proxy with `token` (TLS) or without (plaintext port).
    pub fn options<'a>(
        &self,
        binary: &'a Path,
        token: Option<&Path>,
        args: &[&str],
    ) -> ProxyOptions<'a> {
        match token {
            Some(token) => self.secure_options(binary, token, args),
            None => ProxyOptions::control_plane(binary, self.weftd.grpc, args),
        }
    }

    /// A proxy fed by weftd with `args` and no token (no workload
    /// certificate), once it is ready.
    pub async fn ready_tokenless_proxy(&self, args: &[&str]) -> ProxyProcess {
        let binary = proxy_binary();
        let options = ProxyOptions::control_plane(&binary, self.weftd.grpc, args);
        ProxyProcess::spawn_ready(options, Duration::from_secs(20))
            .await
            .unwrap_or_else(|err| panic!("proxy {args:?}: {err:#}"))
    }

    /// [`server_proxy`] with an httpbin token, once it holds a certificate.
    pub async fn ready_server(
        &self,
        id: &str,
        backend: SocketAddr,
        inbound: SocketAddr,
        extra: &[&str],
    ) -> ProxyProcess {
        let token = self.token_file("httpbin").await;
        self.ready_server_with_token(id, backend, inbound, &token, extra)
            .await
    }

    /// [`ready_server`](Self::ready_server) with a token minted earlier.
    pub async fn ready_server_with_token(
        &self,
        id: &str,
        backend: SocketAddr,
        inbound: SocketAddr,
        token: &Path,
        extra: &[&str],
    ) -> ProxyProcess {
        let mut server = server_proxy(self, id, backend, inbound, Some(token), extra);
        server
            .wait_ready(Duration::from_secs(20))
            .await
            .unwrap_or_else(|err| panic!("server proxy {id} ready: {err:#}"));
        server
    }

    /// [`client_proxy`], ready; `with_token` gives it a token for `sa` (and
    /// so a certificate), without one it stays a plaintext legacy client.
    pub async fn ready_client(
        &self,
        id: &str,
        sa: &str,
        listen: SocketAddr,
        with_token: bool,
    ) -> ProxyProcess {
        let token = if with_token {
            Some(self.token_file(sa).await)
        } else {
            None
        };
        let mut client = client_proxy(self, id, sa, listen, token.as_deref());
        client
            .wait_ready(Duration::from_secs(20))
            .await
            .unwrap_or_else(|err| panic!("client proxy {id} ready: {err:#}"));
        client
    }
}

/// The WorkloadGroup of the test workload `sa` (its service account too):
/// weftd registers a proxy with these labels, and refuses one claiming
/// others. `app: <sa>`, and httpbin is `version: v1`, as in Istio's samples.
pub fn group_yaml(sa: &str) -> String {
    let version = if sa == "httpbin" { ", version: v1" } else { "" };
    format!(
        "apiVersion: networking.istio.io/v1\nkind: WorkloadGroup\nmetadata: {{name: {sa}}}\n\
         spec:\n  metadata: {{labels: {{app: {sa}{version}}}}}\n  template: {{serviceAccount: {sa}}}\n"
    )
}

/// The httpbin service on the server proxy's workload port `backend`.
pub fn service_yaml(backend: u16) -> String {
    format!(
        r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: httpbin}}
spec:
  hosts: [httpbin.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 8000, name: http, protocol: HTTP, targetPort: {backend}}}]
  workloadSelector: {{labels: {{app: httpbin}}}}
"#
    )
}

/// Answers `xfcc=<x-forwarded-client-cert or -> version=<HTTP version>`.
pub async fn echo_backend() -> Served {
    serve(echo).await
}

/// [`echo_backend`] on a fixed address (a workload port a policy names).
pub async fn echo_backend_on(addr: SocketAddr) -> tokio::task::JoinHandle<()> {
    let listener = TcpListener::bind(addr).await.expect("bind echo backend");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(
                    hyper_util::rt::TokioIo::new(stream),
                    hyper::service::service_fn(echo),
                )
                .await;
            });
        }
    })
}

async fn echo(
    request: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let xfcc = request
        .headers()
        .get("x-forwarded-client-cert")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_string();
    let path = request.uri().path().to_string();
    if let Some(ms) = path.strip_prefix("/slow/").and_then(|ms| ms.parse().ok()) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let body = format!("xfcc={xfcc} version={:?}", request.version());
    Ok(Response::new(Full::new(Bytes::from(body))))
}

/// The flags of a proxy `id` for app httpbin (service account httpbin)
/// serving HTTP at `backend`, reached by mesh callers at `inbound` if given.
pub fn httpbin_args(id: &str, backend: SocketAddr, inbound: Option<SocketAddr>) -> Vec<String> {
    let mut args = vec![
        "--node-id".to_string(),
        id.to_string(),
        "--label".to_string(),
        "app=httpbin".to_string(),
        "--service-account".to_string(),
        "httpbin".to_string(),
        "--port".to_string(),
        format!("{}/http", backend.port()),
    ];
    if let Some(inbound) = inbound {
        args.push("--inbound".to_string());
        args.push(format!("{inbound}={}", backend.port()));
    }
    args
}

/// The server-side sidecar: workload httpbin serving `backend`, reached by
/// mesh callers at `inbound`.
pub fn server_proxy(
    control: &Control,
    id: &str,
    backend: SocketAddr,
    inbound: SocketAddr,
    token: Option<&Path>,
    extra: &[&str],
) -> ProxyProcess {
    let owned = httpbin_args(id, backend, Some(inbound));
    let mut args: Vec<&str> = owned.iter().map(String::as_str).collect();
    args.extend(["--workload", "httpbin"]);
    args.extend(extra);
    let binary = proxy_binary();
    ProxyProcess::spawn(control.options(&binary, token, &args)).expect("spawn server proxy")
}

/// A client-side sidecar whose app reaches httpbin:8000 at `listen`.
pub fn client_proxy(
    control: &Control,
    id: &str,
    sa: &str,
    listen: SocketAddr,
    token: Option<&Path>,
) -> ProxyProcess {
    let listen_flag = format!("{listen}=httpbin:8000");
    let args = vec![
        "--node-id",
        id,
        "--workload",
        id,
        "--service-account",
        sa,
        "--listen",
        &listen_flag,
    ];
    let binary = proxy_binary();
    ProxyProcess::spawn(control.options(&binary, token, &args)).expect("spawn client proxy")
}

pub async fn get(listen: SocketAddr, path: &str) -> anyhow::Result<Reply> {
    Http1Client::connect(listen)
        .await?
        .get("httpbin", path)
        .await
}

/// Polls `listen` until a reply satisfies `wanted`; the last reply (or
/// error) otherwise.
pub async fn eventually(
    listen: SocketAddr,
    path: &str,
    wanted: impl Fn(&Reply) -> bool,
) -> Result<Reply, String> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let last = match get(listen, path).await {
            Ok(reply) if wanted(&reply) => return Ok(reply),
            Ok(reply) => format!("{} {}", reply.status, reply.text()),
            Err(err) => format!("{err:#}"),
        };
        if Instant::now() > deadline {
            return Err(last);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The bytes each way through one relayed connection.
#[derive(Default)]
pub struct Recorded {
    pub to_server: Vec<u8>,
    pub to_client: Vec<u8>,
}

/// A TCP relay to `target` that records everything it carries.
pub async fn recording_relay(target: SocketAddr) -> (SocketAddr, Arc<Mutex<Recorded>>) {
    let listener = TcpListener::bind(free_addr()).await.expect("relay bind");
    let addr = listener.local_addr().expect("relay addr");
    let recorded = Arc::new(Mutex::new(Recorded::default()));
    let shared = recorded.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = TcpStream::connect(target).await else {
                continue;
            };
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            tokio::spawn(pump(client_read, server_write, shared.clone(), |r| {
                &mut r.to_server
            }));
            tokio::spawn(pump(server_read, client_write, shared.clone(), |r| {
                &mut r.to_client
            }));
        }
    });
    (addr, recorded)
}

/// Copies `from` to `to` until either side ends, recording the bytes in
/// the `side` of `recorded`.
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    recorded: Arc<Mutex<Recorded>>,
    side: fn(&mut Recorded) -> &mut Vec<u8>,
) {
    let mut buf = [0u8; 16384];
    while let Ok(n) = from.read(&mut buf).await {
        if n == 0 || to.write_all(&buf[..n]).await.is_err() {
            break;
        }
        side(&mut recorded.lock().expect("lock")).extend_from_slice(&buf[..n]);
    }
    let _ = to.shutdown().await;
}

pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// `/certs` of a proxy as JSON text.
pub async fn certs(proxy: &ProxyProcess) -> String {
    proxy.admin_get("/certs").await.expect("/certs").text()
}

/// A field of `/certs` (top level or under `certificate`), as text.
pub fn cert_field(certs: &str, field: &str) -> Option<String> {
    let json: serde_json::Value = serde_json::from_str(certs).ok()?;
    let value = json
        .get(field)
        .or_else(|| json.get("certificate").and_then(|c| c.get(field)))?;
    Some(match value {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    })
}

/// A gRPC channel to weftd's TLS port as a proxy makes it: weftd verified
/// against its published root, presenting `client` (a workload
/// certificate) or nothing.
pub async fn tls_channel(
    weftd: &WeftdProcess,
    client: Option<Arc<rustls::sign::CertifiedKey>>,
) -> anyhow::Result<tonic::transport::Channel> {
    use weft_proxy::identity::trust::HeldRoot;
    use weft_proxy::xds::connect::{ControlPlane, Security};
    let control_plane = ControlPlane {
        address: weftd.xds.to_string(),
        security: Security::Tls {
            held: HeldRoot::load(&weftd.root_cert)?,
            server_name: rustls_pki_types::ServerName::try_from("weftd")?,
        },
    };
    control_plane
        .channel(client, Some(Duration::from_secs(10)))
        .await
}
