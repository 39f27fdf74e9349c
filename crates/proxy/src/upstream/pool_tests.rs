//! The HTTP/1 pool over real loopback sockets: pooled connections stream
//! whole bodies, go back to the pool, are replaced when the upstream
//! closed them while idle, and close when their response is abandoned.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use weft_testkit::backend::{HttpBackend, pattern_byte};

use super::{HttpVersion, Pool};
use crate::body::ProxyBody;
use crate::tls::MeshTls;
use crate::tls::upstream::UpstreamTls;
use crate::upstream::{Breaker, Limits};

fn get(path: &str) -> Request<ProxyBody> {
    Request::get(path)
        .header(http::header::HOST, "backend")
        .body(
            Empty::<Bytes>::new()
                .map_err(|never| match never {})
                .boxed_unsync(),
        )
        .expect("request")
}

fn pool() -> (Arc<Pool>, Arc<Breaker>) {
    let breaker = Arc::new(Breaker::new("backend".into(), Limits::default()));
    (Arc::new(Pool::new(MeshTls::new(None))), breaker)
}

async fn send(
    pool: &Arc<Pool>,
    breaker: &Arc<Breaker>,
    addr: SocketAddr,
    path: &str,
) -> (StatusCode, Bytes) {
    let response = pool
        .send(
            addr,
            HttpVersion::Http1,
            breaker,
            std::time::Duration::from_secs(2),
            UpstreamTls::Plain,
            get(path),
        )
        .await
        .expect("response");
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("whole body")
        .to_bytes();
    (status, body)
}

#[tokio::test]
async fn sequential_requests_stream_whole_bodies_over_one_pooled_connection() {
    let backend = HttpBackend::start("backend").await;
    let (pool, breaker) = pool();
    // 300,000 bytes come in several 64 KiB chunks.
    for _ in 0..5 {
        let (status, body) = send(&pool, &breaker, backend.addr, "/bytes/300000").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body.len(), 300_000);
        assert!(
            body.iter()
                .enumerate()
                .all(|(i, byte)| *byte == pattern_byte(i as u64)),
            "the body arrives intact"
        );
    }
    assert_eq!(backend.connections(), 1, "one connection, reused");
    assert_eq!(pool.idle_http1(backend.addr), 1, "back in the pool");
}

/// Answers each connection's first request with keep-alive, then closes it
/// (as an upstream whose idle timeout is shorter than ours does).
async fn closes_after_one_answer() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buffer = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buffer[..n]),
                    }
                }
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await;
                // Dropped: closed while the proxy holds it as idle.
            });
        }
    });
    (addr, accepted)
}

#[tokio::test]
async fn a_connection_the_upstream_closed_while_idle_is_replaced() {
    let (addr, accepted) = closes_after_one_answer().await;
    let (pool, breaker) = pool();
    for _ in 0..3 {
        let (status, body) = send(&pool, &breaker, addr, "/").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(&body[..], b"ok");
        // Let the close arrive before the next checkout.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        3,
        "a new connection each time"
    );
}

#[tokio::test]
async fn a_response_abandoned_midway_takes_its_connection_with_it() {
    let backend = HttpBackend::start("backend").await;
    let (pool, breaker) = pool();
    let response = pool
        .send(
            backend.addr,
            HttpVersion::Http1,
            &breaker,
            std::time::Duration::from_secs(2),
            UpstreamTls::Plain,
            get("/bytes/1000000"),
        )
        .await
        .expect("response");
    let mut body = response.into_body();
    let first = body.frame().await.expect("a frame").expect("data");
    assert!(first.is_data());
    drop(body);
    assert_eq!(pool.idle_http1(backend.addr), 0, "not pooled half-read");

    let (status, body) = send(&pool, &breaker, backend.addr, "/bytes/10").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body.len(), 10);
    assert_eq!(
        backend.connections(),
        2,
        "the next request opened a new one"
    );
}
