//! weftd in Kubernetes mode against a real API server, with real
//! weft-proxy processes playing two pods' sidecars. The test plays the
//! kubelet and controller manager: it creates the Pods (status with their
//! IPs), the Service and its EndpointSlice, and gives each sidecar its
//! pod-bound service-account token from TokenRequest.
//!
//! Everything (etcd, the API server, weftd, the proxies, the apps) runs in
//! a network namespace the test creates: the API server refuses loopback
//! endpoint addresses, so the pods get 10.244.0.x addresses on that
//! namespace's loopback device, reachable from nowhere else.
//!
//! - each sidecar gets a certificate for its service account from its
//!   token (TokenReview), and traffic flows between them with mTLS;
//! - a VirtualService created through the API server changes routing
//!   within a second;
//! - deleting the Pod and its endpoint removes it from every proxy;
//! - the API server restarted (same etcd) under load changes nothing in the
//!   data plane: no failed request, no new config pushed.
//!
//! Skipped plainly when `WEFT_TEST_KUBE_APISERVER` is not set; needs root
//! for the namespace (under `CI=true`, a missing privilege fails).

mod mtls_support;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use mtls_support::{cert_field, certs, echo_backend, eventually, get, proxy_binary};
use serde_json::{Value, json};
use weft_testkit::backend::Served;
use weft_testkit::free_addr;
use weft_testkit::kube::{KubeCluster, apiserver_or_skip};
use weft_testkit::netns::{NetNs, privileged_or_skip};
use weft_testkit::proxy::{ProxyOptions, ProxyProcess};
use weft_testkit::weftd::WeftdProcess;

const WEFTD: &str = env!("CARGO_BIN_EXE_weftd");
const SERVER_ID: &str = "spiffe://cluster.local/ns/shop/sa/httpbin";
const CLIENT_ID: &str = "spiffe://cluster.local/ns/shop/sa/sleep";
const HOST: &str = "httpbin.shop.svc.cluster.local";
/// The pods' addresses, on the namespace's loopback device.
const SERVER_IP: &str = "10.244.0.10";
const CLIENT_IP: &str = "10.244.0.11";

/// Runs `scenario` with everything inside a fresh network namespace that
/// has the pods' addresses; `None` (after saying why) when it cannot run.
fn in_namespace<F>(test: &str, tag: &str, scenario: impl FnOnce(PathBuf) -> F + Send)
where
    F: std::future::Future<Output = anyhow::Result<()>>,
{
    let Some(binary) = apiserver_or_skip(test) else {
        return;
    };
    if !privileged_or_skip(test) {
        return;
    }
    let netns = NetNs::create(tag).expect("create namespace");
    for ip in [SERVER_IP, CLIENT_IP] {
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

/// A cluster with weftd and two sidecars: httpbin (server) and sleep.
struct Mesh {
    cluster: KubeCluster,
    weftd: WeftdProcess,
    _backend: Served,
    server: ProxyProcess,
    client: ProxyProcess,
    /// The client app's way into the mesh (an explicit listener).
    listen: SocketAddr,
    /// The server pod's IP.
    server_ip: IpAddr,
    backend_port: u16,
    dir: tempfile::TempDir,
}

fn pod(name: &str, account: &str, app: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": app, "version": "v1"}},
        "spec": {"serviceAccountName": account,
                 "containers": [{"name": "app", "image": format!("{app}:1")}]}
    })
}

fn endpoint_slice(ip: Option<IpAddr>, port: u16) -> Value {
    let endpoints: Vec<Value> = ip
        .iter()
        .map(|ip| {
            json!({"addresses": [ip.to_string()], "conditions": {"ready": true},
                   "nodeName": "node-a",
                   "targetRef": {"kind": "Pod", "name": "httpbin-1", "namespace": "shop"}})
        })
        .collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "httpbin-abcde",
                     "labels": {"kubernetes.io/service-name": "httpbin"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
        "endpoints": endpoints
    })
}

