//! Istio's own Bookinfo routing files (read from ../shared/corpus, never
//! copied), applied unchanged to weftd, each producing the behaviour its name
//! describes in live traffic through a weft-proxy.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use weft_testkit::backend::HttpBackend;
use weft_testkit::client::{self, Http1Client, Reply};
use weft_testkit::free_addr;
use weft_testkit::proxy::{ProxyOptions, ProxyProcess};
use weft_testkit::weftd::WeftdProcess;

const WEFTD: &str = env!("CARGO_BIN_EXE_weftd");
const SERVICES: [&str; 4] = ["productpage", "reviews", "ratings", "details"];
/// (service, version label) of every backend.
const VERSIONS: [(&str, &str); 10] = [
    ("productpage", "v1"),
    ("reviews", "v1"),
    ("reviews", "v2"),
    ("reviews", "v3"),
    ("ratings", "v1"),
    ("ratings", "v2"),
    ("ratings", "v2-mysql"),
    ("ratings", "v2-mysql-vm"),
    ("details", "v1"),
    ("details", "v2"),
];

struct Bookinfo {
    weftd: WeftdProcess,
    /// service → the proxy listener that reaches it
    listeners: BTreeMap<&'static str, SocketAddr>,
    networking: PathBuf,
    _proxy: ProxyProcess,
    _backends: Vec<HttpBackend>,
    _state: tempfile::TempDir,
}

impl Bookinfo {
    async fn apply_file(&self, name: &str) {
        let text = std::fs::read_to_string(self.networking.join(name)).expect("corpus file");
        let reply = self.weftd.apply(&text).await.expect("apply");
        assert_eq!(reply.status, StatusCode::OK, "{name}: {}", reply.text());
        // Live in ~0.1 s (debounce); leave margin on a loaded machine.
        tokio::time::sleep(Duration::from_millis(400)).await;
    }

    async fn call(&self, service: &str, user: Option<&str>) -> Reply {
        let headers: Vec<(&str, &str)> = user.map(|user| ("end-user", user)).into_iter().collect();
        let host = format!("{service}:9080");
        let request =
            client::request_with_headers(Method::GET, &host, "/", &headers, client::empty());
        let mut connection = Http1Client::connect(self.listeners[service])
            .await
            .expect("connect");
        connection.send(request).await.expect("request")
    }

    /// Which backend answered `n` calls, as shares in percent.
    async fn shares(&self, service: &str, n: usize) -> BTreeMap<String, f64> {
        let mut client = Http1Client::connect(self.listeners[service])
            .await
            .expect("connect");
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for _ in 0..n {
            let reply = client
                .get(&format!("{service}:9080"), "/")
                .await
                .expect("request");
            assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
            *counts
                .entry(reply.header("x-backend").unwrap_or("?").to_string())
                .or_default() += 1;
        }
        counts
            .into_iter()
            .map(|(backend, count)| (backend, count as f64 * 100.0 / n as f64))
            .collect()
    }
}

fn proxy_binary() -> PathBuf {
    weft_testkit::cli::sibling(WEFTD, "weft-proxy")
}

fn registry_yaml(backends: &[HttpBackend]) -> String {
    let mut yaml = String::new();
    for service in SERVICES {
        yaml.push_str(&format!(
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {service}}}\nspec:\n  hosts: [{service}.default.svc.cluster.local]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports: [{{number: 9080, name: http, protocol: HTTP}}]\n  workloadSelector: {{labels: {{app: {service}}}}}\n---\n"
        ));
    }
    for ((service, version), backend) in VERSIONS.iter().zip(backends) {
        yaml.push_str(&format!(
            "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{name: {service}-{version}}}\nspec:\n  address: 127.0.0.1\n  ports: {{http: {}}}\n  labels: {{app: {service}, version: {version}}}\n---\n",
            backend.addr.port()
        ));
    }
    yaml
}

async fn start() -> Option<Bookinfo> {
    let corpus = weft_testkit::corpus::root_or_skip("bookinfo_routing")?;
    let networking = corpus.join("istio/samples/bookinfo/networking");
    let mut backends = Vec::new();
    for (service, version) in VERSIONS {
        backends.push(HttpBackend::start(&format!("{service}-{version}")).await);
    }
    let state = tempfile::tempdir().expect("tempdir");
    let weftd = WeftdProcess::start_in(Path::new(WEFTD), state.path())
        .await
        .expect("weftd");
    let reply = weftd
        .apply(&registry_yaml(&backends))
        .await
        .expect("apply registry");
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());

    let mut listeners = BTreeMap::new();
    let mut flags = vec![
        "--node-id".to_string(),
        "caller".to_string(),
        "--workload".to_string(),
        "caller".to_string(),
    ];
    for service in SERVICES {
        let listen = free_addr();
        listeners.insert(service, listen);
        flags.push("--listen".into());
        flags.push(format!("{listen}={service}:9080"));
    }
    let binary = proxy_binary();
    let args: Vec<&str> = flags.iter().map(String::as_str).collect();
    let proxy = ProxyProcess::spawn_ready(
        ProxyOptions::control_plane(&binary, weftd.grpc, &args),
        Duration::from_secs(20),
    )
    .await
    .expect("proxy ready");
    let bookinfo = Bookinfo {
        weftd,
        listeners,
        networking,
        _proxy: proxy,
        _backends: backends,
        _state: state,
    };
    bookinfo.apply_file("destination-rule-all.yaml").await;
    Some(bookinfo)
}

