//! Istio `Telemetry` `metrics` overrides and access-log filters applied to
//! weftd change what a running proxy exposes on `/stats/prometheus` and
//! what it logs: a label upserted from a request header (CLIENT side only),
//! a label removed, a metric disabled on the SERVER side, only the failed
//! requests logged under `response.code >= 400`, and a later push that
//! changes the label sets leaving no series of the old ones behind.
//! weftd, weft-proxy and two backends as real processes on loopback.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use weft_testkit::backend::HttpBackend;
use weft_testkit::client::{self, Http1Client};
use weft_testkit::fixtures::service_with_workloads;
use weft_testkit::free_addr;
use weft_testkit::proxy::{ProxyOptions, ProxyProcess};
use weft_testkit::weftd::WeftdProcess;

const WEFTD: &str = env!("CARGO_BIN_EXE_weftd");

fn proxy_binary() -> PathBuf {
    weft_testkit::cli::sibling(WEFTD, "weft-proxy")
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

async fn get(addr: SocketAddr, host: &str, path: &str, headers: &[(&str, &str)]) -> StatusCode {
    let request = client::request_with_headers(Method::GET, host, path, headers, client::empty());
    let mut client = Http1Client::connect(addr).await.expect("connect");
    client.send(request).await.expect("request").status
}

/// The `family` series lines of `/stats/prometheus` for `reporter`.
async fn series(proxy: &ProxyProcess, family: &str, reporter: &str) -> Vec<String> {
    let text = proxy
        .admin_get("/stats/prometheus")
        .await
        .expect("stats")
        .text();
    text.lines()
        .filter(|line| line.starts_with(&format!("{family}{{")))
        .filter(|line| line.contains(&format!("reporter=\"{reporter}\"")))
        .map(str::to_string)
        .collect()
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

const OVERRIDES: &str = r#"apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-default, namespace: istio-system}
spec:
  metrics:
  - providers: [{name: prometheus}]
    overrides:
    - match: {metric: REQUEST_COUNT, mode: CLIENT}
      tagOverrides:
        user_tier: {value: "request.headers['x-user-tier']"}
        request_protocol: {value: "request.method"}
        destination_canonical_revision: {operation: REMOVE}
    - match: {metric: REQUEST_SIZE, mode: SERVER}
      disabled: true
  accessLogging:
  - providers: [{name: envoy}]
    filter: {expression: "response.code >= 400"}
"#;

const FAULT: &str = r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews.default.svc.cluster.local]
  http:
  - match: [{uri: {prefix: /fail}}]
    fault: {abort: {httpStatus: 503, percentage: {value: 100}}}
    route: [{destination: {host: reviews.default.svc.cluster.local}}]
  - route: [{destination: {host: reviews.default.svc.cluster.local}}]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telemetry_overrides_change_labels_disable_metrics_and_filter_logs() {
    let reviews = HttpBackend::start("reviews-v1").await;
    let productpage = HttpBackend::start("productpage-v1").await;
    let state = tempfile::tempdir().expect("tempdir");
    let weftd = WeftdProcess::start_in(Path::new(WEFTD), state.path())
        .await
        .expect("weftd");
    apply(
        &weftd,
        &service_with_workloads("reviews", 9080, &[("v1", reviews.addr.port())]),
    )
    .await;
    apply(
        &weftd,
        &service_with_workloads("productpage", 9080, &[("v1", productpage.addr.port())]),
    )
    .await;
    apply(&weftd, FAULT).await;

    // One proxy: its outbound listener (CLIENT side) calls reviews, its
    // inbound listener (SERVER side) fronts productpage.
    let log = state.path().join("access.log");
    let log_flag = log.display().to_string();
    let (listen, inbound) = (free_addr(), free_addr());
    let listen_flag = format!("{listen}=reviews.default.svc.cluster.local:9080");
    let inbound_flag = format!("{inbound}={}", productpage.addr.port());
    let port_flag = format!("{}/http", productpage.addr.port());
    let binary = proxy_binary();
    let options = ProxyOptions::control_plane(
        &binary,
        weftd.grpc,
        &[
            "--node-id",
            "pp",
            "--workload",
            "productpage-v1",
            "--label",
            "app=productpage",
            "--label",
            "version=v1",
            "--listen",
            &listen_flag,
            "--port",
            &port_flag,
            "--inbound",
            &inbound_flag,
            "--access-log",
            &log_flag,
        ],
    );
    let mut proxy = ProxyProcess::spawn_ready(options, Duration::from_secs(20))
        .await
        .expect("proxy gets its config from weftd");
    apply(&weftd, OVERRIDES).await;
    holds(&proxy, "clientMetrics").await;

    let gold = [("x-user-tier", "gold")];
    assert_eq!(get(listen, "reviews", "/ok", &gold).await, StatusCode::OK);
    assert_eq!(
        get(listen, "reviews", "/fail", &[]).await,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        get(inbound, "productpage", "/in", &gold).await,
        StatusCode::OK
    );

    // CLIENT: the header's value (or `unknown` without it) as a new label,
    // a standard label changed, one removed.
    let client = series(&proxy, "istio_requests_total", "source").await;
    assert_eq!(client.len(), 2, "{client:#?}");
    assert!(
        client.iter().any(|l| l.contains("user_tier=\"gold\"")),
        "{client:#?}"
    );
    assert!(
        client.iter().any(|l| l.contains("user_tier=\"unknown\"")),
        "{client:#?}"
    );
    assert!(
        client.iter().all(|l| l.contains("request_protocol=\"GET\"")
            && !l.contains("destination_canonical_revision")),
        "{client:#?}"
    );
    // Only REQUEST_COUNT was overridden: the duration family keeps
    // Istio's labels.
    let duration = series(
        &proxy,
        "istio_request_duration_milliseconds_count",
        "source",
    )
    .await;
    assert!(
        !duration.is_empty()
            && duration
                .iter()
                .all(|l| l.contains("destination_canonical_revision") && !l.contains("user_tier")),
        "{duration:#?}"
    );
    // SERVER: Istio's labels unchanged, REQUEST_SIZE gone.
    let server = series(&proxy, "istio_requests_total", "destination").await;
    assert_eq!(server.len(), 1, "{server:#?}");
    assert!(
        server[0].contains("destination_canonical_revision") && !server[0].contains("user_tier"),
        "{server:#?}"
    );
    assert_eq!(
        series(&proxy, "istio_request_bytes_count", "destination").await,
        Vec::<String>::new()
    );
    assert_eq!(
        series(&proxy, "istio_request_bytes_count", "source")
            .await
            .len(),
        2
    );

    // Only the failed request is logged.
    let deadline = Instant::now() + Duration::from_millis(700);
    while lines(&log).is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let logged = lines(&log);
    assert_eq!(logged.len(), 1, "{logged:#?}");
    assert!(
        logged[0].contains("\"GET /fail HTTP/1.1\" 503"),
        "{logged:#?}"
    );

    // A push that changes the label sets: no series of the old ones stays,
    // and REQUEST_COUNT disabled on the CLIENT side records nothing.
    apply(
        &weftd,
        &OVERRIDES.replace(
            "      tagOverrides:\n        user_tier: {value: \"request.headers['x-user-tier']\"}\n        request_protocol: {value: \"request.method\"}\n        destination_canonical_revision: {operation: REMOVE}",
            "      disabled: true",
        ),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !series(&proxy, "istio_requests_total", "source")
        .await
        .is_empty()
    {
        assert!(Instant::now() < deadline, "old series still exposed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(get(listen, "reviews", "/ok", &gold).await, StatusCode::OK);
    assert_eq!(
        series(&proxy, "istio_requests_total", "source").await,
        Vec::<String>::new(),
        "REQUEST_COUNT disabled for CLIENT"
    );
    assert_eq!(
        series(
            &proxy,
            "istio_request_duration_milliseconds_count",
            "source"
        )
        .await
        .len(),
        1,
        "the other families still record"
    );
    assert!(proxy.is_running(), "{}", proxy.logs());
}
