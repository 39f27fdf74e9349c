//! Several weftd replicas on one cluster (issue 13, item 7): one holds the
//! `coordination.k8s.io` Lease and writes the mesh root into every
//! namespace's `weft-ca-root-cert` ConfigMap; when it dies another takes
//! the Lease over and keeps writing (a namespace created afterwards gets
//! its ConfigMap). Skipped plainly when `WEFT_TEST_KUBE_APISERVER` is not
//! set.

use std::path::Path;
use std::time::{Duration, Instant};

use weft_kube::k8s_openapi::api::coordination::v1::Lease;
use weft_kube::k8s_openapi::api::core::v1::ConfigMap;
use weft_kube::kube::api::Api;
use weft_testkit::free_addr;
use weft_testkit::kube::{KubeCluster, apiserver_or_skip};
use weft_testkit::weftd::WeftdProcess;

const WEFTD: &str = env!("CARGO_BIN_EXE_weftd");

async fn replica(cluster: &KubeCluster, state: &Path, id: &str) -> anyhow::Result<WeftdProcess> {
    let kubeconfig = cluster.kubeconfig.display().to_string();
    WeftdProcess::start_with(
        Path::new(WEFTD),
        state,
        free_addr(),
        free_addr(),
        &[
            "--kubeconfig",
            &kubeconfig,
            "--leader-id",
            id,
            "--leader-lease",
            "2s",
        ],
    )
    .await
}

/// The root in `namespace`'s ConfigMap, once it is there (10 s at most).
async fn root_in(cluster: &KubeCluster, namespace: &str) -> Option<String> {
    let maps = Api::<ConfigMap>::namespaced(cluster.client.clone(), namespace);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(Some(map)) = maps.get_opt("weft-ca-root-cert").await
            && let Some(pem) = map.data.and_then(|d| d.get("root-cert.pem").cloned())
        {
            return Some(pem);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn holder(cluster: &KubeCluster) -> Option<String> {
    Api::<Lease>::namespaced(cluster.client.clone(), "weft-system")
        .get_opt("weftd-leader")
        .await
        .ok()
        .flatten()
        .and_then(|lease| lease.spec?.holder_identity)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replica_leads_and_another_takes_over_when_it_dies() -> anyhow::Result<()> {
    let test = "one_replica_leads_and_another_takes_over_when_it_dies";
    let Some(binary) = apiserver_or_skip(test) else {
        return Ok(());
    };
    let cluster = KubeCluster::start(&binary).await?;
    cluster.namespace("weft-system", &[]).await?;
    cluster.namespace("shop", &[]).await?;

    // Replicas share the CA (in a cluster: a --cacerts Secret).
    let dir = tempfile::tempdir()?;
    let mut first = replica(&cluster, &dir.path().join("a"), "weftd-a").await?;
    let root = std::fs::read_to_string(&first.root_cert)?;
    let copy = dir.path().join("b");
    std::fs::create_dir_all(copy.join("ca"))?;
    for file in ["root-cert.pem", "root-key.pem"] {
        std::fs::copy(
            first.state_dir.join("ca").join(file),
            copy.join("ca").join(file),
        )?;
    }
    let mut second = replica(&cluster, &copy, "weftd-b").await?;
    assert_eq!(std::fs::read_to_string(&second.root_cert)?, root, "one CA");

    for namespace in ["shop", "default", "weft-system"] {
        let written = root_in(&cluster, namespace).await;
        assert_eq!(written.as_deref(), Some(root.as_str()), "{namespace}");
    }
    let leader = holder(&cluster).await.expect("a Lease holder");
    assert!(leader == "weftd-a" || leader == "weftd-b", "{leader}");
    let logs = |w: &WeftdProcess| w.logs().matches("now the leader").count();
    assert_eq!(
        logs(&first) + logs(&second),
        1,
        "exactly one replica leads\nA:\n{}\nB:\n{}",
        first.logs(),
        second.logs()
    );

    // The leader dies; the other takes the Lease once it expires.
    let (survivor, dead) = if leader == "weftd-a" {
        first.kill().await?;
        (&second, "weftd-a")
    } else {
        second.kill().await?;
        (&first, "weftd-b")
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match holder(&cluster).await {
            Some(now) if now != dead => break,
            _ if Instant::now() > deadline => {
                panic!("nobody took the Lease over:\n{}", survivor.logs())
            }
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    cluster.namespace("late", &[]).await?;
    assert_eq!(
        root_in(&cluster, "late").await.as_deref(),
        Some(root.as_str()),
        "the new leader writes new namespaces' roots:\n{}",
        survivor.logs()
    );
    Ok(())
}
