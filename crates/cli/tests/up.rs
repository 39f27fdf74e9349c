//! `weft up` for real: a mesh of two small Python apps (a frontend calling a
//! backend by service name, backend in two versions) and an ingress
//! gateway, each pod in its own network namespace behind its sidecar.
//! Asserts what a user notices: the summary, traffic through both sidecars
//! (their metrics count it), routing changed by `weft apply` with no flags,
//! that an app that dies is restarted, that `weft down`, Ctrl-C and a crash
//! followed by a new `weft up` leave nothing behind, and that a pod whose interception rules fail stops the
//! whole start-up (fail closed, never half-started).
//!
//! Needs root, `ip`, `iptables` and `setpriv`; under `CI=true` it fails
//! rather than skip. The mesh file error test runs anywhere.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;
use weft_testkit::free_addr;
use weft_testkit::netns::privileged_or_skip;

const WEFT: &str = env!("CARGO_BIN_EXE_weft");
const PYTHON: &str = "/usr/bin/python3";

const APP: &str = r#"
import http.client, os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ROLE = os.environ["ROLE"]

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        if ROLE == "frontend":
            try:
                connection = http.client.HTTPConnection("backend", 9000, timeout=5)
                connection.request("GET", self.path)
                reply = connection.getresponse()
                status, body = reply.status, "frontend -> " + reply.read().decode()
            except Exception as err:
                status, body = 502, "frontend: " + repr(err)
        else:
            status, body = 200, "backend %s %s" % (os.environ["VERSION"], os.environ["POD_NAME"])
        data = body.encode()
        self.send_response(status)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass

ThreadingHTTPServer(("0.0.0.0", int(os.environ["PORT"])), Handler).serve_forever()
"#;

const MESH: &str = r#"apiVersion: weft.dev/v1alpha1
kind: Mesh
metadata: {name: ignored-when-name-is-given}
spec:
  services:
  - {name: frontend, ports: [{name: http, port: 8000}], selector: {app: frontend}}
  - {name: backend, ports: [{name: http, port: 9000}], selector: {app: backend}}
  workloads:
  - name: frontend-v1
    serviceAccount: shop-frontend
    labels: {app: frontend, version: v1}
    ports: [{name: http, port: 8000}]
    command: [/usr/bin/python3, "${MESH_DIR}/app.py"]
    env: {ROLE: frontend, PORT: 8000}
  - name: backend-v1
    labels: {app: backend, version: v1}
    ports: [{name: http, port: 9000}]
    command: [/usr/bin/python3, app.py]
    env: {ROLE: backend, PORT: 9000, VERSION: v1}
    metrics: {port: 9000, path: /metrics}
  - name: backend-v2
    labels: {app: backend, version: v2}
    ports: [{name: http, port: 9000}]
    command: [/usr/bin/python3, app.py]
    env: {ROLE: backend, PORT: 9000, VERSION: v2}
  gateways:
  - name: ingress
    namespace: istio-system
    labels: {istio: ingressgateway}
    expose: [{hostAddress: "127.0.0.1:8080", port: 8080}]
"#;

const RULES: &str = r#"apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: backend}
spec:
  host: backend
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: web}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 8080, name: http, protocol: HTTP}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web}
spec:
  hosts: ["*"]
  gateways: [web]
  http:
  - route:
    - destination: {host: frontend, port: {number: 8000}}
"#;

const ALL_TO_V2: &str = r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: backend}
spec:
  hosts: [backend]
  http:
  - route:
    - destination: {host: backend, subset: v2}
"#;

/// A mesh directory and its own `$WEFT_HOME`, readable by anyone (the
/// unprivileged test runs the binary as another user).
struct MeshDir {
    dir: tempfile::TempDir,
    home: tempfile::TempDir,
    name: String,
}

