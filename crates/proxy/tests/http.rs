//! HTTP through a real weft-proxy process, against real backends on loopback.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Method, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use weft_testkit::backend::{HttpBackend, WebSocketEcho, pattern_byte};
use weft_testkit::client::{self, Http1Client, Http2Client};
use weft_testkit::prometheus::sample;
use weft_testkit::proxy::ProxyProcess;
use weft_testkit::{dead_addr, free_addr, grpc};

const BIN: &str = env!("CARGO_BIN_EXE_weft-proxy");

/// One proxy with a listener per service under test.
struct Mesh {
    proxy: ProxyProcess,
    web: std::net::SocketAddr,
    by_host: std::net::SocketAddr,
    grpc: std::net::SocketAddr,
    ws: std::net::SocketAddr,
    backend: HttpBackend,
    _grpc_backend: tokio::task::JoinHandle<()>,
    _ws_backend: WebSocketEcho,
}

async fn start_mesh() -> Mesh {
    let backend = HttpBackend::start("web-v1").await;
    let (grpc_addr, grpc_task) = grpc::start("grpc-v1").await;
    let ws_backend = WebSocketEcho::start().await;
    let (web, by_host, grpc, ws) = (free_addr(), free_addr(), free_addr(), free_addr());
    let config = format!(
        r#"
version: http-test
listeners:
- {{name: web, address: "{web}", kind: EXPLICIT, service: web.test.svc.cluster.local}}
- {{name: by-host, address: "{by_host}", kind: EXPLICIT}}
- {{name: grpc, address: "{grpc}", kind: EXPLICIT, service: echo.test.svc.cluster.local}}
- {{name: ws, address: "{ws}", kind: EXPLICIT, service: ws.test.svc.cluster.local}}
services:
- name: web.test.svc.cluster.local
  hosts: [web, web.test]
  ports:
  - port: 80
    protocol: HTTP
    routes:
    - {{name: slow, match: {{pathPrefix: /slow/}}, clusters: [{{cluster: web}}], timeout: 0.3s}}
    - {{name: rest, clusters: [{{cluster: web}}]}}
- name: echo.test.svc.cluster.local
  ports: [{{port: 50051, protocol: GRPC, cluster: echo}}]
- name: ws.test.svc.cluster.local
  ports: [{{port: 80, protocol: HTTP, cluster: ws}}]
- name: empty.test.svc.cluster.local
  hosts: [empty]
  ports: [{{port: 80, cluster: empty}}]
- name: dead.test.svc.cluster.local
  hosts: [dead]
  ports: [{{port: 80, cluster: dead}}]
clusters:
- {{name: web, endpoints: [{{address: "{web_backend}"}}]}}
- {{name: echo, upstreamProtocol: HTTP2_PRIOR_KNOWLEDGE, endpoints: [{{address: "{grpc_addr}"}}]}}
- {{name: ws, endpoints: [{{address: "{ws_addr}"}}]}}
- {{name: empty}}
- {{name: dead, connectTimeout: 1s, endpoints: [{{address: "{dead}"}}]}}
"#,
        web_backend = backend.addr,
        ws_addr = ws_backend.addr,
        dead = dead_addr(),
    );
    let proxy = ProxyProcess::start(Path::new(BIN), &config)
        .await
        .unwrap_or_else(|err| panic!("{err:#}"));
    Mesh {
        proxy,
        web,
        by_host,
        grpc,
        ws,
        backend,
        _grpc_backend: grpc_task,
        _ws_backend: ws_backend,
    }
}

#[tokio::test]
async fn http1_keep_alive_reuses_one_upstream_connection() {
    let mesh = start_mesh().await;
    let mut client = Http1Client::connect(mesh.web).await.expect("connect");
    for i in 0..20 {
        let reply = client
            .get("web", &format!("/item/{i}"))
            .await
            .expect("request");
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(
            reply.text(),
            format!("web-v1 GET /item/{i} host=web version=HTTP/1.1")
        );
        assert_eq!(reply.header("x-backend"), Some("web-v1"));
    }
    assert_eq!(mesh.backend.requests(), 20);
    assert_eq!(
        mesh.backend.connections(),
        1,
        "sequential requests share one pooled connection"
    );

    // A second downstream connection reuses the idle upstream one too.
    let reply = client::get(mesh.web, "web", "/again")
        .await
        .expect("request");
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(mesh.backend.connections(), 1);
}

