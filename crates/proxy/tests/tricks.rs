//! The tricks of issue 14, each tried as a new user would, through a real
//! weft-proxy process with the matching policy applied: each is denied,
//! stripped or bounded.
//!
//! Requests a client library would refuse to send (raw backslashes,
//! absolute-form targets, half a request head) are written as raw bytes.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Full, StreamBody};
use hyper::body::Incoming;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use weft_testkit::backend::{Served, serve};
use weft_testkit::free_addr;
use weft_testkit::proxy::{ProxyOptions, ProxyProcess};

const BIN: &str = env!("CARGO_BIN_EXE_weft-proxy");
const DENIED: &str = "RBAC: access denied";

/// A backend that answers with its request line and every request header,
/// one `name: value` per line; `/drip` sends a chunk every 200 ms for 2 s,
/// `/big/<MiB>` streams that many MiB.
async fn echo() -> Served {
    serve(|request: Request<Incoming>| async move {
        let path = request.uri().path().to_string();
        let body: BoxBody<Bytes, Infallible> = if path == "/drip" {
            drip()
        } else if let Some(mib) = path.strip_prefix("/big/") {
            big(mib.parse().unwrap_or(1))
        } else {
            let mut text = format!("{} {}\n", request.method(), request.uri());
            for (name, value) in request.headers() {
                text.push_str(&format!(
                    "{name}: {}\n",
                    String::from_utf8_lossy(value.as_bytes())
                ));
            }
            Full::new(Bytes::from(text)).boxed()
        };
        Ok::<_, Infallible>(Response::new(body))
    })
    .await
}

