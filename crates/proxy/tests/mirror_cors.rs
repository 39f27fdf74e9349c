//! Traffic mirroring and route-level CORS through a real weft-proxy process
//! and recording backends written here.

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
use weft_testkit::{dead_addr, free_addr};

const BIN: &str = env!("CARGO_BIN_EXE_weft-proxy");

/// What a backend saw of one request.
#[derive(Debug, Clone)]
struct Seen {
    method: Method,
    path: String,
    host: String,
    /// The request body as received.
    body: Bytes,
}

/// A backend that records every request and answers with its name in
/// `x-backend`, after `delay`.
struct Recorder {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    _served: Served,
}

impl Recorder {
    async fn start(name: &'static str, delay: Duration) -> Self {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let served = serve(move |request: Request<Incoming>| {
            let log = log.clone();
            async move {
                let (parts, body) = request.into_parts();
                // Read whole so tests can compare what arrived.
                let body = body
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                log.lock().expect("lock").push(Seen {
                    method: parts.method.clone(),
                    path: parts.uri.path().to_string(),
                    host: parts
                        .headers
                        .get(http::header::HOST)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string(),
                    body,
                });
                tokio::time::sleep(delay).await;
                let mut response = Response::new(Full::new(Bytes::from(name)));
                response
                    .headers_mut()
                    .insert("x-backend", http::HeaderValue::from_static(name));
                Ok::<_, Infallible>(response)
            }
        })
        .await;
        Self {
            addr: served.addr,
            seen,
            _served: served,
        }
    }

    fn seen(&self, path: &str) -> Vec<Seen> {
        self.seen
            .lock()
            .expect("lock")
            .iter()
            .filter(|s| s.path == path)
            .cloned()
            .collect()
    }

    /// Waits until a request for `path` arrives (mirrors are asynchronous).
    async fn wait_for(&self, path: &str) -> Seen {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(seen) = self.seen(path).into_iter().next() {
                return seen;
            }
            assert!(
                Instant::now() < deadline,
                "{path} never reached the backend"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

struct Mesh {
    proxy: ProxyProcess,
    web: SocketAddr,
    primary: Recorder,
    shadow: Recorder,
    slow: Recorder,
}

async fn start_mesh() -> Mesh {
    let primary = Recorder::start("primary", Duration::ZERO).await;
    let shadow = Recorder::start("shadow", Duration::ZERO).await;
    let slow = Recorder::start("slow", Duration::from_secs(3)).await;
    let web = free_addr();
    let config = format!(
        r#"
version: mirror-cors-test
listeners:
- {{name: web, address: "{web}", kind: EXPLICIT, service: web.test.svc.cluster.local}}
services:
- name: web.test.svc.cluster.local
  hosts: [web]
  ports:
  - port: 80
    protocol: HTTP
    routes:
    - {{name: mirror, match: {{pathPrefix: /mirror}}, clusters: [{{cluster: primary}}], mirrors: [{{cluster: shadow}}]}}
    - {{name: slow, match: {{pathExact: /slow}}, clusters: [{{cluster: primary}}], mirrors: [{{cluster: slow}}]}}
    - {{name: dead, match: {{pathExact: /dead}}, clusters: [{{cluster: primary}}], mirrors: [{{cluster: dead}}]}}
    - name: never
      match: {{pathExact: /never}}
      clusters: [{{cluster: primary}}]
      mirrors: [{{cluster: shadow, percentage: 0, hasPercentage: true}}]
    - name: cors
      match: {{pathPrefix: /cors}}
      clusters: [{{cluster: primary}}]
      cors:
        allowOrigins: [{{exact: "https://ok.example"}}, {{prefix: "https://app."}}]
        allowMethods: [GET, POST]
        allowHeaders: [x-custom]
        exposeHeaders: [x-backend]
        maxAge: 600s
        allowCredentials: true
clusters:
- {{name: primary, endpoints: [{{address: "{primary}"}}]}}
- {{name: shadow, endpoints: [{{address: "{shadow}"}}]}}
- {{name: slow, endpoints: [{{address: "{slow}"}}]}}
- {{name: dead, endpoints: [{{address: "{dead}"}}]}}
"#,
        primary = primary.addr,
        shadow = shadow.addr,
        slow = slow.addr,
        dead = dead_addr(),
    );
    let proxy = ProxyProcess::start(Path::new(BIN), &config)
        .await
        .unwrap_or_else(|err| panic!("{err:#}"));
    Mesh {
        proxy,
        web,
        primary,
        shadow,
        slow,
    }
}

impl Mesh {
    async fn send(&self, method: Method, path: &str, headers: &[(&str, &str)]) -> Reply {
        let request = client::request_with_headers(method, "web", path, headers, client::empty());
        let mut client = Http1Client::connect(self.web).await.expect("connect");
        client.send(request).await.expect("request")
    }
}

#[tokio::test]
async fn mirrors_get_a_shadow_copy_while_the_client_gets_the_primary() {
    let mesh = start_mesh().await;
    let reply = mesh.send(Method::GET, "/mirror/a", &[]).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("x-backend"), Some("primary"));
    assert_eq!(mesh.primary.wait_for("/mirror/a").await.host, "web");
    let copy = mesh.shadow.wait_for("/mirror/a").await;
    assert_eq!(copy.host, "web-shadow");
    assert_eq!(copy.method, Method::GET);

    // Copies are not requests of the mesh: one counted, the client's.
    let metrics = client::get(mesh.proxy.metrics, "metrics", "/stats/prometheus")
        .await
        .expect("scrape")
        .text();
    let counted: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("istio_requests_total{"))
        .collect();
    assert_eq!(counted.len(), 1, "{counted:?}");
    assert!(counted[0].ends_with(" 1"), "{counted:?}");
}

