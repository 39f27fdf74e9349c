//! Transparent capture, for real: a network namespace with iptables nat rules
//! that redirect outbound TCP to the proxy's port 15001 (as Istio's init
//! container does), a proxy running as UID 1337 (excluded from capture), and
//! clients that dial service VIPs with no idea a proxy exists.
//!
//! Needs root, `ip` and `iptables`; under `CI=true` it fails rather than skip.

use std::path::Path;
use std::time::Duration;

use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use weft_testkit::backend::{HttpBackend, TcpEcho};
use weft_testkit::client;
use weft_testkit::netns::{NetNs, privileged_or_skip};
use weft_testkit::prometheus::sample;
use weft_testkit::proxy::{ProxyOptions, ProxyProcess};

const BIN: &str = env!("CARGO_BIN_EXE_weft-proxy");
const PROXY_UID: &str = "1337";

fn install_capture_rules(netns: &NetNs) -> anyhow::Result<()> {
    // VIPs are only reachable through the sidecar: a route so connect() has
    // somewhere to go, then nat rewrites the destination to 15001.
    netns.exec(&[
        "ip",
        "route",
        "add",
        "240.240.0.0/16",
        "dev",
        "lo",
        "src",
        "127.0.0.1",
    ])?;
    // Connections to the workload's ports (18080, 19000) stand in for
    // traffic arriving from other pods: they go to the inbound port 15006.
    // (Real inbound capture uses PREROUTING on the pod's interface; the
    // proxy sees the same SO_ORIGINAL_DST either way.)
    let rules: [&[&str]; 5] = [
        &["-m", "owner", "--uid-owner", PROXY_UID, "-j", "RETURN"],
        &["-d", "127.0.0.1/32", "-j", "RETURN"],
        &["--dport", "18080", "-j", "REDIRECT", "--to-ports", "15006"],
        &["--dport", "19000", "-j", "REDIRECT", "--to-ports", "15006"],
        &["-j", "REDIRECT", "--to-ports", "15001"],
    ];
    for rule in rules {
        let mut argv = vec!["iptables", "-t", "nat", "-A", "OUTPUT", "-p", "tcp"];
        argv.extend_from_slice(rule);
        netns.exec(&argv)?;
    }
    Ok(())
}

#[test]
fn captured_connections_reach_the_backend_of_their_original_destination() {
    if !privileged_or_skip("captured_connections_reach_the_backend_of_their_original_destination") {
        return;
    }
    let netns = NetNs::create("capture").expect("create namespace");
    install_capture_rules(&netns).expect("install nat rules");
    netns
        .run(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(captured_traffic(&netns));
        })
        .expect("enter namespace");
}

