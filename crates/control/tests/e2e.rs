//! weftd and weft-proxy together, as real processes on loopback: Istio YAML
//! applied to weftd changes live traffic through the proxies.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http::StatusCode;
use tokio::sync::Mutex;
use weft_testkit::backend::HttpBackend;
use weft_testkit::client::Http1Client;
use weft_testkit::fixtures::service_with_workloads;
use weft_testkit::free_addr;
use weft_testkit::proxy::{ProxyOptions, ProxyProcess};
use weft_testkit::weftd::WeftdProcess;

const WEFTD: &str = env!("CARGO_BIN_EXE_weftd");

/// weft-proxy is built next to weftd by `cargo test --workspace`.
fn proxy_binary() -> PathBuf {
    weft_testkit::cli::sibling(WEFTD, "weft-proxy")
}

fn mesh_yaml(v1: SocketAddr, v2: SocketAddr) -> String {
    let workloads =
        service_with_workloads("reviews", 9080, &[("v1", v1.port()), ("v2", v2.port())]);
    format!(
        r#"{workloads}---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: reviews}}
spec:
  host: reviews
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v2, labels: {{version: v2}}}}
"#
    )
}

fn route_to(subset: &str) -> String {
    format!(
        r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews}}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {{host: reviews, subset: {subset}}}
"#
    )
}

struct Mesh {
    weftd: WeftdProcess,
    proxies: Vec<(ProxyProcess, SocketAddr)>,
    _state: tempfile::TempDir,
    _backends: (HttpBackend, HttpBackend),
}

async fn start_mesh() -> Mesh {
    let v1 = HttpBackend::start("reviews-v1").await;
    let v2 = HttpBackend::start("reviews-v2").await;
    let state = tempfile::tempdir().expect("tempdir");
    let weftd = WeftdProcess::start_in(Path::new(WEFTD), state.path())
        .await
        .expect("weftd");
    let reply = weftd
        .apply(&format!(
            "{}---{}",
            mesh_yaml(v1.addr, v2.addr),
            route_to("v1")
        ))
        .await
        .expect("apply");
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());

    let binary = proxy_binary();
    let mut proxies = Vec::new();
    for (id, workload) in [("a", "productpage"), ("b", "ratings")] {
        let listen = free_addr();
        let listen_flag = format!("{listen}=reviews:9080");
        let options = ProxyOptions::control_plane(
            &binary,
            weftd.grpc,
            &[
                "--node-id",
                id,
                "--workload",
                workload,
                "--listen",
                &listen_flag,
            ],
        );
        let proxy = ProxyProcess::spawn_ready(options, Duration::from_secs(20))
            .await
            .expect("proxy gets its config from weftd");
        proxies.push((proxy, listen));
    }
    Mesh {
        weftd,
        proxies,
        _state: state,
        _backends: (v1, v2),
    }
}

