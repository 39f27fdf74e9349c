//! CUSTOM AuthorizationPolicies on opaque TCP ports, as Istio configures
//! Envoy's network ext_authz filter: the server sidecar asks a gRPC
//! authorizer (this test's tonic server) once per connection, before it
//! dials the workload, with the caller's address and mesh identity and no
//! HTTP request. Through two sidecars (sleep → tcpecho, mesh mTLS) and
//! straight to tcpecho's inbound listener in plaintext (no identity):
//! - allowed: bytes flow both ways;
//! - denied: the connection is closed and the workload never sees it;
//! - a dead authorizer: failOpen lets the connection through, without it
//!   the connection is closed;
//! - an envoyExtAuthzHttp provider: Istio builds no TCP filter for it, so
//!   the policy does nothing on the TCP port (weftd warns);
//! - refusals carry `UAEX` in the access log and the TCP metrics.

mod mtls_support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use weft_proto::envoy::service::auth::v3::authorization_server::{
    Authorization, AuthorizationServer,
};
use weft_proto::envoy::service::auth::v3::{CheckRequest, CheckResponse};
use weft_proto::google::rpc::Status;
use weft_testkit::free_addr;

use mtls_support::{CLIENT_ID, Control};

/// The identity tcpecho's sidecar holds (service account tcpecho).
const SERVER_ID: &str = "spiffe://cluster.local/ns/default/sa/tcpecho";

type Seen = Arc<Mutex<Vec<String>>>;

/// Allows sleep's identity only. Records
/// "source=<principal> ip=<address> destination=<principal> http=<bool>".
struct Judge(Seen);

#[tonic::async_trait]
impl Authorization for Judge {
    async fn check(
        &self,
        request: tonic::Request<CheckRequest>,
    ) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
        let attributes = request.into_inner().attributes.unwrap_or_default();
        let source = attributes.source.unwrap_or_default();
        let ip = source
            .address
            .and_then(|a| a.socket_address)
            .map(|s| s.address)
            .unwrap_or_default();
        let destination = attributes.destination.unwrap_or_default().principal;
        let http = attributes.request.is_some_and(|r| r.http.is_some());
        self.0.lock().expect("seen").push(format!(
            "source={} ip={ip} destination={destination} http={http}",
            source.principal
        ));
        let code = if source.principal == CLIENT_ID { 0 } else { 7 };
        Ok(tonic::Response::new(CheckResponse {
            status: Some(Status {
                code,
                message: String::new(),
            }),
            http_response: None,
        }))
    }
}

async fn grpc_authorizer() -> (SocketAddr, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = Seen::default();
    let service = AuthorizationServer::new(Judge(seen.clone()));
    tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await;
    });
    (addr, seen)
}

/// An echo server counting the connections it accepted (a denied
/// connection must never reach it).
struct Echo {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
}

impl Echo {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind echo");
        let addr = listener.local_addr().expect("addr");
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    while let Ok(n) = stream.read(&mut buf).await {
                        if n == 0 || stream.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        Self { addr, accepted }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// Sends `ping`, half-closes, and reads to the end: what came back
/// (empty when the proxy closed the connection).
async fn exchange(addr: SocketAddr) -> Vec<u8> {
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream.write_all(b"ping").await?;
        stream.shutdown().await?;
        let mut out = Vec::new();
        stream.read_to_end(&mut out).await?;
        anyhow::Ok(out)
    };
    match tokio::time::timeout(Duration::from_secs(10), attempt).await {
        Ok(Ok(out)) => out,
        // Reset or refused: nothing came back either.
        Ok(Err(_)) => Vec::new(),
        Err(_) => panic!("no end of the connection to {addr} within 10s"),
    }
}

/// `exchange` until `settled` holds for what came back (the first pushes
/// take a moment), then that answer.
async fn exchange_until(addr: SocketAddr, settled: impl Fn(&[u8]) -> bool) -> Vec<u8> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = exchange(addr).await;
        if settled(&out) || Instant::now() > deadline {
            return out;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A mesh service with no sidecar (the authorizers): ServiceEntry and
/// WorkloadEntry at `target` on loopback.
fn entry(name: &str, port: u16, protocol: &str, target: u16) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {name}, namespace: infra}}
spec:
  hosts: [{name}.infra.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: {port}, name: {protocol}, protocol: {protocol}}}]
  workloadSelector: {{labels: {{app: {name}}}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: {name}, namespace: infra}}
