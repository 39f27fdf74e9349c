//! Route matching, rewrites, header operations, redirects and direct
//! responses through a real weft-proxy process and real backends.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use weft_testkit::backend::HttpBackend;
use weft_testkit::backend::{Served, serve};
use weft_testkit::client::{self, Http1Client, Reply};
use weft_testkit::free_addr;
use weft_testkit::prometheus::sample;
use weft_testkit::proxy::ProxyProcess;

const BIN: &str = env!("CARGO_BIN_EXE_weft-proxy");

/// A backend that answers with its request line and every request header,
/// one `name: value` per line, and adds two response headers for the
/// proxy to edit.
struct HeaderEcho {
    addr: SocketAddr,
    _served: Served,
}

impl HeaderEcho {
    async fn start() -> Self {
        let served = serve(echo_headers).await;
        Self {
            addr: served.addr,
            _served: served,
        }
    }
}

async fn echo_headers(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut body = format!("{} {}\n", request.method(), request.uri());
    for (name, value) in request.headers() {
        body.push_str(&format!(
            "{name}: {}\n",
            String::from_utf8_lossy(value.as_bytes())
        ));
    }
    let mut response = Response::new(Full::new(Bytes::from(body)));
    let headers = response.headers_mut();
    headers.insert("x-upstream", http::HeaderValue::from_static("echo"));
    headers.insert(
        "x-upstream-secret",
        http::HeaderValue::from_static("s3cr3t"),
    );
    Ok(response)
}

struct Mesh {
    proxy: ProxyProcess,
    web: SocketAddr,
    _v1: HttpBackend,
    _v2: HttpBackend,
    _echo: HeaderEcho,
}

/// One service, `web`, whose routes each exercise one feature; the last
/// route sends everything else to v1.
async fn start_mesh() -> Mesh {
    let v1 = HttpBackend::start("v1").await;
    let v2 = HttpBackend::start("v2").await;
    let echo = HeaderEcho::start().await;
    let web = free_addr();
    let config = format!(
        r#"
version: routing-test
listeners:
- {{name: web, address: "{web}", kind: EXPLICIT, service: web.test.svc.cluster.local}}
services:
- name: web.test.svc.cluster.local
  hosts: [web]
  ports:
  - port: 80
    protocol: HTTP
    routes:
    - name: jason
      match: {{pathPrefix: /reviews, headers: [{{name: end-user, value: {{exact: jason}}}}]}}
      clusters: [{{cluster: v2}}]
    - {{name: reviews, match: {{pathPrefix: /reviews}}, clusters: [{{cluster: v1}}]}}
    - name: without-internal
      match: {{pathPrefix: /private, headers: [{{name: x-internal, invert: true}}]}}
      clusters: [{{cluster: v1}}]
    - {{name: private-internal, match: {{pathPrefix: /private}}, clusters: [{{cluster: v2}}]}}
    - {{name: items, match: {{pathRegex: "/items/[0-9]+"}}, clusters: [{{cluster: v2}}]}}
    - name: beta-search
      match: {{pathExact: /search, queryParams: [{{name: beta, value: {{exact: "1"}}}}]}}
      clusters: [{{cluster: v2}}]
    - {{name: submit, match: {{pathExact: /submit, method: {{exact: POST}}}}, clusters: [{{cluster: v2}}]}}
    - {{name: case, match: {{pathPrefix: /Case/, ignoreUriCase: true}}, clusters: [{{cluster: v2}}]}}
    - {{name: api, match: {{pathPrefix: /api/v1/}}, rewrite: {{uri: /}}, clusters: [{{cluster: v1}}]}}
    - name: regex-rewrite
      match: {{pathPrefix: /shop/}}
      rewrite: {{uriRegexPattern: "^/shop/([a-z]+)/([0-9]+)$", uriRegexSubstitution: '/\2/\1'}}
      clusters: [{{cluster: v1}}]
    - name: authority
      match: {{pathPrefix: /authority/}}
      rewrite: {{authority: "internal.example:8080"}}
      clusters: [{{cluster: v1}}]
    - name: headers
      match: {{pathPrefix: /headers}}
      requestHeaders: {{set: {{x-set: route}}, add: {{x-add: route}}, remove: [x-drop]}}
      responseHeaders: {{set: {{x-response: route}}, remove: [x-upstream-secret]}}
      clusters:
      - cluster: echo
        requestHeaders: {{add: {{x-add: destination}}}}
        responseHeaders: {{add: {{x-response-destination: echo}}}}
    - {{name: rewritten-echo, match: {{pathPrefix: /echo/api/}}, rewrite: {{uri: /v2/}}, clusters: [{{cluster: echo}}]}}
    - {{name: moved, match: {{pathExact: /old}}, redirect: {{uri: /new}}}}
    - name: to-https
      match: {{pathPrefix: /secure/}}
      redirect: {{scheme: https, authority: secure.example, port: 8443, code: 308}}
    - name: teapot
      match: {{pathExact: /teapot}}
      directResponse: {{status: 418, body: "short and stout"}}
      responseHeaders: {{set: {{x-kind: teapot}}}}
    - {{name: rest, clusters: [{{cluster: v1}}]}}
clusters:
- {{name: v1, endpoints: [{{address: "{v1}"}}]}}
- {{name: v2, endpoints: [{{address: "{v2}"}}]}}
- {{name: echo, endpoints: [{{address: "{echo}"}}]}}
"#,
        v1 = v1.addr,
        v2 = v2.addr,
        echo = echo.addr,
    );
    let proxy = ProxyProcess::start(Path::new(BIN), &config)
        .await
        .unwrap_or_else(|err| panic!("{err:#}"));
    Mesh {
        proxy,
        web,
        _v1: v1,
        _v2: v2,
        _echo: echo,
    }
}

