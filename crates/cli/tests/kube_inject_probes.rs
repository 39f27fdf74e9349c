//! App probes end to end, without a cluster: `weft kube-inject` rewrites a
//! Deployment's probes, then the injected sidecar's own environment
//! (`ISTIO_KUBE_APP_PROBERS`) is handed to a real weft-proxy, and the
//! rewritten probes are sent to it as the kubelet would: they answer with
//! the real app's health.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use weft_testkit::netns::{NetNs, privileged_or_skip};

const WEFT: &str = env!("CARGO_BIN_EXE_weft");

/// Kills the proxy this test started when the test ends, however it ends.
struct Started(Child);

impl Drop for Started {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An app on `addr` answering `GET /healthz` with 200 while `healthy`,
/// else 500.
fn app(addr: &str, healthy: Arc<AtomicBool>) -> SocketAddr {
    let listener = TcpListener::bind(addr).expect("bind app");
    let addr = listener.local_addr().expect("app address");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut request = [0u8; 2048];
            let read = stream.read(&mut request).unwrap_or(0);
            let text = String::from_utf8_lossy(&request[..read]);
            let answer = if !text.starts_with("GET /healthz ") {
                "404 Not Found"
            } else if healthy.load(Ordering::SeqCst) {
                "200 OK"
            } else {
                "500 Internal Server Error"
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {answer}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            );
        }
    });
    addr
}

/// The kubelet's GET: the status code, or None if nothing answers.
fn kubelet_get(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nhost: {addr}\r\nuser-agent: kube-probe/1.36\r\nconnection: close\r\n\r\n"
    )
    .ok()?;
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.split(' ').nth(1)?.parse().ok()
}

/// `weft kube-inject` of a Deployment whose container `web` has an httpGet
/// probe on a named port, a tcpSocket probe and an exec probe.
fn inject(dir: &std::path::Path, web_port: u16, db_port: u16, kube_version: &str) -> Output {
    let manifest = dir.join("deploy.yaml");
    std::fs::write(
        &manifest,
        format!(
            r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: shop, namespace: default}}
spec:
  selector: {{matchLabels: {{app: shop}}}}
  template:
    metadata: {{labels: {{app: shop}}}}
    spec:
      containers:
      - name: web
        image: shop:1
        ports: [{{name: http, containerPort: {web_port}}}]
        livenessProbe: {{httpGet: {{path: /healthz, port: http}}, timeoutSeconds: 2}}
        readinessProbe: {{tcpSocket: {{port: {db_port}}}}}
        startupProbe: {{exec: {{command: ["true"]}}}}
"#
        ),
    )
    .expect("manifest");
    Command::new(WEFT)
        .args(["kube-inject", "-f"])
        .arg(&manifest)
        .args(["--kube-version", kube_version])
        .output()
        .expect("weft runs")
}

/// The injected pod's `(init container args, sidecar's probers JSON)`.
fn injected_parts(out: &Output) -> (Vec<String>, String) {
    let documents =
        weft_api::decode::parse_documents(&String::from_utf8_lossy(&out.stdout)).expect("YAML");
    let spec = &documents[0]["spec"]["template"]["spec"];
    let init: Vec<String> =
        serde_json::from_value(spec["initContainers"][0]["args"].clone()).expect("init args");
    let probers = spec["initContainers"][1]["env"]
        .as_array()
        .expect("env")
        .iter()
        .find(|e| e["name"] == "ISTIO_KUBE_APP_PROBERS")
        .and_then(|e| e["value"].as_str())
        .expect("ISTIO_KUBE_APP_PROBERS")
        .to_string();
    (init, probers)
}

fn probe_of<'a>(container: &'a Value, kind: &str) -> &'a Value {
    &container[kind]
}

#[test]
fn injected_probes_reach_the_app_through_the_sidecar() {
    let healthy = Arc::new(AtomicBool::new(true));
    let web = app("127.0.0.1:0", healthy.clone());
    let db = TcpListener::bind("127.0.0.1:0").expect("bind db");
    let db_port = db.local_addr().expect("db").port();
    let dir = tempfile::tempdir().expect("dir");
    let out = inject(dir.path(), web.port(), db_port, "1.36");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("probes not rewritten"), "{stderr}");
    let documents =
        weft_api::decode::parse_documents(&String::from_utf8_lossy(&out.stdout)).expect("YAML");
    let spec = &documents[0]["spec"]["template"]["spec"];
    let app = &spec["containers"][0];
    assert_eq!(
        probe_of(app, "livenessProbe")["httpGet"],
        serde_json::json!({"path": "/app-health/web/livez", "port": 15020, "scheme": "HTTP"})
    );
    assert_eq!(probe_of(app, "livenessProbe")["timeoutSeconds"], 2);
    assert_eq!(
        probe_of(app, "readinessProbe")["httpGet"]["path"],
        "/app-health/web/readyz"
    );
    assert!(probe_of(app, "readinessProbe")["tcpSocket"].is_null());
    assert_eq!(
        probe_of(app, "startupProbe")["exec"]["command"][0],
        "true",
        "exec probes stay"
    );
    // Native sidecar (1.29+): weft-init, then weft-proxy.
    let sidecar = &spec["initContainers"][1];
    assert_eq!(sidecar["name"], "weft-proxy");
    let probers = sidecar["env"]
        .as_array()
        .expect("env")
        .iter()
        .find(|e| e["name"] == "ISTIO_KUBE_APP_PROBERS")
        .and_then(|e| e["value"].as_str())
        .expect("ISTIO_KUBE_APP_PROBERS")
        .to_string();

    // The sidecar, given its injected environment; its listeners moved to
    // free loopback ports (this runs beside other tests).
    let config = dir.path().join("proxy.yaml");
    std::fs::write(&config, "version: probes\n").expect("config");
    let free = || weft_testkit::free_addr().to_string();
    let status: SocketAddr = weft_testkit::free_addr();
    let proxy = weft_testkit::cli::sibling(WEFT, "weft-proxy");
    let _proxy = Started(
        Command::new(proxy)
            .arg("--config")
            .arg(&config)
            .args(["--status", &status.to_string()])
            .args([
                "--admin",
                &free(),
                "--health",
                &free(),
                "--metrics",
                &free(),
            ])
            .env("ISTIO_KUBE_APP_PROBERS", &probers)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("weft-proxy starts"),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while kubelet_get(status, "/app-health/web/livez").is_none() {
        assert!(Instant::now() < deadline, "the status port never answered");
        std::thread::sleep(Duration::from_millis(100));
    }

    assert_eq!(kubelet_get(status, "/app-health/web/livez"), Some(200));
    assert_eq!(kubelet_get(status, "/app-health/web/readyz"), Some(200));
    // The exec probe was not rewritten, so it has no path here.
    assert_eq!(kubelet_get(status, "/app-health/web/startupz"), Some(404));
    healthy.store(false, Ordering::SeqCst);
    assert_eq!(kubelet_get(status, "/app-health/web/livez"), Some(500));
    drop(db);
    assert_eq!(kubelet_get(status, "/app-health/web/readyz"), Some(503));
}

