//! Istio fields a migrating user relies on, through a real
//! weft-proxy process: DestinationRule `maxConnectionDuration` (connections aged out, in
//! flight requests finishing), `maxConcurrentStreams` (HTTP/2 streams per
//! upstream connection), split local-origin outlier detection, and
//! VirtualService `retryRemoteLocalities`.
//! Backends count the TCP connections they accept and how many are still
//! open.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use weft_testkit::client::{self, Reply};
use weft_testkit::free_addr;
use weft_testkit::proxy::ProxyProcess;

const BIN: &str = env!("CARGO_BIN_EXE_weft-proxy");
/// How long `/slow` takes to answer.
const SLOW: Duration = Duration::from_millis(1500);

/// An HTTP/1.1 + HTTP/2 backend that counts connections accepted and open.
struct Backend {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    open: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Backend {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let accepted = Arc::new(AtomicUsize::new(0));
        let open = Arc::new(AtomicUsize::new(0));
        let (counted, live) = (accepted.clone(), open.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                live.fetch_add(1, Ordering::SeqCst);
                let live = live.clone();
                tokio::spawn(async move {
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service_fn(answer))
                        .await;
                    live.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Self {
            addr,
            accepted,
            open,
            task,
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    if request.uri().path() == "/slow" {
        tokio::time::sleep(SLOW).await;
    }
    Ok(Response::new(Full::new(Bytes::from_static(b"ok"))))
}

/// A proxy with one listener for service `web`, whose port goes to cluster
/// `c` = `cluster` (YAML flow mapping fields after `name: c`).
async fn proxy(cluster: &str) -> (ProxyProcess, SocketAddr) {
    let web = free_addr();
    let config = format!(
        r#"
version: migrated-fields-test
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

/// Waits up to 2s for `check`; the last result.
async fn eventually(check: impl Fn() -> bool) -> bool {
    for _ in 0..40 {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    check()
}

async fn aged_connections_drain_and_are_replaced(protocol: &str) {
    let backend = Backend::start().await;
    let (_proxy, web) = proxy(&format!(
        r#"upstreamProtocol: {protocol}, endpoints: [{{address: "{}"}}], connectionPool: {{maxConnectionDuration: 0.6s}}"#,
        backend.addr
    ))
    .await;
    // In flight when its connection ages: it still finishes.
    let slow = spawn_get(web, "/slow");
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(backend.accepted(), 1);
    // The aged connection takes no new request: a new one carries it.
    assert_eq!(get(web, "/").await.status, StatusCode::OK);
    assert_eq!(backend.accepted(), 2, "an aged connection was reused");
    let slow = slow.await.expect("slow");
    assert_eq!(slow.status, StatusCode::OK, "{}", slow.text());
    assert_eq!(slow.text(), "ok");
    // Once its last request is done the aged connection is closed, and
    // the second one too when its time is up, with no request coming by.
    assert!(
        eventually(|| backend.open() == 0).await,
        "{} connections still open",
        backend.open()
    );
    assert_eq!(get(web, "/").await.status, StatusCode::OK);
    assert_eq!(backend.accepted(), 3);
}

#[tokio::test]
async fn max_connection_duration_ages_out_http1_connections() {
    aged_connections_drain_and_are_replaced("HTTP1").await;
}

#[tokio::test]
async fn max_connection_duration_ages_out_http2_connections() {
    aged_connections_drain_and_are_replaced("HTTP2_PRIOR_KNOWLEDGE").await;
}

#[tokio::test]
async fn max_concurrent_streams_opens_more_http2_connections() {
    let backend = Backend::start().await;
    let (_proxy, web) = proxy(&format!(
        r#"upstreamProtocol: HTTP2_PRIOR_KNOWLEDGE, endpoints: [{{address: "{}"}}], connectionPool: {{maxConcurrentStreams: 2}}"#,
        backend.addr
    ))
    .await;
    // Five streams at once, two per connection: three connections.
    let slow: Vec<_> = (0..5).map(|_| spawn_get(web, "/slow")).collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(backend.accepted(), 3);
    for reply in slow {
        assert_eq!(reply.await.expect("slow").status, StatusCode::OK);
    }
    // Streams that ended free their room: sequential requests share one.
    for _ in 0..4 {
        assert_eq!(get(web, "/").await.status, StatusCode::OK);
    }
    assert_eq!(backend.accepted(), 3);
}

/// A TCP endpoint that accepts and closes at once (a local-origin failure
/// for the proxy: it never gets an answer), counting accepts.
async fn dropper() -> (SocketAddr, Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let accepted = Arc::new(AtomicUsize::new(0));
    let counted = accepted.clone();
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            drop(stream);
        }
    });
    (addr, accepted, task)
}

#[tokio::test]
async fn split_local_origin_failures_eject_on_their_own_count() {
    let good = Backend::start().await;
    let (bad, tries, task) = dropper().await;
    // consecutive5xxErrors: 1 would eject the dropper at its first failure
    // if local-origin failures counted as 503s; split, it takes three.
    let (_proxy, web) = proxy(&format!(
        r#"endpoints: [{{address: "{}"}}, {{address: "{bad}"}}], loadBalancer: {{policy: ROUND_ROBIN}}, outlierDetection: {{consecutive5xxErrors: 1, splitExternalLocalOriginErrors: true, consecutiveLocalOriginFailures: 3, maxEjectionPercent: 100, baseEjectionTime: 30s}}"#,
        good.addr
    ))
    .await;
    let mut failed = 0;
    for _ in 0..12 {
        let reply = get(web, "/").await;
        if reply.status != StatusCode::OK {
            assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
            failed += 1;
        }
    }
    assert_eq!(failed, 3, "three local-origin failures before ejection");
    assert_eq!(tries.load(Ordering::SeqCst), 3);
    task.abort();
}

/// A backend answering every request with `status`, counting requests.
async fn answering(status: u16) -> (weft_testkit::backend::Served, Arc<AtomicUsize>) {
    let requests = Arc::new(AtomicUsize::new(0));
    let counted = requests.clone();
    let served = weft_testkit::backend::serve(move |_request: Request<Incoming>| {
        let counted = counted.clone();
        async move {
            counted.fetch_add(1, Ordering::SeqCst);
            let mut response = Response::new(Full::new(Bytes::from_static(b"answer")));
            *response.status_mut() = StatusCode::from_u16(status).expect("status");
            Ok::<_, Infallible>(response)
        }
    })
    .await;
    (served, requests)
}

#[tokio::test]
async fn retry_remote_localities_sends_later_retries_to_another_locality() {
    let (local, local_tries) = answering(503).await;
    let (remote, remote_tries) = answering(200).await;
    let web = free_addr();
    let config = format!(
        r#"
version: retry-remote-localities-test
listeners:
- {{name: web, address: "{web}", kind: EXPLICIT, service: web.test.svc.cluster.local}}
services:
- name: web.test.svc.cluster.local
  hosts: [web]
  ports:
  - port: 80
    protocol: HTTP
    routes:
    - name: remote
      match: {{pathPrefix: /remote/}}
      clusters: [{{cluster: c}}]
      retries: {{attempts: 3, retryOn: [5xx], backoff: 0.005s, retryRemoteLocalities: true}}
    - name: local
      clusters: [{{cluster: c}}]
      retries: {{attempts: 3, retryOn: [5xx], backoff: 0.005s}}
clusters:
- {{name: c, endpoints: [{{address: "{}", priority: 0}}, {{address: "{}", priority: 1}}]}}
"#,
        local.addr, remote.addr
    );
    let _proxy = ProxyProcess::start(Path::new(BIN), &config)
        .await
        .unwrap_or_else(|err| panic!("{err:#}"));
    // Without the flag every try stays in the healthy nearest locality.
    let reply = get(web, "/").await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(local_tries.load(Ordering::SeqCst), 4);
    assert_eq!(remote_tries.load(Ordering::SeqCst), 0);
    // With it: the first try and first retry local, the second retry
    // leaves the locality tried (Istio's update frequency of 2).
    let reply = get(web, "/remote/").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(local_tries.load(Ordering::SeqCst), 6);
    assert_eq!(remote_tries.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn inbound_connection_pool_limits_requests_toward_the_app() {
    let app = Backend::start().await;
    let inbound = free_addr();
    let config = format!(
        r#"
version: inbound-pool-test
listeners:
- {{name: inbound, address: "{inbound}", kind: INBOUND_CAPTURE}}
inboundPorts:
- port: {port}
  protocol: HTTP
  target: "{app}"
  connectionPool: {{maxRequests: 1}}
"#,
        port = inbound.port(),
        app = app.addr,
    );
    let _proxy = ProxyProcess::start(Path::new(BIN), &config)
        .await
        .unwrap_or_else(|err| panic!("{err:#}"));
    let slow = tokio::spawn(async move { client::get(inbound, "app", "/slow").await });
    tokio::time::sleep(Duration::from_millis(400)).await;
    let refused = client::get(inbound, "app", "/").await.expect("request");
    assert_eq!(
        refused.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        refused.text()
    );
    assert_eq!(refused.header("x-weft-response-flags"), Some("UO"));
    assert!(
        refused.text().contains("limit http2MaxRequests=1"),
        "{}",
        refused.text()
    );
    let slow = slow.await.expect("slow").expect("request");
    assert_eq!(slow.status, StatusCode::OK);
    assert_eq!(
        client::get(inbound, "app", "/")
            .await
            .expect("request")
            .status,
        StatusCode::OK
    );
}
