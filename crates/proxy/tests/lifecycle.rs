//! TCP proxying, config reload under load, and graceful drain, through a
//! real weft-proxy process.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use weft_testkit::backend::{HttpBackend, TcpEcho};
use weft_testkit::client::{self, Http1Client};
use weft_testkit::free_addr;
use weft_testkit::prometheus::sample;
use weft_testkit::proxy::{ProxyOptions, ProxyProcess};

const BIN: &str = env!("CARGO_BIN_EXE_weft-proxy");

#[tokio::test]
async fn tcp_echo_with_half_close() {
    let echo = TcpEcho::start().await;
    let listen = free_addr();
    let config = format!(
        r#"
listeners: [{{name: db, address: "{listen}", kind: EXPLICIT, service: db}}]
services: [{{name: db, ports: [{{port: 5432, protocol: TCP, cluster: db}}]}}]
clusters: [{{name: db, endpoints: [{{address: "{}"}}]}}]
"#,
        echo.addr
    );
    let proxy = ProxyProcess::start(Path::new(BIN), &config)
        .await
        .expect("proxy");

    let mut stream = tokio::net::TcpStream::connect(listen)
        .await
        .expect("connect");
    // Binary bytes that look like no known protocol.
    let payload: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
    stream.write_all(&payload).await.expect("write");
    // Half-close: we are done sending, but still read the echo and the
    // server's final words, which it sends only after seeing our FIN.
    stream.shutdown().await.expect("shutdown write half");
    let mut received = Vec::new();
    stream
        .read_to_end(&mut received)
        .await
        .expect("read to EOF");
    assert_eq!(received.len(), payload.len() + 3);
    assert_eq!(&received[..payload.len()], &payload[..]);
    assert_eq!(&received[payload.len()..], b"bye");

    tokio::time::sleep(Duration::from_millis(100)).await;
    let metrics = client::get(proxy.metrics, "m", "/stats/prometheus")
        .await
        .expect("scrape")
        .text();
    let labels = [("reporter", "source"), ("destination_service", "db")];
    for (name, value) in [
        ("istio_tcp_connections_closed_total", 1.0),
        ("istio_tcp_received_bytes_total", 100000.0),
        ("istio_tcp_sent_bytes_total", 100003.0),
    ] {
        assert_eq!(sample(&metrics, name, &labels), value, "{name}:\n{metrics}");
    }
}

fn web_config(
    version: &str,
    listen: std::net::SocketAddr,
    backend: std::net::SocketAddr,
) -> String {
    format!(
        r#"
version: {version}
listeners: [{{name: web, address: "{listen}", kind: EXPLICIT, service: web}}]
services: [{{name: web, ports: [{{port: 80, protocol: HTTP, cluster: web}}]}}]
clusters: [{{name: web, endpoints: [{{address: "{backend}"}}]}}]
"#
    )
}

