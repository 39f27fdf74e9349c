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

/// The sidecar's `--workers` in the pod the webhook returns for `pod`.
async fn injected_workers(weftd: &WeftdProcess, webhook: SocketAddr, pod: &[u8]) -> Vec<String> {
    let (status, body) = post(webhook, &weftd.root_cert, "/inject", pod.to_vec())
        .await
        .expect("inject answers");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let answer: Value = serde_json::from_slice(&body).expect("review");
    let patch: Vec<u8> =
        serde_json::from_value(answer["response"]["patch"].clone()).expect("patch bytes");
    let patch: json_patch::Patch = serde_json::from_slice(&patch).expect("json patch");
    let mut object =
        serde_json::from_slice::<Value>(pod).expect("pod")["request"]["object"].clone();
    json_patch::patch(&mut object, &patch).expect("applies");
    let proxy = object["spec"]["initContainers"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["name"] == "weft-proxy")
        .cloned()
        .expect("the native sidecar");
    let args: Vec<String> = serde_json::from_value(proxy["args"].clone()).expect("args");
    args.iter()
        .position(|a| a == "--workers")
        .and_then(|at| args.get(at + 1))
        .cloned()
        .into_iter()
        .collect()
}

#[tokio::test]
async fn injection_follows_the_mesh_default_config_in_force() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mesh = dir.path().join("meshconfig.yaml");
    std::fs::write(&mesh, "defaultConfig: {concurrency: 3}\n").expect("write");
    let mesh_flag = mesh.display().to_string();
    let (weftd, webhook) = weftd_with_webhook(
        dir.path(),
        &["--mesh-config", &mesh_flag, "--config-interval", "100ms"],
    )
    .await;
    let plain = review(
        ("", "v1", "Pod"),
        "pods",
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": "ratings", "namespace": "bookinfo", "labels": {"app": "ratings"}},
               "spec": {"containers": [{"name": "ratings", "image": "ratings:1"}]}}),
    );
    assert_eq!(injected_workers(&weftd, webhook, &plain).await, ["3"]);
    // The pod's own proxy.istio.io/config wins over the mesh's.
    let annotated = review(
        ("", "v1", "Pod"),
        "pods",
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": "ratings", "namespace": "bookinfo", "labels": {"app": "ratings"},
                            "annotations": {"proxy.istio.io/config": "concurrency: 1"}},
               "spec": {"containers": [{"name": "ratings", "image": "ratings:1"}]}}),
    );
    assert_eq!(injected_workers(&weftd, webhook, &annotated).await, ["1"]);

    // A MeshConfig change reaches the next pod admitted, without a restart.
    std::fs::write(&mesh, "defaultConfig: {concurrency: 5}\n").expect("write");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let workers = injected_workers(&weftd, webhook, &plain).await;
        if workers == ["5"] {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still {workers:?} 10 s after the change\n{}",
            weftd.logs()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
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

/// `weft install`'s CRDs (Weft's own, from manifests/crds/).
fn weft_crds() -> Vec<Value> {
    weft_kube::install::render(&weft_kube::install::InstallOptions::default())
        .expect("install renders")
        .into_iter()
        .filter(|o| o["kind"] == "CustomResourceDefinition")
        .collect()
}

/// `weft install`'s two webhook configurations, pointed at `url` (the
/// API server cannot resolve the `weftd` Service here), still without a
/// caBundle.
fn webhook_configurations(url: &str) -> Vec<Value> {
    let objects = weft_kube::install::render(&weft_kube::install::InstallOptions::default())
        .expect("install renders");
    objects
        .into_iter()
        .filter(|o| {
            o["kind"] == "ValidatingWebhookConfiguration"
                || o["kind"] == "MutatingWebhookConfiguration"
        })
        .map(|mut config| {
            for hook in config["webhooks"].as_array_mut().into_iter().flatten() {
                let path = hook["clientConfig"]["service"]["path"]
                    .as_str()
                    .unwrap_or("")
                    .to_string();
                hook["clientConfig"] = json!({"url": format!("{url}{path}")});
            }
            config
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_api_server_refuses_invalid_config_and_stores_pods_injected() -> anyhow::Result<()> {
    use weft_kube::k8s_openapi::api::admissionregistration::v1::{
        MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
    };
    use weft_kube::k8s_openapi::api::core::v1::Pod;
    use weft_kube::k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use weft_kube::kube::api::{Api, DynamicObject, PostParams};
    use weft_kube::kube::core::{ApiResource, GroupVersionKind};

    let test = "a_real_api_server_refuses_invalid_config_and_stores_pods_injected";
    let Some(binary) = weft_testkit::kube::apiserver_or_skip(test) else {
        return Ok(());
    };
    let cluster = weft_testkit::kube::KubeCluster::start(&binary).await?;
    let version = cluster.client.apiserver_version().await?;
    eprintln!("kube-apiserver {}", version.git_version);
    let dir = tempfile::tempdir()?;
    let webhook = weft_testkit::free_addr();
    let ip = webhook.ip().to_string();
    let address = webhook.to_string();
    let weftd = WeftdProcess::start_with(
        Path::new(WEFTD),
        &dir.path().join("store"),
        weft_testkit::free_addr(),
        weft_testkit::free_addr(),
        &["--webhook", &address, "--xds-san", &ip],
    )
    .await?;
    let root = std::fs::read_to_string(&weftd.root_cert)?;

    for crd in weft_crds() {
        let crd: CustomResourceDefinition = serde_json::from_value(crd)?;
        Api::<CustomResourceDefinition>::all(cluster.client.clone())
            .create(&PostParams::default(), &crd)
            .await?;
    }
    for config in webhook_configurations(&format!("https://{webhook}")) {
        if config["kind"] == "ValidatingWebhookConfiguration" {
            let config: ValidatingWebhookConfiguration = serde_json::from_value(config)?;
            Api::all(cluster.client.clone())
                .create(&PostParams::default(), &config)
                .await?;
        } else {
            let config: MutatingWebhookConfiguration = serde_json::from_value(config)?;
            Api::all(cluster.client.clone())
                .create(&PostParams::default(), &config)
                .await?;
        }
    }
    // What weftd does at start in a cluster: its root into every webhook's
    // caBundle (without it the API server cannot call the webhooks).
    weft_control::webhook::patch_ca_bundles(cluster.client.clone(), &root).await?;
    let injector = Api::<MutatingWebhookConfiguration>::all(cluster.client.clone())
        .get("weft-sidecar-injector")
        .await?;
    for hook in injector.webhooks.iter().flatten() {
        let bundle = hook.client_config.ca_bundle.as_ref().map(|b| b.0.clone());
        assert_eq!(bundle.as_deref(), Some(root.as_bytes()), "{}", hook.name);
    }
    cluster
        .namespace("shop", &[("istio-injection", "enabled")])
        .await?;
    cluster.namespace("plain", &[]).await?;

    // An invalid VirtualService, created with dryRun until the CRD is
    // served and the webhook configuration is active, then for real.
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("networking.istio.io", "v1", "VirtualService"),
        "virtualservices",
    );
    let services = Api::<DynamicObject>::namespaced_with(cluster.client.clone(), "shop", &resource);
    let invalid: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "reviews"},
        "spec": {"hosts": ["reviews"], "http": [{"route": [{"destination": {"subset": "v2"}}]}]}
    }))?;
    let dry = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        match services.create(&dry, &invalid).await {
            Err(weft_kube::kube::Error::Api(status)) if status.message.contains("weft") => break,
            other => {
                if std::time::Instant::now() > deadline {
                    anyhow::bail!(
                        "the webhook never refused the invalid VirtualService: {other:?}; weftd:\n{}",
                        weftd.logs()
                    );
                }
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            }
        }
    }
    let refused = services
        .create(&PostParams::default(), &invalid)
        .await
        .expect_err("refused");
    let message = refused.to_string();
    assert!(
        message.contains("spec.http[0].route[0].destination.host: Required value"),
        "{message}"
    );
    assert!(
        services.get_opt("reviews").await?.is_none(),
        "nothing stored"
    );
    let mut valid = invalid.clone();
    valid.data["spec"]["http"][0]["route"][0]["destination"]["host"] = json!("reviews");
    services.create(&PostParams::default(), &valid).await?;

    // Pods: injected in the labelled namespace (native sidecars on this
    // server), left alone when they opt out or live elsewhere.
    let pod = |name: &str, labels: Value| -> anyhow::Result<Pod> {
        Ok(serde_json::from_value(json!({
            "metadata": {"name": name, "labels": labels},
            "spec": {"containers": [{"name": "app", "image": "app:1",
                                     "ports": [{"containerPort": 8080, "name": "http"}]}]}
        }))?)
    };
    let shop = Api::<Pod>::namespaced(cluster.client.clone(), "shop");
    shop.create(
        &PostParams::default(),
        &pod("cart-1", json!({"app": "cart"}))?,
    )
    .await?;
    shop.create(
        &PostParams::default(),
        &pod(
            "batch-1",
            json!({"app": "batch", "sidecar.istio.io/inject": "false"}),
        )?,
    )
    .await?;
    Api::<Pod>::namespaced(cluster.client.clone(), "plain")
        .create(
            &PostParams::default(),
            &pod("web-1", json!({"app": "web"}))?,
        )
        .await?;

    let stored = shop.get("cart-1").await?;
    let spec = stored.spec.clone().unwrap_or_default();
    let inits: Vec<String> = spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| c.name.clone())
        .collect();
    assert_eq!(inits, ["weft-init", "weft-proxy"], "{stored:?}");
    let proxy = &spec.init_containers.as_ref().expect("inits")[1];
    assert_eq!(proxy.restart_policy.as_deref(), Some("Always"));
    let volumes: Vec<String> = spec
        .volumes
        .iter()
        .flatten()
        .map(|v| v.name.clone())
        .collect();
    assert!(volumes.contains(&"weft-token".to_string()), "{volumes:?}");
    let labels = stored.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels.get("security.istio.io/tlsMode").map(String::as_str),
        Some("istio")
    );

    for (namespace, name) in [("shop", "batch-1"), ("plain", "web-1")] {
        let pod = Api::<Pod>::namespaced(cluster.client.clone(), namespace)
            .get(name)
            .await?;
        let spec = pod.spec.unwrap_or_default();
        assert!(
            spec.init_containers.is_none(),
            "{namespace}/{name} injected"
        );
        assert_eq!(spec.containers.len(), 1);
    }
    Ok(())
}