impl Mesh {
    async fn start(binary: &Path) -> anyhow::Result<Self> {
        let cluster = KubeCluster::start(binary).await?;
        cluster.install_weft_crds().await?;
        cluster
            .namespace("shop", &[("istio-injection", "enabled")])
            .await?;
        cluster.service_account("shop", "httpbin").await?;
        cluster.service_account("shop", "sleep").await?;
        // The node's topology labels give the pods' locality.
        cluster
            .create_cluster_scoped(json!({
                "apiVersion": "v1", "kind": "Node",
                "metadata": {"name": "node-a", "labels": {
                    "topology.kubernetes.io/region": "us-east1",
                    "topology.kubernetes.io/zone": "us-east1-b"}}
            }))
            .await?;

        let backend = echo_backend().await;
        let backend_port = backend.addr.port();
        let server_ip: IpAddr = SERVER_IP.parse()?;
        let client_ip: IpAddr = CLIENT_IP.parse()?;
        let inbound = SocketAddr::new(server_ip, 15006);
        let server_pod = cluster
            .running_pod(
                "shop",
                pod("httpbin-1", "httpbin", "httpbin"),
                "node-a",
                server_ip,
            )
            .await?;
        let client_pod = cluster
            .running_pod(
                "shop",
                pod("sleep-1", "sleep", "sleep"),
                "node-a",
                client_ip,
            )
            .await?;
        cluster
            .create(
                "shop",
                json!({
                    "apiVersion": "v1", "kind": "Service",
                    "metadata": {"name": "httpbin"},
                    "spec": {"selector": {"app": "httpbin"},
                             "ports": [{"name": "http", "port": 8000, "targetPort": backend_port}]}
                }),
            )
            .await?;
        cluster
            .create("shop", endpoint_slice(Some(server_ip), backend_port))
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

        let binary = proxy_binary();
        let token = |name: &str, value: String| {
            let path = dir.path().join(format!("{name}.token"));
            std::fs::write(&path, value).map(|()| path)
        };
        let server_token = token("httpbin", cluster.pod_token(&server_pod, "istio-ca").await?)?;
        let client_token = token("sleep", cluster.pod_token(&client_pod, "istio-ca").await?)?;
        // What injection passes from the downward API: the pod's namespace
        // and service account name the identity the CSR asks for.
        let server_args = [
            "--node-id".to_string(),
            "httpbin-1".into(),
            "--namespace".into(),
            "shop".into(),
            "--service-account".into(),
            "httpbin".into(),
            "--port".into(),
            format!("{backend_port}/http"),
            "--inbound".into(),
            format!("{inbound}={backend_port}"),
        ];
        let server_args: Vec<&str> = server_args.iter().map(String::as_str).collect();
        let server = ProxyProcess::spawn_ready(
            ProxyOptions::secure(
                &binary,
                weftd.xds,
                &weftd.root_cert,
                &server_token,
                &server_args,
            ),
            Duration::from_secs(20),
        )
        .await
        .map_err(|err| anyhow::anyhow!("server sidecar: {err:#}\nweftd:\n{}", weftd.logs()))?;
        let listen = free_addr();
        let listen_flag = format!("{listen}={HOST}:8000");
        let client = ProxyProcess::spawn_ready(
            ProxyOptions::secure(
                &binary,
                weftd.xds,
                &weftd.root_cert,
                &client_token,
                &[
                    "--node-id",
                    "sleep-1",
                    "--namespace",
                    "shop",
                    "--service-account",
                    "sleep",
                    "--listen",
                    &listen_flag,
                ],
            ),
            Duration::from_secs(20),
        )
        .await
        .map_err(|err| anyhow::anyhow!("client sidecar: {err:#}\nweftd:\n{}", weftd.logs()))?;
        Ok(Self {
            cluster,
            weftd,
            _backend: backend,
            server,
            client,
            listen,
            server_ip,
            backend_port,
            dir,
        })
    }

