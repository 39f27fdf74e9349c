//! `weft proxy-status | proxy-config | describe pod | analyze --kubeconfig`
//! against a real API server, as a user on a laptop runs them: the `weft`
//! binary talks only to the API server, which proxies to weftd
//! (`services/http:weftd:http-api/proxy`).
//!
//! The test plays the kubelet and controller manager: weftd runs as a
//! process with the admin kubeconfig (it makes its admin-token Secret in
//! weft-system), its Service and Endpoints point at its API address, and a
//! weft-proxy registers as the injected sidecar of pod `sleep-1` does
//! (`sleep-1.shop`). The API server refuses to proxy to loopback, so
//! everything runs in a network namespace the test creates, with the pods'
//! and weftd's 10.244.0.x addresses on its loopback device.
//!
//! - proxy-status lists the sidecar; get lists the VirtualServices;
//!   proxy-config shows its route by pod name; describe pod finds its Service and sync state; analyze reports a
//!   broken VirtualService stored in the cluster;
//! - a kubeconfig user without RBAC is refused with what to grant, and gets
//!   through once bound to install's Role `weftd-api`; a wrong token
//!   through the API server is refused by weftd itself, and the caller's
//!   own `Authorization` never reaches weftd (the API server strips it);
//! - a second replica keeps the first one's Secret and accepts its token.
//!
//! Skipped plainly when `WEFT_TEST_KUBE_APISERVER` is not set; needs root
//! for the namespace (under `CI=true`, a missing privilege fails).

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use weft_kube::k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use weft_kube::k8s_openapi::api::core::v1::{Endpoints, ServiceAccount};
use weft_kube::kube::api::{Api, PostParams};
use weft_testkit::cli::{Run, run};
use weft_testkit::free_addr;
use weft_testkit::kube::{KubeCluster, apiserver_or_skip};
use weft_testkit::netns::{NetNs, privileged_or_skip};
use weft_testkit::proxy::{ProxyOptions, ProxyProcess};
use weft_testkit::weftd::WeftdProcess;

const WEFT: &str = env!("CARGO_BIN_EXE_weft");
const WEFTD_IP: &str = "10.244.0.20";
const HTTPBIN_IP: &str = "10.244.0.10";
const SLEEP_IP: &str = "10.244.0.11";
/// A second weftd replica's API.
const REPLICA_IP: &str = "10.244.0.21";

fn sibling(name: &str) -> PathBuf {
    weft_testkit::cli::sibling(WEFT, name)
}

#[test]
fn weft_inspects_a_cluster_through_its_api_server() {
    let test = "kube_inspect";
    let Some(binary) = apiserver_or_skip(test) else {
        return;
    };
    if !privileged_or_skip(test) {
        return;
    }
    let netns = NetNs::create("kinspect").expect("create namespace");
    for ip in [WEFTD_IP, HTTPBIN_IP, SLEEP_IP, REPLICA_IP] {
        netns
            .exec(&["ip", "addr", "add", &format!("{ip}/32"), "dev", "lo"])
            .expect("pod address");
    }
    netns
        .run(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(4)
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(scenario(binary))
        })
        .expect("enter namespace")
        .unwrap_or_else(|err| panic!("{test}: {err:#}"));
}

/// weftd's pod, Service and Endpoints in weft-system, as the kubelet and
/// the controller manager would leave them for weftd at `WEFTD_IP`. The
/// API server's service proxy reads the v1 Endpoints and only proxies to
/// an address whose `targetRef` is a pod of the Service's namespace with
/// that IP.
async fn weftd_service(cluster: &KubeCluster, port: u16) -> anyhow::Result<()> {
    cluster
        .running_pod(
            "weft-system",
            json!({"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"name": "weftd-1", "labels": {"app": "weftd"}},
                   "spec": {"containers": [{"name": "weftd", "image": "weft:1"}]}}),
            "node-a",
            WEFTD_IP.parse()?,
        )
        .await?;
    cluster
        .create(
            "weft-system",
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "weftd"},
                   "spec": {"ports": [{"name": "http-api", "port": 15014, "targetPort": port}]}}),
        )
        .await?;
    let endpoints: Endpoints = serde_json::from_value(json!({
        "metadata": {"name": "weftd"},
        "subsets": [{"addresses": [{"ip": WEFTD_IP, "targetRef":
                         {"kind": "Pod", "name": "weftd-1", "namespace": "weft-system"}}],
                     "ports": [{"name": "http-api", "port": port, "protocol": "TCP"}]}]
    }))?;
    Api::<Endpoints>::namespaced(cluster.client.clone(), "weft-system")
        .create(&PostParams::default(), &endpoints)
        .await?;
    cluster
        .create(
            "weft-system",
            json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                   "metadata": {"name": "weftd-abcde",
                                "labels": {"kubernetes.io/service-name": "weftd"}},
                   "addressType": "IPv4",
                   "ports": [{"name": "http-api", "port": port, "protocol": "TCP"}],
                   "endpoints": [{"addresses": [WEFTD_IP], "conditions": {"ready": true},
                                  "targetRef": {"kind": "Pod", "name": "weftd-1",
                                                "namespace": "weft-system"}}]}),
        )
        .await?;
    Ok(())
}