impl Mesh {
    async fn send(&self, method: Method, path: &str, headers: &[(&str, &str)]) -> Reply {
        let request = client::request_with_headers(method, "web", path, headers, client::empty());
        let mut client = Http1Client::connect(self.web).await.expect("connect");
        client.send(request).await.expect("request")
    }

    async fn get(&self, path: &str) -> Reply {
        self.send(Method::GET, path, &[]).await
    }

    /// Which backend answered (`v1`, `v2`), from its echo.
    async fn backend(&self, method: Method, path: &str, headers: &[(&str, &str)]) -> String {
        let reply = self.send(method, path, headers).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        reply.header("x-backend").unwrap_or("-").to_string()
    }
}

/// The header lines a [`HeaderEcho`] reply lists for `name`.
fn echoed<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
    text.lines()
        .filter_map(|line| line.strip_prefix(name)?.strip_prefix(": "))
        .collect()
}

#[tokio::test]
async fn routes_match_headers_paths_query_and_method() {
    let mesh = start_mesh().await;
    let get = Method::GET;
    // Istio's bookinfo: end-user jason sees v2, everyone else v1.
    assert_eq!(
        mesh.backend(get.clone(), "/reviews/1", &[("end-user", "jason")])
            .await,
        "v2"
    );
    assert_eq!(
        mesh.backend(get.clone(), "/reviews/1", &[("end-user", "alice")])
            .await,
        "v1"
    );
    assert_eq!(mesh.backend(get.clone(), "/reviews/1", &[]).await, "v1");
    // withoutHeaders: the route applies only while the header is absent.
    assert_eq!(mesh.backend(get.clone(), "/private/x", &[]).await, "v1");
    assert_eq!(
        mesh.backend(get.clone(), "/private/x", &[("x-internal", "1")])
            .await,
        "v2"
    );
    // Regex on the whole path, never on the query.
    assert_eq!(mesh.backend(get.clone(), "/items/42?x=1", &[]).await, "v2");
    assert_eq!(
        mesh.backend(get.clone(), "/items/42/reviews", &[]).await,
        "v1"
    );
    assert_eq!(mesh.backend(get.clone(), "/items/abc", &[]).await, "v1");
    // Query parameter.
    assert_eq!(
        mesh.backend(get.clone(), "/search?q=a&beta=1", &[]).await,
        "v2"
    );
    assert_eq!(mesh.backend(get.clone(), "/search?beta=2", &[]).await, "v1");
    // Method.
    assert_eq!(mesh.backend(Method::POST, "/submit", &[]).await, "v2");
    assert_eq!(mesh.backend(get.clone(), "/submit", &[]).await, "v1");
    // ignoreUriCase.
    assert_eq!(mesh.backend(get.clone(), "/cASE/x", &[]).await, "v2");
    assert_eq!(mesh.backend(get.clone(), "/Casex", &[]).await, "v1");
}

