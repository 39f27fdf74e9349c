//! The API over real HTTP: `serve` on an ephemeral port, requests from the
//! test kit's client.

use std::net::SocketAddr;
use std::sync::Arc;

use http::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use weft_testkit::client::{Http1Client, Reply, empty, full, request_with_headers};

use super::{AdminToken, Api as Served, serve};
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

const TOKEN: &str = "test-admin-token";

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
        let served = Served::new(store.clone(), status.clone(), AdminToken::new(TOKEN));
        tokio::spawn(serve(listener, Arc::new(served)));
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
        // Apply and delete take YAML inside JSON, as `weft apply` sends it.
        let body = if body.is_empty() {
            empty()
        } else if path == "/v1/apply" || path == "/v1/delete" {
            full(json!({ "text": body }).to_string())
        } else {
            full(body.to_string())
        };
        let mut headers = vec![
            ("authorization", format!("Bearer {TOKEN}")),
            ("content-type", "application/json".to_string()),
        ];
        if let Some(source) = source {
            headers.push(("x-weft-source", source.to_string()));
        }
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let request = request_with_headers(method, "localhost", path, &headers, body);
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
async fn tokens_are_minted_for_existing_groups_listed_and_revoked() {
    let without = Api::start().await;
    let (status, _) = without
        .call(
            Method::POST,
            "/v1/tokens",
            r#"{"namespace":"default","workloadGroup":"sleep"}"#,
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
    let store = Arc::new(Store::in_memory());
    store
        .apply_text(
            "apiVersion: networking.istio.io/v1\nkind: WorkloadGroup\nmetadata: {name: cart, namespace: shop}\nspec:\n  template: {serviceAccount: cart-sa, labels: {app: cart}}\n---\napiVersion: networking.istio.io/v1\nkind: WorkloadGroup\nmetadata: {name: plain, namespace: shop}\nspec: {template: {}}\n",
            "groups.yaml",
        )
        .expect("groups");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let served = Served::new(
        store.clone(),
        Arc::new(StatusBoard::default()),
        AdminToken::new(TOKEN),
    )
    .with_ca(ca.clone());
    tokio::spawn(serve(listener, Arc::new(served)));
    let with = Api {
        addr,
        store,
        status: Arc::new(StatusBoard::default()),
    };
    let (status, reply) = with
        .call(
            Method::POST,
            "/v1/tokens",
            r#"{"namespace":"shop","workloadGroup":"cart","address":"10.0.0.7","ttl":"10m"}"#,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(
        reply["identity"],
        "spiffe://cluster.local/ns/shop/sa/cart-sa"
    );
    let token = reply["token"].as_str().expect("token");
    let claims = ca.tokens().verify(token).expect("weftd's own token");
    assert_eq!(
        (
            claims.namespace.as_str(),
            claims.service_account.as_str(),
            claims.workload_group.as_str()
        ),
        ("shop", "cart-sa", "cart")
    );
    assert_eq!(claims.address, Some("10.0.0.7".parse().expect("ip")));
    assert_eq!(claims.expires - claims.iat, 600);
    assert_eq!(reply["id"], claims.id.as_str());

    let (_, plain) = with
        .call(
            Method::POST,
            "/v1/tokens",
            r#"{"namespace":"shop","workloadGroup":"plain"}"#,
        )
        .await;
    assert_eq!(
        plain["identity"],
        "spiffe://cluster.local/ns/shop/sa/default"
    );

    let (status, listed) = with.call(Method::GET, "/v1/tokens", "").await;
    assert_eq!(status, StatusCode::OK);
    let tokens = listed["tokens"].as_array().expect("tokens");
    assert_eq!(tokens.len(), 2, "{listed}");
    assert_eq!(tokens[0]["workloadGroup"], "cart");
    assert_eq!(tokens[0]["address"], "10.0.0.7");
    assert!(
        tokens[0]["mintedBy"]
            .as_str()
            .expect("who")
            .contains("bearer token")
    );
    assert!(
        !listed.to_string().contains(token),
        "never the token itself"
    );

    let path = format!("/v1/tokens/{}", claims.id);
    let (status, revoked) = with.call(Method::DELETE, &path, "").await;
    assert_eq!(status, StatusCode::OK, "{revoked}");
    assert!(matches!(
        ca.tokens().verify(token),
        Err(crate::ca::token::TokenError::Revoked(_))
    ));
    let (status, _) = with.call(Method::DELETE, "/v1/tokens/nope", "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (status, reply) = with
        .call(
            Method::POST,
            "/v1/tokens",
            r#"{"namespace":"shop","workloadGroup":"missing"}"#,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        reply["error"]
            .as_str()
            .expect("error")
            .contains("no WorkloadGroup shop/missing"),
        "{reply}"
    );
    for bad in [
        r#"{"namespace":"Shop","workloadGroup":"cart"}"#,
        r#"{"namespace":"shop"}"#,
        r#"{"namespace":"shop","workloadGroup":"cart","admin":true}"#,
        r#"{"namespace":"shop","workloadGroup":"cart","ttl":"forever"}"#,
        r#"{"namespace":"shop","workloadGroup":"cart","ttl":"31d"}"#,
        r#"{"namespace":"shop","workloadGroup":"cart","address":"nowhere"}"#,
        "not json",
    ] {
        let (status, reply) = with.call(Method::POST, "/v1/tokens", bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {reply}");
        assert!(reply["error"].as_str().is_some_and(|e| !e.is_empty()));
    }
}

#[tokio::test]
async fn apply_takes_json_objects_or_yaml_inside_json() {
    let api = Api::start().await;
    // The objects themselves, as JSON (what `curl -d @vs.json` sends).
    let object = json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "raw"},
        "spec": {"hosts": ["raw"], "http": [{"route": [{"destination": {"host": "raw"}}]}]}
    });
    let request = request_with_headers(
        Method::POST,
        "localhost",
        "/v1/apply",
        &[
            ("authorization", &format!("Bearer {TOKEN}")),
            ("content-type", "application/json"),
        ],
        full(object.to_string()),
    );
    let mut client = Http1Client::connect(api.addr).await.expect("connect");
    let reply = client.send(request).await.expect("request");
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert!(
        api.store
            .get(&ResourceKey::new("VirtualService", "default", "raw"))
            .is_some()
    );

    // YAML inside JSON keeps its file name (and lines) in messages.
    let wrapped = json!({ "text": BROKEN, "source": "details.yaml" }).to_string();
    let request = request_with_headers(
        Method::POST,
        "localhost",
        "/v1/apply",
        &[
            ("authorization", &format!("Bearer {TOKEN}")),
            ("content-type", "application/json"),
        ],
        full(wrapped),
    );
    let mut client = Http1Client::connect(api.addr).await.expect("connect");
    let reply = client.send(request).await.expect("request");
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(reply.text().contains("details.yaml"), "{}", reply.text());

    // Not JSON at all, though labelled so: a sentence, nothing applied.
    let request = request_with_headers(
        Method::POST,
        "localhost",
        "/v1/apply",
        &[
            ("authorization", &format!("Bearer {TOKEN}")),
            ("content-type", "application/json"),
        ],
        full("kind: VirtualService\nmetadata: {name: yaml}\n"),
    );
    let mut client = Http1Client::connect(api.addr).await.expect("connect");
    let reply = client.send(request).await.expect("request");
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text());
    assert!(reply.text().contains("not JSON"), "{}", reply.text());
    assert_eq!(api.store.list(None, None).len(), 1);
}

