//! Rate limiting through a real weft-proxy gateway: a local token bucket
//! scoped to one route, and a global limit asked of a rate-limit service
//! this test runs, speaking Envoy's gRPC API (it records the descriptors it
//! is sent and answers OVER_LIMIT past a budget), and that service down.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_stream::wrappers::TcpListenerStream;
use weft_proto::envoy::config::core::v3::HeaderValue;
use weft_proto::envoy::service::ratelimit::v3::rate_limit_response::Code;
use weft_proto::envoy::service::ratelimit::v3::rate_limit_service_server::{
    RateLimitService, RateLimitServiceServer,
};
use weft_proto::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use weft_testkit::backend::HttpBackend;
use weft_testkit::client::{self, Http1Client};
use weft_testkit::prometheus::sample;
use weft_testkit::proxy::{ProxyOptions, ProxyProcess};
use weft_testkit::{dead_addr, free_addr};

const BIN: &str = env!("CARGO_BIN_EXE_weft-proxy");

/// What the fake service saw: (domain, descriptors as `k=v,k=v`).
type Seen = Arc<Mutex<Vec<(String, Vec<String>)>>>;

/// A rate-limit service admitting `budget` calls, then OVER_LIMIT.
struct Budget {
    budget: usize,
    seen: Seen,
}

#[tonic::async_trait]
impl RateLimitService for Budget {
    async fn should_rate_limit(
        &self,
        request: tonic::Request<RateLimitRequest>,
    ) -> Result<tonic::Response<RateLimitResponse>, tonic::Status> {
        let request = request.into_inner();
        let descriptors = request
            .descriptors
            .iter()
            .map(|d| {
                d.entries
                    .iter()
                    .map(|e| format!("{}={}", e.key, e.value))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .collect();
        let calls = {
            let mut seen = self.seen.lock().expect("seen");
            seen.push((request.domain, descriptors));
            seen.len()
        };
        let over = calls > self.budget;
        Ok(tonic::Response::new(RateLimitResponse {
            overall_code: if over { Code::OverLimit } else { Code::Ok } as i32,
            response_headers_to_add: vec![HeaderValue {
                key: "x-ratelimit-limit".into(),
                value: self.budget.to_string(),
                raw_value: Vec::new(),
            }],
            ..Default::default()
        }))
    }
}

async fn rate_limit_service(budget: usize) -> (SocketAddr, Seen) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = Seen::default();
    let service = RateLimitServiceServer::new(Budget {
        budget,
        seen: seen.clone(),
    });
    tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await;
    });
    (addr, seen)
}

/// A gateway with two routes to the backend, `limited` (`/limited`) and
/// `open` (everything else), plus `rate_limits`.
fn gateway(listen: SocketAddr, backend: SocketAddr, rls: SocketAddr, rate_limits: &str) -> String {
    format!(
        r#"
version: ratelimit
listeners:
- {{name: gw, address: "{listen}", kind: GATEWAY}}
services:
- name: shop
  hosts: ["shop.example.com"]
  ports:
  - port: {port}
    protocol: HTTP
    cluster: backend
    routes:
    - {{name: limited, match: {{pathPrefix: /limited}}, clusters: [{{cluster: backend}}]}}
    - {{name: open, match: {{pathPrefix: /}}, clusters: [{{cluster: backend}}]}}
clusters:
- {{name: backend, endpoints: [{{address: "{backend}"}}]}}
- {{name: ratelimit, endpoints: [{{address: "{rls}"}}]}}
rateLimits:
{rate_limits}
"#,
        port = listen.port()
    )
}

async fn start(config: &str) -> ProxyProcess {
    let options = ProxyOptions::new(Path::new(BIN), config);
    let mut proxy = ProxyProcess::spawn(options).unwrap_or_else(|err| panic!("{err:#}"));
    proxy
        .wait_ready(Duration::from_secs(20))
        .await
        .unwrap_or_else(|err| panic!("{err:#}"));
    proxy
}

/// Statuses of `n` requests for `path`, one connection.
async fn statuses(addr: SocketAddr, path: &str, n: usize) -> Vec<u16> {
    let mut client = Http1Client::connect(addr).await.expect("connect");
    let mut out = Vec::new();
    for _ in 0..n {
        let reply = client.get("shop.example.com", path).await.expect("reply");
        out.push(reply.status.as_u16());
    }
    out
}