spec:
  address: 127.0.0.1
  ports: {{{protocol}: {target}}}
  labels: {{app: {name}}}
---
"
    )
}

/// A CUSTOM policy on tcpecho's workload port `port` asking `provider`;
/// `extra` adds conditions to the rule's operation.
fn custom(name: &str, provider: &str, port: u16, extra: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: {name}, namespace: default}}
spec:
  selector: {{matchLabels: {{app: tcpecho}}}}
  action: CUSTOM
  provider: {{name: {provider}}}
  rules:
  - to: [{{operation: {{ports: [\"{port}\"]{extra}}}}}]
---
"
    )
}

fn mesh_config() -> String {
    "extensionProviders:
- name: grpc-authz
  envoyExtAuthzGrpc: {service: authz-grpc.infra.svc.cluster.local, port: 9191, timeout: 2s}
- name: dead-open
  envoyExtAuthzGrpc: {service: authz-dead.infra.svc.cluster.local, port: 9192, timeout: 1s, failOpen: true}
- name: dead-closed
  envoyExtAuthzGrpc: {service: authz-dead.infra.svc.cluster.local, port: 9192, timeout: 1s}
- name: http-authz
  envoyExtAuthzHttp: {service: authz-dead.infra.svc.cluster.local, port: 9192, timeout: 1s}
"
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn custom_policies_on_tcp_ask_a_grpc_authorizer_per_connection() {
    let (authorizer, seen) = grpc_authorizer().await;
    // Nothing listens there: connecting is refused.
    let dead = free_addr().port();
    let dir = tempfile::tempdir().expect("tempdir");
    let mesh_file = dir.path().join("meshconfig.yaml");
    std::fs::write(&mesh_file, mesh_config()).expect("meshconfig");
    let mesh_flag = mesh_file.display().to_string();
    let control = Control::start(&["--mesh-config", &mesh_flag]).await;

    // tcpecho: one workload port per case, each behind its own policy.
    let (checked, open, closed, http) = (
        Echo::start().await,
        Echo::start().await,
        Echo::start().await,
        Echo::start().await,
    );
    let echoes = [&checked, &open, &closed, &http];
    let port = |i: usize| echoes[i].addr.port();
    let mut yaml = format!(
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: tcpecho}}
spec:
  hosts: [tcpecho.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {{number: 9000, name: tcp-checked, protocol: TCP, targetPort: {}}}
  - {{number: 9001, name: tcp-open, protocol: TCP, targetPort: {}}}
  - {{number: 9002, name: tcp-closed, protocol: TCP, targetPort: {}}}
  - {{number: 9003, name: tcp-http, protocol: TCP, targetPort: {}}}
  workloadSelector: {{labels: {{app: tcpecho}}}}
---
",
        port(0),
        port(1),
        port(2),
        port(3)
    );
    yaml += &entry("authz-grpc", 9191, "GRPC", authorizer.port());
    yaml += &entry("authz-dead", 9192, "GRPC", dead);
    // An HTTP-only condition counts as matched on TCP (Istio builds a
    // CUSTOM policy's TCP rules as a DENY's): the authorizer is asked.
    yaml += &custom("checked", "grpc-authz", port(0), ", paths: [/http-only]");
    yaml += &custom("dead-open", "dead-open", port(1), "");
    yaml += &custom("dead-closed", "dead-closed", port(2), "");
    yaml += &custom("by-http", "http-authz", port(3), "");
    control.apply(&yaml).await;

    let access_log = dir.path().join("access.log");
    let log_flag = access_log.display().to_string();
    let inbound: Vec<SocketAddr> = (0..4).map(|_| free_addr()).collect();
    let mut args: Vec<String> = vec!["--label".into(), "app=tcpecho".into()];
    for (i, at) in inbound.iter().enumerate() {
        args.extend(["--port".into(), format!("{}/tcp", port(i))]);
        args.extend(["--inbound".into(), format!("{at}={}", port(i))]);
    }
    args.extend(["--access-log".into(), log_flag]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = control.ready_proxy("tcpecho", &args).await;
    let listens: Vec<SocketAddr> = (0..4).map(|_| free_addr()).collect();
    let listen_flags: Vec<String> = listens
        .iter()
        .enumerate()
        .map(|(i, l)| format!("{l}=tcpecho:{}", 9000 + i))
        .collect();
    let mut client_args = Vec::new();
    for flag in &listen_flags {
        client_args.extend(["--listen", flag.as_str()]);
    }
    let client = control.ready_proxy("sleep", &client_args).await;
    let logs = || {
        format!(
            "{}\n{}\n{}",
            server.logs(),
            client.logs(),
            control.weftd.logs()
        )
    };

    // Allowed: sleep's identity, through mTLS; bytes flow both ways.
    let echoed = exchange_until(listens[0], |out| out == b"ping").await;
    assert_eq!(echoed, b"ping", "{}", logs());
    let asked = seen.lock().expect("seen").clone();
    let expected = format!("source={CLIENT_ID} ip=127.0.0.1 destination={SERVER_ID} http=false");
    assert!(
        asked.contains(&expected),
        "no check with the caller's identity and no request: {asked:?}"
    );

    // Denied: a plaintext caller has no identity. Closed, and tcpecho
    // never sees the connection.
    let before = (checked.accepted(), seen.lock().expect("seen").len());
    let out = exchange(inbound[0]).await;
    assert!(out.is_empty(), "a denied connection echoed {out:?}");
    let after = (checked.accepted(), seen.lock().expect("seen").len());
    assert_eq!(
        after.0, before.0,
        "a denied connection reached the workload"
    );
    assert_eq!(after.1, before.1 + 1, "one check per connection");
    let last = seen.lock().expect("seen").last().cloned();
    assert_eq!(
        last.as_deref(),
        Some("source= ip=127.0.0.1 destination= http=false")
    );

    // A dead authorizer: failOpen lets the connection through...
    assert_eq!(exchange(listens[1]).await, b"ping", "{}", logs());
    // ... and without it the connection is closed before tcpecho.
    assert!(exchange(listens[2]).await.is_empty(), "{}", logs());
    assert_eq!(closed.accepted(), 0, "dead authorizer, failOpen false");

    // An envoyExtAuthzHttp provider cannot check a connection: the policy
    // does nothing on TCP (its dead service would fail closed if asked).
    assert_eq!(exchange(listens[3]).await, b"ping", "{}", logs());
    let weftd_logs = control.weftd.logs();
    assert!(
        weftd_logs.contains(
            "AuthorizationPolicy default/by-http: provider \"http-authz\" is envoyExtAuthzHttp, \
             which cannot check TCP connections"
        ),
        "{weftd_logs}"
    );

    // The check's cost per connection (printed, not asserted: debug
    // builds on a shared machine): through both sidecars, checked by the
    // authorizer (port 9000) against left out (port 9003).
    let mean = |listen: SocketAddr| async move {
        let started = Instant::now();
        for _ in 0..50 {
            assert_eq!(exchange(listen).await, b"ping");
        }
        started.elapsed() / 50
    };
    let (with_check, without) = (mean(listens[0]).await, mean(listens[3]).await);
    eprintln!("TCP connection with a gRPC check: {with_check:?}; without: {without:?}");

    // Refusals by the authorizer are flagged UAEX: access log and metrics.
    let deadline = Instant::now() + Duration::from_secs(10);
    let log = loop {
        let log = std::fs::read_to_string(&access_log).unwrap_or_default();
        if log.lines().filter(|l| l.contains("UAEX")).count() >= 2 || Instant::now() > deadline {
            break log;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        log.lines().filter(|l| l.contains("UAEX")).count() >= 2,
        "two UAEX lines (denied, dead authorizer) in:\n{log}"
    );
    let metrics = weft_testkit::client::get(server.metrics, "metrics", "/stats/prometheus")
        .await
        .expect("scrape")
        .text();
    assert!(
        metrics.lines().any(|l| {
            l.starts_with("istio_tcp_connections_closed_total")
                && l.contains("reporter=\"destination\"")
                && l.contains("response_flags=\"UAEX\"")
        }),
        "no UAEX closed connection in:\n{metrics}"
    );
}

/// A gateway's TCP servers are guarded the same way: the CUSTOM policy
/// selecting the gateway asks its gRPC authorizer per connection (a
/// plaintext caller has no identity: denied, the backend never dialled);
/// a dead authorizer with failOpen lets connections through.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn custom_policies_guard_a_gateways_tcp_servers() {
    let (authorizer, seen) = grpc_authorizer().await;
    let dead = free_addr().port();
    let (checked, open) = (Echo::start().await, Echo::start().await);
    let dir = tempfile::tempdir().expect("tempdir");
    let mesh_file = dir.path().join("meshconfig.yaml");
    std::fs::write(&mesh_file, mesh_config()).expect("meshconfig");
    let mesh_flag = mesh_file.display().to_string();
    let weftd = weft_testkit::weftd::WeftdProcess::start_with(
        std::path::Path::new(mtls_support::WEFTD),
        &dir.path().join("store"),
        free_addr(),
        free_addr(),
        &["--mesh-config", &mesh_flag],
    )
    .await
    .expect("weftd");
    let (checked_port, open_port) = (
        weft_testkit::free_wildcard_port(),
        weft_testkit::free_wildcard_port(),
    );
    let mut yaml = entry("echo-checked", 9000, "TCP", checked.addr.port());
    yaml += &entry("echo-open", 9000, "TCP", open.addr.port());
    yaml += &entry("authz-grpc", 9191, "GRPC", authorizer.port());
    yaml += &entry("authz-dead", 9192, "GRPC", dead);
    yaml += &format!(
        "apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: edge, namespace: istio-system}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: {checked_port}, name: tcp-checked, protocol: TCP}}
    hosts: ['*']
  - port: {{number: {open_port}, name: tcp-open, protocol: TCP}}
    hosts: ['*']
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: echo, namespace: istio-system}}
spec:
  hosts: ['*']
  gateways: [istio-system/edge]
  tcp:
  - match: [{{port: {checked_port}}}]
    route: [{{destination: {{host: echo-checked.infra.svc.cluster.local, port: {{number: 9000}}}}}}]
  - match: [{{port: {open_port}}}]
    route: [{{destination: {{host: echo-open.infra.svc.cluster.local, port: {{number: 9000}}}}}}]
---
"
    );
    for (name, provider, port) in [
        ("gw-checked", "grpc-authz", checked_port),
        ("gw-open", "dead-open", open_port),
    ] {
        yaml += &format!(
            "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: {name}, namespace: istio-system}}
spec:
  selector: {{matchLabels: {{istio: ingressgateway}}}}
  action: CUSTOM
  provider: {{name: {provider}}}
  rules:
  - to: [{{operation: {{ports: [\"{port}\"]}}}}]
---
"
        );
    }
    let reply = weftd.apply(&yaml).await.expect("apply");
    assert_eq!(reply.status, 200, "{}", reply.text());
    let gateway = weftd
        .ingress_gateway("istio=ingressgateway", &[])
        .await
        .expect("gateway ready");
    let local = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));

    // failOpen: the dead authorizer lets bytes through (once routes are in).
    let echoed = exchange_until(local(open_port), |out| out == b"ping").await;
    assert_eq!(echoed, b"ping", "{}", gateway.logs());
    // Asked and denied: closed before the backend is dialled.
    let asked_once = || !seen.lock().expect("seen").is_empty();
    let out = exchange_until(local(checked_port), |out| out.is_empty() && asked_once()).await;
    assert!(out.is_empty(), "denied connection echoed {out:?}");
    assert_eq!(
        checked.accepted(),
        0,
        "a denied connection reached the backend"
    );
    let asked = seen.lock().expect("seen").clone();
    assert!(
        asked
            .iter()
            .any(|s| s == "source= ip=127.0.0.1 destination= http=false"),
        "the gateway asked about the connection: {asked:?}\n{}",
        gateway.logs()
    );
}
