//! ServiceEntries for external hosts with real interception: in a network
//! namespace, nat rules send the app's connections (from CALLER) to its
//! sidecar's outbound capture port 15001, as Istio's init container does.
//! Under REGISTRY_ONLY the sidecar admits `resolution: NONE` entries (sent
//! on to the address the app dialled), TCP by the entry's CIDR `addresses`,
//! HTTP by a wildcard host; everything else is refused.
//!
//! Needs root, `ip` and `iptables`; under `CI=true` it fails rather than skip.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use weft_testkit::backend::{HttpBackend, TcpEcho};
use weft_testkit::netns::{NetNs, privileged_or_skip};
use weft_testkit::proxy::{ProxyOptions, ProxyProcess};
use weft_testkit::weftd::WeftdProcess;

const WEFTD: &str = env!("CARGO_BIN_EXE_weftd");
/// The app's source address: only its connections are captured, so the
/// sidecar's own onward connections are not.
const CALLER: &str = "127.0.0.9";

#[test]
fn registry_only_admits_none_entries_by_cidr_and_wildcard_host_through_capture() {
    const NAME: &str =
        "registry_only_admits_none_entries_by_cidr_and_wildcard_host_through_capture";
    if !privileged_or_skip(NAME) {
        return;
    }
    let netns = NetNs::create("extcap").expect("create namespace");
    netns
        .run(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(captured(&netns))
        })
        .expect("enter namespace");
}

/// A connection from CALLER to `to` (captured by the nat rule).
async fn dial(to: SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(format!("{CALLER}:0").parse().expect("addr"))?;
    socket.connect(to).await
}

/// What a TCP echo behind `to` returns for "hi" then a half-close; empty
/// when the sidecar closed the connection.
async fn echo(to: SocketAddr) -> Vec<u8> {
    let attempt = async {
        let mut stream = dial(to).await?;
        stream.write_all(b"hi").await?;
        stream.shutdown().await?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await?;
        Ok::<_, std::io::Error>(answer)
    };
    match tokio::time::timeout(Duration::from_secs(5), attempt).await {
        Ok(Ok(answer)) => answer,
        _ => Vec::new(),
    }
}

/// The status line and `x-backend` of a GET with `host` sent to `to`.
async fn http_get(to: SocketAddr, host: &str) -> (String, Option<String>) {
    let attempt = async {
        let mut stream = dial(to).await?;
        let request = format!("GET / HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await?;
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&answer).into_owned())
    };
    let text = match tokio::time::timeout(Duration::from_secs(5), attempt).await {
        Ok(Ok(text)) => text,
        Ok(Err(err)) => return (format!("error: {err}"), None),
        Err(_) => return ("timed out".to_string(), None),
    };
    let status = text.lines().next().unwrap_or_default().to_string();
    let backend = text.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("x-backend")
            .then(|| value.trim().to_string())
    });
    (status, backend)
}

async fn captured(netns: &NetNs) {
    let state = tempfile::tempdir().expect("tempdir");
    let weftd = WeftdProcess::start_in(Path::new(WEFTD), state.path())
        .await
        .expect("weftd");
    // "External" servers: a TCP echo inside the entry's range and one
    // outside it, an HTTP server for the wildcard host.
    let inside = TcpEcho::start_on("127.0.10.7:0".parse().expect("addr")).await;
    let port = inside.addr.port();
    let outside = TcpEcho::start_on(format!("127.0.11.7:{port}").parse().expect("addr")).await;
    let web = HttpBackend::start_on("127.0.12.7:0".parse().expect("addr"), "web").await;
    let web_port = web.addr.port();

    for rule in [
        vec!["-d", "127.0.0.1/32", "-j", "RETURN"],
        vec!["-s", CALLER, "-j", "REDIRECT", "--to-ports", "15001"],
    ] {
        let mut argv = vec!["iptables", "-t", "nat", "-A", "OUTPUT", "-p", "tcp"];
        argv.extend_from_slice(&rule);
        netns.exec(&argv).expect("install nat rule");
    }
    let yaml = format!(
        "apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{name: default}}
spec:
  outboundTrafficPolicy: {{mode: REGISTRY_ONLY}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: db-range}}
spec:
  hosts: [db.external.test]
  addresses: [127.0.10.0/24]
  location: MESH_EXTERNAL
  resolution: NONE
  ports: [{{number: {port}, name: tcp, protocol: TCP}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: web}}
spec:
  hosts: [\"*.web.external.test\"]
  location: MESH_EXTERNAL
  resolution: NONE
  ports: [{{number: {web_port}, name: http, protocol: HTTP}}]
"
    );
    let reply = weftd.apply(&yaml).await.expect("apply");
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let binary: PathBuf = weft_testkit::cli::sibling(WEFTD, "weft-proxy");
    let flags = ["--node-id", "app", "--workload", "app", "--capture"];
    let proxy = ProxyProcess::spawn_ready(
        ProxyOptions::control_plane(&binary, weftd.grpc, &flags),
        Duration::from_secs(20),
    )
    .await
    .expect("ready");

    // TCP to an address in the entry's range: admitted, and sent where the
    // app dialled (resolution NONE).
    let mut answer = Vec::new();
    for _ in 0..50 {
        answer = echo(inside.addr).await;
        if !answer.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(answer, b"hibye", "TCP inside the CIDR\n{}", proxy.logs());
    // The same port outside the range: refused.
    assert_eq!(echo(outside.addr).await, b"", "TCP outside the CIDR");

    // HTTP by a wildcard host: admitted, to the dialled address.
    let (status, backend) = http_get(web.addr, "api.web.external.test").await;
    assert!(status.contains("200"), "{status}\n{}", proxy.logs());
    assert_eq!(backend.as_deref(), Some("web"));
    // The same server under an undeclared name: 502 (BlackHoleCluster).
    let (status, backend) = http_get(web.addr, "elsewhere.test").await;
    assert!(status.contains("502"), "{status}");
    assert_eq!(backend, None);
    assert_eq!(web.requests(), 1, "only the declared request reached it");
}
