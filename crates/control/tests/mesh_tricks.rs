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
    assert!(waited >= Duration::from_secs(8), "{waited:?}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        server.logs().contains("did not finish within"),
        "{}",
        server.logs()
    );
}
