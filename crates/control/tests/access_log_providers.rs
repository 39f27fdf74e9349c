//! Telemetry access-log providers with real weftd and weft-proxy
//! processes: a root Telemetry naming an `envoyOtelAls` provider (a
//! ServiceEntry for the test's own OTLP log collector) and an
//! `envoyFileAccessLog` provider makes every request one OpenTelemetry log
//! record (body and attributes from the provider's `logFormat`, as Envoy's
//! OpenTelemetry access logger writes them) and one JSON line in the
//! provider's file; a Telemetry change naming the file provider alone stops
//! the records live, and `disabled: true` stops the lines too; a Telemetry
//! naming Envoy's gRPC ALS is warned by `weft analyze`.

mod telemetry_support;

use telemetry_support::assert_apply_warns;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use http::StatusCode;
use weft_testkit::backend::HttpBackend;
use weft_testkit::client::Http1Client;
use weft_testkit::free_addr;
use weft_testkit::otlp::Collector;
use weft_testkit::proxy::{ProxyOptions, ProxyProcess};
use weft_testkit::weftd::WeftdProcess;

const WEFTD: &str = env!("CARGO_BIN_EXE_weftd");

async fn ask(listen: SocketAddr) -> StatusCode {
    let mut client = Http1Client::connect(listen).await.expect("connect");
    client
        .get("shop.example.test", "/hello")
        .await
        .expect("request")
        .status
}

/// A STATIC ServiceEntry `host` on `port` whose endpoint is `target`.
fn service_entry(name: &str, host: &str, port: u16, protocol: &str, target: SocketAddr) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {name}, namespace: default}}
spec:
  hosts: [{host}]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [{{number: {port}, name: {name}, protocol: {protocol}, targetPort: {target_port}}}]
  endpoints: [{{address: {ip}}}]
---
",
        target_port = target.port(),
        ip = target.ip()
    )
}

fn telemetry(access_logging: &str) -> String {
    format!(
        "apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {{name: mesh-default, namespace: istio-system}}
spec:
  accessLogging: {access_logging}
"
    )
}

fn lines(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .count()
}

