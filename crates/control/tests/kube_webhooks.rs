//! weftd's admission webhooks (`--webhook`) through a real weftd process
//! and real TLS: the client trusts only weftd's `root-cert.pem` (what the
//! webhook configurations' caBundle holds) and names
//! `weftd.weft-system.svc`, as the API server does through the Service.
//!
//! These run everywhere; the run against a real kube-apiserver (which
//! calls the webhooks itself) needs `WEFT_TEST_KUBE_APISERVER`.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use weft_testkit::weftd::WeftdProcess;

const WEFTD: &str = env!("CARGO_BIN_EXE_weftd");

async fn weftd_with_webhook(dir: &Path, extra: &[&str]) -> (WeftdProcess, SocketAddr) {
    let webhook = weft_testkit::free_addr();
    let address = webhook.to_string();
    let mut flags = vec!["--webhook", address.as_str()];
    flags.extend_from_slice(extra);
    let weftd = WeftdProcess::start_with(
        Path::new(WEFTD),
        &dir.join("store"),
        weft_testkit::free_addr(),
        weft_testkit::free_addr(),
        &flags,
    )
    .await
    .expect("weftd starts");
    (weftd, webhook)
}

/// POSTs `body` to `https://weftd.weft-system.svc{path}` at `address`,
/// trusting only `root_pem`.
async fn post(
    address: SocketAddr,
    root_pem: &Path,
    path: &str,
    body: Vec<u8>,
) -> anyhow::Result<(u16, Bytes)> {
    let mut roots = RootCertStore::empty();
    for der in CertificateDer::pem_file_iter(root_pem).context("root")? {
        roots.add(der?)?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(address).await?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("weftd.weft-system.svc")?, tcp)
        .await
        .context("TLS handshake with the webhook")?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await?;
    tokio::spawn(connection);
    let request = http::Request::post(path)
        .header("host", "weftd.weft-system.svc")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))?;
    let response = sender.send_request(request).await?;
    let status = response.status().as_u16();
    Ok((status, response.into_body().collect().await?.to_bytes()))
}

fn review(kind: (&str, &str, &str), resource: &str, object: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "e911857d-c318-11e8-bbad-025000000001",
            "kind": {"group": kind.0, "version": kind.1, "kind": kind.2},
            "resource": {"group": kind.0, "version": kind.1, "resource": resource},
            "namespace": "bookinfo",
            "operation": "CREATE",
            "userInfo": {"username": "kubernetes-admin"},
            "object": object
        }
    }))
    .expect("json")
}

#[tokio::test]
async fn webhooks_answer_over_tls_with_weftds_root() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (weftd, webhook) = weftd_with_webhook(dir.path(), &["--kube-server-version", "1.28"]).await;

    let bad = review(
        ("networking.istio.io", "v1", "VirtualService"),
        "virtualservices",
        json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
               "metadata": {"name": "reviews", "namespace": "bookinfo"},
               "spec": {"hosts": ["reviews"], "http": [{"route": [{"destination": {"subset": "v2"}}]}]}}),
    );
    let (status, body) = post(webhook, &weftd.root_cert, "/validate", bad)
        .await
        .expect("validate answers");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let answer: Value = serde_json::from_slice(&body).expect("review");
    assert_eq!(
        answer["response"]["uid"],
        "e911857d-c318-11e8-bbad-025000000001"
    );
    assert_eq!(answer["response"]["allowed"], false);
    let message = answer["response"]["status"]["message"].to_string();
    assert!(
        message.contains("spec.http[0].route[0].destination.host: Required value"),
        "{message}"
    );

    let pod = review(
        ("", "v1", "Pod"),
        "pods",
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": "ratings", "namespace": "bookinfo", "labels": {"app": "ratings"}},
               "spec": {"containers": [{"name": "ratings", "image": "ratings:1"}]}}),
    );
    let (status, body) = post(webhook, &weftd.root_cert, "/inject", pod.clone())
        .await
        .expect("inject answers");
    assert_eq!(status, 200);
    let answer: Value = serde_json::from_slice(&body).expect("review");
    assert_eq!(answer["response"]["allowed"], true);
    let patch: Vec<u8> =
        serde_json::from_value(answer["response"]["patch"].clone()).expect("patch bytes");
    let patch: json_patch::Patch = serde_json::from_slice(&patch).expect("json patch");
    let mut object =
        serde_json::from_slice::<Value>(&pod).expect("pod")["request"]["object"].clone();
    json_patch::patch(&mut object, &patch).expect("applies");
    // --kube-server-version 1.28: the classic sidecar, after the app.
    assert_eq!(object["spec"]["containers"][1]["name"], "weft-proxy");
    assert_eq!(object["spec"]["initContainers"][0]["name"], "weft-init");

    let (status, _) = post(webhook, &weftd.root_cert, "/mutate", b"{}".to_vec())
        .await
        .expect("answers");
    assert_eq!(status, 404);
}

#[tokio::test]
async fn a_client_that_does_not_hold_weftds_root_cannot_talk_to_the_webhook() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_weftd, webhook) = weftd_with_webhook(dir.path(), &[]).await;
    let other = tempfile::tempdir().expect("tempdir");
    let (stranger, _) = weftd_with_webhook(other.path(), &[]).await;
    let refused = post(webhook, &stranger.root_cert, "/validate", b"{}".to_vec()).await;
    let err = refused.expect_err("another root must not verify weftd's certificate");
    assert!(format!("{err:#}").contains("TLS handshake"), "{err:#}");
}