#[tokio::test]
async fn apply_accepts_unhonoured_fields_and_returns_a_warning_for_each() {
    let api = Api::start().await;
    let rule = r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings, namespace: shop}
spec:
  host: ratings
  trafficPolicy:
    tunnel: {protocol: CONNECT, targetHost: egress.example, targetPort: 8080}
    proxyProtocol: {version: V2}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ws, namespace: shop}
spec:
  hosts: [ws]
  http:
  - websocketUpgrade: true
    route:
    - destination: {host: ws}
"#;
    let (status, reply) = api.apply(rule).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    let reply: weft_api::reply::ApplyReply =
        serde_json::from_value(reply).expect("a typed apply reply");
    assert_eq!(reply.applied.len(), 2);
    let fields: Vec<(&str, &str)> = reply
        .warnings
        .iter()
        .map(|w| (w.resource.as_str(), w.field.as_str()))
        .collect();
    assert_eq!(
        fields,
        [
            (
                "DestinationRule shop/ratings",
                "spec.trafficPolicy.proxyProtocol"
            ),
            ("DestinationRule shop/ratings", "spec.trafficPolicy.tunnel"),
            ("VirtualService shop/ws", "spec.http[0].websocketUpgrade"),
        ]
    );
    assert!(reply.warnings[1].message.contains("not implemented"));
}