/// Sends requests until `done` (or 10 s passed).
async fn until(listen: SocketAddr, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        assert_eq!(ask(listen).await, StatusCode::OK);
        tokio::time::sleep(Duration::from_millis(200)).await;
        if done() {
            return true;
        }
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otel_and_file_providers_get_each_request_and_switch_live() {
    let collector = Collector::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let audit = dir.path().join("audit.log");
    let file = dir.path().join("meshconfig.yaml");
    std::fs::write(
        &file,
        format!(
            "extensionProviders:
- name: otel
  envoyOtelAls:
    service: otel.example.test
    port: 4317
    logName: shop-access
    logFormat:
      text: 'OTEL %REQ(:METHOD)% %REQ(:PATH)% %RESPONSE_CODE%'
      labels: {{code: '%RESPONSE_CODE%', cluster: '%UPSTREAM_CLUSTER%', peer: '%DOWNSTREAM_PEER_URI_SAN%'}}
- name: audit
  envoyFileAccessLog:
    path: {}
    logFormat: {{labels: {{who: 'audit %REQ(:METHOD)%', code: '%RESPONSE_CODE%'}}}}
- name: als
  envoyHttpAls: {{service: otel.example.test, port: 4317}}
",
            audit.display()
        ),
    )
    .expect("write");
    let file_flag = file.display().to_string();
    let weftd = WeftdProcess::start_with(
        Path::new(WEFTD),
        &dir.path().join("store"),
        free_addr(),
        free_addr(),
        &["--mesh-config", &file_flag, "--config-interval", "100ms"],
    )
    .await
    .expect("weftd");
    let backend = HttpBackend::start("shop").await;
    let yaml = format!(
        "{}{}{}",
        service_entry("shop", "shop.example.test", 80, "HTTP", backend.addr),
        service_entry("otel", "otel.example.test", 4317, "GRPC", collector.addr),
        telemetry("[{providers: [{name: otel}, {name: audit}]}]"),
    );
    let applied = weftd.apply(&yaml).await.expect("apply");
    assert_eq!(applied.status, StatusCode::OK, "{}", applied.text());
    assert!(
        applied.text().contains("\"warnings\":[]"),
        "both providers are applied, not warned: {}",
        applied.text()
    );

    let listen = free_addr();
    let listen_flag = listen.to_string();
    let binary: PathBuf = weft_testkit::cli::sibling(WEFTD, "weft-proxy");
    let flags = [
        "--node-id",
        "caller",
        "--workload",
        "caller",
        "--listen",
        &listen_flag,
    ];
    let proxy = ProxyProcess::spawn_ready(
        ProxyOptions::control_plane(&binary, weftd.grpc, &flags),
        Duration::from_secs(20),
    )
    .await
    .expect("proxy ready");

    // Both providers: one OTLP record and one file line per request.
    let arrived = until(listen, || !collector.logs().is_empty() && lines(&audit) > 0).await;
    assert!(
        arrived,
        "records {} lines {}\n{}\n{}",
        collector.logs().len(),
        lines(&audit),
        proxy.logs(),
        weftd.logs()
    );
    let record = &collector.logs()[0];
    assert_eq!(record.body().as_deref(), Some("OTEL GET /hello 200"));
    assert_eq!(record.attribute("code").as_deref(), Some("i:200"), "typed");
    assert_eq!(
        record.attribute("cluster").as_deref(),
        Some("outbound|80||shop.example.test")
    );
    assert_eq!(record.attribute("peer").as_deref(), Some("-"), "unknown");
    assert_eq!(
        record.resource_attribute("log_name").as_deref(),
        Some("shop-access")
    );
    assert_eq!(
        record.resource_attribute("node_name").as_deref(),
        Some("caller")
    );
    assert!(record.record.time_unix_nano > 0, "the request's start");
    let text = std::fs::read_to_string(&audit).expect("audit file");
    let line: serde_json::Value =
        serde_json::from_str(text.lines().next().expect("a line")).expect("JSON");
    assert_eq!(line["who"], "audit GET", "{text}");
    assert_eq!(line["code"], 200, "{text}");
    assert!(
        !proxy.logs().contains("OTEL GET"),
        "no provider writes to the proxy's stdout"
    );

    // The Telemetry names the file provider alone: records stop, lines go on.
    let applied = weftd
        .apply(&telemetry("[{providers: [{name: audit}]}]"))
        .await
        .expect("apply");
    assert_eq!(applied.status, StatusCode::OK, "{}", applied.text());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (records, before) = (collector.logs().len(), lines(&audit));
        assert_eq!(ask(listen).await, StatusCode::OK);
        // Longer than both flush intervals (200 ms records, 100 ms lines).
        tokio::time::sleep(Duration::from_millis(800)).await;
        if collector.logs().len() == records && lines(&audit) > before {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "records still flow (or lines stopped)\n{}",
            proxy.logs()
        );
    }

    // disabled: true without providers turns the inherited ones off.
    let applied = weftd
        .apply(&telemetry("[{disabled: true}]"))
        .await
        .expect("apply");
    assert_eq!(applied.status, StatusCode::OK, "{}", applied.text());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let before = lines(&audit);
        assert_eq!(ask(listen).await, StatusCode::OK);
        tokio::time::sleep(Duration::from_millis(500)).await;
        if lines(&audit) == before {
            break;
        }
        assert!(Instant::now() < deadline, "lines still flow");
    }

    // A Telemetry naming Envoy's gRPC ALS: warned by the apply, by analyze
    // and in the compile warnings weftd logs, as tracing providers are.
    let legacy = "apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: legacy, namespace: legacy}
spec:
  accessLogging: [{providers: [{name: als}]}]
";
    let applied = weftd.apply(legacy).await.expect("apply");
    assert_eq!(applied.status, StatusCode::OK, "{}", applied.text());
    // Said by the apply itself, naming the resource and field.
    assert_apply_warns(
        &applied,
        "Telemetry legacy/legacy",
        "spec.accessLogging[0].providers[0]",
        "is a envoyHttpAls provider",
    );
    let weft = weft_testkit::cli::sibling(WEFTD, "weft");
    let api = weftd.api.to_string();
    let token = weftd.token_file().display().to_string();
    let analyzed =
        weft_testkit::cli::run(&weft, &["--weftd", &api, "--token-file", &token, "analyze"]);
    let all = format!("{}{}", analyzed.stdout, analyzed.stderr);
    assert!(
        all.contains("legacy/legacy") && all.contains("is a envoyHttpAls provider"),
        "{all}"
    );
    drop(proxy);
    drop(weftd);
}