async fn captured_traffic(netns: &NetNs) {
    // Everything below lives inside the namespace.
    let alpha = HttpBackend::start("alpha").await;
    let beta = HttpBackend::start("beta").await;
    let echo = TcpEcho::start().await;
    // Not a service: reached by passthrough to its original address.
    let outside = HttpBackend::start_on("127.0.0.2:0".parse().expect("addr"), "unlisted").await;
    // The local workload, reached through the inbound listener.
    let app = HttpBackend::start_on("127.0.0.1:18080".parse().expect("addr"), "app").await;
    let undeclared = TcpEcho::start_on("127.0.0.6:19000".parse().expect("addr")).await;

    let config = format!(
        r#"
version: capture
listeners:
- {{name: outbound, address: "0.0.0.0:15001", kind: OUTBOUND_CAPTURE}}
- {{name: inbound, address: "0.0.0.0:15006", kind: INBOUND_CAPTURE}}
inboundPorts: [{{port: 18080, protocol: HTTP}}]
services:
- {{name: alpha.test.svc.cluster.local, hosts: [alpha], vips: [240.240.0.10], ports: [{{port: 80, protocol: HTTP}}]}}
- {{name: beta.test.svc.cluster.local, hosts: [beta], vips: [240.240.0.11], ports: [{{port: 80}}]}}
- {{name: db.test.svc.cluster.local, vips: [240.240.0.12], ports: [{{port: 5432, protocol: TCP}}]}}
clusters:
- {{name: "outbound|80||alpha.test.svc.cluster.local", endpoints: [{{address: "{alpha}"}}]}}
- {{name: "outbound|80||beta.test.svc.cluster.local", endpoints: [{{address: "{beta}"}}]}}
- {{name: "outbound|5432||db.test.svc.cluster.local", endpoints: [{{address: "{echo}"}}]}}
"#,
        alpha = alpha.addr,
        beta = beta.addr,
        echo = echo.addr,
    );
    let options = ProxyOptions {
        prefix: netns.prefix_as(PROXY_UID),
        admin: Some("127.0.0.1:15000".parse().expect("addr")),
        ..ProxyOptions::new(Path::new(BIN), &config)
    };
    let mut proxy = ProxyProcess::spawn(options).expect("spawn proxy");
    proxy
        .wait_ready(Duration::from_secs(20))
        .await
        .expect("proxy ready");

    // HTTP to a VIP, routed by Host.
    let reply = client::get("240.240.0.10:80".parse().expect("vip"), "alpha", "/hello")
        .await
        .expect("request to alpha's VIP");
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.text(), "alpha GET /hello host=alpha version=HTTP/1.1");

    // An unknown Host: the VIP the client dialled (SO_ORIGINAL_DST) decides.
    let reply = client::get(
        "240.240.0.11:80".parse().expect("vip"),
        "unknown.example",
        "/x",
    )
    .await
    .expect("request to beta's VIP");
    assert_eq!(
        reply.text(),
        "beta GET /x host=unknown.example version=HTTP/1.1"
    );

    // Opaque TCP to a VIP.
    let mut stream = tokio::net::TcpStream::connect("240.240.0.12:5432")
        .await
        .expect("connect db VIP");
    stream.write_all(b"\x00\x01ping").await.expect("write");
    stream.shutdown().await.expect("half-close");
    let mut echoed = Vec::new();
    stream.read_to_end(&mut echoed).await.expect("read");
    assert_eq!(echoed, b"\x00\x01pingbye");

    // Not a service: passed through to the original destination.
    let reply = client::get(outside.addr, "anything", "/direct")
        .await
        .expect("passthrough");
    assert_eq!(
        reply.text(),
        "unlisted GET /direct host=anything version=HTTP/1.1"
    );

    // Inbound: a declared port goes to the workload on 127.0.0.1.
    let reply = client::get("127.0.0.5:18080".parse().expect("addr"), "app.test", "/in")
        .await
        .expect("inbound request");
    assert_eq!(reply.text(), "app GET /in host=app.test version=HTTP/1.1");
    // Inbound to an undeclared port: passed through to the original address.
    let mut stream = tokio::net::TcpStream::connect(undeclared.addr)
        .await
        .expect("connect");
    stream.write_all(b"raw").await.expect("write");
    stream.shutdown().await.expect("half-close");
    let mut echoed = Vec::new();
    stream.read_to_end(&mut echoed).await.expect("read");
    assert_eq!(echoed, b"rawbye");

    // Each backend saw its request come through the proxy.
    assert_eq!(
        (
            alpha.requests(),
            beta.requests(),
            outside.requests(),
            app.requests()
        ),
        (1, 1, 1, 1)
    );
    let metrics = client::get(proxy.metrics, "m", "/stats/prometheus")
        .await
        .expect("scrape")
        .text();
    let http = [("request_protocol", "http"), ("response_code", "200")];
    let alpha = [("destination_service", "alpha.test.svc.cluster.local")];
    assert_eq!(
        sample(
            &metrics,
            "istio_requests_total",
            &[&http[..], &alpha].concat()
        ),
        1.0,
        "{metrics}"
    );
    let db = [
        ("reporter", "source"),
        ("destination_service", "db.test.svc.cluster.local"),
    ];
    assert_eq!(
        sample(&metrics, "istio_tcp_connections_opened_total", &db),
        1.0,
        "{metrics}"
    );
    let inbound = [("reporter", "destination"), ("response_flags", "-")];
    assert_eq!(
        sample(
            &metrics,
            "istio_requests_total",
            &[&http[..], &inbound].concat()
        ),
        1.0,
        "{metrics}"
    );
    let passthrough = [
        ("reporter", "destination"),
        ("destination_service", "unknown"),
    ];
    assert_eq!(
        sample(&metrics, "istio_tcp_connections_closed_total", &passthrough),
        1.0,
        "{metrics}"
    );
}