fn share(shares: &BTreeMap<String, f64>, backend: &str) -> f64 {
    shares.get(backend).copied().unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookinfo_routing_files_do_what_their_names_say() {
    let Some(bookinfo) = start().await else {
        return;
    };

    bookinfo.apply_file("virtual-service-all-v1.yaml").await;
    for service in SERVICES {
        let shares = bookinfo.shares(service, 20).await;
        assert_eq!(
            share(&shares, &format!("{service}-v1")),
            100.0,
            "all-v1: {service} {shares:?}"
        );
    }

    for (file, first, second, expected) in [
        (
            "virtual-service-reviews-90-10.yaml",
            "reviews-v1",
            "reviews-v2",
            90.0,
        ),
        (
            "virtual-service-reviews-80-20.yaml",
            "reviews-v1",
            "reviews-v2",
            80.0,
        ),
        (
            "virtual-service-reviews-50-v3.yaml",
            "reviews-v1",
            "reviews-v3",
            50.0,
        ),
        (
            "virtual-service-reviews-v2-v3.yaml",
            "reviews-v2",
            "reviews-v3",
            50.0,
        ),
    ] {
        bookinfo.apply_file(file).await;
        let shares = bookinfo.shares("reviews", 2000).await;
        assert!(
            (share(&shares, first) - expected).abs() <= 3.0,
            "{file}: {shares:?}"
        );
        assert!(
            (share(&shares, second) - (100.0 - expected)).abs() <= 3.0,
            "{file}: {shares:?}"
        );
    }

    bookinfo.apply_file("virtual-service-reviews-v3.yaml").await;
    assert_eq!(
        share(&bookinfo.shares("reviews", 20).await, "reviews-v3"),
        100.0
    );

    for (file, jason, others) in [
        (
            "virtual-service-reviews-test-v2.yaml",
            "reviews-v2",
            "reviews-v1",
        ),
        (
            "virtual-service-reviews-jason-v2-v3.yaml",
            "reviews-v2",
            "reviews-v3",
        ),
    ] {
        bookinfo.apply_file(file).await;
        for _ in 0..5 {
            assert_eq!(
                bookinfo
                    .call("reviews", Some("jason"))
                    .await
                    .header("x-backend"),
                Some(jason),
                "{file}"
            );
            assert_eq!(
                bookinfo
                    .call("reviews", Some("kim"))
                    .await
                    .header("x-backend"),
                Some(others),
                "{file}"
            );
            assert_eq!(
                bookinfo.call("reviews", None).await.header("x-backend"),
                Some(others),
                "{file}"
            );
        }
    }

    bookinfo
        .apply_file("virtual-service-ratings-test-abort.yaml")
        .await;
    let aborted = bookinfo.call("ratings", Some("jason")).await;
    assert_eq!(
        aborted.status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "{}",
        aborted.text()
    );
    assert_eq!(aborted.header("x-weft-response-flags"), Some("FI"));
    assert_eq!(
        bookinfo.call("ratings", None).await.header("x-backend"),
        Some("ratings-v1")
    );

    bookinfo
        .apply_file("virtual-service-ratings-test-delay.yaml")
        .await;
    let started = Instant::now();
    let delayed = bookinfo.call("ratings", Some("jason")).await;
    assert_eq!(delayed.header("x-backend"), Some("ratings-v1"));
    assert!(
        started.elapsed() >= Duration::from_secs(7),
        "delay of 7s not applied: {:?}",
        started.elapsed()
    );
    let started = Instant::now();
    bookinfo.call("ratings", None).await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "others delayed too"
    );

    bookinfo.apply_file("virtual-service-details-v2.yaml").await;
    assert_eq!(
        share(&bookinfo.shares("details", 20).await, "details-v2"),
        100.0
    );

    // This file also replaces the details DestinationRule (v1 only).
    bookinfo.apply_file("fault-injection-details-v1.yaml").await;
    let aborted = bookinfo.call("details", None).await;
    assert_eq!(aborted.status.as_u16(), 555, "{}", aborted.text());

    for (file, ratings) in [
        ("virtual-service-ratings-db.yaml", "ratings-v2"),
        ("virtual-service-ratings-mysql.yaml", "ratings-v2-mysql"),
        (
            "virtual-service-ratings-mysql-vm.yaml",
            "ratings-v2-mysql-vm",
        ),
    ] {
        bookinfo.apply_file(file).await;
        assert_eq!(
            share(&bookinfo.shares("reviews", 20).await, "reviews-v3"),
            100.0,
            "{file}"
        );
        assert_eq!(
            share(&bookinfo.shares("ratings", 20).await, ratings),
            100.0,
            "{file}"
        );
    }
}
