//! A RateLimit applied to weftd reaches the ingress gateway it selects: a
//! local bucket on one VirtualService route, and global limits on another
//! asked of a rate-limit service (this test's, Envoy's gRPC API) that the
//! mesh knows as a ServiceEntry + WorkloadEntry and that the gateway's own
//! routes never name.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::StatusCode;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_stream::wrappers::TcpListenerStream;
use weft_proto::envoy::service::ratelimit::v3::rate_limit_response::Code;
use weft_proto::envoy::service::ratelimit::v3::rate_limit_service_server::{
    RateLimitService, RateLimitServiceServer,
};
use weft_proto::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use weft_testkit::backend::HttpBackend;
use weft_testkit::free_wildcard_port;
use weft_testkit::weftd::WeftdProcess;

const WEFTD: &str = env!("CARGO_BIN_EXE_weftd");

type Seen = Arc<Mutex<Vec<String>>>;

/// Refuses calls whose `user` entry is `greedy`; records every descriptor.
struct Judge(Seen);

#[tonic::async_trait]
impl RateLimitService for Judge {
    async fn should_rate_limit(
        &self,
        request: tonic::Request<RateLimitRequest>,
    ) -> Result<tonic::Response<RateLimitResponse>, tonic::Status> {
        let request = request.into_inner();
        let mut greedy = false;
        for descriptor in &request.descriptors {
            let text: Vec<String> = descriptor
                .entries
                .iter()
                .map(|e| format!("{}={}", e.key, e.value))
                .collect();
            greedy |= text.iter().any(|t| t == "user=greedy");
            self.0
                .lock()
                .expect("seen")
                .push(format!("{}:{}", request.domain, text.join(",")));
        }
        let code = if greedy { Code::OverLimit } else { Code::Ok };
        Ok(tonic::Response::new(RateLimitResponse {
            overall_code: code as i32,
            ..Default::default()
        }))
    }
}

async fn rate_limit_service() -> (SocketAddr, Seen) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = Seen::default();
    let service = RateLimitServiceServer::new(Judge(seen.clone()));
    tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await;
    });
    (addr, seen)
}

fn mesh(port: u16, shop: u16, rls: u16) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: shop}}
spec:
  hosts: [shop.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 9080, name: http, protocol: HTTP}}]
  workloadSelector: {{labels: {{app: shop}}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: shop}}
spec:
  address: 127.0.0.1
  ports: {{http: {shop}}}
  labels: {{app: shop}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: ratelimit, namespace: infra}}
spec:
  hosts: [ratelimit.infra.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 8081, name: grpc, protocol: GRPC}}]
  workloadSelector: {{labels: {{app: ratelimit}}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: ratelimit, namespace: infra}}
spec:
  address: 127.0.0.1
  ports: {{grpc: {rls}}}
  labels: {{app: ratelimit}}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: edge, namespace: istio-system}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: {port}, name: http, protocol: HTTP}}
    hosts: ['*']
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: shop}}
spec:
  hosts: ['*']
  gateways: [istio-system/edge]
  http:
  - name: checkout
    match: [{{uri: {{prefix: /checkout}}}}]
    route: [{{destination: {{host: shop, port: {{number: 9080}}}}}}]
  - name: browse
    route: [{{destination: {{host: shop, port: {{number: 9080}}}}}}]
---
apiVersion: weft.io/v1alpha1
kind: RateLimit
metadata: {{name: edge, namespace: istio-system}}
spec:
  selector: {{matchLabels: {{istio: ingressgateway}}}}
  service:
    host: ratelimit.infra.svc.cluster.local
    port: 8081
    domain: edge
    timeout: 1s
  limits:
  - match: {{routes: [checkout]}}
    local: {{maxTokens: 2, tokensPerFill: 2, fillInterval: 1m}}
  - match: {{routes: [browse]}}
    descriptors:
    - entries:
      - genericKey: {{value: browse}}
      - requestHeader: {{header: x-user, key: user}}
---
"
    )
}

/// Status and lower-cased head of one GET.
async fn get(port: u16, path: &str, user: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let request = format!(
        "GET {path} HTTP/1.1\r\nhost: shop.example\r\nx-user: {user}\r\nconnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .expect("in time")
        .expect("read");
    let text = String::from_utf8_lossy(&raw).to_ascii_lowercase();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

#[tokio::test]
async fn a_rate_limit_applied_to_weftd_limits_the_gateway_per_route_and_globally() {
    let shop = HttpBackend::start("shop").await;
    let (rls, seen) = rate_limit_service().await;
    let state = tempfile::tempdir().expect("tempdir");
    let weftd = WeftdProcess::start_in(Path::new(WEFTD), state.path())
        .await
        .expect("weftd");
    let port = free_wildcard_port();
    let reply = weftd
        .apply(&mesh(port, shop.addr.port(), rls.port()))
        .await
        .expect("apply");
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let gateway = weftd
        .ingress_gateway("istio=ingressgateway", &[])
        .await
        .expect("gateway ready");
    // The global limit is in force once a greedy user is refused.
    let deadline = Instant::now() + Duration::from_secs(15);
    let refused = loop {
        let (status, head) = get(port, "/browse", "greedy").await;
        if status == 429 || Instant::now() > deadline {
            break (status, head);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    if refused.0 != 429 {
        let dump = gateway.admin_get("/config_dump").await.map(|r| r.text());
        panic!("{}\n{dump:?}\n{}", refused.1, gateway.logs());
    }
    assert!(
        refused.1.contains("x-envoy-ratelimited: true"),
        "{}",
        refused.1
    );
    assert_eq!(get(port, "/browse", "alice").await.0, 200);
    assert!(
        seen.lock()
            .expect("seen")
            .contains(&"edge:generic_key=browse,user=alice".to_string())
    );
    // The checkout route's bucket: two, then 429 RL; browsing is unaffected
    // by it (and the service is not asked about checkout).
    let asked = seen.lock().expect("seen").len();
    let checkout: Vec<u16> = [
        get(port, "/checkout", "bob").await.0,
        get(port, "/checkout", "bob").await.0,
        get(port, "/checkout", "bob").await.0,
    ]
    .to_vec();
    assert_eq!(checkout, [200, 200, 429]);
    assert_eq!(seen.lock().expect("seen").len(), asked);
    let (status, head) = get(port, "/checkout", "bob").await;
    assert_eq!(status, 429);
    assert!(head.contains("x-weft-response-flags: rl"), "{head}");
    assert_eq!(get(port, "/browse", "bob").await.0, 200);
}
