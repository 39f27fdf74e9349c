//! MeshConfig `accessLogFormat` with real weftd and weft-proxy processes:
//! a custom Envoy text format shapes the proxy's access-log lines, the same
//! MeshConfig with `accessLogEncoding: JSON` writes the object's fields
//! with their types, and a format naming an operator Envoy does not have is
//! refused with its field path while the previous format keeps applying;
//! an `envoyFileAccessLog` provider chosen by `defaultProviders` writes its
//! JSON labels to its own file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use http::StatusCode;
use weft_api::wire::MeshConfigReply;
use weft_testkit::backend::HttpBackend;
use weft_testkit::client::Http1Client;
use weft_testkit::free_addr;
use weft_testkit::proxy::{ProxyOptions, ProxyProcess};
use weft_testkit::weftd::WeftdProcess;

const WEFTD: &str = env!("CARGO_BIN_EXE_weftd");

async fn ask(listen: SocketAddr, host: &str) -> StatusCode {
    let mut client = Http1Client::connect(listen).await.expect("connect");
    client.get(host, "/hello").await.expect("request").status
}

async fn mesh_config(weftd: &WeftdProcess) -> MeshConfigReply {
    let reply = weftd
        .call(http::Method::GET, "/v1/meshconfig", None)
        .await
        .expect("GET /v1/meshconfig");
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    serde_json::from_str(&reply.text()).expect("a MeshConfigReply")
}

fn write(path: &Path, text: &str) {
    let partial = path.with_extension("partial");
    std::fs::write(&partial, text).expect("write");
    std::fs::rename(&partial, path).expect("rename");
}

/// Asks through the proxy until its output holds a line starting with
/// `prefix`; that line.
async fn logged_line(listen: SocketAddr, proxy: &ProxyProcess, prefix: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        assert_eq!(ask(listen, "shop.example.test").await, StatusCode::OK);
        let logs = proxy.logs();
        if let Some(line) = logs.lines().find(|l| l.starts_with(prefix)) {
            return line.to_string();
        }
        assert!(Instant::now() < deadline, "no line {prefix:?}:\n{logs}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_format_shapes_the_proxys_lines_and_a_bad_operator_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("meshconfig.yaml");
    write(
        &file,
        "accessLogFile: /dev/stdout\naccessLogFormat: 'WEFT %REQ(:METHOD)% %REQ(:PATH)% \
         %RESPONSE_CODE% %REQ(X-TENANT?USER-AGENT):4% %UPSTREAM_CLUSTER% %DOWNSTREAM_PEER_URI_SAN% \
         %START_TIME(%Y)%'\n",
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
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: shop}}
spec:
  hosts: [shop.example.test]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [{{number: 80, name: http, protocol: HTTP, targetPort: {port}}}]
  endpoints: [{{address: {ip}}}]
",
        port = backend.addr.port(),
        ip = backend.addr.ip()
    );
    let applied = weftd.apply(&yaml).await.expect("apply");
    assert_eq!(applied.status, StatusCode::OK, "{}", applied.text());
    assert!(
        !mesh_config(&weftd)
            .await
            .warnings
            .iter()
            .any(|w| w.contains("accessLogFormat")),
        "accessLogFormat is applied, not warned"
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

    // The text format: operators filled in, unknown values `-`, the
    // header fallback cut to 4 characters (the test client's user agent).
    let line = logged_line(listen, &proxy, "WEFT ").await;
    let year = &line[line.len() - 4..];
    assert!(year.starts_with("20"), "{line}");
    let fields: Vec<&str> = line.split(' ').collect();
    assert_eq!(fields[1..4], ["GET", "/hello", "200"], "{line}");
    assert_eq!(fields[5], "outbound|80||shop.example.test", "{line}");
    assert_eq!(fields[6], "-", "no peer certificate: {line}");
    assert!(fields[4].len() <= 4, "{line}");

    // A format naming an operator Envoy does not have: refused, named.
    write(
        &file,
        "accessLogFile: /dev/stdout\naccessLogFormat: 'BAD %PATH%'\n",
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let refused = loop {
        if let Some(refused) = mesh_config(&weftd).await.refused {
            break refused;
        }
        assert!(Instant::now() < deadline, "no refusal:\n{}", weftd.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        refused.contains("MeshConfig accessLogFormat: %PATH%: unknown command operator PATH"),
        "{refused}"
    );

    // JSON encoding: the object's fields, a lone operator keeping its type.
    write(
        &file,
        "accessLogFile: /dev/stdout\naccessLogEncoding: JSON\naccessLogFormat: \
         '{\"kind\": \"weft-json %REQ(:METHOD)%\", \"code\": \"%RESPONSE_CODE%\", \
         \"peer\": \"%DOWNSTREAM_PEER_URI_SAN%\", \"host\": \"%REQ(:AUTHORITY)%\"}'\n",
    );
    let line = logged_line(listen, &proxy, "{\"code\"").await;
    let entry: serde_json::Value = serde_json::from_str(&line).expect("a JSON line");
    assert_eq!(entry["kind"], "weft-json GET", "{line}");
    assert_eq!(entry["code"], 200, "{line}");
    assert_eq!(entry["peer"], serde_json::Value::Null, "{line}");
    assert_eq!(entry["host"], "shop.example.test", "{line}");
    assert!(
        !proxy.logs().contains("BAD "),
        "the bad format never applied"
    );

    // An envoyFileAccessLog provider chosen by defaultProviders: its file,
    // its labels as JSON; the proxy's stdout gets no more lines.
    let log_file = dir.path().join("provider.log");
    write(
        &file,
        &format!(
            "accessLogFile: /dev/stdout\naccessLogFormat: 'STDOUT %RESPONSE_CODE%'\n\
             extensionProviders:\n- name: shop-file\n  envoyFileAccessLog:\n    path: {}\n    \
             logFormat:\n      labels: {{provider: 'file %REQ(:METHOD)%', code: '%RESPONSE_CODE%', \
             cluster: '%UPSTREAM_CLUSTER%'}}\ndefaultProviders: {{accessLogging: [shop-file]}}\n",
            log_file.display()
        ),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let line = loop {
        assert_eq!(ask(listen, "shop.example.test").await, StatusCode::OK);
        let text = std::fs::read_to_string(&log_file).unwrap_or_default();
        if let Some(line) = text.lines().next() {
            break line.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "nothing in {}:\n{}",
            log_file.display(),
            weftd.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let entry: serde_json::Value = serde_json::from_str(&line).expect("a JSON line");
    assert_eq!(entry["provider"], "file GET", "{line}");
    assert_eq!(entry["code"], 200, "{line}");
    assert_eq!(entry["cluster"], "outbound|80||shop.example.test", "{line}");
    assert!(
        !proxy.logs().contains("STDOUT "),
        "accessLogFormat is the envoy provider's only"
    );
    let warnings = mesh_config(&weftd).await.warnings;
    assert!(
        !warnings.iter().any(|w| w.contains("shop-file")),
        "{warnings:?}"
    );
}