async fn metrics_eventually(proxy: &ProxyProcess, want: &[(&str, &str)], value: f64) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = client::get(proxy.metrics, "metrics", "/stats/prometheus")
            .await
            .expect("metrics")
            .text();
        if sample(&text, "istio_requests_total", want) >= value || Instant::now() > deadline {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_local_bucket_limits_its_route_only_and_answers_429_rl() {
    let backend = HttpBackend::start("backend").await;
    let listen = free_addr();
    let limits = r#"
  rules:
  - name: shop/limited[0]
    match: {routes: [limited]}
    local: {maxTokens: 3, tokensPerFill: 3, fillInterval: 60s}
"#;
    let proxy = start(&gateway(listen, backend.addr, dead_addr(), limits)).await;
    // The bucket holds three tokens and refills only after a minute.
    assert_eq!(
        statuses(listen, "/limited/a", 5).await,
        [200, 200, 200, 429, 429]
    );
    // The other route is not limited.
    assert_eq!(statuses(listen, "/other", 10).await, [200; 10]);
    let mut client = Http1Client::connect(listen).await.expect("connect");
    let reply = client
        .get("shop.example.com", "/limited/b")
        .await
        .expect("reply");
    assert_eq!(reply.status, 429);
    assert!(
        reply.text().contains("local rate limit"),
        "{}",
        reply.text()
    );
    assert_eq!(
        reply.header("x-weft-response-flags"),
        Some("RL"),
        "{:?}",
        reply.headers
    );
    // The backend saw 3 + 10 requests, none of the limited ones.
    assert_eq!(backend.requests(), 13);
    let text = metrics_eventually(
        &proxy,
        &[("response_code", "429"), ("response_flags", "RL")],
        3.0,
    )
    .await;
    assert_eq!(
        sample(
            &text,
            "istio_requests_total",
            &[("response_code", "429"), ("response_flags", "RL")]
        ),
        3.0,
        "{text}"
    );
}

#[tokio::test]
async fn a_refilled_bucket_admits_again() {
    let backend = HttpBackend::start("backend").await;
    let listen = free_addr();
    let limits = r#"
  rules:
  - name: shop/all[0]
    local: {maxTokens: 2, tokensPerFill: 2, fillInterval: 0.5s}
"#;
    let _proxy = start(&gateway(listen, backend.addr, dead_addr(), limits)).await;
    let mut client = Http1Client::connect(listen).await.expect("connect");
    // Until the bucket runs dry: two tokens, and at most one refill of two
    // if a fill lands meanwhile (the fills keep the proxy's own clock).
    let mut admitted = 0;
    loop {
        let status = client
            .get("shop.example.com", "/x")
            .await
            .expect("reply")
            .status;
        if status == 429 {
            break;
        }
        assert_eq!(status, 200);
        admitted += 1;
        assert!(admitted <= 4, "never limited");
    }
    assert!(admitted >= 2, "{admitted}");
    // A whole interval later the bucket has tokens again.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let reply = client.get("shop.example.com", "/x").await.expect("reply");
    assert_eq!(reply.status, 200);
}

#[tokio::test]
async fn the_global_service_sees_the_descriptors_and_its_over_limit_is_429() {
    let backend = HttpBackend::start("backend").await;
    let (rls, seen) = rate_limit_service(2).await;
    let listen = free_addr();
    let limits = r#"
  service: {cluster: ratelimit, domain: shop, timeout: 1s}
  rules:
  - name: shop/global[0]
    match: {routes: [limited]}
    descriptors:
    - entries:
      - {key: generic_key, literal: api}
      - {key: user, header: x-user}
      - {key: path, path: true}
    - entries:
      - {key: remote_address, sourceAddress: true}
"#;
    let _proxy = start(&gateway(listen, backend.addr, rls, limits)).await;
    let mut client = Http1Client::connect(listen).await.expect("connect");
    let mut statuses = Vec::new();
    let (mut first, mut last) = (None, None);
    for _ in 0..4 {
        let request = http::Request::get("/limited/x")
            .header("host", "shop.example.com")
            .header("x-user", "alice")
            .body(client::empty())
            .expect("request");
        let reply = client.send(request).await.expect("reply");
        statuses.push(reply.status.as_u16());
        if first.is_none() {
            first = Some(reply);
        } else {
            last = Some(reply);
        }
    }
    assert_eq!(statuses, [200, 200, 429, 429]);
    let first = first.expect("a reply");
    // Admitted responses carry the service's headers too (its budget).
    assert_eq!(
        first.header("x-ratelimit-limit"),
        Some("2"),
        "{:?}",
        first.headers
    );
    assert_eq!(first.header("x-envoy-ratelimited"), None);
    let last = last.expect("a reply");
    assert_eq!(last.header("x-envoy-ratelimited"), Some("true"));
    assert_eq!(last.header("x-ratelimit-limit"), Some("2"));
    assert_eq!(last.header("x-weft-response-flags"), Some("RL"));
    // The unscoped route never asks the service.
    assert_eq!(self::statuses(listen, "/other", 3).await, [200; 3]);
    let seen_handle = seen.clone();
    let seen = seen.lock().expect("seen").clone();
    assert_eq!(seen.len(), 4, "{seen:?}");
    assert_eq!(
        seen[0],
        (
            "shop".to_string(),
            vec![
                "generic_key=api,user=alice,path=/limited/x".to_string(),
                "remote_address=127.0.0.1".to_string()
            ]
        )
    );
    // Without the header, the first descriptor is not sent (Envoy's rule).
    let _ = self::statuses(listen, "/limited/y", 1).await;
    let last = seen_last(&seen_handle);
    assert_eq!(last.1, ["remote_address=127.0.0.1"], "{last:?}");
}

fn seen_last(seen: &Seen) -> (String, Vec<String>) {
    seen.lock()
        .expect("seen")
        .last()
        .cloned()
        .unwrap_or_default()
}

#[tokio::test]
async fn a_dead_service_fails_open_by_default_and_closed_with_failure_mode_deny() {
    let backend = HttpBackend::start("backend").await;
    let (open, closed) = (free_addr(), free_addr());
    let rule = r#"
  rules:
  - name: shop/global[0]
    descriptors:
    - entries: [{key: generic_key, literal: api}]
"#;
    let fail_open = format!("  service: {{cluster: ratelimit, domain: shop, timeout: 0.2s}}{rule}");
    let fail_closed = format!(
        "  service: {{cluster: ratelimit, domain: shop, timeout: 0.2s, failureModeDeny: true}}{rule}"
    );
    let _open = start(&gateway(open, backend.addr, dead_addr(), &fail_open)).await;
    let _closed = start(&gateway(closed, backend.addr, dead_addr(), &fail_closed)).await;
    assert_eq!(statuses(open, "/x", 3).await, [200; 3]);
    let mut client = Http1Client::connect(closed).await.expect("connect");
    let reply = client.get("shop.example.com", "/x").await.expect("reply");
    // Envoy's answer when the service fails and failure_mode_deny is set.
    assert_eq!(reply.status, 500, "{}", reply.text());
    assert_eq!(reply.header("x-weft-response-flags"), Some("RLSE"));
    assert!(reply.text().contains("failureModeDeny"), "{}", reply.text());
}

#[tokio::test]
async fn a_slow_service_counts_as_failed_after_its_timeout() {
    // A listener that accepts and never answers: the call must give up
    // at the configured timeout, not hang the request.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let silent_addr = silent.local_addr().expect("addr");
    let _hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            held.push(stream);
        }
    });
    let backend = HttpBackend::start("backend").await;
    let listen = free_addr();
    let limits = r#"
  service: {cluster: ratelimit, domain: shop, timeout: 0.3s}
  rules:
  - name: shop/global[0]
    descriptors:
    - entries: [{key: generic_key, literal: api}]