    fn logs(&self) -> String {
        format!(
            "weftd:\n{}\nclient:\n{}\nserver:\n{}",
            self.weftd.logs(),
            self.client.logs(),
            self.server.logs()
        )
    }

    /// The `version` of the client proxy's config (moves with every push).
    async fn client_config_version(&self) -> String {
        let dump = self
            .client
            .admin_get("/config_dump")
            .await
            .expect("config_dump");
        let dump: Value = serde_json::from_slice(&dump.body).expect("JSON");
        dump["version"].to_string()
    }
}

/// Creates a VirtualService for another host and waits until weftd lists
/// it: weftd's VirtualService watch is then past its start.
async fn warm_up_watch(mesh: &Mesh) -> anyhow::Result<()> {
    mesh.cluster
        .create(
            "shop",
            json!({
                "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
                "metadata": {"name": "warm-up"},
                "spec": {"hosts": ["warm-up.example"],
                         "http": [{"route": [{"destination": {"host": "warm-up.example"}}]}]}
            }),
        )
        .await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let reply = mesh
            .weftd
            .call(
                http::Method::GET,
                "/v1/resources/VirtualService/shop/warm-up",
                None,
            )
            .await?;
        if reply.status == 200 {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "weftd never read the warm-up VirtualService"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn pods_prove_themselves_with_tokens_and_follow_the_cluster() {
    in_namespace(
        "pods_prove_themselves_with_tokens_and_follow_the_cluster",
        "kmesh",
        |binary| async move { identities_traffic_routing_and_removal(&binary).await },
    );
}

async fn identities_traffic_routing_and_removal(binary: &Path) -> anyhow::Result<()> {
    let mesh = Mesh::start(binary).await?;
    let version = mesh.cluster.client.apiserver_version().await?;
    eprintln!("kube-apiserver {}", version.git_version);

    // Identities from the service-account tokens.
    let client_certs = certs(&mesh.client).await;
    assert_eq!(
        cert_field(&client_certs, "identity").as_deref(),
        Some(CLIENT_ID),
        "{client_certs}"
    );
    assert_eq!(
        cert_field(&certs(&mesh.server).await, "identity").as_deref(),
        Some(SERVER_ID)
    );

    // Traffic through the Kubernetes Service, mTLS between the sidecars.
    let reply = eventually(mesh.listen, "/", |r| r.status == 200)
        .await
        .unwrap_or_else(|last| panic!("no answer: {last}\n{}", mesh.logs()));
    assert_eq!(
        reply.text(),
        format!("xfcc=By={SERVER_ID};URI={CLIENT_ID} version=HTTP/1.1"),
        "the server side proved the caller's identity over mTLS"
    );

    // `weft describe svc` sees the Kubernetes Service and its endpoint.
    let described = mesh
        .weftd
        .call(
            http::Method::GET,
            "/v1/describe?service=httpbin&namespace=shop",
            None,
        )
        .await?;
    let text = described.text();
    assert_eq!(described.status, 200, "{text}");
    assert!(text.contains(HOST) && text.contains(SERVER_IP), "{text}");
    assert!(
        text.contains("us-east1/us-east1-b"),
        "locality from the node: {text}"
    );

    // A VirtualService through the API server changes routing in < 1 s.
    // (Once weftd's watch is running: the first events of a watch started
    // a moment ago can wait up to ~2 s in the API server's watch cache.)
    warm_up_watch(&mesh).await?;
    let started = Instant::now();
    let created_at = weft_kube::k8s_openapi::jiff::Timestamp::now();
    mesh.cluster
        .create(
            "shop",
            json!({
                "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
                "metadata": {"name": "httpbin"},
                "spec": {"hosts": [HOST], "http": [{
                    "fault": {"abort": {"httpStatus": 418, "percentage": {"value": 100}}},
                    "route": [{"destination": {"host": HOST}}]}]}
            }),
        )
        .await?;
    let teapot = eventually(mesh.listen, "/", |r| r.status == 418)
        .await
        .unwrap_or_else(|last| panic!("the VirtualService never applied: {last}\n{}", mesh.logs()));
    let took = started.elapsed();
    eprintln!("VirtualService created → routing changed in {took:?}");
    assert_eq!(teapot.status, 418);
    assert!(
        took < Duration::from_secs(1),
        "took {took:?} (created at {created_at})\n{}",
        mesh.logs()
    );
    mesh.cluster
        .delete(
            "shop",
            json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
                   "metadata": {"name": "httpbin"}}),
        )
        .await?;
    eventually(mesh.listen, "/", |r| r.status == 200)
        .await
        .unwrap_or_else(|last| panic!("deleting the VirtualService: {last}"));

    // The pod goes; the controller manager empties its EndpointSlice.
    let endpoint = format!("{}:{}", mesh.server_ip, mesh.backend_port);
    let clusters = mesh.client.admin_get("/clusters").await?.text();
    assert!(clusters.contains(&mesh.server_ip.to_string()), "{clusters}");
    mesh.cluster
        .delete(
            "shop",
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "httpbin-1"}}),
        )
        .await?;
    mesh.cluster
        .apply("shop", endpoint_slice(None, mesh.backend_port))
        .await?;
    let deadline = Instant::now() + Duration::from_secs(5);
    for proxy in [&mesh.client, &mesh.server] {
        loop {
            let clusters = proxy.admin_get("/clusters").await?.text();
            if !clusters.contains(&mesh.server_ip.to_string()) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{endpoint} still in a proxy's clusters:\n{clusters}\n{}",
                mesh.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let gone = get(mesh.listen, "/").await?;
    assert_eq!(gone.status, 503, "no endpoint left: {}", gone.text());
    drop(mesh.dir);
    Ok(())
}

#[test]
fn an_api_server_restart_changes_nothing_in_the_data_plane() {
    in_namespace(
        "an_api_server_restart_changes_nothing_in_the_data_plane",
        "krestart",
        |binary| async move { restart_under_load(&binary).await },
    );
}

async fn restart_under_load(binary: &Path) -> anyhow::Result<()> {
    let mut mesh = Mesh::start(binary).await?;
    eventually(mesh.listen, "/", |r| r.status == 200)
        .await
        .unwrap_or_else(|last| panic!("no answer: {last}\n{}", mesh.logs()));
    // Let the registrations settle before taking the config's version.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = mesh.client_config_version().await;

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (sent, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let load = {
        let (stop, sent, failed, listen) =
            (stop.clone(), sent.clone(), failed.clone(), mesh.listen);
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let ok = get(listen, "/").await.is_ok_and(|r| r.status == 200);
                sent.fetch_add(1, Ordering::Relaxed);
                if !ok {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let started = Instant::now();
    mesh.cluster.restart_apiserver().await?;
    let restarted_in = started.elapsed();
    // The watches notice, back off, reconnect and relist.
    tokio::time::sleep(Duration::from_secs(5)).await;
    stop.store(true, Ordering::Relaxed);
    load.await?;
    let after = mesh.client_config_version().await;
    let (sent, failed) = (sent.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!(
        "API server down and back in {restarted_in:?}; {sent} requests, {failed} failed; \
         client config version {before} → {after}"
    );
    assert_eq!(
        failed,
        0,
        "requests failed during the restart\n{}",
        mesh.logs()
    );
    assert!(sent > 50, "the load ran ({sent} requests)");
    assert_eq!(before, after, "no config was pushed\n{}", mesh.logs());
    let relisted = mesh.weftd.logs().matches("watching").count();
    assert!(
        relisted > 0,
        "weftd saw the API server go:\n{}",
        mesh.weftd.logs()
    );
    Ok(())
}
