//! DestinationRule load balancing through a real weft-proxy process and
//! hyper backends that answer with their own name: consistent hash by header
//! and by cookie, least request, random and round robin.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use weft_testkit::backend::{Served, serve};
use weft_testkit::client::{self, Reply};
use weft_testkit::free_addr;
use weft_testkit::proxy::ProxyProcess;

const BIN: &str = env!("CARGO_BIN_EXE_weft-proxy");
/// How long `/slow` takes to answer.
const SLOW: Duration = Duration::from_millis(1500);

/// An HTTP/1 backend answering with `name`; backend "slow" and path `/slow`
/// answer after [`SLOW`].
struct Backend {
    addr: SocketAddr,
    _served: Served,
}

impl Backend {
    async fn start(name: &'static str) -> Self {
        let served = serve(move |r| answer(name, r)).await;
        Self {
            addr: served.addr,
            _served: served,
        }
    }
}

async fn answer(
    name: &'static str,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if name == "slow" || request.uri().path() == "/slow" {
        tokio::time::sleep(SLOW).await;
    }
    Ok(Response::new(Full::new(Bytes::from_static(
        name.as_bytes(),
    ))))
}

async fn backends(names: &[&'static str]) -> Vec<Backend> {
    let mut started = Vec::new();
    for name in names {
        started.push(Backend::start(name).await);
    }
    started
}

/// A proxy for service `web` whose cluster has `backends` as endpoints and
/// `lb` as its `loadBalancer` (a YAML flow mapping).
async fn proxy(backends: &[Backend], lb: &str) -> (ProxyProcess, SocketAddr) {
    let web = free_addr();
    let endpoints: Vec<String> = backends
        .iter()
        .map(|b| format!(r#"{{address: "{}"}}"#, b.addr))
        .collect();
    let config = format!(
        r#"
version: load-balancing-test
listeners:
- {{name: web, address: "{web}", kind: EXPLICIT, service: web.test.svc.cluster.local}}
services:
- name: web.test.svc.cluster.local
  hosts: [web]
  ports: [{{port: 80, protocol: HTTP, cluster: c}}]
clusters:
- {{name: c, endpoints: [{}], loadBalancer: {lb}}}
"#,
        endpoints.join(", ")
    );
    let proxy = ProxyProcess::start(Path::new(BIN), &config)
        .await
        .unwrap_or_else(|err| panic!("{err:#}"));
    (proxy, web)
}

async fn send(web: SocketAddr, path: &str, header: Option<(&str, &str)>) -> Reply {
    let headers: Vec<(&str, &str)> = header.into_iter().collect();
    let request =
        client::request_with_headers(http::Method::GET, "web", path, &headers, client::empty());
    let mut conn = client::Http1Client::connect(web).await.expect("connect");
    conn.send(request).await.expect("request")
}

async fn counts(web: SocketAddr, requests: usize) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for _ in 0..requests {
        *seen.entry(send(web, "/", None).await.text()).or_default() += 1;
    }
    seen
}

#[tokio::test]
async fn header_hash_sticks_and_spreads() {
    let backends = backends(&["a", "b", "c"]).await;
    let (_proxy, web) = proxy(&backends, "{consistentHash: {httpHeaderName: x-user}}").await;
    let mut homes = std::collections::HashSet::new();
    for user in 0..20 {
        let user = format!("user-{user}");
        let first = send(web, "/", Some(("x-user", &user))).await.text();
        for _ in 0..4 {
            assert_eq!(send(web, "/", Some(("x-user", &user))).await.text(), first);
        }
        homes.insert(first);
    }
    assert!(homes.len() >= 2, "{homes:?}");
}

#[tokio::test]
async fn cookie_hash_sets_a_cookie_then_sticks() {
    let backends = backends(&["a", "b", "c"]).await;
    let (_proxy, web) = proxy(
        &backends,
        "{consistentHash: {httpCookie: {name: sticky, path: /, ttl: 60s}}}",
    )
    .await;
    for _ in 0..5 {
        let first = send(web, "/", None).await;
        let set = first.header("set-cookie").expect("set-cookie").to_string();
        assert!(
            set.starts_with("sticky=") && set.contains("Max-Age=60"),
            "{set}"
        );
        let cookie = set.split(';').next().expect("name=value").to_string();
        for _ in 0..5 {
            let again = send(web, "/", Some(("cookie", &cookie))).await;
            assert_eq!(again.header("set-cookie"), None);
            assert_eq!(again.text(), first.text());
        }
    }
}

#[tokio::test]
async fn least_request_avoids_the_busy_endpoint() {
    // "slow" answers every request after SLOW, "fast" at once.
    let backends = backends(&["slow", "fast"]).await;
    let (_proxy, web) = proxy(&backends, "{policy: LEAST_REQUEST}").await;
    let parked: Vec<_> = (0..4)
        .map(|_| tokio::spawn(async move { send(web, "/", None).await }))
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // "slow" holds the requests that landed on it; new ones go to "fast".
    let seen = counts(web, 10).await;
    assert_eq!(seen.get("fast"), Some(&10), "{seen:?}");
    for task in parked {
        assert_eq!(task.await.expect("parked").status, http::StatusCode::OK);
    }
}

#[tokio::test]
async fn random_reaches_every_endpoint() {
    let backends = backends(&["a", "b", "c"]).await;
    let (_proxy, web) = proxy(&backends, "{policy: RANDOM}").await;
    let seen = counts(web, 300).await;
    for name in ["a", "b", "c"] {
        assert!(seen.get(name).is_some_and(|n| *n > 30), "{seen:?}");
    }
}

#[tokio::test]
async fn round_robin_alternates() {
    let backends = backends(&["a", "b"]).await;
    let (_proxy, web) = proxy(&backends, "{policy: ROUND_ROBIN}").await;
    let mut names = Vec::new();
    for _ in 0..6 {
        names.push(send(web, "/", None).await.text());
    }
    for pair in names.windows(2) {
        assert_ne!(pair[0], pair[1], "{names:?}");
    }
}

#[tokio::test]
async fn source_ip_hash_keeps_one_client_on_one_endpoint() {
    let backends = backends(&["a", "b", "c"]).await;
    let (_proxy, web) = proxy(&backends, "{consistentHash: {useSourceIp: true}}").await;
    // Every request comes from 127.0.0.1, on a new connection each time.
    let seen = counts(web, 30).await;
    assert_eq!(
        seen.len(),
        1,
        "one source IP went to several endpoints: {seen:?}"
    );
}