fn drip() -> BoxBody<Bytes, Infallible> {
    let ticks = futures_util::stream::unfold(0u32, |i| async move {
        if i == 10 {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        Some((Ok(Frame::data(Bytes::from_static(b"tick\n"))), i + 1))
    });
    StreamBody::new(ticks).boxed()
}

fn big(mib: usize) -> BoxBody<Bytes, Infallible> {
    let chunk = Bytes::from(vec![b'x'; 1024 * 1024]);
    let chunks = futures_util::stream::iter((0..mib).map(move |_| Ok(Frame::data(chunk.clone()))));
    StreamBody::new(chunks).boxed()
}

/// A raw HTTP/1.1 exchange on a new connection (`Connection: close` is
/// added): the status and the body.
async fn raw(addr: SocketAddr, head: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let request = format!("{head}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer));
    read.await.expect("answer in time").expect("read");
    parse(&answer)
}

fn parse(answer: &[u8]) -> (u16, String) {
    let text = String::from_utf8_lossy(answer).to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (status, body)
}

/// `GET <target>` with `Host: web` and `extra` header lines.
async fn get(addr: SocketAddr, target: &str, extra: &[&str]) -> (u16, String) {
    let mut head = format!("GET {target} HTTP/1.1\r\nHost: web");
    for line in extra {
        head.push_str("\r\n");
        head.push_str(line);
    }
    raw(addr, &head).await
}

async fn start(config: &str) -> ProxyProcess {
    start_with(config, &[]).await
}

async fn start_with(config: &str, args: &[&str]) -> ProxyProcess {
    let mut options = ProxyOptions::new(Path::new(BIN), config);
    options.args = args.iter().map(|a| a.to_string()).collect();
    let mut proxy = ProxyProcess::spawn(options).unwrap_or_else(|err| panic!("{err:#}"));
    proxy
        .wait_ready(Duration::from_secs(20))
        .await
        .unwrap_or_else(|err| panic!("{err:#}"));
    proxy
}

/// A sidecar whose inbound listener serves the workload port of the same
/// number (the `echo` backend) under `security`, plus `more` config.
fn sidecar(inbound: SocketAddr, echo: SocketAddr, security: &str, more: &str) -> String {
    format!(
        r#"
version: tricks
listeners:
- {{name: inbound, address: "{inbound}", kind: INBOUND_CAPTURE}}
inboundPorts:
- port: {port}
  protocol: HTTP
  target: "{echo}"
  security: {security}
{more}
"#,
        port = inbound.port()
    )
}

/// A config with an explicit listener for service `web` at `web`: `top`
/// holds proxy-wide settings, `rest` the services and clusters.
fn explicit(version: &str, top: &str, web: SocketAddr, rest: &str) -> String {
    format!(
        r#"
version: {version}
{top}
listeners:
- {{name: web, address: "{web}", kind: EXPLICIT, service: web}}
{rest}
"#
    )
}

/// Service `web` on port 80 sending everything to `echo`.
fn plain_web(version: &str, top: &str, web: SocketAddr, echo: SocketAddr) -> String {
    explicit(
        version,
        top,
        web,
        &format!(
            r#"services:
- {{name: web, ports: [{{port: 80, protocol: HTTP}}]}}
clusters:
- {{name: "outbound|80||web", endpoints: [{{address: "{echo}"}}]}}"#
        ),
    )
}

/// Service `web` on port 80 with `routes` (flow mappings, in order) over
/// `clusters` (flow mappings).
fn routed_web(version: &str, web: SocketAddr, routes: &[&str], clusters: &[String]) -> String {
    let mut rest = String::from(
        "services:\n- name: web\n  ports:\n  - port: 80\n    protocol: HTTP\n    routes:\n",
    );
    for route in routes {
        rest.push_str(&format!("    - {route}\n"));
    }
    rest.push_str("clusters:\n");
    for cluster in clusters {
        rest.push_str(&format!("- {cluster}\n"));
    }
    explicit(version, "", web, &rest)
}

/// A cluster of one endpoint, as a flow mapping.
fn cluster(name: &str, endpoint: SocketAddr, mesh: bool) -> String {
    let mesh = if mesh { ", mesh: true" } else { "" };
    format!(r#"{{name: {name}, endpoints: [{{address: "{endpoint}"{mesh}}}]}}"#)
}

/// Opens a connection to `addr` and writes `bytes` on it.
async fn send(addr: SocketAddr, bytes: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(bytes).await.expect("write");
    stream
}

/// Everything the peer sends until it closes (a reset counts as closing:
/// callers assert on what arrived), or `None` if it has not closed within
/// `limit`.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> Option<Vec<u8>> {
    let mut answer = Vec::new();
    let read = tokio::time::timeout(limit, stream.read_to_end(&mut answer)).await;
    read.ok().map(|_| answer)
}

const DENY_ADMIN: &str = r#"{policies: [{name: test/deny-admin, action: DENY, rules: [{to: [{conditions: [{attribute: PATH, values: ["/admin", "/admin/*"]}]}]}]}]}"#;

#[tokio::test]
async fn encoded_dotted_and_backslashed_paths_do_not_pass_a_deny_and_reach_the_app_normalized() {
    let echo = echo().await;
    let inbound = free_addr();
    let _proxy = start(&sidecar(inbound, echo.addr, DENY_ADMIN, "")).await;
    assert_eq!(get(inbound, "/admin", &[]).await, (403, DENIED.to_string()));
    for trick in [
        "/public/%2e%2e/admin",
        "/%61dmin",
        "/public\\..\\admin",
        "/public/./../admin/x",
        // Raw UTF-8 before the trick (fuzz/run normalize found it slipping
        // past normalization as one opaque segment).
        "/caf\u{e9}\\..\\admin",
    ] {
        let (status, body) = get(inbound, trick, &[]).await;
        assert_eq!((status, body.as_str()), (403, DENIED), "{trick}");
    }
    // Allowed requests are forwarded with the path the policy judged.
    let (status, body) = get(inbound, "/public/%2e%2e/%7Efiles/a%2fb?q=%2e", &[]).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("GET /~files/a%2Fb?q=%2e\n"), "{body}");
    let (_, body) = get(inbound, "/public\\x", &[]).await;
    assert!(body.starts_with("GET /public/x\n"), "{body}");
    // A stray `%` that decoding would pair into `%2e` is escaped itself, so
    // the app cannot decode dots the policy never saw.
    let (status, body) = get(inbound, "/public/%2%65%2%65/admin", &[]).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("GET /public/%252e%252e/admin\n"), "{body}");
}