#[tokio::test]
async fn http2_downstream_is_multiplexed_and_keeps_its_authority() {
    let mesh = start_mesh().await;
    let client = Http2Client::connect(mesh.by_host).await.expect("connect");
    let paths: Vec<String> = (0..10).map(|i| format!("/h2/{i}")).collect();
    let replies = paths.iter().map(|path| client.get("web.test:80", path));
    for (i, reply) in futures_util::future::join_all(replies)
        .await
        .into_iter()
        .enumerate()
    {
        let reply = reply.expect("request");
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        assert_eq!(
            reply.text(),
            format!("web-v1 GET /h2/{i} host=web.test:80 version=HTTP/2.0")
        );
    }
    assert_eq!(
        mesh.backend.connections(),
        1,
        "HTTP/2 upstream is one multiplexed connection"
    );
}

#[tokio::test]
async fn grpc_unary_and_bidirectional_streaming() {
    let mesh = start_mesh().await;
    let mut client = grpc::connect(mesh.grpc).await;

    let reply = client
        .unary(grpc::pb::EchoRequest {
            message: "hello".into(),
        })
        .await
        .expect("unary")
        .into_inner();
    assert_eq!(
        (reply.message.as_str(), reply.server.as_str()),
        ("hello", "grpc-v1")
    );

    // A gRPC error status travels in the trailers.
    let status = client
        .unary(grpc::pb::EchoRequest {
            message: "fail".into(),
        })
        .await
        .expect_err("status from trailers");
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    assert_eq!(status.message(), "asked to fail");

    // Bidirectional: each message is answered before the next is sent.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut replies = client
        .bidi(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("bidi")
        .into_inner();
    for i in 0..5 {
        tx.send(grpc::pb::EchoRequest {
            message: format!("m{i}"),
        })
        .await
        .expect("send");
        let reply = replies.message().await.expect("stream").expect("a reply");
        assert_eq!(reply.message, format!("m{i}"));
    }
    drop(tx);
    assert!(replies.message().await.expect("clean end").is_none());
}

#[tokio::test]
async fn websocket_upgrade_echoes_both_ways() {
    let mesh = start_mesh().await;
    let stream = tokio::net::TcpStream::connect(mesh.ws)
        .await
        .expect("connect");
    let (mut socket, response) = tokio_tungstenite::client_async("ws://ws.test/chat", stream)
        .await
        .expect("upgrade through proxy");
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    for word in ["one", "two", "three"] {
        socket.send(word.into()).await.expect("send");
        let reply = socket.next().await.expect("a reply").expect("message");
        assert_eq!(reply.to_text().expect("text"), format!("echo: {word}"));
    }
    socket.close(None).await.expect("close");
}

#[tokio::test]
async fn fifty_mib_bodies_stream_both_ways() {
    const SIZE: u64 = 50 * 1024 * 1024;
    let mesh = start_mesh().await;
    let mut client = Http1Client::connect(mesh.web).await.expect("connect");

    // Download: verify length and content.
    let reply = client
        .get("web", &format!("/bytes/{SIZE}"))
        .await
        .expect("download");
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body.len() as u64, SIZE);
    assert!(
        reply
            .body
            .iter()
            .enumerate()
            .all(|(i, b)| *b == pattern_byte(i as u64))
    );

    // Upload, chunked (no content-length): the backend counts what arrived.
    let chunks = futures_util::stream::iter((0..SIZE / 65536).map(|i| {
        let chunk: Vec<u8> = (i * 65536..(i + 1) * 65536).map(pattern_byte).collect();
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(Frame::data(Bytes::from(chunk)))
    }));
    let body = BodyExt::boxed(StreamBody::new(chunks));
    let expected_sum = (0..SIZE).fold(0u32, |s, i| s.wrapping_add(u32::from(pattern_byte(i))));
    let reply = client
        .send(client::request(Method::POST, "web", "/count", body))
        .await
        .expect("upload");
    assert_eq!(reply.text(), format!("bytes={SIZE} sum={expected_sum}"));
}

