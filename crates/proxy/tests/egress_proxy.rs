//! Sidecar `outboundTrafficPolicy.egressProxy` under real capture: a
//! network namespace whose iptables nat rules redirect outbound TCP to the
//! proxy (as Istio's init container does); traffic to a destination no
//! service declares goes to the egress proxy's cluster instead of where the
//! app dialled it.
//!
//! Needs root, `ip` and `iptables`; under `CI=true` it fails rather than skip.

use std::path::Path;
use std::time::Duration;

use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use weft_testkit::backend::{HttpBackend, TcpEcho};
use weft_testkit::client;
use weft_testkit::netns::{NetNs, privileged_or_skip};
use weft_testkit::proxy::{ProxyOptions, ProxyProcess};

const BIN: &str = env!("CARGO_BIN_EXE_weft-proxy");
const PROXY_UID: &str = "1337";
const EGRESS_CLUSTER: &str = "outbound|3128||egress.test.svc.cluster.local";

fn install_capture_rules(netns: &NetNs) -> anyhow::Result<()> {
    let rules: [&[&str]; 3] = [
        &["-m", "owner", "--uid-owner", PROXY_UID, "-j", "RETURN"],
        &["-d", "127.0.0.1/32", "-j", "RETURN"],
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
fn unknown_destinations_go_to_the_egress_proxy_not_where_they_were_dialled() {
    if !privileged_or_skip(
        "unknown_destinations_go_to_the_egress_proxy_not_where_they_were_dialled",
    ) {
        return;
    }
    let netns = NetNs::create("egressproxy").expect("create namespace");
    install_capture_rules(&netns).expect("install nat rules");
    netns
        .run(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(through_the_egress_proxy(&netns));
        })
        .expect("enter namespace");
}

async fn through_the_egress_proxy(netns: &NetNs) {
    // Inside the namespace: the egress proxy (on 127.0.0.1, not captured)
    // and two destinations no service declares.
    let egress = HttpBackend::start("egress").await;
    let direct = HttpBackend::start_on("127.0.0.2:0".parse().expect("addr"), "direct").await;
    let echo = TcpEcho::start_on("127.0.0.3:0".parse().expect("addr")).await;
    let config = format!(
        r#"
version: egress-proxy
listeners:
- {{name: outbound, address: "0.0.0.0:15001", kind: OUTBOUND_CAPTURE}}
services:
- {{name: egress.test.svc.cluster.local, vips: [240.240.0.20], ports: [{{port: 3128, protocol: HTTP}}]}}
clusters:
- {{name: "{EGRESS_CLUSTER}", endpoints: [{{address: "{egress}"}}]}}
egressProxyCluster: "{EGRESS_CLUSTER}"
"#,
        egress = egress.addr,
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

    // HTTP to an unknown address: the egress proxy answers, Host intact.
    let reply = client::get(direct.addr, "api.example.com", "/x")
        .await
        .expect("request to an unknown destination");
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(
        reply.text(),
        "egress GET /x host=api.example.com version=HTTP/1.1"
    );
    assert_eq!(direct.requests(), 0, "passed through instead");

    // Opaque TCP to an unknown address goes there too: the egress proxy
    // (an HTTP server) refuses the bytes, where the echo would have
    // echoed them.
    let mut stream = tokio::net::TcpStream::connect(echo.addr)
        .await
        .expect("connect");
    stream
        .write_all(b"\x00\x01ping\r\n\r\n")
        .await
        .expect("write");
    stream.shutdown().await.expect("half-close");
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    assert!(
        answer.starts_with(b"HTTP/1.1 400"),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );
    assert_eq!(egress.connections(), 2);
}