/// Namespace shop: Services httpbin and sleep with their pods, a
/// DestinationRule with subset v1, a VirtualService routing `x-canary:
/// yes` to it, and a broken VirtualService naming a subset no rule has.
async fn shop(cluster: &KubeCluster) -> anyhow::Result<()> {
    cluster.namespace("shop", &[]).await?;
    cluster
        .create_cluster_scoped(json!({"apiVersion": "v1", "kind": "Node",
                                      "metadata": {"name": "node-a"}}))
        .await?;
    for (name, app, ip, port) in [
        ("httpbin-1", "httpbin", HTTPBIN_IP, 8000),
        ("sleep-1", "sleep", SLEEP_IP, 80),
    ] {
        let ip: IpAddr = ip.parse()?;
        cluster
            .running_pod(
                "shop",
                json!({"apiVersion": "v1", "kind": "Pod",
                       "metadata": {"name": name, "labels": {"app": app, "version": "v1"},
                                    "annotations": {"sidecar.istio.io/status": "{}"}},
                       "spec": {"containers": [{"name": "app", "image": format!("{app}:1")}]}}),
                "node-a",
                ip,
            )
            .await?;
        cluster
            .create(
                "shop",
                json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": app},
                       "spec": {"selector": {"app": app},
                                "ports": [{"name": "http", "port": port}]}}),
            )
            .await?;
        cluster
            .create(
                "shop",
                json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                       "metadata": {"name": format!("{app}-abcde"),
                                    "labels": {"kubernetes.io/service-name": app}},
                       "addressType": "IPv4",
                       "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
                       "endpoints": [{"addresses": [ip.to_string()], "conditions": {"ready": true},
                                      "targetRef": {"kind": "Pod", "name": name, "namespace": "shop"}}]}),
            )
            .await?;
    }
    cluster
        .create(
            "shop",
            json!({"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
                   "metadata": {"name": "httpbin"},
                   "spec": {"host": "httpbin", "subsets": [{"name": "v1", "labels": {"version": "v1"}}]}}),
        )
        .await?;
    cluster
        .create(
            "shop",
            json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
                   "metadata": {"name": "httpbin"},
                   "spec": {"hosts": ["httpbin"], "http": [
                       {"match": [{"headers": {"x-canary": {"exact": "yes"}}}],
                        "route": [{"destination": {"host": "httpbin", "subset": "v1"}}]},
                       {"route": [{"destination": {"host": "httpbin"}}]}]}}),
        )
        .await?;
    cluster
        .create(
            "shop",
            json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
                   "metadata": {"name": "broken"},
                   "spec": {"hosts": ["sleep"], "http": [
                       {"route": [{"destination": {"host": "httpbin", "subset": "v9"}}]}]}}),
        )
        .await?;
    Ok(())
}

/// A kubeconfig like the admin's, for the service account `shop/viewer`
/// (a user with no grant of its own).
async fn viewer_kubeconfig(cluster: &KubeCluster, dir: &Path) -> anyhow::Result<PathBuf> {
    cluster.service_account("shop", "viewer").await?;
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            audiences: Some(vec!["https://kubernetes.default.svc.cluster.local".into()]),
            expiration_seconds: Some(3600),
            bound_object_ref: None,
        }),
        ..TokenRequest::default()
    };
    let token = Api::<ServiceAccount>::namespaced(cluster.client.clone(), "shop")
        .create_token_request("viewer", &PostParams::default(), &request)
        .await?
        .status
        .and_then(|status| status.token)
        .ok_or_else(|| anyhow::anyhow!("no token for shop/viewer"))?;
    let admin = std::fs::read_to_string(&cluster.kubeconfig)?;
    let line = admin
        .lines()
        .find(|line| line.trim_start().starts_with("token:"))
        .ok_or_else(|| anyhow::anyhow!("the admin kubeconfig has no token"))?;
    let path = dir.join("viewer.kubeconfig");
    std::fs::write(&path, admin.replace(line, &format!("    token: {token}")))?;
    Ok(path)
}