#[tokio::test]
async fn rewrites_reach_the_backend() {
    let mesh = start_mesh().await;
    let reply = mesh.get("/api/v1/x?page=2").await;
    assert_eq!(reply.text(), "v1 GET /x host=web version=HTTP/1.1");

    let reply = mesh.get("/shop/shoes/42").await;
    assert_eq!(reply.text(), "v1 GET /42/shoes host=web version=HTTP/1.1");

    let reply = mesh.get("/authority/a").await;
    assert_eq!(
        reply.text(),
        "v1 GET /authority/a host=internal.example:8080 version=HTTP/1.1"
    );

    // The query survives and the original path is passed on.
    let reply = mesh.get("/echo/api/users?id=7").await;
    let text = reply.text();
    assert!(text.starts_with("GET /v2/users?id=7\n"), "{text}");
    assert_eq!(
        echoed(&text, "x-envoy-original-path"),
        ["/echo/api/users?id=7"]
    );
}

#[tokio::test]
async fn header_operations_apply_both_ways() {
    let mesh = start_mesh().await;
    let reply = mesh
        .send(
            Method::GET,
            "/headers",
            &[
                ("x-set", "client"),
                ("x-add", "client"),
                ("x-drop", "gone"),
                ("x-keep", "kept"),
            ],
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    let text = reply.text();
    assert_eq!(echoed(&text, "x-set"), ["route"], "{text}");
    assert_eq!(
        echoed(&text, "x-add"),
        ["client", "route", "destination"],
        "route before destination: {text}"
    );
    assert!(echoed(&text, "x-drop").is_empty(), "{text}");
    assert_eq!(echoed(&text, "x-keep"), ["kept"], "{text}");

    assert_eq!(reply.header("x-upstream"), Some("echo"));
    assert_eq!(reply.header("x-upstream-secret"), None, "removed");
    assert_eq!(reply.header("x-response"), Some("route"));
    assert_eq!(reply.header("x-response-destination"), Some("echo"));
}

#[tokio::test]
async fn redirects_and_direct_responses_are_answered_by_the_proxy() {
    let mesh = start_mesh().await;
    let reply = mesh.get("/old?a=1").await;
    assert_eq!(reply.status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(reply.header("location"), Some("http://web/new?a=1"));
    assert_eq!(reply.header("x-weft-response-flags"), None);

    let reply = mesh.get("/secure/page").await;
    assert_eq!(reply.status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(
        reply.header("location"),
        Some("https://secure.example:8443/secure/page")
    );

    let reply = mesh.get("/teapot").await;
    assert_eq!(reply.status, StatusCode::IM_A_TEAPOT);
    assert_eq!(reply.text(), "short and stout");
    assert_eq!(reply.header("content-type"), Some("text/plain"));
    assert_eq!(reply.header("x-kind"), Some("teapot"));

    let metrics = client::get(mesh.proxy.metrics, "metrics", "/stats/prometheus")
        .await
        .expect("scrape")
        .text();
    for code in ["301", "308", "418"] {
        let labels = [
            ("reporter", "source"),
            ("destination_service", "web.test.svc.cluster.local"),
            ("request_protocol", "http"),
            ("response_code", code),
            ("response_flags", "-"),
        ];
        assert_eq!(
            sample(&metrics, "istio_requests_total", &labels),
            1.0,
            "{code} missing from\n{metrics}"
        );
    }
}

#[tokio::test]
async fn an_invalid_regex_is_refused_at_start_with_its_field_path() {
    let dir = std::env::temp_dir().join(format!("weft-routing-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("bad-regex.yaml");
    std::fs::write(
        &path,
        r#"
services:
- name: web
  ports:
  - port: 80
    routes:
    - {clusters: [{cluster: c}]}
    - match: {headers: [{name: x-a, value: {regex: "a(b"}}]}
      clusters: [{cluster: c}]
    - {redirect: {code: 399}}
    - {directResponse: {status: 99}, clusters: [{cluster: c}]}
clusters: [{name: c}]
"#,
    )
    .expect("write");
    let output = tokio::process::Command::new(BIN)
        .arg("--config")
        .arg(&path)
        .output()
        .await
        .expect("run");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    for expected in [
        "services[0].ports[0].routes[1].match.headers[0].value.regex: \"a(b\" is not a valid RE2 regex",
        "services[0].ports[0].routes[2].redirect.code: must be 301, 302, 303, 307 or 308, got 399",
        "services[0].ports[0].routes[3]: exactly one of clusters, redirect and directResponse",
    ] {
        assert!(
            stderr.contains(expected),
            "{expected:?} missing from\n{stderr}"
        );
    }
}
