//! MeshConfig on Kubernetes, against a real kube-apiserver (and etcd):
//! weftd in Kubernetes mode reads the `mesh` key of the `istio` ConfigMap
//! in the root namespace at start, follows its changes live, refuses an
//! invalid one whole (the previous MeshConfig stays in force), and falls
//! back to Istio's defaults when the ConfigMap is deleted.
//!
//! Skipped plainly when `WEFT_TEST_KUBE_APISERVER` is not set.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use weft_api::wire::MeshConfigReply;
use weft_testkit::free_addr;
use weft_testkit::kube::{KubeCluster, apiserver_or_skip};
use weft_testkit::weftd::WeftdProcess;

const WEFTD: &str = env!("CARGO_BIN_EXE_weftd");

fn config_map(mesh: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "istio"},
        "data": {"mesh": mesh, "meshNetworks": "networks: {}"}
    })
}

async fn in_force(weftd: &WeftdProcess) -> anyhow::Result<MeshConfigReply> {
    let reply = weftd
        .call(http::Method::GET, "/v1/meshconfig", None)
        .await?;
    anyhow::ensure!(reply.status == 200, "{}", reply.text());
    Ok(serde_json::from_str(&reply.text())?)
}

/// Polls `GET /v1/meshconfig` (at most 15 s) until `done` holds.
async fn until(
    weftd: &WeftdProcess,
    what: &str,
    done: impl Fn(&MeshConfigReply) -> bool,
) -> anyhow::Result<MeshConfigReply> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let now = in_force(weftd).await?;
        if done(&now) {
            return Ok(now);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{what}: still {now:?}\nweftd:\n{}",
            weftd.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_istio_config_map_is_followed_live() {
    let test = "the_istio_config_map_is_followed_live";
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
    cluster
        .create(
            "istio-system",
            config_map(
                "outboundTrafficPolicy: {mode: REGISTRY_ONLY}\ntrustDomain: cluster.local\n",
            ),
        )
        .await?;
    let dir = tempfile::tempdir()?;
    let kubeconfig = cluster.kubeconfig.display().to_string();
    let weftd = WeftdProcess::start_with(
        Path::new(WEFTD),
        &dir.path().join("state"),
        free_addr(),
        free_addr(),
        &["--kubeconfig", &kubeconfig],
    )
    .await?;
    let first = in_force(&weftd).await?;
    assert_eq!(first.source, "ConfigMap istio-system/istio key mesh");
    assert_eq!(
        first.config["outboundTrafficPolicy"]["mode"],
        "REGISTRY_ONLY"
    );

    // A change through the API server applies live.
    cluster
        .apply(
            "istio-system",
            config_map("outboundTrafficPolicy: {mode: ALLOW_ANY}\nconnectTimeout: 3s\n"),
        )
        .await?;
    let changed = until(&weftd, "the change applied", |now| {
        now.config["connectTimeout"] == "3s"
    })
    .await?;
    assert_eq!(changed.config["outboundTrafficPolicy"]["mode"], "ALLOW_ANY");

    // An invalid one is refused whole.
    cluster
        .apply(
            "istio-system",
            config_map("connectTimeout: 5s\noutboundTrafficPolicy: {mode: SOMETIMES}\n"),
        )
        .await?;
    let refused = until(&weftd, "the refusal", |now| now.refused.is_some()).await?;
    let why = refused.refused.unwrap_or_default();
    assert!(
        why.contains(
            "ConfigMap istio-system/istio key mesh: MeshConfig outboundTrafficPolicy.mode"
        ),
        "{why}"
    );
    assert_eq!(
        refused.config["connectTimeout"], "3s",
        "nothing of it applies"
    );

    // Gone: Istio's defaults.
    cluster.delete("istio-system", config_map("")).await?;
    let defaults = until(&weftd, "the defaults", |now| {
        now.source.starts_with("defaults")
    })
    .await?;
    assert_eq!(defaults.config["connectTimeout"], "10s");
    assert_eq!(
        defaults.config["outboundTrafficPolicy"]["mode"],
        "ALLOW_ANY"
    );
    Ok(())
}
