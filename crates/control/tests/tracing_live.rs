//! Tracing providers from MeshConfig and Telemetry, with real weftd and
//! weft-proxy processes: `defaultProviders.tracing` names an
//! `opentelemetry` provider (a ServiceEntry for the test's OTLP collector)
//! and the proxy exports there, with `defaultConfig.tracing.sampling` as
//! its sampling and a root Telemetry's `customTags`; rewriting the
//! MeshConfig file to the `zipkin` provider moves the spans there live; a
//! Telemetry naming a skywalking provider stops them, and `weft analyze`
//! says why.

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
use weft_testkit::zipkin::ZipkinCollector;

const WEFTD: &str = env!("CARGO_BIN_EXE_weftd");

async fn ask(listen: SocketAddr) -> StatusCode {
    let mut client = Http1Client::connect(listen).await.expect("connect");
    client
        .get("shop.example.test", "/")
        .await
        .expect("request")
        .status
}

fn write(path: &Path, text: &str) {
    // Through a rename, so weftd never reads half a file.
    let partial = path.with_extension("partial");
    std::fs::write(&partial, text).expect("write");
    std::fs::rename(&partial, path).expect("rename");
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

const PROVIDERS: &str = "extensionProviders:
- {name: otel, opentelemetry: {service: otel.example.test, port: 4317}}
- {name: zipkin, zipkin: {service: zipkin.example.test, port: 9411}}
- {name: sky, skywalking: {service: sky.example.test, port: 11800}}
defaultConfig: {tracing: {sampling: 100}}
";

/// Sends requests until `done` says the spans arrived (or 10 s passed).
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
async fn tracing_providers_follow_mesh_config_and_telemetry_live() {
    let collector = Collector::start().await;
    let zipkin = ZipkinCollector::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("meshconfig.yaml");
    write(
        &file,
        &format!("{PROVIDERS}defaultProviders: {{tracing: [otel]}}\n"),
    );
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
        "{}{}{}apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {{name: mesh-default, namespace: istio-system}}
spec:
  tracing:
  - customTags:
      team: {{literal: {{value: checkout}}}}
      user: {{header: {{name: x-user, defaultValue: anonymous}}}}
",
        service_entry("shop", "shop.example.test", 80, "HTTP", backend.addr),
        service_entry("otel", "otel.example.test", 4317, "GRPC", collector.addr),
        service_entry("zipkin", "zipkin.example.test", 9411, "HTTP", zipkin.addr),
    );
    let applied = weftd.apply(&yaml).await.expect("apply");
    assert_eq!(applied.status, StatusCode::OK, "{}", applied.text());

    let listen = free_addr();
    let listen_flag = listen.to_string();
    let binary: PathBuf = weft_testkit::cli::sibling(WEFTD, "weft-proxy");
    // --trace-sampling 0: only the MeshConfig's 100% samples anything.
    let flags = [
        "--node-id",
        "caller",
        "--workload",
        "caller",
        "--listen",
        &listen_flag,
        "--trace-sampling",
        "0",
    ];
    let proxy = ProxyProcess::spawn_ready(
        ProxyOptions::control_plane(&binary, weftd.grpc, &flags),
        Duration::from_secs(20),
    )
    .await
    .expect("proxy ready");

    let arrived = until(listen, || !collector.spans().is_empty()).await;
    assert!(arrived, "no OTLP span\n{}\n{}", proxy.logs(), weftd.logs());
    let span = &collector.spans()[0];
    assert_eq!(span.attribute("team").as_deref(), Some("checkout"));
    assert_eq!(span.attribute("user").as_deref(), Some("anonymous"));
    assert!(zipkin.spans().is_empty());

    // The MeshConfig's default provider changes: spans move to Zipkin.
    write(
        &file,
        &format!("{PROVIDERS}defaultProviders: {{tracing: [zipkin]}}\n"),
    );
    let arrived = until(listen, || !zipkin.spans().is_empty()).await;
    assert!(
        arrived,
        "no Zipkin span\n{}\n{}",
        proxy.logs(),
        weftd.logs()
    );
    let span = &zipkin.spans()[0];
    assert_eq!(span.path, "/api/v2/spans", "Istio's default path");
    assert_eq!(span.tag("team"), Some("checkout"));

    // A Telemetry naming the skywalking provider: no spans anywhere.
    let telemetry = "apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-default, namespace: istio-system}
spec:
  tracing: [{providers: [{name: sky}]}]
";
    let applied = weftd.apply(telemetry).await.expect("apply");
    assert_eq!(applied.status, StatusCode::OK, "{}", applied.text());
    // Said by the apply itself, naming the resource and field.
    assert_apply_warns(
        &applied,
        "Telemetry istio-system/mesh-default",
        "spec.tracing[0].providers[0]",
        "is a skywalking provider",
    );
    // Wait until a request no longer makes a Zipkin span.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let before = zipkin.spans().len() + collector.spans().len();
        assert_eq!(ask(listen).await, StatusCode::OK);
        tokio::time::sleep(Duration::from_millis(800)).await;
        if zipkin.spans().len() + collector.spans().len() == before {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "spans still flow\n{}",
            proxy.logs()
        );
    }

    let weft = weft_testkit::cli::sibling(WEFTD, "weft");
    let api = weftd.api.to_string();
    let token = weftd.token_file().display().to_string();
    let analyzed =
        weft_testkit::cli::run(&weft, &["--weftd", &api, "--token-file", &token, "analyze"]);
    let all = format!("{}{}", analyzed.stdout, analyzed.stderr);
    assert!(
        all.contains("istio-system/mesh-default") && all.contains("is a skywalking provider"),
        "{all}"
    );
    drop(proxy);
    drop(weftd);
}
