//! CUSTOM AuthorizationPolicies ask the external authorizers MeshConfig's
//! `extensionProviders` name: a gRPC one (this test's tonic server, Envoy's
//! `Authorization/Check`) and an HTTP one (a hyper server), both known to
//! the mesh as ServiceEntry + WorkloadEntry that the gateway's routes never
//! name. An allowed request reaches the backend with the authorizer's
//! header; a denied one gets the authorizer's status, header and body; a
//! dead authorizer lets requests through with failOpen and answers
//! statusOnError without; a provider MeshConfig does not have fails closed.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_stream::wrappers::TcpListenerStream;
use weft_proto::envoy::config::core::v3::{HeaderValue, HeaderValueOption};
use weft_proto::envoy::service::auth::v3::authorization_server::{
    Authorization, AuthorizationServer,
};
use weft_proto::envoy::service::auth::v3::check_response::HttpResponse;
use weft_proto::envoy::service::auth::v3::{
    CheckRequest, CheckResponse, DeniedHttpResponse, OkHttpResponse,
};
use weft_proto::envoy::r#type::v3::HttpStatus;
use weft_proto::google::rpc::Status;
use weft_testkit::backend::serve;
use weft_testkit::weftd::WeftdProcess;
use weft_testkit::{free_addr, free_wildcard_port};

const WEFTD: &str = env!("CARGO_BIN_EXE_weftd");

type Seen = Arc<Mutex<Vec<String>>>;

fn header(key: &str, value: &str) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: key.into(),
            value: value.into(),
            raw_value: Vec::new(),
        }),
        ..Default::default()
    }
}

/// Allows `x-user: alice` (telling the backend who she is); denies anyone
/// else with 418. Records "METHOD path principal-or-none".
struct Judge(Seen);

#[tonic::async_trait]
impl Authorization for Judge {
    async fn check(
        &self,
        request: tonic::Request<CheckRequest>,
    ) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
        let attributes = request.into_inner().attributes.unwrap_or_default();
        let http = attributes.request.and_then(|r| r.http).unwrap_or_default();
        self.0
            .lock()
            .expect("seen")
            .push(format!("{} {} host={}", http.method, http.path, http.host));
        let user = http.headers.get("x-user").cloned().unwrap_or_default();
        let answer = if user == "alice" {
            CheckResponse {
                status: Some(Status::default()),
                http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
                    headers: vec![header("x-auth-user", "alice-by-grpc")],
                    ..Default::default()
                })),
            }
        } else {
            CheckResponse {
                status: Some(Status {
                    code: 7,
                    message: "denied".into(),
                }),
                http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
                    status: Some(HttpStatus { code: 418 }),
                    headers: vec![header("x-denied-by", "grpc")],
                    body: "grpc authorizer says no".into(),
                })),
            }
        };
        Ok(tonic::Response::new(answer))
    }
}

async fn grpc_authorizer() -> (SocketAddr, Seen) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = Seen::default();
    let service = AuthorizationServer::new(Judge(seen.clone()));
    tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await;
    });
    (addr, seen)
}

/// The HTTP authorizer: 200 with `x-auth-user` for alice, 451 with a body
/// and `x-denied-by` for anyone else. Records "METHOD path".
async fn http_authorizer(seen: Seen) -> weft_testkit::backend::Served {
    serve(move |request: Request<Incoming>| {
        let seen = seen.clone();
        async move {
            seen.lock().expect("seen").push(format!(
                "{} {} cookie={:?}",
                request.method(),
                request.uri(),
                request.headers().get("cookie")
            ));
            let alice = request
                .headers()
                .get("x-user")
                .is_some_and(|v| v == "alice");
            let response = if alice {
                Response::builder()
                    .header("x-auth-user", "alice-by-http")
                    .header("x-not-forwarded", "1")
                    .body(Full::new(Bytes::new()))
            } else {
                Response::builder()
                    .status(451)
                    .header("x-denied-by", "http")
                    .body(Full::new(Bytes::from_static(b"http authorizer says no")))
            };
            Ok::<_, Infallible>(response.expect("response"))
        }
    })
    .await
}

