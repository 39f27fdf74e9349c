//! Weft's CustomResourceDefinitions (manifests/crds) on a real API server:
//! every kind Weft serves, in every apiVersion Istio serves, takes Istio's
//! own sample objects (read in place from ../shared/corpus); weftd in
//! Kubernetes mode reads them back, and reads the same objects from a
//! cluster that has Istio's own CRDs instead (it finds kinds by group and
//! kind, not by whose CRD defines them). Skipped plainly when
//! `WEFT_TEST_KUBE_APISERVER` is not set.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use weft_testkit::kube::{KubeCluster, apiserver_or_skip};
use weft_testkit::weftd::WeftdProcess;

const WEFTD: &str = env!("CARGO_BIN_EXE_weftd");

fn crd_documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).expect("CRD file");
    weft_api::decode::parse_documents(&text)
        .expect("CRD YAML")
        .into_iter()
        .filter(|doc| doc.get("kind").and_then(Value::as_str) == Some("CustomResourceDefinition"))
        .collect()
}

/// The first valid object of each kind in the corpus's samples, tests and
/// validation data, keyed by kind.
fn corpus_objects(root: &Path) -> BTreeMap<String, Value> {
    let mut found = BTreeMap::new();
    let dirs = [
        "istio/samples",
        "istio/pkg/config/validation/testdata/crds",
        "api/tests",
        "istio/tests",
        "istio/pkg/config/analysis/analyzers/testdata",
    ];
    let mut stack: Vec<PathBuf> = dirs.iter().map(|d| root.join(d)).collect();
    while let Some(path) = stack.pop() {
        if path.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(&path)
                .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
                .unwrap_or_default();
            entries.sort();
            entries.reverse();
            stack.extend(entries);
            continue;
        }
        let is_yaml = path.extension().is_some_and(|e| e == "yaml" || e == "yml");
        if !is_yaml || path.to_string_lossy().contains("invalid") {
            continue;
        }
        // Only objects that decode and validate (another in the same file
        // may not).
        for resource in weft_api::decode_file(&path).resources {
            found
                .entry(resource.kind().to_string())
                .or_insert_with(|| resource.to_value());
        }
        if found.len() == weft_api::resource::KINDS.len() {
            break;
        }
    }
    found
}

/// A valid RateLimit (Weft's own kind), as a user writes it.
fn rate_limit() -> Value {
    serde_json::json!({
        "apiVersion": "weft.io/v1alpha1",
        "kind": "RateLimit",
        "metadata": {"name": "edge"},
        "spec": {
            "selector": {"matchLabels": {"istio": "ingressgateway"}},
            "limits": [{"local": {"maxTokens": 10, "fillInterval": "1s"}}]
        }
    })
}

/// The object as a user would `kubectl apply` it in `namespace`.
fn in_namespace(mut object: Value, namespace: &str) -> Value {
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("namespace".into(), Value::from(namespace));
        meta.remove("resourceVersion");
    }
    object
}

