//! No loops through the proxy's own ports: in a network namespace with
//! Istio's capture rules, a connection dialled straight to the inbound
//! capture port 15006 (which the rules leave alone) and an outbound one
//! addressed to a local 15001 (which they redirect to 15001) are
//! both closed at once, each counted once in
//! `weft_loop_connections_refused_total`. Passed through, either would
//! reach the proxy again, and again.
//!
//! Needs root, `ip` and `iptables`; under `CI=true` it fails rather than skip.

use std::path::Path;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use weft_testkit::backend::HttpBackend;
use weft_testkit::client;
use weft_testkit::netns::{NetNs, privileged_or_skip};
use weft_testkit::prometheus::sample;
use weft_testkit::proxy::{ProxyOptions, ProxyProcess};

const BIN: &str = env!("CARGO_BIN_EXE_weft-proxy");
const PROXY_UID: &str = "1337";

#[test]
fn connections_to_the_proxys_own_ports_are_refused_not_looped() {
    if !privileged_or_skip("connections_to_the_proxys_own_ports_are_refused_not_looped") {
        return;
    }
    let netns = NetNs::create("loops").expect("create namespace");
    // Istio's rules, with locally made connections standing in for
    // inbound ones: 15006 and the admin ports are left alone, the
    // workload's port goes to 15006, everything else (but the proxy's own
    // and 127.0.0.1's) to 15001.
    let rules: [&[&str]; 5] = [
        &["-m", "owner", "--uid-owner", PROXY_UID, "-j", "RETURN"],
        &["-d", "127.0.0.1/32", "-j", "RETURN"],
        &["--dport", "15006", "-j", "RETURN"],
        &["--dport", "18080", "-j", "REDIRECT", "--to-ports", "15006"],
        &["-j", "REDIRECT", "--to-ports", "15001"],
    ];
    for rule in rules {
        let mut argv = vec!["iptables", "-t", "nat", "-A", "OUTPUT", "-p", "tcp"];
        argv.extend_from_slice(rule);
        netns.exec(&argv).expect("install nat rule");
    }
    netns
        .run(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(refused_not_looped(&netns));
        })
        .expect("enter namespace");
}

async fn refused_not_looped(netns: &NetNs) {
    let app = HttpBackend::start_on("127.0.0.1:18080".parse().expect("addr"), "app").await;
    let config = r#"
version: loops
listeners:
- {name: outbound, address: "0.0.0.0:15001", kind: OUTBOUND_CAPTURE}
- {name: inbound, address: "0.0.0.0:15006", kind: INBOUND_CAPTURE}
inboundPorts: [{port: 18080, protocol: HTTP}]
"#;
    let options = ProxyOptions {
        prefix: netns.prefix_as(PROXY_UID),
        admin: Some("127.0.0.1:15000".parse().expect("addr")),
        ..ProxyOptions::new(Path::new(BIN), config)
    };
    let mut proxy = ProxyProcess::spawn(options).expect("spawn proxy");
    proxy
        .wait_ready(Duration::from_secs(20))
        .await
        .expect("proxy ready");

    // The workload itself is reached through 15006 as usual.
    let reply = client::get("127.0.0.5:18080".parse().expect("addr"), "app", "/in")
        .await
        .expect("inbound request");
    assert_eq!(reply.text(), "app GET /in host=app version=HTTP/1.1");

    // Straight to the inbound capture port (not redirected): its original
    // destination is 15006 itself. Outbound to a local address's 15001:
    // redirected to 15001, its original destination a capture port.
    for (target, side) in [
        ("127.0.0.5:15006", "destination"),
        ("127.0.0.5:15001", "source"),
    ] {
        let began = Instant::now();
        let mut stream = tokio::net::TcpStream::connect(target)
            .await
            .unwrap_or_else(|err| panic!("connect {target}: {err}"));
        // An HTTP request a looping proxy would carry round and round.
        let _ = stream
            .write_all(b"GET / HTTP/1.1\r\nhost: app\r\n\r\n")
            .await;
        let mut got = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut got)).await;
        assert!(
            matches!(read, Ok(Ok(0)) | Ok(Err(_))),
            "{target} ({side}): not closed at once: {read:?}, {got:?}"
        );
        assert!(
            began.elapsed() < Duration::from_secs(2),
            "{target}: closed only after {:?}",
            began.elapsed()
        );
    }
    // Give a loop, were there one, time to show in the counters.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let metrics = client::get(proxy.metrics, "m", "/stats/prometheus")
        .await
        .expect("scrape")
        .text();
    let refused = |side| {
        sample(
            &metrics,
            "weft_loop_connections_refused_total",
            &[("reporter", side)],
        )
    };
    assert_eq!(
        (refused("destination"), refused("source")),
        (1.0, 1.0),
        "{metrics}"
    );
    assert_eq!(app.requests(), 1, "only the one request reached the app");
    let log = proxy.logs();
    assert!(
        log.contains("a port of this proxy: refused"),
        "the refusal is logged:\n{log}"
    );
}
