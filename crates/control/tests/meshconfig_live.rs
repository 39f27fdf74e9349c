//! MeshConfig applied live, with real weftd and weft-proxy processes: the
//! file weftd watches is rewritten while a proxy serves, and the change
//! reaches the proxy (outboundTrafficPolicy ALLOW_ANY → REGISTRY_ONLY); an
//! invalid edit is refused whole, named by its field path, while the
//! previous MeshConfig keeps applying; `accessLogFile`/`accessLogEncoding`
//! switch the proxy's access log on, in JSON; `weft get meshconfig` and
//! `weft analyze` show what is in force and what is not applied.

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

/// Status and body of GET `host` through the proxy's listener.
async fn ask(listen: SocketAddr, host: &str) -> (StatusCode, String) {
    let mut client = Http1Client::connect(listen).await.expect("connect");
    let reply = client.get(host, "/").await.expect("request");
    (reply.status, reply.text())
}

/// Waits until asking `host` gives `status`; the last answer otherwise.
async fn wait_for(listen: SocketAddr, host: &str, status: StatusCode) -> (StatusCode, String) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = ask(listen, host).await;
        if answer.0 == status || Instant::now() > deadline {
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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
    // Through a rename, so weftd never reads half a file.
    let partial = path.with_extension("partial");
    std::fs::write(&partial, text).expect("write");
    std::fs::rename(&partial, path).expect("rename");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mesh_config_change_takes_effect_live_and_a_bad_one_is_refused_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("meshconfig.yaml");
    write(
        &file,
        "outboundTrafficPolicy: {mode: ALLOW_ANY}\ningressClass: istio\n",
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
    let (status, body) = wait_for(listen, "shop.example.test", StatusCode::OK).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // ALLOW_ANY: an unknown host is not a declared service, but not the
    // BlackHoleCluster either (an explicit listener has nowhere to pass
    // it through to).
    let (status, body) = ask(listen, "unknown.example.test").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert!(!body.contains("REGISTRY_ONLY"), "{body}");

    // The file changes while the proxy runs: the next push carries it.
    let changed_at = Instant::now();
    write(&file, "outboundTrafficPolicy: {mode: REGISTRY_ONLY}\n");
    let (status, body) = wait_for(listen, "unknown.example.test", StatusCode::BAD_GATEWAY).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}\n{}", weftd.logs());
    assert!(body.contains("REGISTRY_ONLY"), "{body}");
    eprintln!(
        "REGISTRY_ONLY in force at the proxy {:?} after the write",
        changed_at.elapsed()
    );
    assert_eq!(ask(listen, "shop.example.test").await.0, StatusCode::OK);

    // An invalid edit (a good field beside a bad one) is refused whole.
    write(
        &file,
        "outboundTrafficPolicy: {mode: ALLOW_ANY}\nconnectTimeout: soon\n",
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let refused = loop {
        let now = mesh_config(&weftd).await;
        if let Some(refused) = now.refused {
            break refused;
        }
        assert!(
            Instant::now() < deadline,
            "no refusal; log:\n{}",
            weftd.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        refused.contains("meshconfig.yaml: MeshConfig connectTimeout: \"soon\" is not a duration"),
        "{refused}"
    );
    assert!(weftd.logs().contains("MeshConfig change refused"));
    // Past a few pushes' time, the proxy still refuses unknown hosts.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, body) = ask(listen, "unknown.example.test").await;
    assert_eq!(
        status,
        StatusCode::BAD_GATEWAY,
        "the previous config stays: {body}"
    );
    let in_force = mesh_config(&weftd).await;
    assert_eq!(
        in_force.config["outboundTrafficPolicy"]["mode"],
        "REGISTRY_ONLY"
    );
    assert_eq!(in_force.source, format!("file {}", file.display()));

    // Access logs: off so far (no --access-log, no Telemetry); the
    // MeshConfig switches them on, in JSON.
    assert!(!proxy.logs().contains("\"authority\":\"shop.example.test\""));
    write(
        &file,
        "outboundTrafficPolicy: {mode: REGISTRY_ONLY}\naccessLogFile: /dev/stdout\n\
         accessLogEncoding: JSON\n",
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let line = loop {
        assert_eq!(ask(listen, "shop.example.test").await.0, StatusCode::OK);
        let logs = proxy.logs();
        if let Some(line) = logs
            .lines()
            .find(|l| l.contains("\"authority\":\"shop.example.test\""))
        {
            break line.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no JSON access log line:\n{logs}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let entry: serde_json::Value = serde_json::from_str(&line).expect("a JSON line");
    assert_eq!(entry["response_code"], 200, "{line}");

    // What users see: `weft get meshconfig` and `weft analyze`.
    write(
        &file,
        "outboundTrafficPolicy: {mode: REGISTRY_ONLY}\nenablePrometheusMerge: false\n",
    );
    let weft = weft_testkit::cli::sibling(WEFTD, "weft");
    let api = weftd.api.to_string();
    let token = weftd.token_file().display().to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    let shown = loop {
        let run = weft_testkit::cli::run(
            &weft,
            &["--weftd", &api, "--token-file", &token, "get", "meshconfig"],
        );
        assert_eq!(run.code, 0, "{}", run.stderr);
        if run.stdout.contains("enablePrometheusMerge") || Instant::now() > deadline {
            break run.stdout;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        shown.contains(&format!("from file {}", file.display())),
        "{shown}"
    );
    assert!(
        shown.contains("# warning: enablePrometheusMerge: not implemented by Weft; ignored"),
        "{shown}"
    );
    assert!(shown.contains("mode: REGISTRY_ONLY"), "{shown}");
    assert!(
        shown.contains("connectTimeout: 10s"),
        "defaults shown: {shown}"
    );
    let analyzed =
        weft_testkit::cli::run(&weft, &["--weftd", &api, "--token-file", &token, "analyze"]);
    assert!(
        analyzed.stdout.contains("WEFT0001") && analyzed.stdout.contains("enablePrometheusMerge"),
        "{}\n{}",
        analyzed.stdout,
        analyzed.stderr
    );
    drop(proxy);
    drop(weftd);
}

#[tokio::test]
async fn weftd_refuses_to_start_under_an_invalid_mesh_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("meshconfig.yaml");
    write(
        &file,
        "extensionProviders:\n- name: authz\n  envoyExtAuthzGrpc: {port: 9000}\n",
    );
    let file_flag = file.display().to_string();
    let started = WeftdProcess::start_with(
        Path::new(WEFTD),
        &dir.path().join("store"),
        free_addr(),
        free_addr(),
        &["--mesh-config", &file_flag],
    )
    .await;
    let err = format!("{:#}", started.err().expect("refused"));
    assert!(
        err.contains("MeshConfig extensionProviders[0].envoyExtAuthzGrpc.service: required"),
        "{err}"
    );
}
