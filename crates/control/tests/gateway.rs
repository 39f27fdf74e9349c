//! An ingress gateway: weft-proxy in router mode, programmed by weftd from
//! Istio `Gateway` resources and the VirtualServices bound to them.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use http::StatusCode;
use weft_testkit::backend::HttpBackend;
use weft_testkit::client::{self, Reply};
use weft_testkit::free_wildcard_port;
use weft_testkit::weftd::WeftdProcess;

const WEFTD: &str = env!("CARGO_BIN_EXE_weftd");

fn registry(services: &[(&str, &HttpBackend)]) -> String {
    let mut yaml = String::new();
    for (name, backend) in services {
        yaml.push_str(&format!(
            "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {name}}}
spec:
  hosts: [{name}.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 9080, name: http, protocol: HTTP}}]
  workloadSelector: {{labels: {{app: {name}}}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: {name}}}
spec:
  address: 127.0.0.1
  ports: {{http: {}}}
  labels: {{app: {name}}}
---
",
            backend.addr.port()
        ));
    }
    yaml
}

/// Gateways on `port` (ours) and `other_port` (another gateway's), the
/// VirtualServices bound to them, and one for sidecars only.
fn gateways(port: u16, other_port: u16) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: edge, namespace: istio-system}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: {port}, name: http, protocol: HTTP}}
    hosts: ['*']
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: elsewhere, namespace: istio-system}}
spec:
  selector: {{istio: other-gateway}}
  servers:
  - port: {{number: {other_port}, name: http, protocol: HTTP}}
    hosts: ['*']
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: shop}}
spec:
  hosts: ['*']
  gateways: [istio-system/edge]
  http:
  - match: [{{uri: {{exact: /productpage}}}}, {{uri: {{prefix: /static}}}}]
    route: [{{destination: {{host: productpage, port: {{number: 9080}}}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: api}}
spec:
  hosts: ['*.example.com']
  gateways: [istio-system/edge]
  http:
  - route: [{{destination: {{host: reviews}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: mesh-only}}
spec:
  hosts: [productpage]
  http:
  - route: [{{destination: {{host: reviews}}}}]
"
    )
}

async fn get(addr: SocketAddr, host: &str, path: &str) -> Reply {
    client::get(addr, host, path).await.expect("request")
}

/// Waits until the gateway serves `path` with 200 (config arrives after
/// the proxy is ready for its first, possibly older, push).
async fn wait_for_route(addr: SocketAddr, host: &str, path: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(reply) = client::get(addr, host, path).await
            && reply.status == StatusCode::OK
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "gateway never routed {host}{path}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_routes_by_host_and_path_from_bound_virtual_services() {
    let productpage = HttpBackend::start("productpage").await;
    let reviews = HttpBackend::start("reviews").await;
    let state = tempfile::tempdir().expect("tempdir");
    let weftd = WeftdProcess::start_in(Path::new(WEFTD), state.path())
        .await
        .expect("weftd");
    let port = free_wildcard_port();
    let other_port = free_wildcard_port();
    let yaml = registry(&[("productpage", &productpage), ("reviews", &reviews)])
        + "---\n"
        + &gateways(port, other_port);
    let reply = weftd.apply(&yaml).await.expect("apply");
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());

    let gateway = weftd
        .ingress_gateway("istio=ingressgateway", &[])
        .await
        .expect("gateway ready");
    let edge: SocketAddr = ([127, 0, 0, 1], port).into();
    wait_for_route(edge, "anything", "/productpage").await;

    // Any host reaches the `*` virtual host; the port in Host is ignored
    // (the gateway may sit behind a port mapping).
    let reply = get(edge, "bookinfo.local:31380", "/productpage").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("x-backend"), Some("productpage"));
    let reply = get(edge, "127.0.0.1", "/static/app.css").await;
    assert_eq!(reply.header("x-backend"), Some("productpage"));

    // A more specific wildcard wins over `*`.
    let reply = get(edge, "api.example.com", "/anything").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("x-backend"), Some("reviews"));

    // No route of the `*` host matches: 404 NR, with the reason.
    let reply = get(edge, "bookinfo.local", "/admin").await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.header("x-weft-response-flags"), Some("NR"));
    assert!(reply.text().contains("/admin"), "{}", reply.text());

    // Telemetry names the service a route went to, not the virtual host.
    let metrics = client::get(gateway.metrics, "metrics", "/stats/prometheus")
        .await
        .expect("scrape")
        .text();
    assert!(
        metrics.contains("destination_service=\"productpage.default.svc.cluster.local\""),
        "{metrics}"
    );
    assert!(!metrics.contains("destination_service=\"*\""), "{metrics}");

    // The other Gateway selects other proxies: its port stays closed here.
    let other: SocketAddr = ([127, 0, 0, 1], other_port).into();
    assert!(tokio::net::TcpStream::connect(other).await.is_err());

    // Routes change live: a new rule bound to the gateway takes effect.
    let more = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: admin}
spec:
  hosts: ['admin.local']
  gateways: [istio-system/edge]
  http:
  - route: [{destination: {host: reviews}}]
";
    let reply = weftd.apply(more).await.expect("apply");
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    wait_for_route(edge, "admin.local", "/admin").await;
    assert_eq!(
        get(edge, "admin.local", "/admin").await.header("x-backend"),
        Some("reviews")
    );
}
