//! A headless service (`resolution: NONE` with endpoints, the shape
//! `registry::kube` gives a `clusterIP: None` Service) through a capturing
//! sidecar: the app picks a pod by address, as DNS for `pod-0.db...` or
//! `db...` gives it, and its sidecar sends the request to that pod, not
//! another, with mesh mTLS to a pod that runs a proxy (STRICT here) and
//! plaintext to one that does not.
//!
//! The service is a ServiceEntry selecting its pods (`endpoints` with NONE
//! is refused by Istio's validation; a selector gives the registry the
//! same service and endpoints a headless Service does). Pod B is a
//! connected proxy reached at its own inbound listener; pod A is a
//! WorkloadEntry without a proxy (two proxied pods would need two
//! workload targets on 127.0.0.1 with the same port).
//!
//! Needs root, `ip` and `iptables`; under `CI=true` it fails rather than skip.

mod mtls_support;

use std::net::SocketAddr;
use std::time::Duration;

use mtls_support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use weft_testkit::backend::HttpBackend;
use weft_testkit::netns::{NetNs, privileged_or_skip};

/// The app's source address: only its connections are captured.
const CALLER: &str = "127.0.0.9";
const POD_A: &str = "127.0.0.21";
const POD_B: &str = "127.0.0.22";
/// The service port, which each pod serves.
const PORT: u16 = 7000;
/// Pod B's proxy's inbound listener (mesh callers' way in).
const POD_B_INBOUND: &str = "127.0.0.22:15700";
const HOST: &str = "db.default.svc.cluster.local";
const DB_ID: &str = "spiffe://cluster.local/ns/default/sa/db";

#[test]
fn headless_service_reaches_the_dialled_pod_with_mtls() {
    const NAME: &str = "headless_service_reaches_the_dialled_pod_with_mtls";
    if !privileged_or_skip(NAME) {
        return;
    }
    let netns = NetNs::create("hdlscap").expect("create namespace");
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

/// The raw answer to a GET for HOST sent from CALLER to `to` (captured),
/// or what went wrong.
async fn get_from_app(to: SocketAddr) -> String {
    let attempt = async {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind(format!("{CALLER}:0").parse().expect("addr"))?;
        let mut stream = socket.connect(to).await?;
        let request = format!("GET / HTTP/1.1\r\nhost: {HOST}\r\nconnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await?;
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&answer).into_owned())
    };
    match tokio::time::timeout(Duration::from_secs(5), attempt).await {
        Ok(Ok(text)) => text,
        Ok(Err(err)) => format!("error: {err}"),
        Err(_) => "timed out".to_string(),
    }
}

async fn captured(netns: &NetNs) {
    let control = Control::start(&[]).await;
    for rule in [
        vec!["-d", "127.0.0.1/32", "-j", "RETURN"],
        vec!["-s", CALLER, "-j", "REDIRECT", "--to-ports", "15001"],
    ] {
        let mut argv = vec!["iptables", "-t", "nat", "-A", "OUTPUT", "-p", "tcp"];
        argv.extend_from_slice(&rule);
        netns.exec(&argv).expect("install nat rule");
    }
    // Pod A: no proxy, its app on its own address.
    let pod_a =
        HttpBackend::start_on(format!("{POD_A}:{PORT}").parse().expect("addr"), "pod-a").await;
    // Pod B: its app (answering with the client certificate its proxy
    // saw) behind its proxy.
    let _pod_b = echo_backend_on(([127, 0, 0, 1], PORT).into()).await;
    control
        .apply(&format!(
            "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: db}}
spec:
  hosts: [{HOST}]
  location: MESH_INTERNAL
  resolution: NONE
  ports: [{{number: {PORT}, name: http, protocol: HTTP}}]
  workloadSelector: {{labels: {{app: db}}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: pod-a}}
spec: {{address: {POD_A}, labels: {{app: db}}}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: default}}
spec: {{mtls: {{mode: STRICT}}}}
"
        ))
        .await;
    let port = format!("{PORT}/http");
    let inbound = format!("{POD_B_INBOUND}={PORT}");
    let pod_b = control
        .ready_proxy(
            "db",
            &[
                "--label",
                "app=db",
                "--address",
                POD_B,
                "--port",
                &port,
                "--inbound",
                &inbound,
            ],
        )
        .await;
    let client = control
        .ready_proxy("sleep", &["--label", "app=sleep", "--capture"])
        .await;

    // Pod B by its address: its own app, over mTLS with both identities.
    let to_b: SocketAddr = format!("{POD_B}:{PORT}").parse().expect("addr");
    let expected = format!("xfcc=By={DB_ID};URI={CLIENT_ID}");
    let mut answer = String::new();
    for _ in 0..100 {
        answer = get_from_app(to_b).await;
        if answer.contains(&expected) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.contains(&expected),
        "pod B over mTLS: {answer}\nclient:\n{}\npod B:\n{}",
        client.logs(),
        pod_b.logs()
    );
    assert_eq!(pod_a.requests(), 0, "pod B's request went to pod A");

    // Pod A by its address: pod A, in plaintext (it has no proxy).
    let to_a: SocketAddr = format!("{POD_A}:{PORT}").parse().expect("addr");
    let answer = get_from_app(to_a).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "pod A: {answer}");
    assert!(
        answer.to_ascii_lowercase().contains("x-backend: pod-a"),
        "pod A: {answer}"
    );
    assert_eq!(pod_a.requests(), 1);

    // Every request to pod B went through mTLS: its proxy refuses
    // plaintext under STRICT.
    let mut plain = tokio::net::TcpStream::connect(POD_B_INBOUND)
        .await
        .expect("connect to pod B's proxy");
    plain
        .write_all(format!("GET / HTTP/1.1\r\nhost: {HOST}\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut refused = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut refused))
        .await
        .expect("closed, not left hanging");
    assert!(
        read.is_err() || refused.is_empty(),
        "plaintext reached pod B: {}",
        String::from_utf8_lossy(&refused)
    );
}
