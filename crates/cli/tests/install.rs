//! `weft install --dry-run` through the binary: the printed YAML parses
//! into the objects a cluster needs, with the ports, paths and RBAC they
//! must carry; `weft uninstall --dry-run` deletes them in reverse.

use std::process::Command;

use serde_json::Value;

const WEFT: &str = env!("CARGO_BIN_EXE_weft");

fn objects(args: &[&str]) -> Vec<Value> {
    let out = Command::new(WEFT).args(args).output().expect("weft runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    weft_api::decode::parse_documents(&String::from_utf8_lossy(&out.stdout))
        .expect("YAML")
        .into_iter()
        .filter(|d| !d.is_null())
        .collect()
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

#[test]
fn dry_run_prints_everything_a_cluster_needs() {
    let all = objects(&[
        "install",
        "--dry-run",
        "--image",
        "registry.example/weft:test",
        "--kube-version",
        "1.31",
    ]);
    let kinds: Vec<&str> = all.iter().filter_map(|o| o["kind"].as_str()).collect();
    for kind in [
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Deployment",
        "Service",
        "ValidatingWebhookConfiguration",
        "MutatingWebhookConfiguration",
    ] {
        assert!(kinds.contains(&kind), "{kind} missing from {kinds:?}");
    }
    let weftd = find(&all, "Deployment", "weftd");
    let container = &weftd["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "registry.example/weft:test");
    let args = container["args"].to_string();
    assert!(
        args.contains("\"--kube-server-version\",\"1.31\""),
        "{args}"
    );
    assert!(
        args.contains("\"--proxy-image\",\"registry.example/weft:test\""),
        "{args}"
    );
    let ports: Vec<i64> = find(&all, "Service", "weftd")["spec"]["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .filter_map(|p| p["port"].as_i64())
        .collect();
    assert_eq!(ports, [15012, 15017, 15014]);

    let validator = find(&all, "ValidatingWebhookConfiguration", "weft-validator");
    assert_eq!(
        validator["webhooks"][0]["clientConfig"]["service"]["path"],
        "/validate"
    );
    let injector = find(
        &all,
        "MutatingWebhookConfiguration",
        "weft-sidecar-injector",
    );
    for hook in injector["webhooks"].as_array().expect("webhooks") {
        assert_eq!(hook["clientConfig"]["service"]["path"], "/inject");
        assert_eq!(hook["clientConfig"]["service"]["port"], 15017);
    }
    // Nothing grants everything.
    for rule in find(&all, "ClusterRole", "weftd")["rules"]
        .as_array()
        .expect("rules")
    {
        assert!(!rule["verbs"].to_string().contains("\"*\""), "{rule}");
    }
    let gateway = find(&all, "Deployment", "weft-ingressgateway");
    assert!(
        gateway["spec"]["template"]["spec"]["containers"][0]["args"]
            .to_string()
            .contains("--router")
    );
}

#[test]
fn uninstall_deletes_in_reverse_and_keeps_crds_unless_purged() {
    let out = Command::new(WEFT)
        .args(["uninstall", "--dry-run"])
        .output()
        .expect("weft runs");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines.last(),
        Some(&"Namespace weft-system would be deleted")
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("MutatingWebhookConfiguration weft-sidecar-injector"))
    );
    assert!(!text.contains("CustomResourceDefinition"));
    let purged = Command::new(WEFT)
        .args(["uninstall", "--dry-run", "--purge"])
        .output()
        .expect("weft runs");
    let purged = String::from_utf8_lossy(&purged.stdout);
    assert!(
        purged.contains(
            "CustomResourceDefinition virtualservices.networking.istio.io would be deleted"
        )
    );
}

#[test]
fn several_replicas_need_a_shared_ca() {
    let out = Command::new(WEFT)
        .args(["install", "--dry-run", "--replicas", "3"])
        .output()
        .expect("weft runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--plugin-ca"));
    let all = objects(&["install", "--dry-run", "--replicas", "3", "--plugin-ca"]);
    let weftd = find(&all, "Deployment", "weftd");
    assert_eq!(weftd["spec"]["replicas"], 3);
    assert!(
        weftd["spec"]["template"]["spec"]["containers"][0]["args"]
            .to_string()
            .contains("/etc/cacerts")
    );
}

/// `weft install` and `weft uninstall` against a real API server (skipped
/// without `WEFT_TEST_KUBE_APISERVER`): server-side apply accepts every
/// object (the server checks each against its schema), a second install
/// changes nothing, and uninstall removes what install made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_and_uninstall_against_a_real_api_server() -> anyhow::Result<()> {
    use weft_kube::k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
    use weft_kube::k8s_openapi::api::apps::v1::Deployment;
    use weft_kube::k8s_openapi::api::rbac::v1::ClusterRole;
    use weft_kube::k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use weft_kube::kube::api::Api;

    let Some(binary) =
        weft_testkit::kube::apiserver_or_skip("install_and_uninstall_against_a_real_api_server")
    else {
        return Ok(());
    };
    let cluster = weft_testkit::kube::KubeCluster::start(&binary).await?;
    let kubeconfig = cluster.kubeconfig.to_str().expect("path").to_string();
    let run = |args: Vec<&str>| {
        let out = Command::new(WEFT).args(&args).output().expect("weft runs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    for _ in 0..2 {
        let (ok, text) = run(vec!["install", "--kubeconfig", &kubeconfig]);
        assert!(ok, "{text}");
        assert!(text.contains("Kubernetes 1.36"), "{text}");
    }
    let weftd = Api::<Deployment>::namespaced(cluster.client.clone(), "weft-system")
        .get("weftd")
        .await?;
    let args = weftd
        .spec
        .and_then(|s| s.template.spec)
        .map(|p| p.containers[0].args.clone().unwrap_or_default())
        .unwrap_or_default();
    assert!(
        args.windows(2)
            .any(|w| w[0] == "--kube-server-version" && w[1] == "1.36"),
        "{args:?}"
    );
    Api::<ClusterRole>::all(cluster.client.clone())
        .get("weftd")
        .await?;
    Api::<MutatingWebhookConfiguration>::all(cluster.client.clone())
        .get("weft-sidecar-injector")
        .await?;

    let crds = Api::<CustomResourceDefinition>::all(cluster.client.clone());
    crds.get("virtualservices.networking.istio.io").await?;

    let (ok, text) = run(vec!["uninstall", "--kubeconfig", &kubeconfig]);
    assert!(ok, "{text}");
    // CRDs stay (deleting them deletes every Istio resource) unless purged.
    crds.get("virtualservices.networking.istio.io").await?;
    let gone = Api::<MutatingWebhookConfiguration>::all(cluster.client.clone())
        .get_opt("weft-sidecar-injector")
        .await?;
    assert!(gone.is_none());
    assert!(
        Api::<ClusterRole>::all(cluster.client.clone())
            .get_opt("weftd")
            .await?
            .is_none()
    );
    let (ok, text) = run(vec!["uninstall", "--purge", "--kubeconfig", &kubeconfig]);
    assert!(ok, "{text}");
    let gone = crds.get_opt("virtualservices.networking.istio.io").await?;
    assert!(
        gone.is_none_or(|crd| crd.metadata.deletion_timestamp.is_some()),
        "purged"
    );
    Ok(())
}