/// Clients sending back to back through every proxy until stopped.
struct Traffic {
    stop: Arc<AtomicBool>,
    failures: Arc<AtomicUsize>,
    ok: Arc<AtomicUsize>,
    /// Per proxy: when a response first came from reviews-v2.
    first_v2: Arc<Mutex<Vec<Option<Instant>>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Traffic {
    fn start(listeners: &[SocketAddr]) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let failures = Arc::new(AtomicUsize::new(0));
        let ok = Arc::new(AtomicUsize::new(0));
        let first_v2 = Arc::new(Mutex::new(vec![None; listeners.len()]));
        let mut tasks = Vec::new();
        for (index, listen) in listeners.iter().copied().enumerate() {
            let (stop, failures, ok, first_v2) =
                (stop.clone(), failures.clone(), ok.clone(), first_v2.clone());
            tasks.push(tokio::spawn(async move {
                let mut client = Http1Client::connect(listen).await.expect("connect");
                while !stop.load(Ordering::Relaxed) {
                    match client.get("reviews:9080", "/reviews/1").await {
                        Ok(reply) if reply.status == StatusCode::OK => {
                            ok.fetch_add(1, Ordering::Relaxed);
                            if reply.text().starts_with("reviews-v2") {
                                first_v2.lock().await[index].get_or_insert_with(Instant::now);
                            }
                        }
                        Ok(reply) => {
                            eprintln!("failed request: {} {}", reply.status, reply.text());
                            failures.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(err) => {
                            eprintln!("failed request: {err:#}");
                            failures.fetch_add(1, Ordering::Relaxed);
                            client = match Http1Client::connect(listen).await {
                                Ok(client) => client,
                                Err(_) => continue,
                            };
                        }
                    }
                }
            }));
        }
        Self {
            stop,
            failures,
            ok,
            first_v2,
            tasks,
        }
    }

    async fn stop(self) -> (usize, usize, Vec<Option<Instant>>) {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await.expect("client task");
        }
        let first_v2 = self.first_v2.lock().await.clone();
        (
            self.ok.load(Ordering::Relaxed),
            self.failures.load(Ordering::Relaxed),
            first_v2,
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_virtual_service_moves_live_traffic_within_a_second() {
    let mesh = start_mesh().await;
    let listeners: Vec<_> = mesh.proxies.iter().map(|(_, l)| *l).collect();
    let traffic = Traffic::start(&listeners);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        traffic.first_v2.lock().await.clone(),
        vec![None, None],
        "v2 served before the switch"
    );

    let applied_at = Instant::now();
    let reply = mesh.weftd.apply(&route_to("v2")).await.expect("apply");
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (ok, failures, first_v2) = traffic.stop().await;

    assert_eq!(
        failures,
        0,
        "{failures} of {} requests failed during the switch",
        ok + failures
    );
    for (index, seen) in first_v2.iter().enumerate() {
        let seen = seen.unwrap_or_else(|| {
            panic!(
                "proxy {index} never served v2; weftd log:\n{}",
                mesh.weftd.logs()
            )
        });
        let delay = seen.duration_since(applied_at);
        eprintln!("proxy {index}: apply → first v2 response in {delay:?}");
        assert!(delay < Duration::from_secs(1), "switch took {delay:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarting_weftd_fails_no_request_and_proxies_resync() {
    let mut mesh = start_mesh().await;
    let listeners: Vec<_> = mesh.proxies.iter().map(|(_, l)| *l).collect();
    let traffic = Traffic::start(&listeners);
    tokio::time::sleep(Duration::from_millis(300)).await;

    mesh.weftd.kill().await.expect("kill weftd");
    tokio::time::sleep(Duration::from_millis(700)).await;
    let (grpc, api, state_dir) = (
        mesh.weftd.grpc,
        mesh.weftd.api,
        mesh.weftd.state_dir.clone(),
    );
    mesh.weftd = WeftdProcess::start(Path::new(WEFTD), &state_dir, grpc, api)
        .await
        .expect("weftd restarts from its state");

    // Both proxies come back, in sync with what they held.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let proxies = mesh.weftd.proxies().await.expect("proxies");
        if proxies.matches("\"synced\":true").count() == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "proxies did not resync: {proxies}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The restarted weftd still knows the routing: a change still reaches them.
    let reply = mesh.weftd.apply(&route_to("v2")).await.expect("apply");
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    tokio::time::sleep(Duration::from_millis(800)).await;
    let (ok, failures, first_v2) = traffic.stop().await;
    assert_eq!(
        failures,
        0,
        "{failures} of {} requests failed across the restart",
        ok + failures
    );
    assert!(
        first_v2.iter().all(Option::is_some),
        "a proxy missed the change after the restart"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_the_proxy_cannot_apply_is_nacked_and_reported() {
    let mesh = start_mesh().await;
    // Something else holds the address this proxy is asked to listen on.
    let blocker = std::net::TcpListener::bind(free_addr()).expect("bind");
    let taken = blocker.local_addr().expect("addr");
    let listen_flag = format!("{taken}=reviews:9080");
    let binary = proxy_binary();
    let options = ProxyOptions::control_plane(
        &binary,
        mesh.weftd.grpc,
        &[
            "--node-id",
            "c",
            "--workload",
            "details",
            "--listen",
            &listen_flag,
        ],
    );
    let _proxy = ProxyProcess::spawn(options).expect("spawn");

    let deadline = Instant::now() + Duration::from_secs(10);
    let proxies = loop {
        let proxies = mesh.weftd.proxies().await.expect("proxies");
        if proxies.contains("cannot listen on") {
            break proxies;
        }
        assert!(Instant::now() < deadline, "no NACK reported: {proxies}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(proxies.contains(&taken.to_string()), "{proxies}");

    // `weft proxy-status` shows it too.
    let weft = Path::new(WEFTD).with_file_name("weft");
    let output = std::process::Command::new(&weft)
        .args(["proxy-status", "--weftd", &mesh.weftd.api.to_string()])
        .arg("--token-file")
        .arg(mesh.weftd.token_file())
        .output()
        .expect("run weft");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("NACK"), "{text}");
    assert!(text.contains("cannot listen on"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_based_routing_as_in_bookinfo() {
    let mesh = start_mesh().await;
    let reply = mesh
        .weftd
        .apply(
            r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - match:
    - headers:
        end-user: {exact: jason}
    route:
    - destination: {host: reviews, subset: v2}
  - route:
    - destination: {host: reviews, subset: v1}
"#,
        )
        .await
        .expect("apply");
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let listen = mesh.proxies[0].1;
    // The change is live within a second.
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut client = Http1Client::connect(listen).await.expect("connect");
    loop {
        let request = weft_testkit::client::request_with_headers(
            http::Method::GET,
            "reviews:9080",
            "/reviews/1",
            &[("end-user", "jason")],
            weft_testkit::client::empty(),
        );
        let reply = client.send(request).await.expect("request");
        if reply.text().starts_with("reviews-v2") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "jason never reached v2: {}",
            reply.text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let reply = client
        .get("reviews:9080", "/reviews/1")
        .await
        .expect("request");
    assert!(reply.text().starts_with("reviews-v1"), "{}", reply.text());
}
