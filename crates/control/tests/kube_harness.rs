//! The API-server harness itself (testkit::kube): a real kube-apiserver
//! and etcd start, keep objects across an API-server restart, and issue a
//! pod-bound token the server's TokenReview accepts. Skipped plainly when
//! `WEFT_TEST_KUBE_APISERVER` is not set.

use weft_kube::k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use weft_kube::k8s_openapi::api::core::v1::Pod;
use weft_kube::kube::api::{Api, PostParams};
use weft_testkit::kube::{KubeCluster, apiserver_or_skip};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn harness_runs_a_real_api_server_that_survives_a_restart() -> anyhow::Result<()> {
    let Some(binary) = apiserver_or_skip("harness_runs_a_real_api_server_that_survives_a_restart")
    else {
        return Ok(());
    };
    let mut cluster = KubeCluster::start(&binary).await?;
    let version = cluster.client.apiserver_version().await?;
    eprintln!("kube-apiserver {}", version.git_version);
    cluster
        .namespace("shop", &[("istio-injection", "enabled")])
        .await?;
    cluster.service_account("shop", "cart").await?;
    let pod = cluster
        .running_pod(
            "shop",
            serde_json::json!({
                "metadata": {"name": "cart-1", "labels": {"app": "cart"}},
                "spec": {"serviceAccountName": "cart",
                         "containers": [{"name": "app", "image": "cart:1"}]}
            }),
            "node-a",
            "10.1.0.7".parse()?,
        )
        .await?;
    let status = pod.status.clone().unwrap_or_default();
    assert_eq!(status.pod_ip.as_deref(), Some("10.1.0.7"));

    let token = cluster.pod_token(&pod, "istio-ca").await?;
    let review = TokenReview {
        spec: TokenReviewSpec {
            token,
            audiences: Some(vec!["istio-ca".into()]),
        },
        ..TokenReview::default()
    };
    let reviewed = Api::<TokenReview>::all(cluster.client.clone())
        .create(&PostParams::default(), &review)
        .await?;
    let status = reviewed.status.unwrap_or_default();
    assert_eq!(status.authenticated, Some(true), "{status:?}");
    let user = status.user.unwrap_or_default();
    assert_eq!(
        user.username.as_deref(),
        Some("system:serviceaccount:shop:cart")
    );
    let extra = user.extra.unwrap_or_default();
    assert_eq!(
        extra.get("authentication.kubernetes.io/pod-name"),
        Some(&vec!["cart-1".to_string()])
    );

    cluster.restart_apiserver().await?;
    let again = Api::<Pod>::namespaced(cluster.client.clone(), "shop")
        .get("cart-1")
        .await?;
    assert_eq!(again.metadata.uid, pod.metadata.uid, "same etcd, same pod");
    Ok(())
}
