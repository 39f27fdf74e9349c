//! Gateway TLS credentials from Kubernetes Secrets, end to end: a real
//! kube-apiserver (and etcd), weftd following it with `--kubeconfig`, the
//! Gateway, VirtualService and backend created through the API server, and
//! a real `weft-proxy --router` gateway process in `istio-system` serving
//! HTTPS with the certificate of the Secret its Gateway names.
//!
//! - the Secret of the gateway's namespace is served (the client verifies
//!   the chain against the test CA and the SNI host);
//! - a Secret of the same name in another namespace is never used;
//! - replacing the Secret with a renewed certificate reaches new handshakes
//!   within seconds, without restarting weftd or the gateway;
//! - deleting the Secret leaves the server out with a warning naming it,
//!   so new handshakes are refused rather than served with a stale key
//!   (docs/gateways.md, "credentialName").
//!
//! The gateway registers over weftd's plaintext discovery port, as the
//! other gateway tests' gateways do: a gateway is not a pod of the test
//! cluster, so it has no pod-bound token to prove itself with.
//!
//! Skipped plainly when `WEFT_TEST_KUBE_APISERVER` is not set.

mod gateway_tls_support;

use std::path::Path;
use std::time::{Duration, Instant};

use http::StatusCode;
use serde_json::{Value, json};
use weft_testkit::backend::HttpBackend;
use weft_testkit::kube::{KubeCluster, apiserver_or_skip};
use weft_testkit::weftd::WeftdProcess;
use weft_testkit::{free_addr, free_wildcard_port};

use gateway_tls_support::{Client, Issued, Pki, WEFTD, eventually, local, spawn_gateway};

const HOST: &str = "web.example.com";
const SECRET: &str = "web-credential";

/// A `kubernetes.io/tls` Secret named [`SECRET`] holding `issued`.
fn tls_secret(issued: &Issued) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": SECRET},
        "type": "kubernetes.io/tls",
        "stringData": {"tls.crt": issued.cert_pem, "tls.key": issued.key_pem}
    })
}

/// The Istio objects: an HTTPS SIMPLE Gateway in istio-system naming the
/// Secret, and in `shop` a VirtualService bound to it routing to a
/// ServiceEntry whose one WorkloadEntry is the test's backend.
fn istio_objects(port: u16, backend_port: u16) -> Vec<(&'static str, Value)> {
    let backend = "backend.shop.svc.cluster.local";
    vec![
        (
            "istio-system",
            json!({
                "apiVersion": "networking.istio.io/v1", "kind": "Gateway",
                "metadata": {"name": "edge"},
                "spec": {"selector": {"istio": "ingressgateway"}, "servers": [{
                    "port": {"number": port, "name": "https", "protocol": "HTTPS"},
                    "hosts": [HOST],
                    "tls": {"mode": "SIMPLE", "credentialName": SECRET}}]}
            }),
        ),
        (
            "shop",
            json!({
                "apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
                "metadata": {"name": "backend"},
                "spec": {"hosts": [backend], "location": "MESH_INTERNAL",
                         "resolution": "STATIC",
                         "ports": [{"number": 9080, "name": "http", "protocol": "HTTP"}],
                         "workloadSelector": {"labels": {"app": "backend"}}}
            }),
        ),
        (
            "shop",
            json!({
                "apiVersion": "networking.istio.io/v1", "kind": "WorkloadEntry",
                "metadata": {"name": "backend"},
                "spec": {"address": "127.0.0.1", "ports": {"http": backend_port},
                         "labels": {"app": "backend"}}
            }),
        ),
        (
            "shop",
            json!({
                "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
                "metadata": {"name": "web"},
                "spec": {"hosts": [HOST], "gateways": ["istio-system/edge"],
                         "http": [{"route": [{"destination": {"host": backend}}]}]}
            }),
        ),
    ]
}

