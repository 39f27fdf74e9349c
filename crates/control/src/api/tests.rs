//! The API over real HTTP: `serve` on an ephemeral port, requests from the
//! test kit's client.

use std::net::SocketAddr;
use std::sync::Arc;

use http::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use weft_testkit::client::{Http1Client, Reply, empty, full, request};

use super::serve;
use crate::status::StatusBoard;
use crate::store::{ResourceKey, Store};

const REVIEWS: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v1}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews
  namespace: shop
spec:
  host: reviews
  subsets:
  - name: v1
    labels: {version: v1}
"#;

const BROKEN: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: ratings
spec:
  hosts: [ratings]
  http:
  - route:
    - destination: {host: ratings}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: details
spec:
  hosts: [details]
  http:
  - route:
    - destination: {host: details}
      weight: 150
"#;

struct Api {
    addr: SocketAddr,
    store: Arc<Store>,
    status: Arc<StatusBoard>,
}

impl Api {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let store = Arc::new(Store::in_memory());
        let status = Arc::new(StatusBoard::default());
        tokio::spawn(serve(listener, store.clone(), status.clone()));
        Self {
            addr,
            store,
            status,
        }
    }

    async fn call(&self, method: Method, path: &str, body: &str) -> (StatusCode, Value) {
        let reply = self.raw(method, path, body, None).await;
        let value = serde_json::from_slice(&reply.body)
            .unwrap_or_else(|err| panic!("{path}: not JSON ({err}): {}", reply.text()));
        (reply.status, value)
    }

    async fn raw(&self, method: Method, path: &str, body: &str, source: Option<&str>) -> Reply {
        let body = if body.is_empty() {
            empty()
        } else {
            full(body.to_string())
        };
        let mut request = request(method, "weftd", path, body);
        if let Some(source) = source {
            request
                .headers_mut()
                .insert("x-weft-source", source.parse().expect("header"));
        }
        let mut client = Http1Client::connect(self.addr).await.expect("connect");
        client.send(request).await.expect("request")
    }

    async fn apply(&self, body: &str) -> (StatusCode, Value) {
        self.call(Method::POST, "/v1/apply", body).await
    }
}

fn changes(reply: &Value) -> Vec<String> {
    reply["applied"]
        .as_array()
        .expect("applied")
        .iter()
        .map(|a| {
            format!(
                "{} {}/{} {}",
                a["kind"], a["namespace"], a["name"], a["change"]
            )
            .replace('"', "")
        })
        .collect()
}

#[tokio::test]
async fn apply_reports_created_configured_unchanged() {
    let api = Api::start().await;
    let (status, reply) = api.apply(REVIEWS).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(
        changes(&reply),
        [
            "VirtualService default/reviews created",
            "DestinationRule shop/reviews created"
        ]
    );
    assert_eq!(reply["applied"][0]["resourceVersion"], 1);

    let (_, reply) = api.apply(REVIEWS).await;
    assert_eq!(
        changes(&reply),
        [
            "VirtualService default/reviews unchanged",
            "DestinationRule shop/reviews unchanged"
        ]
    );

    let edited = REVIEWS.replacen("subset: v1}", "subset: v2}", 1);
    let (_, reply) = api.apply(&edited).await;
    assert_eq!(
        changes(&reply)[0],
        "VirtualService default/reviews configured"
    );
    assert_eq!(reply["applied"][0]["resourceVersion"], 3);
}

#[tokio::test]
async fn invalid_apply_is_422_and_applies_nothing() {
    let api = Api::start().await;
    let reply = api
        .raw(Method::POST, "/v1/apply", BROKEN, Some("details.yaml"))
        .await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = serde_json::from_slice(&reply.body).expect("json");
    let problems = body["problems"].as_array().expect("problems");
    assert_eq!(problems.len(), 1, "{body}");
    let problem = problems[0].as_str().expect("text");
    assert!(
        problem.starts_with(
            "details.yaml: VirtualService default/details: spec.http[0].route[0].weight"
        ),
        "{problem}"
    );
    assert!(
        api.store.list(None, None).is_empty(),
        "the valid one was applied too"
    );

    let (status, body) = api.apply("kind: [").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["problems"][0]
            .as_str()
            .expect("text")
            .starts_with("request: ")
    );
}

#[tokio::test]
async fn get_lists_and_fetches_with_resource_versions() {
    let api = Api::start().await;
    api.apply(REVIEWS).await;

    let (status, all) = api.call(Method::GET, "/v1/resources", "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(all["items"].as_array().expect("items").len(), 2);

    let (_, shop) = api
        .call(Method::GET, "/v1/resources?kind=dr&namespace=shop", "")
        .await;
    let items = shop["items"].as_array().expect("items");
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["kind"], "DestinationRule");
    assert_eq!(items[0]["metadata"]["resourceVersion"], "2");

    let (_, none) = api
        .call(
            Method::GET,
            "/v1/resources?kind=virtualservices&namespace=shop",
            "",
        )
        .await;
    assert_eq!(none["items"], json!([]));

    let (status, one) = api
        .call(Method::GET, "/v1/resources/vs/default/reviews", "")
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(one["spec"]["hosts"], json!(["reviews"]));
    assert_eq!(one["metadata"]["namespace"], "default");
    assert_eq!(one["metadata"]["resourceVersion"], "1");

    let (status, missing) = api
        .call(Method::GET, "/v1/resources/VirtualService/default/x", "")
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(missing["error"], "VirtualService default/x not found");

    let (status, bad) = api.call(Method::GET, "/v1/resources?kind=pods", "").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(bad["error"].as_str().expect("text").contains("\"pods\""));
}