impl MeshDir {
    fn new(tag: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("app.py"), APP).expect("app");
        std::fs::write(dir.path().join("mesh.yaml"), MESH).expect("mesh");
        std::fs::write(dir.path().join("rules.yaml"), RULES).expect("rules");
        set_mode(dir.path(), 0o755);
        let home = tempfile::tempdir().expect("weft home");
        set_mode(home.path(), 0o755);
        // Distinct per test process too: namespaces are machine-wide.
        let name = format!("{tag}{}", std::process::id());
        Self { dir, home, name }
    }

    fn weft(&self) -> Command {
        let mut command = Command::new(WEFT);
        command
            .env("WEFT_HOME", self.home.path())
            .env_remove("WEFT_ADDR");
        command
    }

    /// Starts `weft up` and waits for its summary.
    fn up(&self) -> Up {
        ensure_binaries();
        let ingress = free_addr();
        let mut child = self
            .weft()
            .args([
                "up",
                &self.dir.path().display().to_string(),
                "--name",
                &self.name,
            ])
            .args([
                "--ingress",
                &ingress.to_string(),
                "--api",
                &free_addr().to_string(),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn weft up");
        let (lines, summary) = mpsc::channel();
        let stdout = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = lines.send(line);
            }
        });
        let stderr = child.stderr.take().expect("stderr");
        let log = std::sync::Arc::new(Mutex::new(String::new()));
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[weft up] {line}");
                sink.lock().expect("log").push_str(&(line + "\n"));
            }
        });
        let mut up = Up {
            child,
            summary: String::new(),
            stderr: log,
            ingress,
            name: self.name.clone(),
        };
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            match summary.recv_timeout(Duration::from_millis(200)) {
                Ok(line) => {
                    up.summary.push_str(&(line + "\n"));
                    if up.summary.contains("to stop.") {
                        return up;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() < deadline => {
                    if let Ok(Some(status)) = up.child.try_wait() {
                        panic!("weft up exited ({status}):\n{}", up.stderr());
                    }
                }
                Err(_) => panic!(
                    "no summary from weft up within 90s:\n{}\n{}",
                    up.summary,
                    up.stderr()
                ),
            }
        }
    }

    fn state(&self) -> Value {
        let path = self
            .home
            .path()
            .join("meshes")
            .join(&self.name)
            .join("state.json");
        serde_json::from_str(&std::fs::read_to_string(&path).expect("state file")).expect("json")
    }
}

/// A running `weft up`; stopped (SIGTERM) on drop if a test failed early.
struct Up {
    child: Child,
    summary: String,
    stderr: std::sync::Arc<Mutex<String>>,
    ingress: SocketAddr,
    name: String,
}

impl Up {
    fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    fn stderr(&self) -> String {
        self.stderr.lock().expect("log").clone()
    }

    fn netns(&self, pod: &str) -> String {
        format!("weft-{}-{pod}", self.name)
    }

    /// Waits for `weft up` to exit; its exit code.
    fn wait(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "weft up still running after {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = kill(self.pid(), Signal::SIGTERM);
            let _ = self.child.wait();
        }
    }
}

/// weftd and weft-proxy next to `weft`: cargo builds only this package's
/// binaries for its integration tests, so build the other two once.
fn ensure_binaries() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let dir = Path::new(WEFT).parent().expect("target dir");
        // The profile this test was built with (`target/<profile>/weft`).
        let profile = match dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") | None => "dev",
            Some(other) => other,
        };
        let status = Command::new(env!("CARGO"))
            .args(["build", "-p", "weft-proxy", "-p", "weft-control", "--bins"])
            .args(["--profile", profile])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("run cargo build");
        assert!(status.success(), "building weftd and weft-proxy failed");
        for binary in ["weftd", "weft-proxy"] {
            assert!(
                dir.join(binary).is_file(),
                "{binary} not built in {}",
                dir.display()
            );
        }
    });
}

/// A GET from inside a namespace (with its /etc/netns hosts file), as a
/// process of the pod: `(status, body)`.
fn get_in(netns: &str, host: &str, port: u16, path: &str) -> (u16, String) {
    let script = format!(
        "import http.client\nc = http.client.HTTPConnection({host:?}, {port}, timeout=10)\nc.request('GET', {path:?})\nr = c.getresponse()\nprint(r.status)\nprint(r.read().decode(), end='')"
    );
    let output = Command::new("ip")
        .args(["netns", "exec", netns, PYTHON, "-c", &script])
        .output()
        .expect("ip netns exec");
    assert!(
        output.status.success(),
        "request in {netns} failed: {}",
        text(&output.stderr)
    );
    let out = text(&output.stdout);
    let (status, body) = out.split_once('\n').unwrap_or((&out, ""));
    (status.parse().expect("status"), body.to_string())
}