#[tokio::test]
async fn a_slow_or_dead_mirror_does_not_delay_the_request() {
    let mesh = start_mesh().await;
    for path in ["/slow", "/dead"] {
        let started = Instant::now();
        let reply = mesh.send(Method::GET, path, &[]).await;
        let took = started.elapsed();
        assert_eq!(reply.status, StatusCode::OK, "{path}: {}", reply.text());
        assert_eq!(reply.header("x-backend"), Some("primary"));
        // The slow mirror answers after 3 s.
        assert!(took < Duration::from_secs(1), "{path} took {took:?}");
    }
    // The slow mirror did get its copy.
    assert_eq!(mesh.slow.wait_for("/slow").await.host, "web-shadow");
}

#[tokio::test]
async fn zero_percent_never_mirrors() {
    let mesh = start_mesh().await;
    for _ in 0..10 {
        let reply = mesh.send(Method::GET, "/never", &[]).await;
        assert_eq!(reply.status, StatusCode::OK);
    }
    // A mirrored request sent after them arrives after any copy of theirs
    // would have (same proxy, same shadow cluster).
    mesh.send(Method::GET, "/mirror/barrier", &[]).await;
    mesh.shadow.wait_for("/mirror/barrier").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(mesh.shadow.seen("/never").is_empty());
    assert_eq!(mesh.primary.seen("/never").len(), 10);
}

/// Bytes that differ along their length, so a reordered or truncated copy
/// shows.
fn pattern(len: usize) -> Bytes {
    (0..len)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<u8>>()
        .into()
}

impl Mesh {
    async fn post(&self, path: &str, body: Bytes) -> Reply {
        let length = body.len().to_string();
        let mut request = client::request(Method::POST, "web", path, client::full(body));
        request.headers_mut().insert(
            "content-length",
            http::HeaderValue::from_str(&length).expect("length"),
        );
        let mut client = Http1Client::connect(self.web).await.expect("connect");
        client.send(request).await.expect("request")
    }
}