"#;
    let _proxy = start(&gateway(listen, backend.addr, silent_addr, limits)).await;
    let started = Instant::now();
    assert_eq!(statuses(listen, "/x", 1).await, [200]);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(3),
        "{took:?}"
    );
}

#[tokio::test]
async fn a_bad_rate_limit_config_is_refused_naming_the_field() {
    let backend = HttpBackend::start("backend").await;
    let listen = free_addr();
    let limits = r#"
  service: {cluster: nowhere, domain: shop}
  rules:
  - name: bad
    local: {maxTokens: 1, fillInterval: 0.01s}
"#;
    let config = gateway(listen, backend.addr, dead_addr(), limits);
    let options = ProxyOptions::new(Path::new(BIN), &config);
    let mut proxy = ProxyProcess::spawn(options).unwrap_or_else(|err| panic!("{err:#}"));
    let exit = proxy
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("exit");
    assert_ne!(exit, Some(0));
    let logs = proxy.logs();
    assert!(logs.contains("rateLimits.service.cluster"), "{logs}");
    assert!(
        logs.contains("rateLimits.rules[0].local.fillInterval"),
        "{logs}"
    );
}

#[tokio::test]
async fn a_sidecar_limits_its_inbound_port_by_path_and_method() {
    let backend = HttpBackend::start("backend").await;
    let inbound = free_addr();
    let config = format!(
        r#"
version: inbound
listeners:
- {{name: inbound, address: "{inbound}", kind: INBOUND_CAPTURE}}
inboundPorts:
- port: {port}
  protocol: HTTP
  target: "{backend}"
rateLimits:
  rules:
  - name: web/login[0]
    match: {{paths: [/login], methods: [GET], ports: [{port}]}}
    local: {{maxTokens: 1, fillInterval: 60s}}
"#,
        port = inbound.port(),
        backend = backend.addr,
    );
    let _proxy = start(&config).await;
    let mut client = Http1Client::connect(inbound).await.expect("connect");
    let mut seen = Vec::new();
    for path in ["/login", "/login", "/login/other", "/home"] {
        let reply = client.get("web", path).await.expect("reply");
        seen.push(reply.status.as_u16());
    }
    // Exact path and method: the second login is refused, others pass.
    assert_eq!(seen, [200, 429, 200, 200]);
    let post = http::Request::post("/login")
        .header("host", "web")
        .body(client::empty())
        .expect("request");
    assert_eq!(client.send(post).await.expect("reply").status, 200);
}