#[tokio::test]
async fn config_reload_while_requests_flow_loses_none() {
    let (blue, green) = (
        HttpBackend::start("blue").await,
        HttpBackend::start("green").await,
    );
    let listen = free_addr();
    let proxy = ProxyProcess::start(Path::new(BIN), &web_config("v1", listen, blue.addr))
        .await
        .expect("proxy");

    // Four keep-alive clients send requests back to back during the reloads.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed, green_seen) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (stop, ok, failed, green_seen) =
            (stop.clone(), ok.clone(), failed.clone(), green_seen.clone());
        clients.push(tokio::spawn(async move {
            let mut client = Http1Client::connect(listen).await.expect("connect");
            while !stop.load(Ordering::Relaxed) {
                match client.get("web", "/").await {
                    Ok(reply) if reply.status == StatusCode::OK => {
                        ok.fetch_add(1, Ordering::Relaxed);
                        if reply.text().starts_with("green") {
                            green_seen.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    _ => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }

    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy
        .write_config(&web_config("v2", listen, green.addr))
        .expect("write v2");
    wait_for_version(&proxy, "v2").await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    // A broken file is refused; v2 keeps serving and the error is visible.
    proxy
        .write_config("listeners: [{name: web, address: nowhere, kind: EXPLICIT}]\n")
        .expect("write broken");
    let dump = wait_for_rejection(&proxy).await;
    assert!(dump.contains("\"version\": \"v2\""), "{dump}");
    assert!(dump.contains("listeners[0].address"), "{dump}");
    assert!(dump.contains("proxy.yaml"), "{dump}");
    tokio::time::sleep(Duration::from_millis(300)).await;

    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.expect("client task");
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert_eq!(
        failed,
        0,
        "{failed} of {} requests failed during reload",
        ok + failed
    );
    assert!(ok > 100, "only {ok} requests were sent");
    assert!(green_seen.load(Ordering::Relaxed) > 0, "v2 never served");
    let reply = client::get(listen, "web", "/").await.expect("after");
    assert!(reply.text().starts_with("green"), "{}", reply.text());
}

async fn wait_for_version(proxy: &ProxyProcess, version: &str) {
    for _ in 0..100 {
        let dump = proxy.admin_get("/config_dump").await.expect("dump").text();
        if dump.contains(&format!("\"version\": \"{version}\"")) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("config {version} never applied; log:\n{}", proxy.logs());
}

async fn wait_for_rejection(proxy: &ProxyProcess) -> String {
    for _ in 0..100 {
        let dump = proxy.admin_get("/config_dump").await.expect("dump").text();
        if !dump.contains("\"lastRejected\": null") {
            return dump;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("broken config was never rejected; log:\n{}", proxy.logs());
}

#[tokio::test]
async fn a_bad_config_at_start_is_refused_with_its_reason() {
    let output = tokio::process::Command::new(BIN)
        .args(["--config", "/nonexistent/weft.yaml"])
        .output()
        .await
        .expect("run");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("/nonexistent/weft.yaml: cannot read"),
        "{stderr}"
    );
}

#[tokio::test]
async fn sigterm_drains_in_flight_requests_then_exits() {
    drains_in_flight_requests_then_exits(&[]).await;
}

/// One worker (as the benchmark and a small sidecar run it): traffic,
/// drain and exit behave the same.
#[tokio::test]
async fn one_worker_serves_drains_and_exits_the_same() {
    drains_in_flight_requests_then_exits(&["--workers", "1"]).await;
}

async fn drains_in_flight_requests_then_exits(flags: &[&str]) {
    let backend = HttpBackend::start("slow").await;
    let listen = free_addr();
    let config = web_config("v1", listen, backend.addr);
    let mut options = ProxyOptions::new(Path::new(BIN), &config);
    options.args = flags.iter().map(|f| f.to_string()).collect();
    let mut proxy = ProxyProcess::spawn_ready(options, Duration::from_secs(20))
        .await
        .expect("proxy");
    for _ in 0..20 {
        let reply = client::get(listen, "web", "/quick").await.expect("request");
        assert_eq!(reply.status, StatusCode::OK);
    }

    let health = client::get(proxy.health, "h", "/healthz/ready")
        .await
        .expect("health");
    assert_eq!(
        (health.status, health.text().as_str()),
        (StatusCode::OK, "LIVE\n")
    );

    let in_flight = tokio::spawn(async move { client::get(listen, "web", "/slow/700").await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    proxy.terminate().expect("SIGTERM");
    tokio::time::sleep(Duration::from_millis(100)).await;

    // Draining: no longer ready, and new connections are refused.
    assert!(
        tokio::net::TcpStream::connect(listen).await.is_err(),
        "listener still open"
    );
    let ready = proxy.admin_get("/ready").await.expect("admin");
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(ready.text(), "DRAINING\n");
    let health = client::get(proxy.health, "h", "/healthz/ready")
        .await
        .expect("health");
    assert_eq!(health.status, StatusCode::SERVICE_UNAVAILABLE);

    // The request in flight still completes.
    let reply = in_flight.await.expect("task").expect("in-flight request");
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.text(), "slow slow 700ms");
    let code = proxy.wait_exit(Duration::from_secs(5)).await.expect("exit");
    assert_eq!(code, Some(0), "log:\n{}", proxy.logs());
}
