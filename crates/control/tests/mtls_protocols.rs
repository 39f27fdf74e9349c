//! What mTLS carries between sidecars besides HTTP/1.1: an HTTP/2 app and
//! a WebSocket upgrade under STRICT, and how a DestinationRule's `tls`
//! overrides auto-mTLS (DISABLE, ISTIO_MUTUAL).

mod mtls_support;

use futures_util::{SinkExt, StreamExt};
use mtls_support::*;
use weft_testkit::backend::WebSocketEcho;
use weft_testkit::client::Http2Client;
use weft_testkit::free_addr;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn http2_and_websocket_apps_cross_strict_mtls() {
    let control = Control::start(&[]).await;
    let backend = echo_backend().await;
    let ws = WebSocketEcho::start().await;
    let (http_port, ws_port) = (backend.addr.port(), ws.addr.port());
    control
        .apply(&format!(
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: httpbin}}\nspec:\n  hosts: [httpbin.default.svc.cluster.local]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports:\n  - {{number: 8000, name: http2, protocol: HTTP2, targetPort: {http_port}}}\n  - {{number: 8080, name: ws, protocol: HTTP, targetPort: {ws_port}}}\n  workloadSelector: {{labels: {{app: httpbin}}}}\n---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {{name: default, namespace: istio-system}}\nspec: {{mtls: {{mode: STRICT}}}}\n"
        ))
        .await;
    let ports = [format!("{http_port}/http2"), format!("{ws_port}/http")];
    let inbound = [
        format!("{}={http_port}", free_addr()),
        format!("{}={ws_port}", free_addr()),
    ];
    let _server = control
        .ready_proxy(
            "httpbin",
            &[
                "--label",
                "app=httpbin",
                "--port",
                &ports[0],
                "--port",
                &ports[1],
                "--inbound",
                &inbound[0],
                "--inbound",
                &inbound[1],
            ],
        )
        .await;
    let (http_listen, ws_listen) = (free_addr(), free_addr());
    let listens = [
        format!("{http_listen}=httpbin:8000"),
        format!("{ws_listen}=httpbin:8080"),
    ];
    let client = control
        .ready_proxy("sleep", &["--listen", &listens[0], "--listen", &listens[1]])
        .await;
    let warm = eventually(http_listen, "/", |r| r.status == 200).await;
    assert!(warm.is_ok(), "{warm:?}\n{}", client.logs());

    // An HTTP/2 app keeps HTTP/2 end to end, inside mTLS.
    let h2 = Http2Client::connect(http_listen).await.expect("h2 connect");
    let reply = h2.get("httpbin:8000", "/").await.expect("h2 request");
    assert_eq!(
        reply.text(),
        format!("xfcc=By={SERVER_ID};URI={CLIENT_ID} version=HTTP/2.0")
    );

    // A WebSocket upgrade crosses as HTTP/1.1 over mTLS (STRICT would
    // refuse anything else).
    let stream = tokio::net::TcpStream::connect(ws_listen)
        .await
        .expect("connect");
    let (mut socket, response) = tokio_tungstenite::client_async("ws://httpbin:8080/chat", stream)
        .await
        .unwrap_or_else(|err| panic!("upgrade through mTLS: {err}\n{}", client.logs()));
    assert_eq!(response.status(), 101);
    for word in ["one", "two"] {
        socket.send(word.into()).await.expect("send");
        let echoed = socket.next().await.expect("reply").expect("message");
        assert_eq!(echoed.to_text().expect("text"), format!("echo: {word}"));
    }
    socket.close(None).await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn destination_rule_tls_overrides_auto_mtls() {
    let control = Control::start(&[]).await;
    let backend = echo_backend().await;
    control.apply(&service_yaml(backend.addr.port())).await;
    let _server = control
        .ready_server("httpbin", backend.addr, free_addr(), &[])
        .await;
    let listen = free_addr();
    let _client = control.ready_client("sleep", "sleep", listen, true).await;
    let mtls = format!("xfcc=By={SERVER_ID};URI={CLIENT_ID}");
    let reply = eventually(listen, "/", |r| r.text().starts_with(&mtls)).await;
    assert!(reply.is_ok(), "auto-mTLS first: {reply:?}");

    let rule = |mode: &str| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: httpbin}}\nspec:\n  host: httpbin.default.svc.cluster.local\n  trafficPolicy: {{tls: {{mode: {mode}}}}}\n"
        )
    };
    control.apply(&rule("DISABLE")).await;
    let reply = eventually(listen, "/", |r| {
        r.status == 200 && r.text().starts_with("xfcc=-")
    })
    .await;
    assert!(reply.is_ok(), "DR DISABLE sends plaintext: {reply:?}");
    control.apply(&rule("ISTIO_MUTUAL")).await;
    let reply = eventually(listen, "/", |r| r.text().starts_with(&mtls)).await;
    assert!(reply.is_ok(), "DR ISTIO_MUTUAL: {reply:?}");
}