/// Sum of `istio_requests_total` samples whose labels contain all `labels`.
fn requests_total(metrics: &str, labels: &[&str]) -> u64 {
    metrics
        .lines()
        .filter(|line| line.starts_with("istio_requests_total{"))
        .filter(|line| labels.iter().all(|label| line.contains(label)))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

fn get_host(address: SocketAddr, path: &str) -> (u16, String) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let reply = runtime
        .block_on(weft_testkit::client::get(address, "shop.example", path))
        .expect("request through the ingress");
    (reply.status.as_u16(), reply.text())
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

fn namespaces_of(mesh: &str) -> Vec<String> {
    let output = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    text(&output.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| name.starts_with(&format!("weft-{mesh}-")))
        .map(String::from)
        .collect()
}

/// Nothing of the mesh is left: namespaces, /etc/netns dirs, processes,
/// the sidecar binary copy, the state file.
fn assert_nothing_left(mesh: &MeshDir, pids: &[i32]) {
    assert_eq!(
        namespaces_of(&mesh.name),
        Vec::<String>::new(),
        "namespaces left"
    );
    let etc: Vec<PathBuf> = std::fs::read_dir("/etc/netns")
        .map(|entries| entries.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    let prefix = format!("weft-{}-", mesh.name);
    assert!(
        !etc.iter().any(|p| p
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with(&prefix))),
        "/etc/netns entries left: {etc:?}"
    );
    for pid in pids {
        let alive = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|stat| !stat.contains(") Z "));
        assert!(!alive, "process {pid} still running");
    }
    assert!(
        !Path::new("/run/weft").join(&mesh.name).exists(),
        "runtime dir left"
    );
    // Links and rules only ever existed inside the mesh's namespaces.
    let links = Command::new("ip")
        .args(["-o", "link"])
        .output()
        .expect("ip link");
    let links = text(&links.stdout);
    assert!(
        !links.contains("weft0") && !links.contains(": wv"),
        "{links}"
    );
    let rules = Command::new("iptables-save")
        .args(["-t", "nat"])
        .output()
        .expect("iptables-save");
    assert!(
        !text(&rules.stdout).contains("ISTIO_"),
        "host nat rules changed"
    );
    let state = mesh
        .home
        .path()
        .join("meshes")
        .join(&mesh.name)
        .join("state.json");
    assert!(!state.exists(), "state file left");
}

fn recorded_pids(state: &Value) -> Vec<i32> {
    state["processes"]
        .as_array()
        .expect("processes")
        .iter()
        .map(|p| p["pid"].as_i64().expect("pid") as i32)
        .collect()
}

