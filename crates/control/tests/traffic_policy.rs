//! Traffic management through weftd + weft-proxy + real backends, with
//! statistical bounds where the behaviour is probabilistic. Each test applies
//! Istio YAML to weftd and measures live traffic.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::StatusCode;
use http_body_util::Full;
use weft_testkit::backend::{Served, serve};
use weft_testkit::client::Http1Client;
use weft_testkit::free_addr;
use weft_testkit::proxy::{ProxyOptions, ProxyProcess};
use weft_testkit::weftd::WeftdProcess;

const WEFTD: &str = env!("CARGO_BIN_EXE_weftd");

/// How a scripted backend answers its n-th request (0-based).
type Script = Arc<dyn Fn(usize) -> (u16, Duration) + Send + Sync>;

/// A backend whose answers follow a script; counts what it receives.
struct Scripted {
    addr: SocketAddr,
    requests: Arc<AtomicUsize>,
    _served: Served,
}

impl Scripted {
    async fn start(name: &'static str, script: Script) -> Self {
        let requests = Arc::new(AtomicUsize::new(0));
        let counter = requests.clone();
        let served = serve(move |_request| {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            let (status, delay) = script(n);
            async move {
                tokio::time::sleep(delay).await;
                let mut response = http::Response::new(Full::new(Bytes::from(name)));
                *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
                response
                    .headers_mut()
                    .insert("x-backend", http::HeaderValue::from_static(name));
                Ok::<_, Infallible>(response)
            }
        })
        .await;
        Self {
            addr: served.addr,
            requests,
            _served: served,
        }
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

fn always(status: u16, delay_ms: u64) -> Script {
    Arc::new(move |_| (status, Duration::from_millis(delay_ms)))
}

struct Mesh {
    weftd: WeftdProcess,
    listen: SocketAddr,
    _proxy: ProxyProcess,
    _state: tempfile::TempDir,
}

/// weftd with service `shop` whose endpoints are `backends` (labels
/// version: v1, v2, ...), subsets per version, and one proxy listening for it.
async fn mesh(backends: &[&Scripted], policy_yaml: &str) -> Mesh {
    mesh_at(backends, &[], policy_yaml, &[]).await
}

/// As [`mesh`], with each backend's locality (`localities[i]`, empty for
/// none) and more flags for the proxy (e.g. its own `--locality`).
async fn mesh_at(
    backends: &[&Scripted],
    localities: &[&str],
    policy_yaml: &str,
    proxy_flags: &[&str],
) -> Mesh {
    let state = tempfile::tempdir().expect("tempdir");
    let weftd = WeftdProcess::start_in(Path::new(WEFTD), state.path())
        .await
        .expect("weftd");
    let mut yaml = String::from(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: shop}\nspec:\n  hosts: [shop.default.svc.cluster.local]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports: [{number: 80, name: http, protocol: HTTP}]\n  workloadSelector: {labels: {app: shop}}\n",
    );
    for (index, backend) in backends.iter().enumerate() {
        yaml.push_str(&format!(
            "---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{name: shop-v{n}}}\nspec:\n  address: 127.0.0.1\n  ports: {{http: {port}}}\n  labels: {{app: shop, version: v{n}}}\n  locality: '{locality}'\n",
            n = index + 1,
            port = backend.addr.port(),
            locality = localities.get(index).copied().unwrap_or_default(),
        ));
    }
    if !policy_yaml.is_empty() {
        yaml.push_str("---\n");
        yaml.push_str(policy_yaml);
    }
    let reply = weftd.apply(&yaml).await.expect("apply");
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let listen = free_addr();
    let listen_flag = format!("{listen}=shop:80");
    let binary: PathBuf = weft_testkit::cli::sibling(WEFTD, "weft-proxy");
    let mut flags = vec![
        "--node-id",
        "caller",
        "--workload",
        "caller",
        "--listen",
        &listen_flag,
    ];
    flags.extend_from_slice(proxy_flags);
    let proxy = ProxyProcess::spawn_ready(
        ProxyOptions::control_plane(&binary, weftd.grpc, &flags),
        Duration::from_secs(20),
    )
    .await
    .expect("ready");
    Mesh {
        weftd,
        listen,
        _proxy: proxy,
        _state: state,
    }
}

const SUBSETS: &str = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: shop}\nspec:\n  host: shop\n  subsets:\n  - {name: v1, labels: {version: v1}}\n  - {name: v2, labels: {version: v2}}\n";

