//! mTLS with real interception: in a network namespace, nat rules send
//! connections for the workload's port to its sidecar's inbound capture
//! port 15006 (as Istio's init container does); the sidecar terminates
//! mTLS from a mesh caller found through SO_ORIGINAL_DST, and under STRICT
//! closes plaintext, whether from a sidecar without identity or straight
//! from a process. The policy is Istio's own validation sample (workload
//! selector, PERMISSIVE, port 8080 STRICT), read from the corpus.
//!
//! Needs root, `ip` and `iptables`; under `CI=true` it fails rather than skip.

mod mtls_support;

use std::time::Duration;

use mtls_support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use weft_testkit::free_addr;
use weft_testkit::netns::{NetNs, privileged_or_skip};

/// The workload's address as callers dial it (anything but 127.0.0.1 is
/// captured).
const WORKLOAD_IP: &str = "127.0.0.5";

#[test]
fn captured_inbound_terminates_mtls_and_strict_closes_plaintext() {
    const NAME: &str = "captured_inbound_terminates_mtls_and_strict_closes_plaintext";
    if !privileged_or_skip(NAME) {
        return;
    }
    let Some(corpus) = weft_testkit::corpus::root_or_skip(NAME) else {
        return;
    };
    let policy = std::fs::read_to_string(
        corpus
            .join("istio/pkg/test/datasets/validation/dataset/security-v1-PeerAuthentication.yaml"),
    )
    .expect("corpus PeerAuthentication");
    let netns = NetNs::create("mtlscap").expect("create namespace");
    netns
        .run(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(captured(&netns, &policy))
        })
        .expect("enter namespace");
}

/// The port the corpus policy makes STRICT.
const PORT: u16 = 8080;
const UNDECLARED: u16 = 19000;
/// The source address of the test's own calls to the undeclared port.
const DIRECT_CALLER: &str = "127.0.0.9";

/// Sends `hi` straight to the workload's undeclared port; the echo, or
/// nothing when the connection is closed.
async fn direct_echo() -> Vec<u8> {
    let attempt = async {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind(format!("{DIRECT_CALLER}:0").parse()?)?;
        let mut stream = socket
            .connect(format!("{WORKLOAD_IP}:{UNDECLARED}").parse()?)
            .await?;
        stream.write_all(b"hi").await?;
        stream.shutdown().await?;
        let mut out = Vec::new();
        stream.read_to_end(&mut out).await?;
        anyhow::Ok(out)
    };
    match tokio::time::timeout(Duration::from_secs(5), attempt).await {
        Ok(Ok(out)) => out,
        _ => Vec::new(),
    }
}

async fn captured(netns: &NetNs, policy: &str) {
    let control = Control::start(&[]).await;
    let _backend = echo_backend_on(([127, 0, 0, 1], PORT).into()).await;
    let port = PORT.to_string();
    // A port the workload does not declare: passed through by its sidecar
    // to where it was headed. Only connections from DIRECT_CALLER are
    // captured for it, so the sidecar's own onward connection is not.
    let _undeclared = weft_testkit::backend::TcpEcho::start_on(
        format!("{WORKLOAD_IP}:{UNDECLARED}").parse().expect("addr"),
    )
    .await;
    let undeclared = UNDECLARED.to_string();
    let rules: [&[&str]; 3] = [
        &["-d", "127.0.0.1/32", "-j", "RETURN"],
        &["--dport", &port, "-j", "REDIRECT", "--to-ports", "15006"],
        &[
            "-s",
            DIRECT_CALLER,
            "--dport",
            &undeclared,
            "-j",
            "REDIRECT",
            "--to-ports",
            "15006",
        ],
    ];
    for rule in rules {
        let mut argv = vec!["iptables", "-t", "nat", "-A", "OUTPUT", "-p", "tcp"];
        argv.extend_from_slice(rule);
        netns.exec(&argv).expect("install nat rule");
    }
    control
        .apply(&format!("{}---\n{policy}", service_yaml(PORT)))
        .await;

    let workload_port = format!("{port}/http");
    let server = control
        .ready_proxy(
            "httpbin",
            &[
                "--label",
                "app=httpbin",
                "--label",
                "version=v1",
                "--address",
                WORKLOAD_IP,
                "--port",
                &workload_port,
                "--capture",
            ],
        )
        .await;

    let (mesh_listen, plain_listen) = (free_addr(), free_addr());
    let (mesh, _plain) = tokio::join!(
        control.ready_client("sleep", "sleep", mesh_listen, true),
        control.ready_client("legacy", "legacy", plain_listen, false),
    );

    let expected = format!("xfcc=By={SERVER_ID};URI={CLIENT_ID}");
    let reply = eventually(mesh_listen, "/", |r| r.text().starts_with(&expected)).await;
    assert!(
        reply.is_ok(),
        "mTLS through capture: {reply:?}\n{}\n{}",
        mesh.logs(),
        server.logs()
    );
    let refused = eventually(plain_listen, "/", |r| r.status == 503).await;
    assert!(
        refused.is_ok(),
        "STRICT refuses the plaintext sidecar: {refused:?}"
    );

    // A process dialling the workload directly is captured too, and closed.
    let direct = format!("{WORKLOAD_IP}:{port}");
    let mut stream = tokio::net::TcpStream::connect(&direct)
        .await
        .expect("connect");
    stream
        .write_all(b"GET / HTTP/1.1\r\nhost: httpbin\r\n\r\n")
        .await
        .expect("write");
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer))
        .await
        .expect("closed, not left hanging");
    assert!(
        read.is_err() || answer.is_empty(),
        "plaintext got an answer under STRICT: {}",
        String::from_utf8_lossy(&answer)
    );

    // Undeclared ports follow the workload-level mode: PERMISSIVE in the
    // corpus policy, so plaintext passes through...
    assert_eq!(direct_echo().await, b"hibye");
    // ...until the workload turns STRICT.
    let strict = policy.replace("mode: PERMISSIVE", "mode: STRICT");
    assert_ne!(strict, policy, "the corpus policy names PERMISSIVE");
    control.apply(&strict).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while !direct_echo().await.is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "STRICT never closed the undeclared port\n{}",
            server.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The mesh caller still gets through on the declared port.
    let reply = get(mesh_listen, "/").await.expect("mesh under STRICT");
    assert!(reply.text().starts_with(&expected), "{}", reply.text());
}
