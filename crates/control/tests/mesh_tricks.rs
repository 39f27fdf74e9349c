//! Issue 14's tricks that need a proxy holding a workload certificate
//! (weftd's CA): a client that offers mesh mTLS and then goes quiet is
//! closed at the TLS handshake timeout instead of held forever.

mod mtls_support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use mtls_support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use weft_testkit::free_addr;

/// The first flight of a TLS client offering `istio-h2`, as bytes.
fn mesh_client_hello() -> Vec<u8> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    config.alpn_protocols = vec![b"istio-h2".to_vec()];
    let name = rustls::pki_types::ServerName::try_from("httpbin").expect("name");
    let mut client = rustls::ClientConnection::new(Arc::new(config), name).expect("client");
    let mut hello = Vec::new();
    client.write_tls(&mut hello).expect("client hello");
    hello
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_mesh_client_hello_is_closed_at_the_handshake_timeout() {
    let control = Control::start(&[]).await;
    let backend = echo_backend().await;
    control.apply(&service_yaml(backend.addr.port())).await;
    let inbound = free_addr();
    let server = control
        .ready_server("httpbin", backend.addr, inbound, &[])
        .await;

    let mut stream = TcpStream::connect(inbound).await.expect("connect");
    stream
        .write_all(&mesh_client_hello())
        .await
        .expect("send the ClientHello");
    let started = Instant::now();
    // The proxy answers the hello (ServerHello...) and then waits for a
    // Finished that never comes: it must give up on its own.
    let mut answer = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(20), async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    let waited = started.elapsed();
    eprintln!("waited {waited:?}, answer {} bytes", answer.len());
    assert!(
        closed.is_ok(),
        "a silent mesh client held the connection for 20 s\n{}",
        server.logs()
    );
    assert!(!answer.is_empty(), "the proxy never started the handshake");
    // The default handshake timeout is 10 s.
    assert!(
        waited >= Duration::from_secs(8),
        "closed after {waited:?} with {:?}\n{}",
        String::from_utf8_lossy(&answer),
        server.logs()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        server.logs().contains("did not finish within"),
        "{}",
        server.logs()
    );
}

/// The status `listen` answers for `path` with `headers` once the mesh has
/// settled into `settled` (first pushes and certificates take a moment).
async fn status_when(
    listen: std::net::SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    settled: impl Fn(http::StatusCode) -> bool,
) -> http::StatusCode {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let request = weft_testkit::client::request_with_headers(
            http::Method::GET,
            "httpbin",
            path,
            headers,
            weft_testkit::client::empty(),
        );
        let status = match weft_testkit::client::Http1Client::connect(listen).await {
            Ok(mut client) => client.send(request).await.map(|r| r.status).ok(),
            Err(_) => None,
        };
        if let Some(status) = status
            && (settled(status) || Instant::now() > deadline)
        {
            return status;
        }
        assert!(Instant::now() < deadline, "no answer from {listen}{path}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_cannot_claim_a_client_address_through_its_sidecar() {
    let control = Control::start(&[]).await;
    let backend = echo_backend().await;
    control.apply(&service_yaml(backend.addr.port())).await;
    control
        .apply(
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: deny-remote, namespace: default}\nspec:\n  selector: {matchLabels: {app: httpbin}}\n  action: DENY\n  rules:\n  - from: [{source: {remoteIpBlocks: [\"1.2.3.4/32\"]}}]\n    to: [{operation: {paths: [\"/forged*\"]}}]\n  - from: [{source: {remoteIpBlocks: [\"127.0.0.0/8\"]}}]\n    to: [{operation: {paths: [\"/local*\"]}}]\n",
        )
        .await;
    let _server = control
        .ready_server("httpbin", backend.addr, free_addr(), &[])
        .await;
    let listen = free_addr();
    let _client = control.ready_client("sleep", "sleep", listen, true).await;
    let forged = [
        ("x-forwarded-for", "1.2.3.4"),
        ("x-envoy-external-address", "1.2.3.4"),
    ];
    // Over mTLS the server sidecar believes the client address a gateway
    // decided; an app's own claim is stripped by its sidecar first, so the
    // remote address stays the real caller's.
    let ok = |s: http::StatusCode| s == http::StatusCode::OK;
    assert_eq!(
        status_when(listen, "/forged", &forged, ok).await,
        http::StatusCode::OK
    );
    let denied = |s: http::StatusCode| s == http::StatusCode::FORBIDDEN;
    assert_eq!(
        status_when(listen, "/local", &forged, denied).await,
        http::StatusCode::FORBIDDEN
    );
}