/// `$(VAR)` in an argument, as the kubelet expands it from the
/// container's environment.
fn expand(arg: &str, env: &[(&str, &str)]) -> String {
    env.iter().fold(arg.to_string(), |text, (name, value)| {
        text.replace(&format!("$({name})"), value)
    })
}

#[tokio::test]
async fn the_injected_sidecar_command_is_one_weft_proxy_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (weftd, webhook) = weftd_with_webhook(dir.path(), &[]).await;
    let pod = review(
        ("", "v1", "Pod"),
        "pods",
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": "ratings-1", "namespace": "bookinfo",
                            "labels": {"app": "ratings", "version": "v1"},
                            "annotations": {"proxy.istio.io/config": "{concurrency: 1, terminationDrainDuration: 2s}",
                                            "sidecar.istio.io/logLevel": "debug"}},
               "spec": {"containers": [{"name": "ratings", "image": "ratings:1",
                                        "ports": [{"containerPort": 9080, "name": "http"}]}]}}),
    );
    let (_, body) = post(webhook, &weftd.root_cert, "/inject", pod.clone())
        .await
        .expect("inject answers");
    let answer: Value = serde_json::from_slice(&body).expect("review");
    let patch: Vec<u8> =
        serde_json::from_value(answer["response"]["patch"].clone()).expect("patch");
    let patch: json_patch::Patch = serde_json::from_slice(&patch).expect("json patch");
    let mut object =
        serde_json::from_slice::<Value>(&pod).expect("pod")["request"]["object"].clone();
    json_patch::patch(&mut object, &patch).expect("applies");
    let proxy = &object["spec"]["initContainers"][1];
    assert_eq!(proxy["command"][0], "weft-proxy");
    let args: Vec<String> = serde_json::from_value(proxy["args"].clone()).expect("args");

    // The kubelet's part: the downward API's values, the projected token
    // and root at their mounted paths (here: files in the test's dir).
    let env = [
        ("POD_NAME", "ratings-1"),
        ("POD_NAMESPACE", "bookinfo"),
        ("INSTANCE_IP", "127.0.0.1"),
        ("SERVICE_ACCOUNT", "bookinfo-ratings"),
    ];
    let token = dir.path().join("istio-token");
    std::fs::write(&token, "not-a-real-token").expect("token");
    let free = || weft_testkit::free_addr().to_string();
    let mut argv: Vec<String> = Vec::new();
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        let value = |rest: &mut std::slice::Iter<String>| rest.next().cloned().unwrap_or_default();
        match arg.as_str() {
            "--control-plane" => {
                value(&mut rest);
                argv.extend(["--control-plane".into(), weftd.xds.to_string()]);
            }
            "--ca-root" => {
                assert_eq!(value(&mut rest), "/var/run/secrets/weft/root-cert.pem");
                argv.extend(["--ca-root".into(), weftd.root_cert.display().to_string()]);
            }
            "--token-file" => {
                assert_eq!(value(&mut rest), "/var/run/secrets/tokens/istio-token");
                argv.extend(["--token-file".into(), token.display().to_string()]);
            }
            "--merged-metrics" => {
                value(&mut rest);
                argv.extend(["--merged-metrics".into(), free()]);
            }
            other => argv.push(expand(other, &env)),
        }
    }
    // Not the pod's fixed ports: this runs beside other tests.
    argv.extend([
        "--admin".into(),
        free(),
        "--health".into(),
        free(),
        "--metrics".into(),
        free(),
    ]);
    assert!(
        argv.windows(2)
            .any(|w| w[0] == "--node-id" && w[1] == "ratings-1.bookinfo")
    );
    assert!(argv.windows(2).any(|w| w[0] == "--workers" && w[1] == "1"));

    let binary = weft_testkit::cli::sibling(WEFTD, "weft-proxy");
    let mut child = tokio::process::Command::new(&binary)
        .args(&argv)
        .env("RUST_LOG", "info")
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("weft-proxy starts");
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    match child.try_wait().expect("status") {
        // Still running: it took every flag and is asking weftd for a
        // certificate (the bogus token is refused; it keeps trying).
        None => {
            child.kill().await.expect("kill");
        }
        Some(status) => {
            let output = child.wait_with_output().await.expect("output");
            panic!(
                "weft-proxy exited ({status}) on the injected command {argv:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }
}