/// Binds `shop/viewer` to the Role `weftd-api` exactly as `weft install`
/// renders it.
async fn grant_api_role(cluster: &KubeCluster) -> anyhow::Result<()> {
    let objects = weft_kube::install::render(&Default::default()).map_err(anyhow::Error::msg)?;
    let mut role = objects
        .into_iter()
        .find(|o| o["kind"] == "Role" && o["metadata"]["name"] == "weftd-api")
        .ok_or_else(|| anyhow::anyhow!("install renders no Role weftd-api"))?;
    role["metadata"]["namespace"] = json!("weft-system");
    cluster.create("weft-system", role).await?;
    cluster
        .create(
            "weft-system",
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                   "metadata": {"name": "viewer-inspects"},
                   "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                               "name": "weftd-api"},
                   "subjects": [{"kind": "ServiceAccount", "name": "viewer", "namespace": "shop"}]}),
        )
        .await?;
    Ok(())
}

/// Runs `weft args...` (off the runtime's threads: it blocks).
async fn weft(args: &[&str]) -> Run {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run(Path::new(WEFT), &args)
    })
    .await
    .expect("weft ran")
}

/// Waits until `check` passes on what `weft args` shows, or fails with the
/// last run.
async fn eventually(args: &[&str], check: impl Fn(&Run) -> bool) -> anyhow::Result<Run> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let shown = weft(args).await;
        if check(&shown) {
            return Ok(shown);
        }
        if Instant::now() > deadline {
            anyhow::bail!(
                "weft {args:?} never showed what was expected: exit {}\nstdout:\n{}\nstderr:\n{}",
                shown.code,
                shown.stdout,
                shown.stderr
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn scenario(binary: PathBuf) -> anyhow::Result<()> {
    let cluster = KubeCluster::start(&binary).await?;
    cluster.install_weft_crds().await?;
    cluster.namespace("weft-system", &[]).await?;
    shop(&cluster).await?;
    let api_port = 15014;
    weftd_service(&cluster, api_port).await?;
    let dir = tempfile::tempdir()?;
    let kubeconfig = cluster.kubeconfig.display().to_string();
    let weftd = WeftdProcess::start_with(
        &sibling("weftd"),
        &dir.path().join("state"),
        free_addr(),
        SocketAddr::new(WEFTD_IP.parse()?, api_port),
        &["--kubeconfig", &kubeconfig],
    )
    .await?;
    // The sidecar of pod sleep-1, registered as injection names it.
    let listen = free_addr();
    let listen_flag = format!("{listen}=httpbin.shop.svc.cluster.local:8000");
    let _sleep = ProxyProcess::spawn_ready(
        ProxyOptions::control_plane(
            &sibling("weft-proxy"),
            weftd.grpc,
            &[
                "--node-id",
                "sleep-1.shop",
                "--namespace",
                "shop",
                "--workload",
                "sleep",
                "--listen",
                &listen_flag,
            ],
        ),
        Duration::from_secs(20),
    )
    .await
    .map_err(|err| anyhow::anyhow!("sidecar: {err:#}\nweftd:\n{}", weftd.logs()))?;
    let logs = || weftd.logs();

    // proxy-status through the API server: the sidecar, in sync.
    let k = ["--kubeconfig", kubeconfig.as_str()];
    let status = eventually(&[&["proxy-status"][..], &k].concat(), |run| {
        run.code == 0
            && run
                .stdout
                .lines()
                .any(|l| l.contains("sleep-1.shop") && l.contains("SYNCED"))
    })
    .await
    .map_err(|err| anyhow::anyhow!("{err:#}\nweftd:\n{}", logs()))?;
    println!("proxy-status:\n{}", status.stdout);

    // proxy-config by pod name: the VirtualService's header route.
    let routes = eventually(
        &[&["proxy-config", "routes", "sleep-1", "-n", "shop"][..], &k].concat(),
        |run| run.code == 0 && run.stdout.contains("x-canary"),
    )
    .await?;
    println!("proxy-config routes:\n{}", routes.stdout);
    let canary = routes
        .stdout
        .lines()
        .find(|l| l.contains("x-canary"))
        .unwrap_or_default();
    assert!(canary.contains("v1"), "the canary route's subset: {canary}");

    // get: weftd's copy of the cluster's Istio resources.
    let listed = weft(&[&["get", "virtualservices", "-n", "shop"][..], &k].concat()).await;
    assert_eq!(listed.code, 0, "get: {}", listed.stderr);
    for name in ["httpbin", "broken"] {
        assert!(
            listed
                .stdout
                .lines()
                .any(|l| l.split_whitespace().next() == Some(name)),
            "get lists {name}:\n{}",
            listed.stdout
        );
    }

    // describe pod: the pod from the API server, its proxy, its Service.
    let described = weft(&[&["describe", "pod", "sleep-1", "-n", "shop"][..], &k].concat()).await;
    assert_eq!(described.code, 0, "describe pod: {}", described.stderr);
    println!("describe pod:\n{}", described.stdout);
    for expected in [
        "Pod: sleep-1 (namespace shop)",
        "IP: 10.244.0.11",
        "Sidecar: injected",
        "Proxy: sleep-1.shop SYNCED",
        "Service: sleep.shop.svc.cluster.local",
    ] {
        assert!(
            described.stdout.contains(expected),
            "describe pod lacks {expected:?}:\n{}",
            described.stdout
        );
    }

    // analyze: the cluster's objects, with the analyzers of offline analyze.
    let analyzed = weft(&[&["analyze", "-n", "shop"][..], &k].concat()).await;
    println!("analyze:\n{}{}", analyzed.stdout, analyzed.stderr);
    assert_eq!(analyzed.code, 1, "an error was found: {}", analyzed.stderr);
    let lines: Vec<&str> = analyzed.stdout.lines().collect();
    assert!(
        lines.iter().any(
            |l| l.starts_with("Error [IST0101] (VirtualService shop/broken)") && l.contains("v9")
        ),
        "the broken VirtualService: {lines:?}"
    );
    assert!(
        !lines
            .iter()
            .any(|l| l.contains("VirtualService shop/httpbin")),
        "the good VirtualService is clean: {lines:?}"
    );

    // A user without RBAC: refused by the API server, told what to grant.
    let viewer = viewer_kubeconfig(&cluster, dir.path()).await?;
    let viewer = viewer.display().to_string();
    let refused = weft(&["proxy-status", "--kubeconfig", &viewer]).await;
    assert_eq!(refused.code, 1, "{}", refused.stdout);
    println!("without RBAC:\n{}", refused.stderr);
    assert!(
        refused.stderr.contains("forbidden")
            && refused.stderr.contains("system:serviceaccount:shop:viewer")
            && refused.stderr.contains("--role weftd-api"),
        "the refusal names the user and the Role: {}",
        refused.stderr
    );
    // ... and let in by install's Role alone.
    grant_api_role(&cluster).await?;
    eventually(&["proxy-status", "--kubeconfig", &viewer], |run| {
        run.code == 0 && run.stdout.contains("sleep-1.shop")
    })
    .await?;

    // weftd checks the token itself: a wrong one through the API server is
    // refused by weftd (its JSON, not the API server's).
    let path = "/api/v1/namespaces/weft-system/services/http:weftd:http-api/proxy/v1/proxies";
    let request = http::Request::get(path)
        .header("x-weft-admin-token", "not-the-token")
        .body(weft_kube::kube::client::Body::from(Vec::new()))?;
    let response = cluster.client.send(request).await?;
    assert_eq!(response.status(), 401);
    let body = response.into_body().collect_bytes().await?;
    let body: Value = serde_json::from_slice(&body)?;
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("x-weft-admin-token")),
        "{body}"
    );

    // A second replica finds the Secret and accepts the same token.
    let secret = || async {
        let secrets: Api<weft_kube::k8s_openapi::api::core::v1::Secret> =
            Api::namespaced(cluster.client.clone(), "weft-system");
        let secret = secrets.get("weftd-admin-token").await?;
        weft_kube::api_token::token_of(&secret).map_err(anyhow::Error::msg)
    };
    let token = secret().await?;
    let replica = WeftdProcess::start_with(
        &sibling("weftd"),
        &dir.path().join("replica"),
        free_addr(),
        SocketAddr::new(REPLICA_IP.parse()?, api_port),
        &["--kubeconfig", &kubeconfig, "--leader-id", "replica"],
    )
    .await?;
    assert_eq!(secret().await?, token, "the Secret is kept, not replaced");
    let token_file = dir.path().join("cluster-token");
    std::fs::write(&token_file, &token)?;
    let address = replica.api.to_string();
    let token_file = token_file.display().to_string();
    let on_replica = weft(&[
        "proxy-status",
        "--weftd",
        &address,
        "--token-file",
        &token_file,
    ])
    .await;
    assert_eq!(
        on_replica.code,
        0,
        "the replica accepts the Secret's token: {}\n{}",
        on_replica.stderr,
        replica.logs()
    );

    // The API server deletes the caller's Authorization before proxying:
    // weftd sees no bearer token at all (not the kubeconfig's), which is
    // why the token travels in its own header.
    let request = http::Request::get(path).body(weft_kube::kube::client::Body::from(Vec::new()))?;
    let response = cluster.client.send(request).await?;
    assert_eq!(response.status(), 401);
    let body: Value = serde_json::from_slice(&response.into_body().collect_bytes().await?)?;
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("no administrator credential")),
        "{body}"
    );

    // Another namespace than weftd's: said plainly.
    let elsewhere =
        weft(&[&["proxy-status", "--weft-namespace", "nowhere"][..], &k].concat()).await;
    assert_eq!(elsewhere.code, 1);
    assert!(
        elsewhere
            .stderr
            .contains("there is no Secret nowhere/weftd-admin-token"),
        "{}",
        elsewhere.stderr
    );
    Ok(())
}
