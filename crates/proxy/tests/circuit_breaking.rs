//! Connection-pool limits and outlier detection through a real weft-proxy
//! process and hyper backends that count connections and answer slowly or
//! with a chosen status.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use weft_testkit::backend::{Served, serve};
use weft_testkit::client::{self, Reply};
use weft_testkit::free_addr;
use weft_testkit::proxy::ProxyProcess;

const BIN: &str = env!("CARGO_BIN_EXE_weft-proxy");
/// How long `/slow` takes to answer.
const SLOW: Duration = Duration::from_millis(1500);

#[derive(Default)]
struct Seen {
    requests: AtomicUsize,
    /// The status to answer with; 0 means 200.
    status: AtomicU16,
}

/// An HTTP/1 backend: `/slow` answers after [`SLOW`], anything else at once.
struct Backend {
    addr: SocketAddr,
    seen: Arc<Seen>,
    served: Served,
}

impl Backend {
    async fn start() -> Self {
        let seen = Arc::new(Seen::default());
        let shared = seen.clone();
        let served = serve(move |r| answer(shared.clone(), r)).await;
        Self {
            addr: served.addr,
            seen,
            served,
        }
    }

    fn requests(&self) -> usize {
        self.seen.requests.load(Ordering::SeqCst)
    }

    fn connections(&self) -> usize {
        self.served.connections()
    }

    fn answer_with(&self, status: u16) {
        self.seen.status.store(status, Ordering::SeqCst);
    }
}

async fn answer(
    seen: Arc<Seen>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    seen.requests.fetch_add(1, Ordering::SeqCst);
    if request.uri().path() == "/slow" {
        tokio::time::sleep(SLOW).await;
    }
    let mut response = Response::new(Full::new(Bytes::from_static(b"ok")));
    let status = seen.status.load(Ordering::SeqCst);
    if status != 0 {
        *response.status_mut() = StatusCode::from_u16(status).expect("status");
    }
    Ok(response)
}

/// A proxy with one listener for service `web`, whose port goes to cluster
/// `c` = `cluster` (YAML flow mapping fields after `name: c`).
async fn proxy(cluster: &str) -> (ProxyProcess, SocketAddr) {
    let web = free_addr();
    let config = format!(
        r#"
version: circuit-breaking-test
listeners:
- {{name: web, address: "{web}", kind: EXPLICIT, service: web.test.svc.cluster.local}}
services:
- name: web.test.svc.cluster.local
  hosts: [web]
  ports: [{{port: 80, protocol: HTTP, cluster: c}}]
clusters:
- {{name: c, {cluster}}}
"#
    );
    let proxy = ProxyProcess::start(Path::new(BIN), &config)
        .await
        .unwrap_or_else(|err| panic!("{err:#}"));
    (proxy, web)
}

async fn get(web: SocketAddr, path: &str) -> Reply {
    client::get(web, "web", path).await.expect("request")
}

fn spawn_get(web: SocketAddr, path: &'static str) -> tokio::task::JoinHandle<Reply> {
    tokio::spawn(async move { get(web, path).await })
}

fn assert_overflow(reply: &Reply, limit: &str) {
    assert_eq!(
        reply.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        reply.text()
    );
    assert_eq!(reply.header("x-weft-response-flags"), Some("UO"));
    assert!(reply.text().contains(limit), "{}", reply.text());
}

#[tokio::test]
async fn max_requests_refuses_at_once_and_releases() {
    let backend = Backend::start().await;
    let (_proxy, web) = proxy(&format!(
        r#"endpoints: [{{address: "{}"}}], connectionPool: {{maxRequests: 1}}"#,
        backend.addr
    ))
    .await;
    let slow = spawn_get(web, "/slow");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let refused = get(web, "/").await;
    assert!(started.elapsed() < SLOW / 3, "{:?}", started.elapsed());
    assert_overflow(&refused, "1 request in flight, limit http2MaxRequests=1");
    assert_eq!(slow.await.expect("slow").status, StatusCode::OK);
    // The slow request's count was given back.
    assert_eq!(get(web, "/").await.status, StatusCode::OK);
    assert_eq!(backend.requests(), 2);
}

#[tokio::test]
async fn max_connections_queues_pending_then_overflows() {
    let backend = Backend::start().await;
    let (_proxy, web) = proxy(&format!(
        r#"endpoints: [{{address: "{}"}}], connectionPool: {{maxConnections: 1, maxPendingRequests: 1}}"#,
        backend.addr
    ))
    .await;
    let first = spawn_get(web, "/slow");
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Waits for the one connection.
    let second = spawn_get(web, "/slow");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let refused = get(web, "/").await;
    assert!(started.elapsed() < SLOW / 3, "{:?}", started.elapsed());
    assert_overflow(
        &refused,
        "1 request waiting for a connection, limit http1MaxPendingRequests=1",
    );
    assert_eq!(first.await.expect("first").status, StatusCode::OK);
    assert_eq!(second.await.expect("second").status, StatusCode::OK);
    assert_eq!(get(web, "/").await.status, StatusCode::OK);
    // All of it over the one connection.
    assert_eq!(backend.connections(), 1);
}

#[tokio::test]
async fn max_requests_per_connection_one_disables_keep_alive() {
    let backend = Backend::start().await;
    let (_proxy, web) = proxy(&format!(
        r#"endpoints: [{{address: "{}"}}], connectionPool: {{maxRequestsPerConnection: 1}}"#,
        backend.addr
    ))
    .await;
    for _ in 0..3 {
        assert_eq!(get(web, "/").await.status, StatusCode::OK);
    }
    assert_eq!(backend.connections(), 3);
}

#[tokio::test]
async fn outlier_detection_ejects_then_probes_back() {
    let (good, bad) = (Backend::start().await, Backend::start().await);
    bad.answer_with(503);
    let (_proxy, web) = proxy(&format!(
        r#"endpoints: [{{address: "{}"}}, {{address: "{}"}}], outlierDetection: {{consecutive5xxErrors: 2, maxEjectionPercent: 100, baseEjectionTime: 0.8s}}"#,
        good.addr, bad.addr
    ))
    .await;
    // Round-robin: the bad endpoint fails twice within four requests.
    for _ in 0..4 {
        get(web, "/").await;
    }
    assert_eq!(bad.requests(), 2);
    for _ in 0..10 {
        assert_eq!(get(web, "/").await.status, StatusCode::OK);
    }
    assert_eq!(bad.requests(), 2, "an ejected endpoint got traffic");

    // After the ejection it is tried again; healthy now, it stays in.
    bad.answer_with(0);
    tokio::time::sleep(Duration::from_millis(900)).await;
    for _ in 0..10 {
        assert_eq!(get(web, "/").await.status, StatusCode::OK);
    }
    assert!(bad.requests() >= 6, "{} requests", bad.requests());
}

#[tokio::test]
async fn outlier_detection_all_ejected_is_no_healthy_upstream() {
    let bad = Backend::start().await;
    bad.answer_with(502);
    let (_proxy, web) = proxy(&format!(
        r#"endpoints: [{{address: "{}"}}], outlierDetection: {{consecutiveGatewayErrors: 1}}"#,
        bad.addr
    ))
    .await;
    assert_eq!(get(web, "/").await.status, StatusCode::BAD_GATEWAY);
    let reply = get(web, "/").await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.header("x-weft-response-flags"), Some("UH"));
    assert!(reply.text().contains("ejected"), "{}", reply.text());
    assert_eq!(bad.requests(), 1);
}