async fn get(client: &mut Http1Client) -> weft_testkit::client::Reply {
    client.get("shop", "/").await.expect("request")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_50_percent_abort_is_within_5_points() {
    let backend = Scripted::start("v1", always(200, 0)).await;
    let vs = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: shop}\nspec:\n  hosts: [shop]\n  http:\n  - fault:\n      abort: {httpStatus: 503, percentage: {value: 50}}\n    route:\n    - destination: {host: shop}\n";
    let mesh = mesh(&[&backend], vs).await;
    let mut client = Http1Client::connect(mesh.listen).await.expect("connect");
    let total = 1000;
    let mut aborted = 0;
    for _ in 0..total {
        let reply = get(&mut client).await;
        if reply.status == StatusCode::SERVICE_UNAVAILABLE {
            assert_eq!(reply.header("x-weft-response-flags"), Some("FI"));
            aborted += 1;
        }
    }
    let share = aborted as f64 * 100.0 / total as f64;
    assert!((share - 50.0).abs() <= 5.0, "{share}% aborted");
    assert_eq!(backend.requests(), total - aborted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fault_delay_shows_in_latency() {
    let backend = Scripted::start("v1", always(200, 0)).await;
    let vs = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: shop}\nspec:\n  hosts: [shop]\n  http:\n  - fault:\n      delay: {fixedDelay: 300ms, percentage: {value: 100}}\n    route:\n    - destination: {host: shop}\n";
    let mesh = mesh(&[&backend], vs).await;
    let mut client = Http1Client::connect(mesh.listen).await.expect("connect");
    for _ in 0..3 {
        let started = Instant::now();
        assert_eq!(get(&mut client).await.status, StatusCode::OK);
        let elapsed = started.elapsed();
        assert!(elapsed >= Duration::from_millis(300), "only {elapsed:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_turn_a_flaky_backend_into_full_success() {
    // Fails every other request.
    let backend = Scripted::start(
        "v1",
        Arc::new(|n| (if n % 2 == 0 { 503 } else { 200 }, Duration::ZERO)),
    )
    .await;
    let vs = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: shop}\nspec:\n  hosts: [shop]\n  http:\n  - retries: {attempts: 2, retryOn: 5xx}\n    route:\n    - destination: {host: shop}\n";
    let mesh = mesh(&[&backend], vs).await;
    let mut client = Http1Client::connect(mesh.listen).await.expect("connect");
    for _ in 0..200 {
        assert_eq!(get(&mut client).await.status, StatusCode::OK);
    }
    assert!(
        backend.requests() >= 300,
        "only {} backend requests",
        backend.requests()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_per_try_timeout_cuts_a_slow_endpoint() {
    let slow = Scripted::start("slow", always(200, 3000)).await;
    let fast = Scripted::start("fast", always(200, 0)).await;
    let vs = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: shop}\nspec:\n  hosts: [shop]\n  http:\n  - timeout: 5s\n    retries: {attempts: 2, perTryTimeout: 200ms, retryOn: 5xx}\n    route:\n    - destination: {host: shop}\n";
    let dr = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: shop}\nspec:\n  host: shop\n  trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}\n";
    let mesh = mesh(&[&slow, &fast], &format!("{vs}---\n{dr}")).await;
    let mut client = Http1Client::connect(mesh.listen).await.expect("connect");
    for _ in 0..6 {
        let started = Instant::now();
        let reply = get(&mut client).await;
        assert_eq!(
            (reply.status, reply.text().as_str()),
            (StatusCode::OK, "fast")
        );
        assert!(
            started.elapsed() < Duration::from_millis(1500),
            "took {:?}",
            started.elapsed()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outlier_detection_ejects_then_restores_an_endpoint() {
    let broken = Arc::new(AtomicBool::new(true));
    let flag = broken.clone();
    let flaky = Scripted::start(
        "flaky",
        Arc::new(move |_| {
            (
                if flag.load(Ordering::SeqCst) {
                    503
                } else {
                    200
                },
                Duration::ZERO,
            )
        }),
    )
    .await;
    let healthy = Scripted::start("healthy", always(200, 0)).await;
    let dr = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: shop}\nspec:\n  host: shop\n  trafficPolicy:\n    loadBalancer: {simple: ROUND_ROBIN}\n    outlierDetection: {consecutive5xxErrors: 2, interval: 1s, baseEjectionTime: 1s, maxEjectionPercent: 100}\n";
    let vs = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: shop}\nspec:\n  hosts: [shop]\n  http:\n  - retries: {attempts: 0}\n    route:\n    - destination: {host: shop}\n";
    let mesh = mesh(&[&flaky, &healthy], &format!("{dr}---\n{vs}")).await;
    let mut client = Http1Client::connect(mesh.listen).await.expect("connect");
    for _ in 0..10 {
        get(&mut client).await;
    }
    // Ejected: the next requests all go to the healthy endpoint.
    let before = flaky.requests();
    for _ in 0..20 {
        assert_eq!(get(&mut client).await.text(), "healthy");
    }
    assert_eq!(flaky.requests(), before, "an ejected endpoint got traffic");
    // It recovers; after the ejection time it is probed and stays in.
    broken.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1300)).await;
    for _ in 0..20 {
        assert_eq!(get(&mut client).await.status, StatusCode::OK);
    }
    assert!(flaky.requests() > before, "the endpoint was never restored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_request_overflow_is_refused_with_uo() {
    let slow = Scripted::start("v1", always(200, 800)).await;
    let dr = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: shop}\nspec:\n  host: shop\n  trafficPolicy:\n    connectionPool:\n      tcp: {maxConnections: 1}\n      http: {http1MaxPendingRequests: 1}\n";
    let mesh = mesh(&[&slow], dr).await;
    let listen = mesh.listen;
    let calls: Vec<_> = (0..5)
        .map(|_| {
            tokio::spawn(async move {
                let started = Instant::now();
                let mut client = Http1Client::connect(listen).await.expect("connect");
                let reply = get(&mut client).await;
                (
                    reply.status,
                    reply.header("x-weft-response-flags").map(str::to_string),
                    started.elapsed(),
                )
            })
        })
        .collect();
    let mut overflowed = 0;
    for call in calls {
        let (status, flags, elapsed) = call.await.expect("task");
        if status == StatusCode::SERVICE_UNAVAILABLE {
            assert_eq!(flags.as_deref(), Some("UO"));
            assert!(
                elapsed < Duration::from_millis(700),
                "UO must be immediate, took {elapsed:?}"
            );
            overflowed += 1;
        }
    }
    assert!(overflowed >= 2, "only {overflowed} of 5 overflowed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirrored_traffic_reaches_the_shadow_while_the_caller_sees_the_primary() {
    let primary = Scripted::start("primary", always(200, 0)).await;
    let shadow = Scripted::start("shadow", always(500, 0)).await;
    let vs = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: shop}\nspec:\n  hosts: [shop]\n  http:\n  - route:\n    - destination: {host: shop, subset: v1}\n    mirror: {host: shop, subset: v2}\n    mirrorPercentage: {value: 100}\n";
    let mesh = mesh(&[&primary, &shadow], &format!("{SUBSETS}---\n{vs}")).await;
    let mut client = Http1Client::connect(mesh.listen).await.expect("connect");
    for _ in 0..10 {
        let reply = get(&mut client).await;
        assert_eq!(
            (reply.status, reply.text().as_str()),
            (StatusCode::OK, "primary")
        );
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while shadow.requests() < 10 {
        assert!(
            Instant::now() < deadline,
            "shadow got {} of 10",
            shadow.requests()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = &mesh.weftd;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistent_hash_sends_one_header_value_to_one_endpoint() {
    let a = Scripted::start("a", always(200, 0)).await;
    let b = Scripted::start("b", always(200, 0)).await;
    let c = Scripted::start("c", always(200, 0)).await;
    let dr = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: shop}\nspec:\n  host: shop\n  trafficPolicy:\n    loadBalancer:\n      consistentHash: {httpHeaderName: x-user}\n";
    let mesh = mesh(&[&a, &b, &c], dr).await;
    let mut client = Http1Client::connect(mesh.listen).await.expect("connect");
    let mut homes = std::collections::BTreeSet::new();
    for user in 0..12 {
        let mut first = None;
        for _ in 0..5 {
            let user_header = format!("user-{user}");
            let request = weft_testkit::client::request_with_headers(
                http::Method::GET,
                "shop",
                "/",
                &[("x-user", &user_header)],
                weft_testkit::client::empty(),
            );
            let answer = client.send(request).await.expect("request").text();
            assert_eq!(
                first.get_or_insert_with(|| answer.clone()),
                &answer,
                "user-{user} moved"
            );
        }
        homes.extend(first);
    }
    assert!(homes.len() >= 2, "all users on one endpoint: {homes:?}");
}

/// Counts which backend answers `n` requests.
async fn tally(client: &mut Http1Client, n: usize) -> std::collections::BTreeMap<String, usize> {
    let mut counts = std::collections::BTreeMap::new();
    for _ in 0..n {
        let reply = get(client).await;
        *counts.entry(reply.text()).or_default() += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locality_failover_prefers_the_nearest_healthy_endpoints() {
    let broken = Arc::new(AtomicBool::new(false));
    let flag = broken.clone();
    let local = Scripted::start(
        "local",
        Arc::new(move |_| {
            let status = if flag.load(Ordering::SeqCst) {
                503
            } else {
                200
            };
            (status, Duration::ZERO)
        }),
    )
    .await;
    let same_region = Scripted::start("same-region", always(200, 0)).await;
    let far = Scripted::start("far", always(200, 0)).await;
    let dr = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: shop}\nspec:\n  host: shop\n  trafficPolicy:\n    outlierDetection: {consecutive5xxErrors: 2, interval: 1s, baseEjectionTime: 30s, maxEjectionPercent: 100}\n";
    let vs = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: shop}\nspec:\n  hosts: [shop]\n  http:\n  - retries: {attempts: 0}\n    route:\n    - destination: {host: shop}\n";
    let mesh = mesh_at(
        &[&local, &same_region, &far],
        &["us-east/a/1", "us-east/b/1", "eu-west/c/1"],
        &format!("{dr}---\n{vs}"),
        &["--locality", "us-east/a/1"],
    )
    .await;
    let mut client = Http1Client::connect(mesh.listen).await.expect("connect");
    // Healthy: everything stays in the proxy's own zone.
    let counts = tally(&mut client, 50).await;
    assert_eq!(counts.get("local"), Some(&50), "{counts:?}");
    // The local endpoint fails and is ejected: traffic fails over to the
    // same region, never to the far one while that is healthy.
    broken.store(true, Ordering::SeqCst);
    tally(&mut client, 5).await;
    let counts = tally(&mut client, 50).await;
    assert_eq!(counts.get("same-region"), Some(&50), "{counts:?}");
    assert_eq!(far.requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locality_distribute_splits_by_the_configured_shares() {
    let near = Scripted::start("near", always(200, 0)).await;
    let far = Scripted::start("far", always(200, 0)).await;
    let ignored = Scripted::start("ignored", always(200, 0)).await;
    let dr = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: shop}\nspec:\n  host: shop\n  trafficPolicy:\n    loadBalancer:\n      simple: RANDOM\n      localityLbSetting:\n        distribute:\n        - from: us-east/a/*\n          to: {'us-east/a/*': 80, 'eu-west/*': 20}\n";
    let mesh = mesh_at(
        &[&near, &far, &ignored],
        &["us-east/a/1", "eu-west/c/1", "ap-south/d/1"],
        dr,
        &["--locality", "us-east/a/1"],
    )
    .await;
    let mut client = Http1Client::connect(mesh.listen).await.expect("connect");
    let counts = tally(&mut client, 1000).await;
    let near_share = counts.get("near").copied().unwrap_or(0);
    // 80% ± 4 points over 1,000 requests; the unlisted locality gets none.
    assert!((760..=840).contains(&near_share), "{counts:?}");
    assert_eq!(
        near_share + counts.get("far").copied().unwrap_or(0),
        1000,
        "{counts:?}"
    );
    assert_eq!(ignored.requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_endpoint_warms_up_before_taking_its_full_share() {
    let old = Scripted::start("old", always(200, 0)).await;
    let new = Scripted::start("new", always(200, 0)).await;
    let dr = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: shop}\nspec:\n  host: shop\n  trafficPolicy:\n    loadBalancer: {simple: ROUND_ROBIN, warmup: {duration: 4s, minimumPercent: 10}}\n";
    let mesh = mesh(&[&old], dr).await;
    let mut client = Http1Client::connect(mesh.listen).await.expect("connect");
    assert_eq!(tally(&mut client, 20).await.get("old"), Some(&20));

    let entry = format!(
        "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{name: shop-new}}\nspec:\n  address: 127.0.0.1\n  ports: {{http: {}}}\n  labels: {{app: shop}}\n",
        new.addr.port()
    );
    let reply = mesh.weftd.apply(&entry).await.expect("apply");
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    // Wait for the endpoint to arrive, then measure its first second.
    let deadline = Instant::now() + Duration::from_secs(5);
    while new.requests() == 0 {
        assert!(
            Instant::now() < deadline,
            "the new endpoint never got traffic"
        );
        get(&mut client).await;
    }
    let early = tally(&mut client, 200).await;
    let early_new = early.get("new").copied().unwrap_or(0);
    // Round robin would give it 100 of 200; warming, it gets far less.
    assert!(early_new < 70, "{early:?}");
    tokio::time::sleep(Duration::from_secs(4)).await;
    let warm = tally(&mut client, 200).await;
    assert_eq!(warm.get("new"), Some(&100), "{warm:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ejection_survives_a_config_change() {
    let failing = Scripted::start("failing", always(503, 0)).await;
    let healthy = Scripted::start("healthy", always(200, 0)).await;
    let dr = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: shop}\nspec:\n  host: shop\n  trafficPolicy:\n    loadBalancer: {simple: ROUND_ROBIN}\n    outlierDetection: {consecutive5xxErrors: 2, baseEjectionTime: 60s, maxEjectionPercent: 100}\n";
    let vs = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: shop}\nspec:\n  hosts: [shop]\n  http:\n  - retries: {attempts: 0}\n    route:\n    - destination: {host: shop}\n";
    let mesh = mesh(&[&failing, &healthy], &format!("{dr}---\n{vs}")).await;
    let mut client = Http1Client::connect(mesh.listen).await.expect("connect");
    tally(&mut client, 10).await;
    let ejected_at = failing.requests();
    // Another change reaches the proxy: the cluster is rebuilt...
    let other = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: shop}\nspec:\n  hosts: [shop]\n  http:\n  - retries: {attempts: 0}\n    timeout: 5s\n    route:\n    - destination: {host: shop}\n";
    let reply = mesh.weftd.apply(other).await.expect("apply");
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    tokio::time::sleep(Duration::from_millis(600)).await;
    // ...and the failing endpoint stays ejected.
    let counts = tally(&mut client, 20).await;
    assert_eq!(counts.get("healthy"), Some(&20), "{counts:?}");
    assert_eq!(failing.requests(), ejected_at);
}