#[tokio::test]
async fn local_replies_name_the_cause_and_flag() {
    let mesh = start_mesh().await;

    let reply = client::get(mesh.by_host, "nowhere.example", "/")
        .await
        .expect("request");
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.header("x-weft-response-flags"), Some("NR"));
    assert!(
        reply
            .text()
            .contains("no service for host \"nowhere.example\""),
        "{}",
        reply.text()
    );

    let reply = client::get(mesh.by_host, "empty", "/")
        .await
        .expect("request");
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.header("x-weft-response-flags"), Some("UH"));
    assert!(
        reply.text().contains("no healthy upstream"),
        "{}",
        reply.text()
    );

    let reply = client::get(mesh.by_host, "dead", "/")
        .await
        .expect("request");
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.header("x-weft-response-flags"), Some("UF"));
    assert!(
        reply.text().contains("upstream connect error"),
        "{}",
        reply.text()
    );
    assert!(
        reply.text().contains("Connection refused"),
        "{}",
        reply.text()
    );

    let reply = client::get(mesh.web, "web", "/slow/2000")
        .await
        .expect("request");
    assert_eq!(reply.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(reply.header("x-weft-response-flags"), Some("UT"));
    assert!(
        reply.text().contains("did not answer within 300ms"),
        "{}",
        reply.text()
    );
}

#[tokio::test]
async fn metrics_count_requests_by_code_and_flag() {
    let mesh = start_mesh().await;
    for _ in 0..3 {
        client::get(mesh.web, "web", "/ok").await.expect("request");
    }
    client::get(mesh.by_host, "nowhere.example", "/")
        .await
        .expect("request");

    // A client that gives up mid-request is counted as DC.
    let mut slow = Http1Client::connect(mesh.web).await.expect("connect");
    let _ = tokio::time::timeout(Duration::from_millis(100), slow.get("web", "/slow/250")).await;
    drop(slow);
    tokio::time::sleep(Duration::from_millis(200)).await;

    let metrics = client::get(mesh.metrics_addr(), "metrics", "/stats/prometheus")
        .await
        .expect("scrape")
        .text();
    let line = |code: &str, flags: &str, service: &str| {
        sample(
            &metrics,
            "istio_requests_total",
            &[
                ("reporter", "source"),
                ("destination_service", service),
                ("request_protocol", "http"),
                ("response_code", code),
                ("response_flags", flags),
            ],
        )
    };
    let web = "web.test.svc.cluster.local";
    assert_eq!(line("200", "-", web), 3.0, "{metrics}");
    assert_eq!(line("404", "NR", "unknown"), 1.0, "{metrics}");
    assert_eq!(line("0", "DC", web), 1.0, "{metrics}");
}

impl Mesh {
    fn metrics_addr(&self) -> std::net::SocketAddr {
        self.proxy.metrics
    }
}

#[tokio::test]
async fn an_http10_upstream_is_answered_as_http11_with_keep_alive() {
    // A bare HTTP/1.0 server: answers once per connection, then closes.
    let old = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let old_addr = old.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = old.accept().await {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf).await;
            let _ = stream.write_all(b"HTTP/1.0 200 OK\r\n\r\nold server").await;
        }
    });
    let listen = free_addr();
    let config = format!(
        r#"
listeners: [{{name: old, address: "{listen}", kind: EXPLICIT, service: old}}]
services: [{{name: old, ports: [{{port: 80, protocol: HTTP, cluster: old}}]}}]
clusters: [{{name: old, endpoints: [{{address: "{old_addr}"}}]}}]
"#
    );
    let _proxy = ProxyProcess::start(Path::new(BIN), &config)
        .await
        .expect("proxy");
    let mut client = Http1Client::connect(listen).await.expect("connect");
    for _ in 0..3 {
        let reply = client
            .get("old", "/")
            .await
            .expect("request on the same connection");
        assert_eq!(reply.version, http::Version::HTTP_11);
        assert_eq!(reply.text(), "old server");
    }
}

#[tokio::test]
async fn requests_alternate_round_robin_between_endpoints() {
    let (one, two) = (
        HttpBackend::start("one").await,
        HttpBackend::start("two").await,
    );
    let listen = free_addr();
    let config = format!(
        r#"
listeners: [{{name: rr, address: "{listen}", kind: EXPLICIT, service: rr}}]
services: [{{name: rr, ports: [{{port: 80, protocol: HTTP, cluster: rr}}]}}]
clusters: [{{name: rr, endpoints: [{{address: "{}"}}, {{address: "{}"}}]}}]
"#,
        one.addr, two.addr
    );
    let _proxy = ProxyProcess::start(Path::new(BIN), &config)
        .await
        .expect("proxy");
    let mut client = Http1Client::connect(listen).await.expect("connect");
    let mut answered_by = Vec::new();
    for _ in 0..6 {
        let reply = client.get("rr", "/").await.expect("request");
        answered_by.push(reply.header("x-backend").unwrap_or("?").to_string());
    }
    assert_eq!(answered_by, ["one", "two", "one", "two", "one", "two"]);
}