/// The backend: tells who the authorizer said the caller is.
async fn backend() -> weft_testkit::backend::Served {
    serve(|request: Request<Incoming>| async move {
        let user = request
            .headers()
            .get("x-auth-user")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("nobody")
            .to_string();
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(format!(
            "shop sees {user}"
        )))))
    })
    .await
}

fn entry(name: &str, port: u16, protocol: &str, target: u16) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {name}, namespace: infra}}
spec:
  hosts: [{name}.infra.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: {port}, name: {protocol}, protocol: {protocol}}}]
  workloadSelector: {{labels: {{app: {name}}}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: {name}, namespace: infra}}
spec:
  address: 127.0.0.1
  ports: {{{protocol}: {target}}}
  labels: {{app: {name}}}
---
"
    )
}

fn custom(name: &str, provider: &str, prefix: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: {name}, namespace: istio-system}}
spec:
  selector: {{matchLabels: {{istio: ingressgateway}}}}
  action: CUSTOM
  provider: {{name: {provider}}}
  rules:
  - to: [{{operation: {{paths: [\"{prefix}/*\"]}}}}]
---
"
    )
}

fn mesh(port: u16, shop: u16, grpc: u16, http: u16, dead: u16) -> String {
    let mut yaml = String::new();
    yaml += &entry("shop", 9080, "http", shop);
    yaml += &entry("authz-grpc", 9191, "grpc", grpc);
    yaml += &entry("authz-http", 8000, "http", http);
    yaml += &entry("authz-dead", 8000, "http", dead);
    yaml += &format!(
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
kind: VirtualService
metadata: {{name: shop, namespace: infra}}
spec:
  hosts: ['*']
  gateways: [istio-system/edge]
  http:
  - route: [{{destination: {{host: shop.infra.svc.cluster.local, port: {{number: 9080}}}}}}]
---
"
    );
    yaml += &custom("by-grpc", "grpc-authz", "/g");
    yaml += &custom("by-http", "http-authz", "/h");
    yaml += &custom("dead-open", "dead-open", "/open");
    yaml += &custom("dead-closed", "dead-closed", "/closed");
    yaml += &custom("unknown", "nobody-has-this", "/unknown");
    yaml
}

const MESH_CONFIG: &str = "extensionProviders:
- name: grpc-authz
  envoyExtAuthzGrpc: {service: authz-grpc.infra.svc.cluster.local, port: 9191, timeout: 2s}
- name: http-authz
  envoyExtAuthzHttp:
    service: authz-http.infra.svc.cluster.local
    port: 8000
    timeout: 2s
    pathPrefix: /authz
    includeRequestHeadersInCheck: [x-user]
    headersToUpstreamOnAllow: [x-auth-user]
- name: dead-open
  envoyExtAuthzHttp: {service: authz-dead.infra.svc.cluster.local, port: 8000, timeout: 1s, failOpen: true}
- name: dead-closed
  envoyExtAuthzGrpc: {service: authz-dead.infra.svc.cluster.local, port: 8000, timeout: 1s, statusOnError: \"503\"}
";

/// Status and lower-cased response (head and body) of one GET.
async fn get(port: u16, path: &str, user: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let request = format!(
        "GET {path} HTTP/1.1\r\nhost: shop.example\r\nx-user: {user}\r\ncookie: c=1\r\n\
         connection: close\r\n\r\n"
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_policies_ask_grpc_and_http_authorizers_and_fail_as_configured() {
    let shop = backend().await;
    let (grpc, grpc_seen) = grpc_authorizer().await;
    let http_seen = Seen::default();
    let http = http_authorizer(http_seen.clone()).await;
    // Nothing listens there: connecting is refused.
    let dead = free_addr().port();
    let dir = tempfile::tempdir().expect("tempdir");
    let mesh_file = dir.path().join("meshconfig.yaml");
    std::fs::write(&mesh_file, MESH_CONFIG).expect("meshconfig");
    let mesh_flag = mesh_file.display().to_string();
    let weftd = WeftdProcess::start_with(
        Path::new(WEFTD),
        &dir.path().join("store"),
        free_addr(),
        free_addr(),
        &["--mesh-config", &mesh_flag],
    )
    .await
    .expect("weftd");
    let port = free_wildcard_port();
    let reply = weftd
        .apply(&mesh(
            port,
            shop.addr.port(),
            grpc.port(),
            http.addr.port(),
            dead,
        ))
        .await
        .expect("apply");
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let gateway = weftd
        .ingress_gateway("istio=ingressgateway", &[])
        .await
        .expect("gateway ready");
    // Policies are in force once the gRPC authorizer answers a stranger.
    let deadline = Instant::now() + Duration::from_secs(15);
    let denied = loop {
        let (status, text) = get(port, "/g/items", "mallory").await;
        if status == 418 || Instant::now() > deadline {
            break (status, text);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    if denied.0 != 418 {
        let dump = gateway.admin_get("/config_dump").await.map(|r| r.text());
        panic!(
            "{}\n{dump:?}\n{}\n{}",
            denied.1,
            gateway.logs(),
            weftd.logs()
        );
    }
    // gRPC: denied with the authorizer's status, header and body.
    assert!(denied.1.contains("x-denied-by: grpc"), "{}", denied.1);
    assert!(
        denied.1.ends_with("grpc authorizer says no"),
        "{}",
        denied.1
    );
    // Allowed: the backend sees the header the authorizer added.
    let (status, text) = get(port, "/g/items?page=2", "alice").await;
    assert_eq!(status, 200, "{text}");
    assert!(text.ends_with("shop sees alice-by-grpc"), "{text}");
    assert!(
        grpc_seen
            .lock()
            .expect("seen")
            .contains(&"GET /g/items?page=2 host=shop.example".to_string()),
        "{:?}",
        grpc_seen.lock()
    );
    // Paths no CUSTOM policy covers are not checked.
    let (status, text) = get(port, "/free", "alice").await;
    assert_eq!(status, 200, "{text}");
    assert!(text.ends_with("shop sees nobody"), "{text}");

    // HTTP: the original method to pathPrefix + path, only the named
    // headers; 200 allows with headersToUpstreamOnAllow, another status
    // denies with the authorizer's status, headers and body.
    let (status, text) = get(port, "/h/cart", "alice").await;
    assert_eq!(status, 200, "{text}");
    assert!(text.ends_with("shop sees alice-by-http"), "{text}");
    assert!(!text.contains("x-not-forwarded"), "{text}");
    assert!(
        http_seen
            .lock()
            .expect("seen")
            .contains(&"GET /authz/h/cart cookie=None".to_string()),
        "{:?}",
        http_seen.lock()
    );
    let (status, text) = get(port, "/h/cart", "mallory").await;
    assert_eq!(status, 451, "{text}");
    assert!(text.contains("x-denied-by: http"), "{text}");
    assert!(text.ends_with("http authorizer says no"), "{text}");

    // A dead authorizer: failOpen lets the request through; without it,
    // statusOnError.
    let (status, text) = get(port, "/open/x", "mallory").await;
    assert_eq!(status, 200, "{text}");
    assert!(text.ends_with("shop sees nobody"), "{text}");
    let (status, text) = get(port, "/closed/x", "alice").await;
    assert_eq!(status, 503, "{text}");

    // Denials by an authorizer and refused failures are flagged UAEX.
    let metrics = weft_testkit::client::get(gateway.metrics, "metrics", "/stats/prometheus")
        .await
        .expect("scrape")
        .text();
    for code in ["418", "451", "503"] {
        assert!(
            metrics
                .lines()
                .any(|l| l.contains("response_flags=\"UAEX\"")
                    && l.contains(&format!("response_code=\"{code}\""))),
            "no UAEX {code} in:\n{metrics}"
        );
    }

    // A provider MeshConfig does not have: denied, and weftd says why.
    let (status, text) = get(port, "/unknown/x", "alice").await;
    assert_eq!(status, 403, "{text}");
    let logs = weftd.logs();
    assert!(
        logs.contains(
            "AuthorizationPolicy istio-system/unknown: spec.provider.name \"nobody-has-this\" \
             is not in MeshConfig extensionProviders"
        ),
        "{logs}"
    );
    assert!(
        !logs.contains("external authorization is not implemented"),
        "{logs}"
    );
}

/// Records what a body-reading authorizer was shown: "body=... partial=...".
struct BodyJudge(Seen);

fn with_append(key: &str, value: &str, append: bool) -> HeaderValueOption {
    HeaderValueOption {
        append: Some(pbjson_types::BoolValue { value: append }),
        ..header(key, value)
    }
}

#[tonic::async_trait]
impl Authorization for BodyJudge {
    async fn check(
        &self,
        request: tonic::Request<CheckRequest>,
    ) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
        let attributes = request.into_inner().attributes.unwrap_or_default();
        let http = attributes.request.and_then(|r| r.http).unwrap_or_default();
        let partial = http.headers.get("x-envoy-auth-partial-body").cloned();
        self.0
            .lock()
            .expect("seen")
            .push(format!("body={} partial={partial:?}", http.body));
        Ok(tonic::Response::new(CheckResponse {
            status: Some(Status::default()),
            http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
                headers: vec![
                    with_append("x-tag", "authz", true),
                    with_append("x-set", "authz", false),
                ],
                ..Default::default()
            })),
        }))
    }
}

/// The backend of the body test: echoes the body and the two headers the
/// authorizer edits.
async fn echo_backend() -> weft_testkit::backend::Served {
    use http_body_util::BodyExt as _;
    serve(|request: Request<Incoming>| async move {
        let values = |name: &str| -> Vec<String> {
            request
                .headers()
                .get_all(name)
                .iter()
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .collect()
        };
        let (tag, set) = (values("x-tag").join(","), values("x-set").join(","));
        let body = request
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let text = format!(
            "x-tag={tag} x-set={set} body={}",
            String::from_utf8_lossy(&body)
        );
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(text))))
    })
    .await
}

/// The HTTP authorizer of the body test: allows, recording the body.
async fn http_body_authorizer(seen: Seen) -> weft_testkit::backend::Served {
    use http_body_util::BodyExt as _;
    serve(move |request: Request<Incoming>| {
        let seen = seen.clone();
        async move {
            let partial = request
                .headers()
                .get("x-envoy-auth-partial-body")
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
            let body = request
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            seen.lock().expect("seen").push(format!(
                "body={} partial={partial:?}",
                String::from_utf8_lossy(&body)
            ));
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
        }
    })
    .await
}

/// Status and lower-cased response of one POST; `chunked` sends the body
/// in two chunks without a Content-Length.
async fn post(port: u16, path: &str, body: &str, chunked: bool) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: shop.example\r\nx-tag: client\r\nx-set: client\r\n\
         connection: close\r\n"
    );
    let request = if chunked {
        let (first, second) = body.split_at(body.len() / 2);
        format!(
            "{head}transfer-encoding: chunked\r\n\r\n{:x}\r\n{first}\r\n{:x}\r\n{second}\r\n0\r\n\r\n",
            first.len(),
            second.len()
        )
    } else {
        format!("{head}content-length: {}\r\n\r\n{body}", body.len())
    };
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

const BODY_MESH_CONFIG: &str = "extensionProviders:
- name: grpc-body
  envoyExtAuthzGrpc:
    service: authz-grpc.infra.svc.cluster.local
    port: 9191
    timeout: 2s
    includeRequestBodyInCheck: {maxRequestBytes: 16, allowPartialMessage: true}
- name: http-body
  envoyExtAuthzHttp:
    service: authz-http.infra.svc.cluster.local
    port: 8000
    timeout: 2s
    includeRequestBodyInCheck: {maxRequestBytes: 16}
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorizers_see_the_request_body_up_to_the_limit_and_grpc_headers_append_or_set() {
    let shop = echo_backend().await;
    let grpc_seen = Seen::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let grpc = listener.local_addr().expect("addr");
    let service = AuthorizationServer::new(BodyJudge(grpc_seen.clone()));
    tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await;
    });
    let http_seen = Seen::default();
    let http = http_body_authorizer(http_seen.clone()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mesh_file = dir.path().join("meshconfig.yaml");
    std::fs::write(&mesh_file, BODY_MESH_CONFIG).expect("meshconfig");
    let mesh_flag = mesh_file.display().to_string();
    let weftd = WeftdProcess::start_with(
        Path::new(WEFTD),
        &dir.path().join("store"),
        free_addr(),
        free_addr(),
        &["--mesh-config", &mesh_flag],
    )
    .await
    .expect("weftd");
    let port = free_wildcard_port();
    let mut yaml = mesh(port, shop.addr.port(), grpc.port(), http.addr.port(), 1);
    // Only the two body providers guard this gateway's paths.
    yaml = yaml
        .split("---\n")
        .filter(|doc| !doc.contains("action: CUSTOM"))
        .collect::<Vec<_>>()
        .join("---\n");
    yaml += &custom("grpc-body", "grpc-body", "/gb");
    yaml += &custom("http-body", "http-body", "/hb");
    let reply = weftd.apply(&yaml).await.expect("apply");
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let gateway = weftd
        .ingress_gateway("istio=ingressgateway", &[])
        .await
        .expect("gateway ready");
    // Policies are in force once the authorizer is asked.
    let deadline = Instant::now() + Duration::from_secs(15);
    let (status, text) = loop {
        let answer = post(port, "/gb/a", "hello", false).await;
        let asked = !grpc_seen.lock().expect("seen").is_empty();
        if asked || Instant::now() > deadline {
            break answer;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(status, 200, "{text}\n{}", gateway.logs());
    // gRPC `append: true` adds a value, `append: false` replaces the
    // client's; the body reaches the backend once.
    assert!(
        text.ends_with("x-tag=client,authz x-set=authz body=hello"),
        "{text}"
    );
    assert_eq!(
        grpc_seen.lock().expect("seen").last().cloned(),
        Some("body=hello partial=Some(\"false\")".to_string())
    );

    // Over the limit with allowPartialMessage: the check carries the first
    // 16 bytes, the backend gets all of them (chunked or not).
    let long = "0123456789abcdefghijklmnopqrstuvwxyz";
    for chunked in [false, true] {
        let (status, text) = post(port, "/gb/b", long, chunked).await;
        assert_eq!(status, 200, "{text}");
        assert!(text.ends_with(&format!("body={long}")), "{text}");
        assert_eq!(
            grpc_seen.lock().expect("seen").last().cloned(),
            Some("body=0123456789abcdef partial=Some(\"true\")".to_string())
        );
    }

    // HTTP: the body is the check's own body.
    let (status, text) = post(port, "/hb/c", "name=alice", false).await;
    assert_eq!(status, 200, "{text}");
    assert!(text.ends_with("body=name=alice"), "{text}");
    assert_eq!(
        http_seen.lock().expect("seen").last().cloned(),
        Some("body=name=alice partial=Some(\"false\")".to_string())
    );
    // Over the limit without allowPartialMessage: 413, the authorizer is
    // not asked and nothing reaches the backend.
    let asked = http_seen.lock().expect("seen").len();
    for chunked in [false, true] {
        let (status, text) = post(port, "/hb/d", long, chunked).await;
        assert_eq!(status, 413, "{text}");
        assert!(!text.contains("body="), "{text}");
    }
    assert_eq!(http_seen.lock().expect("seen").len(), asked);

    // Two CUSTOM providers on one gateway: weftd says Istio takes one.
    let logs = weftd.logs();
    assert!(
        logs.contains("CUSTOM AuthorizationPolicies name 2 providers (grpc-body, http-body)"),
        "{logs}"
    );
}
