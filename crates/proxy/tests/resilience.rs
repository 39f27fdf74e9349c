//! Retries and fault injection through a real weft-proxy process and a
//! backend that fails on purpose.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use weft_testkit::backend::{Served, serve};
use weft_testkit::client::{self, Http1Client, Reply};
use weft_testkit::proxy::ProxyProcess;
use weft_testkit::{dead_addr, free_addr, grpc};

const BIN: &str = env!("CARGO_BIN_EXE_weft-proxy");

type Counts = Arc<Mutex<HashMap<String, usize>>>;

/// A backend that counts requests per path. `/flaky/<n>/...` answers 503 to
/// the first `n` requests for that path, then 200 echoing the request body;
/// `/slow/...` answers after a second; anything else echoes at once.
struct Flaky {
    addr: SocketAddr,
    counts: Counts,
    _served: Served,
}

impl Flaky {
    async fn start() -> Self {
        let counts = Counts::default();
        let shared = counts.clone();
        let served = serve(move |r| answer(shared.clone(), r)).await;
        Self {
            addr: served.addr,
            counts,
            _served: served,
        }
    }

    fn count(&self, path: &str) -> usize {
        self.counts
            .lock()
            .expect("counts")
            .get(path)
            .copied()
            .unwrap_or(0)
    }
}