#[tokio::test]
async fn delete_by_path_and_by_documents() {
    let api = Api::start().await;
    api.apply(REVIEWS).await;

    let (status, reply) = api
        .call(
            Method::DELETE,
            "/v1/resources/destinationrules/shop/reviews",
            "",
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(reply["deleted"]["kind"], "DestinationRule");
    let (status, _) = api
        .call(Method::DELETE, "/v1/resources/dr/shop/reviews", "")
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // The documents need not validate: kind, namespace and name suffice.
    let named = "apiVersion: networking.istio.io/v1\nkind: VirtualService\n\
                 metadata: {name: reviews}\nspec: {hosts: 7}\n---\n\
                 apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: edge}\n";
    let (status, reply) = api.call(Method::POST, "/v1/delete", named).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(reply["deleted"][0]["name"], "reviews");
    assert_eq!(reply["deleted"][0]["namespace"], "default");
    assert_eq!(
        reply["notFound"],
        json!([{"kind": "Gateway", "namespace": "default", "name": "edge"}])
    );
    assert!(
        api.store
            .get(&ResourceKey::new("VirtualService", "default", "reviews"))
            .is_none()
    );

    let (status, reply) = api
        .call(
            Method::POST,
            "/v1/delete",
            "kind: VirtualService\nmetadata: {}\n",
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{reply}");
}

#[tokio::test]
async fn proxies_show_sync_state() {
    let api = Api::start().await;
    api.status.update("reviews-v1-abc.shop", |p| {
        p.workload = "reviews-v1".into();
        p.namespace = "shop".into();
        p.connected = true;
        p.sent_version = "7".into();
        p.acked_version = "7".into();
    });
    api.status.update("ratings-1.shop", |p| {
        p.connected = true;
        p.sent_version = "7".into();
        p.acked_version = "6".into();
        p.error = Some("bad route".into());
    });
    let (status, reply) = api.call(Method::GET, "/v1/proxies", "").await;
    assert_eq!(status, StatusCode::OK);
    let proxies = reply["proxies"].as_array().expect("proxies");
    assert_eq!(proxies.len(), 2);
    assert_eq!(proxies[0]["id"], "ratings-1.shop");
    assert_eq!(proxies[0]["synced"], false);
    assert_eq!(proxies[0]["error"], "bad route");
    assert_eq!(proxies[1]["synced"], true);
    assert_eq!(proxies[1]["ackedVersion"], "7");
}

#[tokio::test]
async fn unknown_routes_and_huge_bodies_get_json_errors() {
    let api = Api::start().await;
    let (status, reply) = api.call(Method::GET, "/v2/nothing", "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(reply["error"].is_string());
    let (status, _) = api.call(Method::GET, "/v1/apply", "").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);

    let huge = "#".repeat(super::MAX_BODY + 1);
    let (status, reply) = api.call(Method::POST, "/v1/apply", &huge).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{reply}");
}

#[tokio::test]
async fn tokens_are_minted_only_with_a_ca_and_for_valid_names() {
    let without = Api::start().await;
    let (status, _) = without
        .call(
            Method::POST,
            "/v1/tokens",
            r#"{"namespace":"default","serviceAccount":"sleep"}"#,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "no CA, no tokens");

    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Arc::new(
        crate::ca::Ca::open(&crate::ca::CaOptions {
            state_dir: dir.path().to_path_buf(),
            cacerts: None,
            trust_domain: "cluster.local".into(),
            workload_ttl: crate::ca::DEFAULT_WORKLOAD_TTL,
        })
        .expect("ca"),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(super::serve_with_ca(
        listener,
        Arc::new(Store::in_memory()),
        Arc::new(StatusBoard::default()),
        Some(ca.clone()),
    ));
    let with = Api {
        addr,
        store: Arc::new(Store::in_memory()),
        status: Arc::new(StatusBoard::default()),
    };
    let (status, reply) = with
        .call(
            Method::POST,
            "/v1/tokens",
            r#"{"namespace":"shop","serviceAccount":"cart"}"#,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(reply["identity"], "spiffe://cluster.local/ns/shop/sa/cart");
    let token = reply["token"].as_str().expect("token");
    let claims = ca.tokens().verify(token).expect("weftd's own token");
    assert_eq!(
        (claims.namespace.as_str(), claims.service_account.as_str()),
        ("shop", "cart")
    );

    for bad in [
        r#"{"namespace":"Shop","serviceAccount":"cart"}"#,
        r#"{"namespace":"shop"}"#,
        r#"{"namespace":"shop","serviceAccount":"cart","admin":true}"#,
        "not json",
    ] {
        let (status, reply) = with.call(Method::POST, "/v1/tokens", bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {reply}");
        assert!(reply["error"].as_str().is_some_and(|e| !e.is_empty()));
    }
}