/// weftd on `cluster`, and the kinds it lists once it has read them.
async fn weftd_lists(
    cluster: &KubeCluster,
    dir: &Path,
    namespace: &str,
    want: usize,
) -> Vec<String> {
    let kubeconfig = cluster.kubeconfig.display().to_string();
    let weftd = WeftdProcess::start_with(
        Path::new(WEFTD),
        &dir.join("state"),
        weft_testkit::free_addr(),
        weft_testkit::free_addr(),
        &["--kubeconfig", &kubeconfig],
    )
    .await
    .expect("weftd starts in Kubernetes mode");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let reply = weftd
            .call(
                http::Method::GET,
                &format!("/v1/resources?namespace={namespace}"),
                None,
            )
            .await
            .expect("list");
        let listed: Value = serde_json::from_slice(&reply.body).expect("JSON");
        let kinds: Vec<String> = listed
            .as_array()
            .or_else(|| listed.get("items").and_then(Value::as_array))
            .map(|items| {
                items
                    .iter()
                    .filter_map(|i| i.get("kind").and_then(Value::as_str).map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        if kinds.len() >= want || Instant::now() > deadline {
            return kinds;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weft_crds_take_every_kind_in_every_version_and_weftd_reads_them() -> anyhow::Result<()> {
    let test = "weft_crds_take_every_kind_in_every_version_and_weftd_reads_them";
    let Some(binary) = apiserver_or_skip(test) else {
        return Ok(());
    };
    let Some(corpus) = weft_testkit::corpus::root_or_skip(test) else {
        return Ok(());
    };
    let cluster = KubeCluster::start(&binary).await?;
    let crds = weft_testkit::kube::weft_crds()?;
    assert_eq!(
        crds.len(),
        weft_api::resource::KINDS.len(),
        "one CRD per kind"
    );
    cluster.install_crds(&crds).await?;
    cluster.namespace("corpus", &[]).await?;

    let mut objects = corpus_objects(&corpus);
    // Weft's own kinds are not in Istio's corpus.
    objects.insert("RateLimit".into(), rate_limit());
    for kind in weft_api::resource::KINDS {
        assert!(
            objects.contains_key(*kind),
            "the corpus has no valid {kind}"
        );
    }
    // Every kind, in every version its group serves.
    let mut created = 0;
    for (kind, object) in &objects {
        let api_version = object["apiVersion"].as_str().unwrap_or_default();
        let group = api_version.split('/').next().unwrap_or_default();
        let versions: &[&str] = match group {
            "networking.istio.io" => &["v1", "v1beta1", "v1alpha3"],
            "security.istio.io" => &["v1", "v1beta1"],
            "weft.io" => &["v1alpha1"],
            _ => &["v1", "v1alpha1"],
        };
        for version in versions {
            let mut object = in_namespace(object.clone(), "corpus");
            object["apiVersion"] = Value::from(format!("{group}/{version}"));
            object["metadata"]["name"] = Value::from(format!("{}-{version}", kind.to_lowercase()));
            cluster
                .create("corpus", object)
                .await
                .unwrap_or_else(|err| panic!("{kind} {group}/{version}: {err:#}"));
            created += 1;
        }
    }

    let dir = tempfile::tempdir()?;
    let kinds = weftd_lists(&cluster, dir.path(), "corpus", created).await;
    assert_eq!(kinds.len(), created, "weftd lists every object: {kinds:?}");
    for kind in weft_api::resource::KINDS {
        assert!(
            kinds.iter().any(|k| k == kind),
            "{kind} not read: {kinds:?}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_with_istios_own_crds_works_unchanged() -> anyhow::Result<()> {
    let test = "a_cluster_with_istios_own_crds_works_unchanged";
    let Some(binary) = apiserver_or_skip(test) else {
        return Ok(());
    };
    let Some(corpus) = weft_testkit::corpus::root_or_skip(test) else {
        return Ok(());
    };
    let cluster = KubeCluster::start(&binary).await?;
    let istio = crd_documents(&corpus.join("istio/manifests/charts/base/files/crd-all.gen.yaml"));
    cluster.install_crds(&istio).await?;
    cluster.namespace("corpus", &[]).await?;
    let objects = corpus_objects(&corpus);
    for object in objects.values() {
        cluster
            .create("corpus", in_namespace(object.clone(), "corpus"))
            .await?;
    }
    let dir = tempfile::tempdir()?;
    let kinds = weftd_lists(&cluster, dir.path(), "corpus", objects.len()).await;
    let mut want: Vec<&String> = objects.keys().collect();
    want.sort();
    let mut got: Vec<&String> = kinds.iter().collect();
    got.sort();
    assert_eq!(got, want, "weftd reads every kind through Istio's CRDs");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crds_installed_after_weftd_started_are_read() -> anyhow::Result<()> {
    let test = "crds_installed_after_weftd_started_are_read";
    let Some(binary) = apiserver_or_skip(test) else {
        return Ok(());
    };
    let cluster = KubeCluster::start(&binary).await?;
    cluster.namespace("late", &[]).await?;
    let dir = tempfile::tempdir()?;
    // weftd first (as `weft install` may start it before the CRDs are
    // established), then the CRDs and an object.
    let kubeconfig = cluster.kubeconfig.display().to_string();
    let weftd = WeftdProcess::start_with(
        Path::new(WEFTD),
        &dir.path().join("state"),
        weft_testkit::free_addr(),
        weft_testkit::free_addr(),
        &["--kubeconfig", &kubeconfig],
    )
    .await?;
    cluster.install_weft_crds().await?;
    cluster
        .create(
            "late",
            serde_json::json!({
                "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
                "metadata": {"name": "reviews"},
                "spec": {"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews"}}]}]}
            }),
        )
        .await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let reply = weftd
            .call(
                http::Method::GET,
                "/v1/resources/VirtualService/late/reviews",
                None,
            )
            .await?;
        if reply.status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the VirtualService was never read:\n{}",
            weftd.logs()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(weftd.logs().contains("now serves networking.istio.io"));
    Ok(())
}