#[tokio::test]
async fn merge_slashes_modes_are_selectable() {
    let echo = echo().await;
    let (base, merge, decode) = (free_addr(), free_addr(), free_addr());
    let _base = start(&sidecar(base, echo.addr, DENY_ADMIN, "")).await;
    let _merge = start(&sidecar(
        merge,
        echo.addr,
        DENY_ADMIN,
        "pathNormalization: MERGE_SLASHES",
    ))
    .await;
    let _decode = start(&sidecar(
        decode,
        echo.addr,
        DENY_ADMIN,
        "pathNormalization: DECODE_AND_MERGE_SLASHES",
    ))
    .await;
    // BASE keeps `//` (Istio's default does too): not `/admin`.
    let (status, body) = get(base, "//admin", &[]).await;
    assert_eq!(status, 200);
    assert!(body.starts_with("GET //admin\n"), "{body}");
    assert_eq!(get(merge, "//admin", &[]).await.0, 403);
    let (status, body) = get(merge, "/a//b", &[]).await;
    assert_eq!(status, 200);
    assert!(body.starts_with("GET /a/b\n"), "{body}");
    // Encoded slashes are segment separators only when decoded.
    assert_eq!(get(merge, "/public%2F..%2Fadmin", &[]).await.0, 200);
    assert_eq!(get(decode, "/public%2F..%2Fadmin", &[]).await.0, 403);
    assert_eq!(get(decode, "/%2Fadmin", &[]).await.0, 403);
}

#[tokio::test]
async fn routing_sees_the_normalized_path() {
    let echo = echo().await;
    let web = free_addr();
    let config = routed_web(
        "routing",
        web,
        &[
            r#"{name: admin, match: {pathPrefix: /admin}, directResponse: {status: 404, body: "no admin here"}}"#,
            "{name: rest, clusters: [{cluster: echo}]}",
        ],
        &[cluster("echo", echo.addr, false)],
    );
    let _proxy = start(&config).await;
    for trick in ["/admin", "/x/%2e%2e/admin", "/%61dmin", "/x\\..\\admin"] {
        assert_eq!(
            get(web, trick, &[]).await,
            (404, "no admin here".to_string()),
            "{trick}"
        );
    }
}

#[tokio::test]
async fn xfcc_from_a_plaintext_client_never_reaches_the_app() {
    let echo = echo().await;
    let inbound = free_addr();
    let out = free_addr();
    let more = format!(
        r#"
services:
- {{name: web, ports: [{{port: 80, protocol: HTTP}}]}}
clusters:
- {{name: "outbound|80||web", endpoints: [{{address: "{echo}"}}]}}
"#,
        echo = echo.addr
    );
    let config = sidecar(inbound, echo.addr, "{}", &more).replace(
        "listeners:\n",
        &format!("listeners:\n- {{name: out, address: \"{out}\", kind: EXPLICIT, service: web}}\n"),
    );
    let _proxy = start(&config).await;
    let forged = "X-Forwarded-Client-Cert: By=spiffe://cluster.local/ns/a/sa/b;URI=spiffe://cluster.local/ns/admin/sa/root";
    // A PERMISSIVE port spoken to in plaintext, and the outbound side.
    for addr in [inbound, out] {
        let (status, body) = get(addr, "/", &[forged]).await;
        assert_eq!(status, 200, "{body}");
        assert!(
            !body
                .to_ascii_lowercase()
                .contains("x-forwarded-client-cert"),
            "{addr}: {body}"
        );
    }
}