async fn answer(
    counts: Counts,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = request.uri().path().to_string();
    let seen = {
        let mut counts = counts.lock().expect("counts");
        let count = counts.entry(path.clone()).or_default();
        *count += 1;
        *count
    };
    let body = request
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let fail_first: usize = path
        .strip_prefix("/flaky/")
        .and_then(|rest| rest.split('/').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    if path.starts_with("/slow/") {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let mut response = Response::new(Full::new(body));
    if seen <= fail_first {
        *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    }
    Ok(response)
}

struct Mesh {
    proxy: ProxyProcess,
    web: SocketAddr,
    grpc: SocketAddr,
    backend: Flaky,
}

async fn start_mesh() -> Mesh {
    let backend = Flaky::start().await;
    let (web, grpc) = (free_addr(), free_addr());
    let config = format!(
        r#"
version: resilience-test
listeners:
- {{name: web, address: "{web}", kind: EXPLICIT, service: web.test.svc.cluster.local}}
- {{name: grpc, address: "{grpc}", kind: EXPLICIT, service: grpc.test.svc.cluster.local}}
services:
- name: web.test.svc.cluster.local
  hosts: [web]
  ports:
  - port: 80
    protocol: HTTP
    routes:
    - name: retry
      match: {{pathPrefix: /flaky/}}
      clusters: [{{cluster: flaky}}]
      retries: {{attempts: 2, retryOn: [5xx], backoff: 0.005s}}
    - name: timeout
      match: {{pathPrefix: /slow/}}
      clusters: [{{cluster: flaky}}]
      timeout: 0.5s
      retries: {{attempts: 5, retryOn: [gateway-error], perTryTimeout: 0.2s}}
    - name: connect
      match: {{pathPrefix: /mixed/}}
      clusters: [{{cluster: mixed}}]
      retries: {{attempts: 1, retryOn: [connect-failure]}}
    - name: abort
      match: {{pathPrefix: /abort/}}
      clusters: [{{cluster: flaky}}]
      fault: {{abort: {{httpStatus: 418, percentage: 100}}}}
    - name: delay
      match: {{pathPrefix: /delay/}}
      clusters: [{{cluster: flaky}}]
      fault: {{delay: {{fixedDelay: 0.3s, percentage: 100}}}}
    - name: once
      clusters: [{{cluster: flaky}}]
- name: grpc.test.svc.cluster.local
  ports:
  - port: 50051
    protocol: GRPC
    routes:
    - name: abort
      clusters: [{{cluster: flaky}}]
      fault: {{abort: {{grpcStatus: 14, percentage: 100}}}}
clusters:
- {{name: flaky, endpoints: [{{address: "{live}"}}]}}
- {{name: mixed, connectTimeout: 1s, endpoints: [{{address: "{dead}"}}, {{address: "{live}"}}]}}
"#,
        live = backend.addr,
        dead = dead_addr(),
    );
    let proxy = ProxyProcess::start(Path::new(BIN), &config)
        .await
        .unwrap_or_else(|err| panic!("{err:#}"));
    Mesh {
        proxy,
        web,
        grpc,
        backend,
    }
}

impl Mesh {
    async fn send(&self, method: Method, path: &str, body: Bytes) -> Reply {
        let request = client::request(method, "web", path, client::full(body));
        let mut client = Http1Client::connect(self.web).await.expect("connect");
        client.send(request).await.expect("request")
    }

    async fn get(&self, path: &str) -> Reply {
        self.send(Method::GET, path, Bytes::new()).await
    }

    async fn metrics(&self) -> String {
        self.proxy
            .admin_get("/stats/prometheus")
            .await
            .expect("metrics")
            .text()
    }
}

#[tokio::test]
async fn retries_follow_the_policy() {
    let mesh = start_mesh().await;
    // Two failures, two retries: the third try answers.
    let reply = mesh.get("/flaky/2/a").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(mesh.backend.count("/flaky/2/a"), 3);

    // Three failures: the upstream's last 503 comes back, after 3 tries.
    let reply = mesh.get("/flaky/3/b").await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(mesh.backend.count("/flaky/3/b"), 3);

    // A route without retries tries once.
    let reply = mesh.get("/other/flaky/1/c").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(mesh.backend.count("/other/flaky/1/c"), 1);

    // One istio_requests_total per downstream request, not per try.
    let metrics = mesh.metrics().await;
    let total: u64 = metrics
        .lines()
        .filter(|l| l.starts_with("istio_requests_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert_eq!(total, 3, "{metrics}");
    assert!(metrics.contains("response_flags=\"URX\""), "{metrics}");
}

#[tokio::test]
async fn request_bodies_are_replayed_up_to_the_cap() {
    let mesh = start_mesh().await;
    let body: Bytes = (0..32 * 1024u32)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<_>>()
        .into();
    let reply = mesh.send(Method::POST, "/flaky/1/post", body.clone()).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, body, "the retried POST carries the same body");
    assert_eq!(mesh.backend.count("/flaky/1/post"), 2);

    // Beyond the cap the body cannot be replayed: one try.
    let big = Bytes::from(vec![7u8; weft_proxy::http::REPLAY_CAP + 1024]);
    let reply = mesh.send(Method::POST, "/flaky/1/big", big).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(mesh.backend.count("/flaky/1/big"), 1);
}

#[tokio::test]
async fn connect_failures_move_to_a_live_endpoint() {
    let mesh = start_mesh().await;
    for i in 0..6 {
        let reply = mesh.get(&format!("/mixed/{i}")).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    }
}

#[tokio::test]
async fn the_route_timeout_bounds_all_tries() {
    let mesh = start_mesh().await;
    let started = Instant::now();
    let reply = mesh.get("/slow/x").await;
    let elapsed = started.elapsed();
    assert_eq!(
        reply.status,
        StatusCode::GATEWAY_TIMEOUT,
        "{}",
        reply.text()
    );
    assert_eq!(reply.header("x-weft-response-flags"), Some("UT"));
    assert!(elapsed < Duration::from_millis(900), "{elapsed:?}");
    // Per-try timeouts of 0.2s: more than one try fits in 0.5s.
    assert!(mesh.backend.count("/slow/x") >= 2);
}

#[tokio::test]
async fn faults_abort_and_delay() {
    let mesh = start_mesh().await;
    let reply = mesh.get("/abort/x").await;
    assert_eq!(reply.status, StatusCode::IM_A_TEAPOT);
    assert_eq!(reply.header("x-weft-response-flags"), Some("FI"));
    assert_eq!(mesh.backend.count("/abort/x"), 0);

    let started = Instant::now();
    let reply = mesh.get("/delay/x").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(mesh.backend.count("/delay/x"), 1);

    let metrics = mesh.metrics().await;
    assert!(metrics.contains("response_flags=\"FI\""), "{metrics}");
    assert!(metrics.contains("response_flags=\"DI\""), "{metrics}");
}

#[tokio::test]
async fn grpc_abort_answers_with_a_grpc_status() {
    let mesh = start_mesh().await;
    let mut client = grpc::connect(mesh.grpc).await;
    let status = client
        .unary(grpc::pb::EchoRequest {
            message: "hello".into(),
        })
        .await
        .expect_err("aborted");
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert_eq!(status.message(), "fault filter abort");
}