/// Waits (at most 10 s) until weftd has logged `needle` at least `times`.
async fn logged(weftd: &WeftdProcess, needle: &str, times: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while weftd.logs().matches(needle).count() < times {
        assert!(
            Instant::now() < deadline,
            "weftd never logged {needle:?} {times}×:\n{}",
            weftd.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_serves_renews_and_drops_a_kubernetes_secret_of_its_namespace() {
    let test = "gateway_serves_renews_and_drops_a_kubernetes_secret_of_its_namespace";
    let Some(binary) = apiserver_or_skip(test) else {
        return;
    };
    if let Err(err) = scenario(&binary).await {
        panic!("{test}: {err:#}");
    }
}

async fn scenario(binary: &Path) -> anyhow::Result<()> {
    let cluster = KubeCluster::start(binary).await?;
    cluster.install_weft_crds().await?;
    cluster.namespace("istio-system", &[]).await?;
    cluster.namespace("shop", &[]).await?;
    let dir = tempfile::tempdir()?;
    let pki = Pki::new(dir.path(), "edge");
    let first = pki.issue(&[HOST]);
    let renewed = pki.issue(&[HOST]);
    // Issued by the same CA for the same host: were it served, the client
    // would accept it, so a refused handshake proves it is not used.
    let decoy = pki.issue(&[HOST]);
    cluster.create("shop", tls_secret(&decoy)).await?;

    let backend = HttpBackend::start("web").await;
    let port = free_wildcard_port();
    for (namespace, object) in istio_objects(port, backend.addr.port()) {
        cluster.create(namespace, object).await?;
    }
    let kubeconfig = cluster.kubeconfig.display().to_string();
    let weftd = WeftdProcess::start_with(
        Path::new(WEFTD),
        &dir.path().join("state"),
        free_addr(),
        free_addr(),
        &["--kubeconfig", &kubeconfig],
    )
    .await?;
    let gateway = spawn_gateway(&weftd, "istio=ingressgateway").await;
    let edge = local(port);
    let client = Client::new(HOST, &pki);
    let logs = || format!("weftd:\n{}\ngateway:\n{}", weftd.logs(), gateway.logs());

    // Only shop has the Secret: the gateway in istio-system must not use
    // it. weftd says so, naming the gateway's namespace.
    let missing =
        format!("credentialName \"{SECRET}\" for gateway proxies in namespace istio-system");
    logged(&weftd, &missing, 1).await;
    // The gateway has its config (the Gateway's routes) yet no server on
    // the port: give the push a moment, then expect no handshake.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let refused = client.get(edge, HOST, "/").await;
    assert!(
        refused.is_err(),
        "served with another namespace's Secret: {refused:?}\n{}",
        logs()
    );

    // The Secret in the gateway's namespace is served.
    cluster.create("istio-system", tls_secret(&first)).await?;
    let answer = eventually("the istio-system Secret served", || async {
        client.get(edge, HOST, "/").await.ok()
    })
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", logs());
    assert_eq!(answer.header("x-backend"), Some("web"));
    assert_eq!(answer.presented.as_ref(), Some(&first.der), "{}", logs());
    assert_ne!(answer.presented.as_ref(), Some(&decoy.der));

    // Renewal: the Secret replaced in place; new handshakes see the new
    // certificate without any restart.
    let started = Instant::now();
    cluster.apply("istio-system", tls_secret(&renewed)).await?;
    eventually("the renewed certificate", || async {
        let answer = client.get(edge, HOST, "/").await.ok()?;
        (answer.presented.as_ref() == Some(&renewed.der)).then_some(())
    })
    .await;
    let took = started.elapsed();
    eprintln!("Secret replaced → new certificate served in {took:?}");
    assert!(took < Duration::from_secs(5), "took {took:?}\n{}", logs());
    let answer = client.get(edge, HOST, "/").await?;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.presented.as_ref(), Some(&renewed.der));

    // Deleted: the server is left out with a warning (the documented
    // behaviour), so new handshakes are refused; the shop Secret of the
    // same name still does not stand in for it.
    let warned_before = weftd.logs().matches(&missing).count();
    cluster
        .delete(
            "istio-system",
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": SECRET}}),
        )
        .await?;
    logged(&weftd, &missing, warned_before + 1).await;
    eventually("new handshakes refused after the delete", || async {
        client.get(edge, HOST, "/").await.is_err().then_some(())
    })
    .await;
    let log = weftd.logs();
    assert!(
        log.contains(&format!("{missing}: no Secret istio-system/{SECRET}")),
        "the warning says which Secret is missing:\n{log}"
    );
    // The gateway itself runs on, and no longer holds the old certificate.
    let dump = gateway.admin_get("/config_dump").await?;
    assert_eq!(dump.status, 200);
    assert!(
        !dump.text().contains("BEGIN CERTIFICATE"),
        "{}",
        dump.text()
    );
    drop(backend);
    Ok(())
}
