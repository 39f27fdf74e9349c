//! Istio `Telemetry` resources applied to weftd switch a running proxy's
//! access logs off and on, per namespace and per workload, without a
//! restart: weftd, weft-proxy and a backend as real processes on loopback.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use http::StatusCode;
use weft_testkit::backend::HttpBackend;
use weft_testkit::client;
use weft_testkit::fixtures::service_with_workloads;
use weft_testkit::free_addr;
use weft_testkit::proxy::{ProxyOptions, ProxyProcess};
use weft_testkit::weftd::WeftdProcess;

const WEFTD: &str = env!("CARGO_BIN_EXE_weftd");

/// weft-proxy is built next to weftd by `cargo test --workspace`.
fn proxy_binary() -> PathBuf {
    weft_testkit::cli::sibling(WEFTD, "weft-proxy")
}

fn reviews(backend: SocketAddr) -> String {
    service_with_workloads("reviews", 9080, &[("v1", backend.port())])
}

/// A Telemetry resource named `name` in `namespace`; `body` is the rest of
/// its spec.
fn telemetry(name: &str, namespace: &str, body: &str) -> String {
    format!(
        "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec:\n{body}\n"
    )
}

async fn apply(weftd: &WeftdProcess, yaml: &str) {
    let reply = weftd.apply(yaml).await.expect("apply");
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
}

/// Waits until the proxy holds a config whose dump contains `text`.
async fn holds(proxy: &ProxyProcess, text: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let dump = proxy.admin_get("/config_dump").await.expect("dump").text();
        if dump.contains(text) {
            return;
        }
        assert!(Instant::now() < deadline, "no {text:?} in:\n{dump}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Sends a request for `path` and waits until the log has `expected` lines
/// (or a moment longer when it should not grow).
async fn request_then_lines(listen: SocketAddr, path: &str, log: &Path, expected: usize) {
    let reply = client::get(listen, "reviews", path).await.expect("request");
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let deadline = Instant::now() + Duration::from_millis(700);
    while lines(log).len() < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let found = lines(log);
    assert_eq!(found.len(), expected, "after {path}: {found:#?}");
}

#[tokio::test]
async fn telemetry_resources_switch_access_logs_without_a_restart() {
    let backend = HttpBackend::start("reviews-v1").await;
    let state = tempfile::tempdir().expect("tempdir");
    let weftd = WeftdProcess::start_in(Path::new(WEFTD), state.path())
        .await
        .expect("weftd");
    apply(&weftd, &reviews(backend.addr)).await;

    let log = state.path().join("access.log");
    let log_flag = log.display().to_string();
    let listen = free_addr();
    let listen_flag = format!("{listen}=reviews.default.svc.cluster.local:9080");
    let binary = proxy_binary();
    let options = ProxyOptions::control_plane(
        &binary,
        weftd.grpc,
        &[
            "--node-id",
            "pp",
            "--workload",
            "productpage-v1",
            "--namespace",
            "shop",
            "--label",
            "app=productpage",
            "--listen",
            &listen_flag,
            "--access-log",
            &log_flag,
        ],
    );
    let mut proxy = ProxyProcess::spawn_ready(options, Duration::from_secs(20))
        .await
        .expect("proxy gets its config from weftd");

    // --access-log: on.
    request_then_lines(listen, "/one", &log, 1).await;

    // The namespace turns them off.
    apply(
        &weftd,
        &telemetry("quiet", "shop", "  accessLogging: [{disabled: true}]"),
    )
    .await;
    holds(&proxy, "\"accessLog\": \"DISABLED\"").await;
    request_then_lines(listen, "/two", &log, 1).await;

    // A resource selecting this workload turns them back on.
    apply(
        &weftd,
        &telemetry(
            "productpage-logs",
            "shop",
            "  selector: {matchLabels: {app: productpage}}\n  accessLogging: [{providers: [{name: envoy}]}]",
        ),
    )
    .await;
    holds(&proxy, "\"accessLog\": \"ENABLED\"").await;
    request_then_lines(listen, "/three", &log, 2).await;

    let found = lines(&log);
    assert!(
        found[0].contains("\"GET /one HTTP/1.1\" 200 -"),
        "{found:#?}"
    );
    assert!(
        found[1].contains("\"GET /three HTTP/1.1\" 200 -"),
        "{found:#?}"
    );
    assert!(
        found[1].contains("outbound|9080||reviews.default.svc.cluster.local"),
        "{found:#?}"
    );
    assert!(
        proxy.is_running(),
        "the same proxy process throughout: the proxy exited; log:\n{}",
        proxy.logs()
    );
}
