//! Shared by the registration tests: services whose endpoints are
//! registered proxies, server and caller sidecars, what a caller holds, and
//! steady traffic.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http::StatusCode;
use weft_testkit::backend::HttpBackend;
use weft_testkit::client::{self, Http1Client};
use weft_testkit::free_addr;
use weft_testkit::proxy::{ProxyOptions, ProxyProcess};
use weft_testkit::weftd::WeftdProcess;

pub const WEFTD: &str = env!("CARGO_BIN_EXE_weftd");

pub fn proxy_binary() -> PathBuf {
    weft_testkit::cli::sibling(WEFTD, "weft-proxy")
}

/// A MESH_INTERNAL service `name` on port 9080, its endpoints the
/// registered workloads labelled `app: name`, served at `backend`'s port.
pub fn service(name: &str, backend: SocketAddr) -> String {
    format!(
        r#"---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {name}}}
spec:
  hosts: [{name}.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 9080, name: http, protocol: HTTP, targetPort: {port}}}]
  workloadSelector: {{labels: {{app: {name}}}}}
"#,
        port = backend.port()
    )
}

pub struct Server {
    pub proxy: ProxyProcess,
    /// Where callers reach it: its inbound listener.
    pub inbound: SocketAddr,
}

/// A sidecar for the app `app` listening at `backend`, registered as node
/// `id` with service account `account`.
pub fn spawn_server(
    control_plane: SocketAddr,
    id: &str,
    account: &str,
    app: &str,
    backend: SocketAddr,
) -> Server {
    let inbound = free_addr();
    let binary = proxy_binary();
    let (label, port, inbound_flag) = (
        format!("app={app}"),
        format!("{}/http", backend.port()),
        format!("{inbound}={}", backend.port()),
    );
    let args = [
        "--node-id",
        id,
        "--workload",
        app,
        "--service-account",
        account,
        "--label",
        &label,
        "--port",
        &port,
        "--inbound",
        &inbound_flag,
    ];
    let options = ProxyOptions::control_plane(&binary, control_plane, &args);
    let proxy = ProxyProcess::spawn(options).expect("spawn server proxy");
    Server { proxy, inbound }
}

/// [`spawn_server`] with service account `app`, once it is ready.
pub async fn ready_server(
    control_plane: SocketAddr,
    id: &str,
    app: &str,
    backend: SocketAddr,
) -> Server {
    let mut server = spawn_server(control_plane, id, app, app, backend);
    server
        .proxy
        .wait_ready(Duration::from_secs(20))
        .await
        .unwrap_or_else(|err| panic!("server {id}: {err:#}"));
    server
}

/// A caller's sidecar with one listener per service; their addresses.
pub async fn ready_caller(
    weftd: &WeftdProcess,
    services: &[&str],
) -> (ProxyProcess, Vec<SocketAddr>) {
    let binary = proxy_binary();
    let listeners: Vec<SocketAddr> = services.iter().map(|_| free_addr()).collect();
    let flags: Vec<String> = services
        .iter()
        .zip(&listeners)
        .map(|(service, listen)| format!("{listen}={service}:9080"))
        .collect();
    let mut args = vec!["--node-id", "caller", "--workload", "productpage"];
    for flag in &flags {
        args.extend(["--listen", flag.as_str()]);
    }
    let options = ProxyOptions::control_plane(&binary, weftd.grpc, &args);
    let proxy = ProxyProcess::spawn_ready(options, Duration::from_secs(20))
        .await
        .expect("caller ready");
    (proxy, listeners)
}

/// The endpoint addresses the caller holds for `service` (`/clusters`).
pub async fn endpoints(caller: &ProxyProcess, service: &str) -> Vec<String> {
    let Ok(reply) = caller.admin_get("/clusters").await else {
        return Vec::new();
    };
    let needle = format!("{service}.default.svc.cluster.local");
    reply
        .text()
        .lines()
        .filter(|line| line.contains(&needle) && line.contains("::weight::"))
        .filter_map(|line| line.split("::").nth(1).map(str::to_string))
        .collect()
}