/// The rewritten pod template is one a real API server accepts (skipped
/// without `WEFT_TEST_KUBE_APISERVER`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_probes_are_accepted_by_a_real_api_server() -> anyhow::Result<()> {
    let test = "injected_probes_are_accepted_by_a_real_api_server";
    let Some(binary) = weft_testkit::kube::apiserver_or_skip(test) else {
        return Ok(());
    };
    let cluster = weft_testkit::kube::KubeCluster::start(&binary).await?;
    let dir = tempfile::tempdir()?;
    for (namespace, version) in [("classic", "1.28"), ("native", "1.36")] {
        let out = inject(dir.path(), 8080, 5432, version);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut documents =
            weft_api::decode::parse_documents(&String::from_utf8_lossy(&out.stdout))
                .map_err(anyhow::Error::msg)?;
        let mut deployment = documents.remove(0);
        deployment["metadata"]["namespace"] = namespace.into();
        cluster.namespace(namespace, &[]).await?;
        cluster
            .create(namespace, deployment)
            .await
            .map_err(|err| anyhow::anyhow!("{namespace}: {err:#}"))?;
    }
    Ok(())
}

/// In a network namespace with the capture the injected init container
/// installs: the kubelet's probe reaches 15020, and the proxy's replay (UID
/// 1337) reaches the app on the pod IP directly. Were it captured, it would
/// be sent to 15001, where nothing listens here, and the probe would fail.
#[test]
fn the_replayed_probe_is_not_captured_back_into_the_sidecar() {
    if !privileged_or_skip("the_replayed_probe_is_not_captured_back_into_the_sidecar") {
        return;
    }
    const POD_IP: &str = "10.77.0.2";
    let (web_port, db_port) = (18080, 15432);
    let dir = tempfile::tempdir().expect("dir");
    let out = inject(dir.path(), web_port, db_port, "1.36");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (init_args, probers) = injected_parts(&out);

    let netns = NetNs::create("appprobe").expect("netns");
    netns
        .exec(&["ip", "addr", "add", &format!("{POD_IP}/32"), "dev", "lo"])
        .expect("pod address");
    let mut init = netns.prefix();
    init.push(WEFT.to_string());
    init.extend(init_args);
    let status = Command::new(&init[0])
        .args(&init[1..])
        .output()
        .expect("weft intercept runs");
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );

    // Readable by UID 1337.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let config = dir.path().join("proxy.yaml");
    // No listeners: nothing serves 15001, so a captured replay would fail.
    std::fs::write(&config, "version: probes\n").expect("config");
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let mut proxy = netns.prefix_as("1337");
    proxy.push(
        weft_testkit::cli::sibling(WEFT, "weft-proxy")
            .display()
            .to_string(),
    );
    let _proxy = Started(
        Command::new(&proxy[0])
            .args(&proxy[1..])
            .arg("--config")
            .arg(&config)
            .args(["--address", POD_IP])
            .env("ISTIO_KUBE_APP_PROBERS", &probers)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("weft-proxy starts"),
    );

    netns
        .run(|| {
            let healthy = Arc::new(AtomicBool::new(true));
            app(&format!("{POD_IP}:{web_port}"), healthy.clone());
            let _db = TcpListener::bind((POD_IP, db_port)).expect("bind db");
            // Capture is on: the test (not UID 1337) dialling the app's
            // pod address is sent to 15001, which nothing serves.
            assert!(
                kubelet_get(
                    format!("{POD_IP}:{web_port}").parse().expect("addr"),
                    "/healthz"
                )
                .is_none(),
                "the app was reached around the capture: is it installed?"
            );
            // The kubelet's side: 15020 (here on loopback, which capture
            // leaves alone as it leaves 15020 inbound).
            let status: SocketAddr = "127.0.0.1:15020".parse().expect("addr");
            let deadline = Instant::now() + Duration::from_secs(20);
            while kubelet_get(status, "/app-health/web/livez").is_none() {
                assert!(Instant::now() < deadline, "the status port never answered");
                std::thread::sleep(Duration::from_millis(100));
            }
            assert_eq!(kubelet_get(status, "/app-health/web/livez"), Some(200));
            assert_eq!(kubelet_get(status, "/app-health/web/readyz"), Some(200));
            healthy.store(false, Ordering::SeqCst);
            assert_eq!(kubelet_get(status, "/app-health/web/livez"), Some(500));
        })
        .expect("enter namespace");
}