#[tokio::test]
async fn bodies_within_the_cap_are_mirrored_with_the_same_bytes() {
    let mesh = start_mesh().await;
    let body = pattern(10 * 1024);
    let reply = mesh.post("/mirror/post", body.clone()).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("x-backend"), Some("primary"));
    assert_eq!(reply.text(), "primary");
    assert_eq!(mesh.primary.wait_for("/mirror/post").await.body, body);
    let copy = mesh.shadow.wait_for("/mirror/post").await;
    assert_eq!(copy.method, Method::POST);
    assert_eq!(copy.host, "web-shadow");
    assert_eq!(copy.body.len(), body.len());
    assert_eq!(copy.body, body);
}

#[tokio::test]
async fn bodies_over_the_cap_are_forwarded_but_not_mirrored() {
    let mesh = start_mesh().await;
    let body = pattern(64 * 1024 + 1);
    let reply = mesh.post("/mirror/big", body.clone()).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("x-backend"), Some("primary"));
    assert_eq!(mesh.primary.wait_for("/mirror/big").await.body, body);
    mesh.send(Method::GET, "/mirror/barrier", &[]).await;
    mesh.shadow.wait_for("/mirror/barrier").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(mesh.shadow.seen("/mirror/big").is_empty());
}

#[tokio::test]
async fn allowed_preflights_are_answered_by_the_proxy() {
    let mesh = start_mesh().await;
    let reply = mesh
        .send(
            Method::OPTIONS,
            "/cors/preflight",
            &[
                ("origin", "https://ok.example"),
                ("access-control-request-method", "POST"),
            ],
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    for (name, value) in [
        ("access-control-allow-origin", "https://ok.example"),
        ("access-control-allow-methods", "GET,POST"),
        ("access-control-allow-headers", "x-custom"),
        ("access-control-max-age", "600"),
        ("access-control-allow-credentials", "true"),
    ] {
        assert_eq!(reply.header(name), Some(value), "{name}");
    }
    assert_eq!(reply.header("x-backend"), None);
    // A prefix match allows too.
    let reply = mesh
        .send(
            Method::OPTIONS,
            "/cors/preflight",
            &[
                ("origin", "https://app.example"),
                ("access-control-request-method", "GET"),
            ],
        )
        .await;
    assert_eq!(
        reply.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    assert!(mesh.primary.seen("/cors/preflight").is_empty());
}

#[tokio::test]
async fn cors_responses_name_allowed_origins_only() {
    let mesh = start_mesh().await;
    let reply = mesh
        .send(Method::GET, "/cors/a", &[("origin", "https://ok.example")])
        .await;
    assert_eq!(reply.header("x-backend"), Some("primary"));
    assert_eq!(
        reply.header("access-control-allow-origin"),
        Some("https://ok.example")
    );
    assert_eq!(
        reply.header("access-control-expose-headers"),
        Some("x-backend")
    );
    assert_eq!(
        reply.header("access-control-allow-credentials"),
        Some("true")
    );

    let reply = mesh
        .send(
            Method::GET,
            "/cors/b",
            &[("origin", "https://evil.example")],
        )
        .await;
    assert_eq!(reply.header("x-backend"), Some("primary"));
    assert_eq!(reply.header("access-control-allow-origin"), None);
    assert_eq!(reply.header("access-control-allow-credentials"), None);

    // A preflight from another origin goes upstream, as in Envoy.
    let reply = mesh
        .send(
            Method::OPTIONS,
            "/cors/c",
            &[
                ("origin", "https://evil.example"),
                ("access-control-request-method", "POST"),
            ],
        )
        .await;
    assert_eq!(reply.header("x-backend"), Some("primary"));
    assert_eq!(reply.header("access-control-allow-origin"), None);
    assert_eq!(mesh.primary.seen("/cors/c")[0].method, Method::OPTIONS);
}