/// Retries `check` until it succeeds (its value) or `timeout` passes.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match check().await {
            Ok(value) => return value,
            Err(last) if Instant::now() > deadline => panic!("{what}: {last}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Waits until the endpoints the caller holds for `service` are `wanted`.
pub async fn endpoints_until(
    caller: &ProxyProcess,
    service: &str,
    what: &str,
    timeout: Duration,
    wanted: impl Fn(&[String]) -> bool,
) {
    eventually(what, timeout, || async {
        let held = endpoints(caller, service).await;
        if wanted(&held) {
            Ok(())
        } else {
            Err(format!("{held:?}"))
        }
    })
    .await;
}

/// Waits until weftd lists proxy `id` as connected or not.
pub async fn listed_until(
    weftd: &WeftdProcess,
    what: &str,
    timeout: Duration,
    id: &str,
    connected: bool,
) {
    eventually(what, timeout, || async {
        let proxies = listed(weftd).await;
        if proxies.contains(&(id.to_string(), connected)) {
            Ok(())
        } else {
            Err(format!("{proxies:?}"))
        }
    })
    .await;
}

/// Waits until a request through each listener is answered.
pub async fn all_answer(listeners: &[SocketAddr]) {
    for listen in listeners {
        let what = format!("a service through the caller at {listen}");
        eventually(&what, Duration::from_secs(10), || get(*listen)).await;
    }
}

/// Applies `yaml`, asserting that weftd took it.
pub async fn apply_ok(weftd: &WeftdProcess, yaml: &str) {
    let reply = weftd.apply(yaml).await.expect("apply");
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
}

/// A weftd keeping its state in `state`, with `yaml` applied.
pub async fn weftd_applying(state: &Path, yaml: &str) -> WeftdProcess {
    let weftd = WeftdProcess::start_in(Path::new(WEFTD), state)
        .await
        .expect("weftd");
    apply_ok(&weftd, yaml).await;
    weftd
}

/// A weftd keeping its store in `store` that forgets a lost proxy after
/// `grace`.
pub async fn weftd_with_grace(store: &Path, grace: &str) -> WeftdProcess {
    WeftdProcess::start_with(
        Path::new(WEFTD),
        store,
        free_addr(),
        free_addr(),
        &["--registration-grace", grace],
    )
    .await
    .expect("weftd")
}

/// The reviews and ratings services, on their backends.
pub fn reviews_and_ratings(reviews: SocketAddr, ratings: SocketAddr) -> String {
    format!(
        "{}{}",
        service("reviews", reviews),
        service("ratings", ratings)
    )
}

/// Backends for reviews and ratings, and a weftd in a fresh state
/// directory serving both services.
pub struct ReviewsAndRatings {
    pub reviews: HttpBackend,
    pub ratings: HttpBackend,
    pub state: tempfile::TempDir,
    pub weftd: WeftdProcess,
}

impl ReviewsAndRatings {
    pub async fn start() -> Self {
        let reviews = HttpBackend::start("reviews").await;
        let ratings = HttpBackend::start("ratings").await;
        let state = tempfile::tempdir().expect("tempdir");
        let weftd = weftd_applying(
            state.path(),
            &reviews_and_ratings(reviews.addr, ratings.addr),
        )
        .await;
        Self {
            reviews,
            ratings,
            state,
            weftd,
        }
    }
}

pub async fn get(listen: SocketAddr) -> Result<String, String> {
    let mut client = Http1Client::connect(listen)
        .await
        .map_err(|e| format!("{e:#}"))?;
    let reply = client
        .get("svc:9080", "/")
        .await
        .map_err(|e| format!("{e:#}"))?;
    if reply.status == StatusCode::OK {
        Ok(reply.text())
    } else {
        Err(format!("{} {}", reply.status, reply.text()))
    }
}

pub async fn proxies_json(weftd: &WeftdProcess) -> serde_json::Value {
    let text = weftd.proxies().await.expect("GET /v1/proxies");
    serde_json::from_str(&text).expect("JSON")
}

/// The ids `GET /v1/proxies` lists, with whether each is connected.
pub async fn listed(weftd: &WeftdProcess) -> Vec<(String, bool)> {
    let body = proxies_json(weftd).await;
    body["proxies"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            (
                p["id"].as_str().unwrap_or_default().to_string(),
                p["connected"] == serde_json::Value::Bool(true),
            )
        })
        .collect()
}

/// Requests back to back through each listener until stopped.
pub struct Traffic {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failures: Arc<AtomicUsize>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Traffic {
    pub fn start(listeners: &[SocketAddr]) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(AtomicUsize::new(0));
        let tasks = listeners
            .iter()
            .copied()
            .map(|listen| {
                let (stop, ok, failures) = (stop.clone(), ok.clone(), failures.clone());
                tokio::spawn(async move {
                    let mut client = None;
                    while !stop.load(Ordering::Relaxed) {
                        if client.is_none() {
                            client = Http1Client::connect(listen).await.ok();
                        }
                        let Some(open) = client.as_mut() else {
                            failures.fetch_add(1, Ordering::Relaxed);
                            continue;
                        };
                        match open.get("svc:9080", "/").await {
                            Ok(reply) if reply.status == StatusCode::OK => {
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            other => {
                                eprintln!("failed request through {listen}: {other:?}");
                                failures.fetch_add(1, Ordering::Relaxed);
                                client = None;
                            }
                        }
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                })
            })
            .collect();
        Self {
            stop,
            ok,
            failures,
            tasks,
        }
    }

    pub async fn stop(self) -> (usize, usize) {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await.expect("traffic task");
        }
        (
            self.ok.load(Ordering::Relaxed),
            self.failures.load(Ordering::Relaxed),
        )
    }
}

/// A TCP relay to `target` that can be paused: while paused it refuses
/// every connection (a proxy that cannot reach weftd for a while).
pub struct Relay {
    pub addr: SocketAddr,
    paused: Arc<AtomicBool>,
    _task: tokio::task::JoinHandle<()>,
}

impl Relay {
    pub async fn start(target: SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind relay");
        let addr = listener.local_addr().expect("relay addr");
        let paused = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn({
            let paused = paused.clone();
            async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    if paused.load(Ordering::Relaxed) {
                        continue; // dropped: refused
                    }
                    tokio::spawn(async move {
                        if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                }
            }
        });
        Self {
            addr,
            paused,
            _task: task,
        }
    }