#[tokio::test]
async fn jwt_output_headers_sent_without_a_token_are_stripped() {
    let echo = echo().await;
    let inbound = free_addr();
    // Any key will do: no token is sent.
    let jwks = r#"{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU\",\"y\":\"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0\",\"kid\":\"k\"}]}"#;
    let security = format!(
        r#"{{jwtRules: [{{issuer: "https://issuer.example", jwks: "{jwks}", policy: test/jwt, outputPayloadToHeader: x-jwt-payload, outputClaimToHeaders: [{{header: x-jwt-sub, claim: sub}}]}}]}}"#
    );
    let _proxy = start(&sidecar(inbound, echo.addr, &security, "")).await;
    let (status, body) = get(
        inbound,
        "/",
        &[
            "x-jwt-payload: eyJzdWIiOiJhZG1pbiJ9",
            "X-Jwt-Sub: admin",
            "x-other: kept",
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(!body.contains("x-jwt-payload"), "{body}");
    assert!(!body.contains("x-jwt-sub"), "{body}");
    assert!(body.contains("x-other: kept"), "{body}");
}

#[tokio::test]
async fn an_absolute_form_target_replaces_host() {
    let echo = echo().await;
    let inbound = free_addr();
    let deny_host = r#"{policies: [{name: test/deny-admin-host, action: DENY, rules: [{to: [{conditions: [{attribute: HOST, values: ["admin.internal"]}]}]}]}]}"#;
    let _proxy = start(&sidecar(inbound, echo.addr, deny_host, "")).await;
    let (status, _) = raw(
        inbound,
        "GET http://admin.internal/ HTTP/1.1\r\nHost: other.internal",
    )
    .await;
    assert_eq!(status, 403);
    let (status, body) = raw(
        inbound,
        "GET http://other.internal/ HTTP/1.1\r\nHost: admin.internal",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("host: other.internal\n"), "{body}");
    assert!(!body.contains("admin.internal"), "{body}");
}

#[tokio::test]
async fn a_forged_x_forwarded_for_does_not_pass_a_remote_ip_deny() {
    let echo = echo().await;
    let inbound = free_addr();
    let deny_local = r#"{policies: [{name: test/deny-loopback, action: DENY, rules: [{from: [{conditions: [{attribute: REMOTE_IP, values: ["127.0.0.0/8"]}]}]}]}]}"#;
    let _proxy = start(&sidecar(inbound, echo.addr, deny_local, "")).await;
    for forged in [
        "X-Forwarded-For: 1.2.3.4",
        "X-Forwarded-For: 10.0.0.1, 1.2.3.4",
    ] {
        assert_eq!(get(inbound, "/", &[forged]).await.0, 403, "{forged}");
    }
    assert_eq!(get(inbound, "/", &[]).await.0, 403);
}

/// A gateway port routing every host to the echo backend.
fn gateway(listen: SocketAddr, echo: SocketAddr, more: &str) -> String {
    format!(
        r#"
version: gateway
listeners:
- {{name: gw, address: "{listen}", kind: GATEWAY}}
services:
- {{name: any, hosts: ["*"], ports: [{{port: {port}, protocol: HTTP, cluster: echo}}]}}
clusters:
- {{name: echo, endpoints: [{{address: "{echo}"}}]}}
{more}
"#,
        port = listen.port()
    )
}

#[tokio::test]
async fn the_gateway_appends_its_peer_and_trusted_hops_pick_the_client_and_scheme() {
    let echo = echo().await;
    let (plain, behind_lb) = (free_addr(), free_addr());
    let _plain = start(&gateway(plain, echo.addr, "")).await;
    let _behind = start(&gateway(behind_lb, echo.addr, "numTrustedProxies: 1")).await;
    let forged = [
        "X-Forwarded-For: 9.9.9.9, 1.2.3.4",
        "x-envoy-external-address: 5.5.5.5",
        "X-Forwarded-Proto: https",
    ];
    let (status, body) = get(plain, "/", &forged).await;
    // The client's scheme claim is replaced by the connection's.
    assert!(body.contains("x-forwarded-proto: http\n"), "{body}");
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("x-forwarded-for: 9.9.9.9, 1.2.3.4, 127.0.0.1\n"),
        "{body}"
    );
    // No trusted proxy in front: the client is the peer, whatever it says.
    assert!(
        body.contains("x-envoy-external-address: 127.0.0.1\n"),
        "{body}"
    );
    // One trusted load balancer in front: the entry it appended.
    let (_, body) = get(behind_lb, "/", &forged).await;
    assert!(
        body.contains("x-envoy-external-address: 1.2.3.4\n"),
        "{body}"
    );
    // Behind it, the scheme the load balancer saw is kept.
    assert!(body.contains("x-forwarded-proto: https\n"), "{body}");
}

#[tokio::test]
async fn a_client_sent_original_path_is_not_logged_as_the_path() {
    let echo = echo().await;
    let web = free_addr();
    let log = tempfile::NamedTempFile::new().expect("log file");
    let log_path = log.path().display().to_string();
    let config = plain_web("log", "", web, echo.addr);
    let _proxy = start_with(&config, &["--access-log", &log_path]).await;
    let (status, body) = get(web, "/real", &["x-envoy-original-path: /forged"]).await;
    assert_eq!(status, 200);
    assert!(!body.contains("x-envoy-original-path"), "{body}");
    let deadline = Instant::now() + Duration::from_secs(5);
    let line = loop {
        let text = std::fs::read_to_string(log.path()).unwrap_or_default();
        if text.contains("/real") || Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(line.contains("GET /real"), "{line}");
    assert!(!line.contains("/forged"), "{line}");
}

#[tokio::test]
async fn a_request_head_that_never_ends_is_cut_at_the_header_timeout() {
    let echo = echo().await;
    let inbound = free_addr();
    let _proxy = start(&sidecar(
        inbound,
        echo.addr,
        "{}",
        "requestHeaderTimeout: 0.5s",
    ))
    .await;
    let mut stream = send(inbound, b"GET / HTTP/1.1\r\nHost: web\r\nx-slow: ").await;
    let started = Instant::now();
    let read = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    assert!(
        read.is_some(),
        "the proxy still holds the connection after 5s"
    );
    // Closed by the 0.5 s header timeout, not at once for another reason.
    assert!(
        started.elapsed() >= Duration::from_millis(400)
            && started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn an_http2_preface_followed_by_silence_is_closed_at_the_header_timeout() {
    let echo = echo().await;
    let web = free_addr();
    let config = plain_web("h2-silence", "requestHeaderTimeout: 0.5s", web, echo.addr);
    let _proxy = start(&config).await;
    let mut stream = TcpStream::connect(web).await.expect("connect");
    // The preface and an empty SETTINGS frame, then nothing.
    let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    hello.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    stream.write_all(&hello).await.expect("write");
    let started = Instant::now();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), async {
        let mut buf = [0u8; 1024];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "a silent HTTP/2 client held the connection for 5 s"
    );
    assert!(!answer.is_empty(), "the proxy never answered the preface");
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "{:?}",
        started.elapsed()
    );
    // A client that does send requests is not cut.
    let client = weft_testkit::client::Http2Client::connect(web)
        .await
        .expect("h2 connect");
    for _ in 0..3 {
        let reply = client.get("web", "/").await.expect("request");
        assert_eq!(reply.status, StatusCode::OK);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test]
async fn a_listener_holds_at_most_its_connection_limit() {
    let echo = echo().await;
    let web = free_addr();
    let config = plain_web("limit", "maxConnectionsPerListener: 2", web, echo.addr);
    let _proxy = start(&config).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut client = weft_testkit::client::Http1Client::connect(web)
            .await
            .expect("connect");
        let reply = client
            .get("web", "/")
            .await
            .expect("request on a kept connection");
        assert_eq!(reply.status, StatusCode::OK);
        held.push(client);
    }
    // The third is closed as soon as it is accepted.
    let mut third = TcpStream::connect(web).await.expect("connect");
    let _ = third
        .write_all(b"GET / HTTP/1.1\r\nHost: web\r\n\r\n")
        .await;
    let answer = read_until_closed(&mut third, Duration::from_secs(5))
        .await
        .expect("the third connection was held open");
    assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));
    // A slot frees when a connection closes.
    drop(held.pop());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        // Until the proxy has seen the close, a new connection is refused.
        if let Ok(mut client) = weft_testkit::client::Http1Client::connect(web).await
            && let Ok(reply) = client.get("web", "/").await
            && reply.status == StatusCode::OK
        {
            break;
        }
        assert!(Instant::now() < deadline, "no slot freed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Peak resident memory of a process, from /proc.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

#[tokio::test]
async fn a_large_mirror_response_is_drained_not_buffered() {
    let primary = echo().await;
    let shadow = echo().await;
    let web = free_addr();
    let config = routed_web(
        "mirror",
        web,
        &["{name: copy, clusters: [{cluster: primary}], mirrors: [{cluster: shadow}]}"],
        &[
            cluster("primary", primary.addr, false),
            cluster("shadow", shadow.addr, false),
        ],
    );
    let proxy = start(&config).await;
    let pid = proxy.pid().expect("pid");
    let before = peak_rss_kib(pid);
    // The primary answers `/big/256` too, but the client reads it
    // streaming; the copy's 256 MiB answer is what must not be kept.
    let mut stream = send(
        web,
        b"GET /big/256 HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n",
    )
    .await;
    let mut sink = [0u8; 64 * 1024];
    let mut total = 0usize;
    loop {
        let n = stream.read(&mut sink).await.expect("read");
        if n == 0 {
            break;
        }
        total += n;
    }
    assert!(total > 256 * 1024 * 1024, "{total}");
    // The copy is drained on its own task: give it time to finish.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let grown = peak_rss_kib(pid).saturating_sub(before);
    assert!(
        grown < 64 * 1024,
        "peak RSS grew by {grown} KiB while a 256 MiB mirror response was read"
    );
}

#[tokio::test]
async fn peer_metadata_goes_only_to_mesh_endpoints() {
    let echo = echo().await;
    let web = free_addr();
    let config = routed_web(
        "peers",
        web,
        &[
            "{name: mesh, match: {pathPrefix: /mesh}, clusters: [{cluster: mesh}]}",
            "{name: external, clusters: [{cluster: external}]}",
        ],
        &[
            cluster("mesh", echo.addr, true),
            cluster("external", echo.addr, false),
        ],
    );
    let _proxy = start_with(&config, &["--workload", "web-v1", "--label", "app=web"]).await;
    let (_, body) = get(web, "/mesh", &[]).await;
    assert!(body.contains("x-weft-peer:"), "{body}");
    let (status, body) = get(web, "/external", &[]).await;
    // The echo answered (an error reply would lack the headers too).
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("GET /external"), "{body}");
    assert!(!body.contains("x-weft-peer"), "{body}");
    assert!(!body.contains("x-weft-service"), "{body}");
}

#[tokio::test]
async fn an_inbound_proxy_answers_peer_metadata_only_to_a_proxy() {
    let echo = echo().await;
    let inbound = free_addr();
    let _proxy = start_with(
        &sidecar(inbound, echo.addr, "{}", ""),
        &["--workload", "web-v1", "--label", "app=web"],
    )
    .await;
    let mut stream = send(
        inbound,
        b"GET / HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n",
    )
    .await;
    let answer = read_until_closed(&mut stream, Duration::from_secs(10))
        .await
        .expect("answer in time");
    let text = String::from_utf8_lossy(&answer).to_ascii_lowercase();
    let head = text.split("\r\n\r\n").next().unwrap_or_default();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(!head.contains("x-weft-peer"), "{head}");
}

#[tokio::test]
async fn the_route_timeout_covers_the_whole_response() {
    let echo = echo().await;
    let web = free_addr();
    let config = routed_web(
        "timeout",
        web,
        &["{name: bounded, timeout: 0.6s, clusters: [{cluster: echo}]}"],
        &[cluster("echo", echo.addr, false)],
    );
    let _proxy = start(&config).await;
    let started = Instant::now();
    let mut stream = send(web, b"GET /drip HTTP/1.1\r\nHost: web\r\n\r\n").await;
    let answer = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    let elapsed = started.elapsed();
    let answer = answer.expect("still streaming after 5s");
    let text = String::from_utf8_lossy(&answer);
    // Headers came in time; the 2 s body was cut near 0.6 s.
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(elapsed < Duration::from_millis(1500), "{elapsed:?}");
    assert!(text.matches("tick").count() < 10, "{text}");
}

#[tokio::test]
async fn a_declared_http_gateway_port_waits_for_a_late_request() {
    let echo = echo().await;
    let listen = free_addr();
    let _proxy = start(&gateway(listen, echo.addr, "")).await;
    let mut stream = TcpStream::connect(listen).await.expect("connect");
    // Longer than the ~100 ms protocol detection timeout.
    tokio::time::sleep(Duration::from_millis(400)).await;
    stream
        .write_all(b"GET /late HTTP/1.1\r\nHost: anything\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.expect("read");
    let (status, body) = parse(&answer);
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("GET /late\n"), "{body}");
}