#[test]
fn a_mesh_comes_up_routes_through_both_sidecars_follows_weft_apply_and_goes_down_clean() {
    if !privileged_or_skip(
        "a_mesh_comes_up_routes_through_both_sidecars_follows_weft_apply_and_goes_down_clean",
    ) {
        return;
    }
    let mesh = MeshDir::new("upa");
    let mut up = mesh.up();
    for expected in [
        "frontend-v1-0",
        "backend-v2-0",
        "ingress-0",
        "backend.default.svc.cluster.local",
        "240.240.0.2",
        &format!("http://{}", up.ingress),
        "weftd API: 127.",
        "logs:",
        "Ctrl-C or `weft down",
    ] {
        assert!(
            up.summary.contains(expected),
            "{expected:?} not in summary:\n{}",
            up.summary
        );
    }

    // Through the ingress gateway, the frontend app calls `backend` by
    // name; both versions answer while no route says otherwise.
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..20 {
        let (status, body) = get_host(up.ingress, "/shop");
        assert_eq!(status, 200, "{body}");
        assert!(body.starts_with("frontend -> backend v"), "{body}");
        seen.insert(body[..22].to_string());
    }
    assert_eq!(seen.len(), 2, "both backend versions answer: {seen:?}");

    // Both sidecars saw every call: the frontend's as source, the backends'
    // as destination (metrics read from the node, where pods are reachable).
    let node = up.netns("node");
    let scrape = |ip: &str| get_in(&node, ip, 15090, "/stats/prometheus").1;
    let frontend = scrape("10.203.0.2");
    assert_eq!(
        requests_total(
            &frontend,
            &[
                "reporter=\"source\"",
                "destination_service=\"backend.default.svc.cluster.local\"",
                "response_code=\"200\""
            ]
        ),
        20,
        "{frontend}"
    );
    // The sidecar holds a workload certificate, about a day from expiry.
    let expiry = frontend
        .lines()
        .find_map(|l| l.strip_prefix("weft_certificate_expiry_timestamp_seconds "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let left = expiry - now;
    assert!(
        (23.0 * 3600.0..=24.0 * 3600.0 + 120.0).contains(&left),
        "certificate expiry {expiry} is {left}s away"
    );
    let backends: u64 = ["10.203.0.3", "10.203.0.4"]
        .iter()
        .map(|ip| {
            requests_total(
                &scrape(ip),
                &[
                    "reporter=\"destination\"",
                    "response_code=\"200\"",
                    // Sidecar to sidecar is mutual TLS, and the backend
                    // learns who called from the frontend's certificate.
                    "connection_security_policy=\"mutual_tls\"",
                    "source_principal=\"spiffe://cluster.local/ns/default/sa/shop-frontend\"",
                ],
            )
        })
        .sum();
    assert_eq!(backends, 20);
    // 15020 merges the sidecar's metrics with the app's (this test app
    // answers every path with its name).
    let merged = get_in(&node, "10.203.0.3", 15020, "/stats/prometheus").1;
    assert!(merged.contains("istio_requests_total"), "{merged}");
    assert!(merged.contains("backend v1 backend-v1-0"), "{merged}");

    // A process in the frontend pod dialling a backend pod's IP directly is
    // still intercepted: its own sidecar and the backend's count the call.
    let (status, body) = get_in(&up.netns("frontend-v1-0"), "10.203.0.3", 9000, "/direct");
    assert_eq!((status, body.as_str()), (200, "backend v1 backend-v1-0"));
    assert_eq!(
        requests_total(
            &scrape("10.203.0.2"),
            &["reporter=\"source\"", "destination_service=\"unknown\""]
        ),
        1
    );
    // Service names resolve to VIPs inside pods.
    let (status, body) = get_in(
        &up.netns("backend-v1-0"),
        "frontend.default.svc.cluster.local",
        8000,
        "/",
    );
    assert_eq!(status, 200, "{body}");

    // `weft apply` with no flags finds this mesh's weftd.
    // (Not in the mesh dir: weftd's directory source would load it.)
    let outside = tempfile::tempdir().expect("tempdir");
    let file = outside.path().join("all-v2.yaml");
    std::fs::write(&file, ALL_TO_V2).expect("write");
    let applied = mesh
        .weft()
        .args(["apply", "-f"])
        .arg(&file)
        .output()
        .expect("weft apply");
    assert!(
        applied.status.success(),
        "{}{}",
        text(&applied.stdout),
        text(&applied.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let bodies: Vec<String> = (0..10).map(|_| get_host(up.ingress, "/").1).collect();
        if bodies
            .iter()
            .all(|b| b.starts_with("frontend -> backend v2"))
        {
            break;
        }
        assert!(Instant::now() < deadline, "still not all v2: {bodies:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let status = mesh
        .weft()
        .arg("proxy-status")
        .output()
        .expect("proxy-status");
    let table = text(&status.stdout);
    assert_eq!(table.matches("SYNCED").count(), 4, "{table}");

    // `weft down` (no name: the only mesh in this WEFT_HOME) stops it all.
    let pids = recorded_pids(&mesh.state());
    assert_eq!(pids.len(), 8, "weftd, 4 sidecars/gateway, 3 apps");
    let down = mesh.weft().arg("down").output().expect("weft down");
    assert!(down.status.success(), "{}", text(&down.stderr));
    assert_eq!(up.wait(Duration::from_secs(30)), Some(0), "{}", up.stderr());
    assert_nothing_left(&mesh, &pids);
}

#[test]
fn a_crash_is_cleaned_up_by_the_next_up_apps_restart_and_ctrl_c_stops_it_all() {
    if !privileged_or_skip(
        "a_crash_is_cleaned_up_by_the_next_up_apps_restart_and_ctrl_c_stops_it_all",
    ) {
        return;
    }
    let mesh = MeshDir::new("upb");
    // A crash: the runner is killed outright; everything it made stays.
    let mut crashed = mesh.up();
    let leftovers = recorded_pids(&mesh.state());
    kill(crashed.pid(), Signal::SIGKILL).expect("kill -9");
    crashed.wait(Duration::from_secs(10));
    assert_eq!(
        namespaces_of(&mesh.name).len(),
        5,
        "node and 4 pods stay after a crash"
    );

    // The next `weft up` of the same mesh removes them and starts.
    let mut up = mesh.up();
    assert!(
        up.stderr().contains("did not stop cleanly"),
        "{}",
        up.stderr()
    );
    for pid in &leftovers {
        assert!(
            !Path::new(&format!("/proc/{pid}/cmdline")).exists() || {
                std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .is_ok_and(|s| s.contains(") Z "))
            },
            "leftover {pid} still running"
        );
    }
    let (status, body) = get_host(up.ingress, "/");
    assert_eq!(status, 200, "{body}");

    // An app that dies is restarted (after a 1 s backoff), and the state
    // file follows its new PID.
    let app_pid = |state: &Value| {
        state["processes"]
            .as_array()
            .expect("processes")
            .iter()
            .find(|p| p["label"] == "frontend-v1-0 app")
            .and_then(|p| p["pid"].as_i64())
            .expect("frontend app in the state file") as i32
    };
    let first = app_pid(&mesh.state());
    kill(Pid::from_raw(first), Signal::SIGKILL).expect("kill the app");
    let deadline = Instant::now() + Duration::from_secs(20);
    while app_pid(&mesh.state()) == first {
        assert!(
            Instant::now() < deadline,
            "app not restarted:\n{}",
            up.stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while get_host(up.ingress, "/").0 != 200 {
        assert!(Instant::now() < deadline, "restarted app does not answer");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        up.stderr().contains("frontend-v1-0 app restarted"),
        "{}",
        up.stderr()
    );

    // Ctrl-C: SIGINT to the runner, which undoes everything in order.
    let pids = recorded_pids(&mesh.state());
    kill(up.pid(), Signal::SIGINT).expect("SIGINT");
    assert_eq!(up.wait(Duration::from_secs(30)), Some(0), "{}", up.stderr());
    assert_nothing_left(&mesh, &pids);
}

#[test]
fn without_root_it_says_what_it_needs_and_creates_nothing() {
    if !privileged_or_skip("without_root_it_says_what_it_needs_and_creates_nothing") {
        return;
    }
    let mesh = MeshDir::new("upc");
    let output = Command::new("setpriv")
        .args([
            "--reuid",
            "65534",
            "--regid",
            "65534",
            "--clear-groups",
            WEFT,
            "up",
        ])
        .arg(mesh.dir.path())
        .args(["--name", &mesh.name])
        .env("WEFT_HOME", mesh.home.path())
        .output()
        .expect("run weft up as nobody");
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one message: {stderr}");
    assert!(stderr.contains("needs root privileges"), "{stderr}");
    assert!(stderr.contains("sudo"), "{stderr}");
    assert!(namespaces_of(&mesh.name).is_empty());
    assert!(
        !mesh.home.path().join("meshes").exists(),
        "nothing under WEFT_HOME"
    );
}

#[test]
fn mesh_file_errors_name_the_file_and_the_field() {
    let mesh = MeshDir::new("upd");
    let bad = MESH.replace("ports: [{name: http, port: 9000}]\n    command: [/usr/bin/python3, app.py]\n    env: {ROLE: backend, PORT: 9000, VERSION: v1}", "ports: [{name: http, port: 90000}]\n    command: [/usr/bin/python3, app.py]\n    env: {ROLE: backend, PORT: 9000, VERSION: v1}");
    assert_ne!(bad, MESH);
    std::fs::write(mesh.dir.path().join("mesh.yaml"), bad).expect("write");
    let output: Output = mesh
        .weft()
        .arg("up")
        .arg(mesh.dir.path())
        .output()
        .expect("weft up");
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("mesh.yaml: spec.workloads[1].ports[0].port: "),
        "{stderr}"
    );

    // A broken Istio file beside it stops `weft up` too, before anything.
    std::fs::write(mesh.dir.path().join("mesh.yaml"), MESH).expect("write");
    std::fs::write(
        mesh.dir.path().join("rules.yaml"),
        RULES.replace("host: backend", "host: \"\""),
    )
    .expect("write");
    let output = mesh
        .weft()
        .arg("up")
        .arg(mesh.dir.path())
        .output()
        .expect("weft up");
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("rules.yaml: DestinationRule default/backend: spec.host"),
        "{stderr}"
    );
    assert!(
        !mesh.home.path().join("meshes").exists(),
        "nothing under WEFT_HOME"
    );
}

#[test]
fn a_pod_whose_interception_rules_fail_stops_the_whole_start_up() {
    if !privileged_or_skip("a_pod_whose_interception_rules_fail_stops_the_whole_start_up") {
        return;
    }
    ensure_binaries();
    let mesh = MeshDir::new("upe");
    // An iptables-restore that refuses, found first on PATH.
    let fake = tempfile::tempdir().expect("tempdir");
    let tool = fake.path().join("iptables-restore");
    std::fs::write(
        &tool,
        "#!/bin/sh\necho 'iptables-restore: refused by the test' >&2\nexit 1\n",
    )
    .expect("write");
    set_mode(&tool, 0o755);
    let path = format!(
        "{}:{}",
        fake.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let output = mesh
        .weft()
        .arg("up")
        .arg(mesh.dir.path())
        .args(["--name", &mesh.name, "--ingress", &free_addr().to_string()])
        .args(["--api", &free_addr().to_string()])
        .env("PATH", path)
        .output()
        .expect("weft up");
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("pod frontend-v1-0: cannot install the interception rules")
            && stderr.contains("refused by the test"),
        "{stderr}"
    );
    // No app ever started, and everything made before the failure is gone.
    assert!(!stderr.contains("apps listening"), "{stderr}");
    assert_nothing_left(&mesh, &[]);
}