    pub fn pause(&self, paused: bool) {
        self.paused.store(paused, Ordering::Relaxed);
    }
}

/// Polls the caller's endpoints for each service; the fewest it ever held.
pub fn watch_endpoints(
    caller_admin: SocketAddr,
    services: &[&'static str],
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Vec<usize>> {
    let services = services.to_vec();
    tokio::spawn(async move {
        let mut fewest = vec![usize::MAX; services.len()];
        while !stop.load(Ordering::Relaxed) {
            if let Ok(reply) = client::get(caller_admin, "admin", "/clusters").await {
                let text = reply.text();
                for (index, service) in services.iter().enumerate() {
                    let needle = format!("{service}.default.svc.cluster.local");
                    let count = text
                        .lines()
                        .filter(|l| l.contains(&needle) && l.contains("::weight::"))
                        .count();
                    fewest[index] = fewest[index].min(count);
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        fewest
    })
}

/// `GET path` on weftd's API, with its admin credential.
pub async fn api_get(weftd: &WeftdProcess, path: &str) -> anyhow::Result<client::Reply> {
    weftd.call(http::Method::GET, path, None).await
}

/// `weft proxy-status` against `weftd`: its standard output.
pub fn weft_proxy_status(weftd: &WeftdProcess) -> String {
    let weft = std::path::Path::new(WEFTD).with_file_name("weft");
    let output = std::process::Command::new(&weft)
        .args(["proxy-status", "--weftd", &weftd.api.to_string()])
        .arg("--token-file")
        .arg(weftd.token_file())
        .output()
        .expect("run weft");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A bootstrap token bound to WorkloadGroup `namespace`/`group` (and to
/// `address`, if given), written to a file in `dir`; the group must be
/// applied.
pub async fn bound_token_file(
    weftd: &WeftdProcess,
    dir: &std::path::Path,
    namespace: &str,
    group: &str,
    address: Option<&str>,
) -> PathBuf {
    let bound = address.map(|a| a.parse().expect("an IP address"));
    let token = weftd
        .mint_token_with(namespace, group, bound, None)
        .await
        .unwrap_or_else(|err| panic!("token for {group}: {err:#}"))
        .token;
    let path = dir.join(format!("{group}-{}.token", address.unwrap_or("any")));
    std::fs::write(&path, token).expect("write token");
    path
}

/// A sidecar on weftd's TLS port holding `token`, for an app at `backend`
/// (and an inbound listener when `inbound` is set); node flags in `args`.
pub fn spawn_secure(
    weftd: &WeftdProcess,
    token: &std::path::Path,
    backend: SocketAddr,
    inbound: Option<SocketAddr>,
    args: &[&str],
) -> ProxyProcess {
    let port = format!("{}/http", backend.port());
    let mut all = vec!["--port".to_string(), port];
    if let Some(inbound) = inbound {
        all.extend([
            "--inbound".to_string(),
            format!("{inbound}={}", backend.port()),
        ]);
    }
    all.extend(args.iter().map(|a| a.to_string()));
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    let binary = proxy_binary();
    let options = ProxyOptions::secure(&binary, weftd.xds, &weftd.root_cert, token, &all);
    ProxyProcess::spawn(options).expect("spawn secure proxy")
}

/// Waits until weftd's board lists a refusal of node `id` with `code`
/// whose reason contains `reason`; that reason.
pub async fn refusal(weftd: &WeftdProcess, id: &str, code: &str, reason: &str) -> String {
    eventually(
        &format!("{id} refused ({code}: {reason})"),
        Duration::from_secs(15),
        || async {
            let body = proxies_json(weftd).await;
            body["refused"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|r| {
                    r["id"] == id
                        && r["code"] == code
                        && r["reason"].as_str().is_some_and(|t| t.contains(reason))
                })
                .and_then(|r| r["reason"].as_str().map(str::to_string))
                .ok_or_else(|| body["refused"].to_string())
        },
    )
    .await
}

/// A token file for WorkloadGroup `group` (applied with `app: group` and
/// service account `group`), named `file` in `dir`.
pub async fn group_token_file(
    weftd: &WeftdProcess,
    dir: &std::path::Path,
    group: &str,
    file: &str,
) -> PathBuf {
    let yaml = format!(
        "apiVersion: networking.istio.io/v1\nkind: WorkloadGroup\nmetadata: {{name: {group}}}\n\
         spec:\n  metadata: {{labels: {{app: {group}}}}}\n  template: {{serviceAccount: {group}}}\n"
    );
    let applied = weftd.apply(&yaml).await.expect("apply WorkloadGroup");
    assert_eq!(applied.status, StatusCode::OK, "{}", applied.text());
    let token = weftd
        .mint_token("default", group)
        .await
        .unwrap_or_else(|err| panic!("token for {group}: {err:#}"));
    let path = dir.join(file);
    std::fs::write(&path, token).expect("write token");
    path
}