/// What weftd sends is what the CLI's types read: every answer of a
/// session decoded with `weft_api::wire`, as `weft` decodes it.
#[tokio::test]
async fn answers_decode_as_the_weft_cli_reads_them() {
    use weft_api::wire::{
        AnalyzeReply, ApplyReply, DeleteReply, DeletedReply, ErrorReply, ListReply, ProblemsReply,
        ProxiesReply, Sync, decode,
    };
    let api = Api::start().await;
    let (status, reply) = api.call(Method::POST, "/v1/apply", REVIEWS).await;
    assert_eq!(status, StatusCode::OK);
    let applied: ApplyReply = decode("apply", &reply).expect("apply reply");
    assert_eq!(applied.applied.len(), 2);
    assert_eq!(applied.applied[0].change, "created");

    let (status, reply) = api.call(Method::POST, "/v1/apply", BROKEN).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let refused: ProblemsReply = decode("refusal", &reply).expect("problems");
    assert!(
        refused.problems.iter().any(|p| p.contains("weight")),
        "{refused:?}"
    );

    let (_, reply) = api.call(Method::GET, "/v1/resources?kind=vs", "").await;
    let listed: ListReply = decode("list", &reply).expect("list");
    assert_eq!(listed.items.len(), 1);
    assert_eq!(listed.items[0]["metadata"]["name"], "reviews");

    let (_, reply) = api
        .call(Method::DELETE, "/v1/resources/dr/shop/reviews", "")
        .await;
    let deleted: DeletedReply = decode("delete", &reply).expect("deleted");
    assert_eq!(deleted.deleted.kind, "DestinationRule");
    let (_, reply) = api
        .call(
            Method::POST,
            "/v1/delete",
            "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: edge}\n",
        )
        .await;
    let deleted: DeleteReply = decode("delete", &reply).expect("delete by documents");
    assert!(deleted.deleted.is_empty());
    assert_eq!(deleted.not_found[0].name, "edge");

    api.status.update("ratings-1.shop", |p| {
        p.connected = true;
        p.sent_version = "7".into();
        p.acked_version = "6".into();
        p.error = Some("bad route".into());
    });
    let (_, reply) = api.call(Method::GET, "/v1/proxies", "").await;
    let proxies: ProxiesReply = decode("proxies", &reply).expect("proxies");
    assert_eq!(proxies.proxies[0].sync(), Sync::Nack);
    assert!(!proxies.proxies[0].synced);

    let (status, reply) = api.call(Method::POST, "/v1/analyze", "{}").await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    let _: AnalyzeReply = decode("analysis", &reply).expect("analysis");
    let (status, reply) = api
        .call(
            Method::POST,
            "/v1/analyze",
            r#"{"objects": [{"document": "two"}]}"#,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let error: ErrorReply = decode("error", &reply).expect("error");
    assert!(
        error
            .error
            .starts_with("the analyze request is not understood: field objects[0].document"),
        "{}",
        error.error
    );
}
