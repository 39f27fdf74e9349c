//! `POST /v1/analyze` and `GET /v1/describe` over real HTTP.

use std::net::SocketAddr;
use std::sync::Arc;

use http::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use weft_testkit::client::{Http1Client, empty, full, request_with_headers};

use super::{AdminToken, Api, serve};
use crate::status::StatusBoard;
use crate::store::Store;

const SHOP: &str = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: shop}
spec:
  hosts: [shop.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  workloadSelector: {labels: {app: shop}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: shop-v1}
spec:
  address: 10.0.0.1
  labels: {app: shop, version: v1}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: shop}
spec:
  host: shop
  subsets: [{name: v1, labels: {version: v1}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: shop}
spec:
  hosts: [shop]
  http:
  - route:
    - destination: {host: shop, subset: v2}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: shop-readers}
spec:
  selector: {matchLabels: {version: v1}}
  action: ALLOW
"#;

async fn start() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let store = Arc::new(Store::in_memory());
    store.apply_text(SHOP, "shop.yaml").expect("apply");
    let api = Api::new(
        store,
        Arc::new(StatusBoard::default()),
        AdminToken::new("t"),
    );
    tokio::spawn(serve(listener, Arc::new(api)));
    addr
}

async fn call(addr: SocketAddr, method: Method, path: &str, body: &str) -> (StatusCode, Value) {
    let body = if body.is_empty() {
        empty()
    } else {
        full(body.to_string())
    };
    let mut client = Http1Client::connect(addr).await.expect("connect");
    let reply = client
        .send(request_with_headers(
            method,
            "localhost",
            path,
            &[
                ("authorization", "Bearer t"),
                ("content-type", "application/json"),
            ],
            body,
        ))
        .await
        .expect("request");
    let value = serde_json::from_slice(&reply.body).expect("JSON");
    (reply.status, value)
}

#[tokio::test]
async fn analyze_reports_on_the_store_and_on_objects_sent_with_it() {
    let addr = start().await;
    let (status, reply) = call(addr, Method::POST, "/v1/analyze", "").await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    let messages = reply["messages"].as_array().expect("messages");
    assert_eq!(messages.len(), 1, "{reply}");
    assert_eq!(messages[0]["code"], "IST0101");
    assert_eq!(messages[0]["resource"], "VirtualService default/shop");

    // A gateway-bound VirtualService sent along: its gateway is missing.
    let extra = json!({"objects": [{"origin": "edge.yaml", "document": 1, "object": {
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "edge"},
        "spec": {"hosts": ["shop.example.com"], "gateways": ["edge-gateway"]}}}],
        "analyzers": ["virtualservice.GatewayAnalyzer"]});
    let (status, reply) = call(addr, Method::POST, "/v1/analyze", &extra.to_string()).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    let codes: Vec<&str> = reply["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter_map(|m| m["code"].as_str())
        .collect();
    assert_eq!(codes, ["IST0101", "IST0132"], "{reply}");
    assert_eq!(reply["messages"][0]["origin"], "edge.yaml");

    let (status, _) = call(addr, Method::POST, "/v1/analyze", "{not json").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let unknown = json!({"analyzers": ["nope"]}).to_string();
    let (status, reply) = call(addr, Method::POST, "/v1/analyze", &unknown).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(reply["error"].as_str().is_some_and(|e| e.contains("nope")));
}

#[tokio::test]
async fn describe_explains_routes_rules_endpoints_and_policies() {
    let addr = start().await;
    let (status, reply) = call(addr, Method::GET, "/v1/describe?service=shop", "").await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(reply["service"]["host"], "shop.default.svc.cluster.local");
    assert_eq!(reply["virtualServices"][0]["name"], "shop");
    assert_eq!(reply["virtualServices"][0]["applies"], true);
    assert_eq!(
        reply["virtualServices"][0]["rules"][0]["routes"][0]["subset"],
        "v2"
    );
    assert_eq!(reply["destinationRules"][0]["subsets"][0]["name"], "v1");
    assert_eq!(reply["endpoints"][0]["addresses"][0], "10.0.0.1:80");
    assert_eq!(reply["endpoints"][0]["subsets"], json!(["v1"]));
    let policy = &reply["policies"][0];
    assert_eq!(policy["kind"], "AuthorizationPolicy");
    assert!(
        policy["why"]
            .as_str()
            .is_some_and(|w| w.contains("version=v1") && w.contains("shop-v1")),
        "{policy}"
    );

    let (status, reply) = call(addr, Method::GET, "/v1/describe?service=nope", "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        reply["error"]
            .as_str()
            .is_some_and(|e| e.contains("shop.default.svc.cluster.local"))
    );
    let (status, _) = call(addr, Method::GET, "/v1/describe", "").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = call(addr, Method::POST, "/v1/describe", "").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn pushed_config_of_an_unknown_proxy_is_404() {
    let addr = start().await;
    let (status, reply) = call(addr, Method::GET, "/v1/proxies/nobody-here/config", "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        reply["error"]
            .as_str()
            .is_some_and(|e| e.contains("nobody-here")),
        "{reply}"
    );
    let (status, _) = call(addr, Method::DELETE, "/v1/proxies/nobody-here/config", "").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
}
