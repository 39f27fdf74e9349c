//! What the `weft up` tests share: a mesh of two small Python apps (a
//! frontend calling a backend by service name, backend in two versions)
//! and an ingress gateway, a runner that waits for its summary, and
//! checks that a mesh left nothing behind.
#![allow(dead_code)] // each test file uses its own part

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;
use weft_testkit::free_addr;

pub const WEFT: &str = env!("CARGO_BIN_EXE_weft");
pub const PYTHON: &str = "/usr/bin/python3";

pub const APP: &str = r#"
import http.client, os, socket
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ROLE = os.environ["ROLE"]
BIND = os.environ.get("BIND", "0.0.0.0")

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

class Server(ThreadingHTTPServer):
    # BIND "::" listens on every IPv6 and (mapped) IPv4 address.
    address_family = socket.AF_INET6 if ":" in BIND else socket.AF_INET

Server((BIND, int(os.environ["PORT"])), Handler).serve_forever()
"#;

pub const MESH: &str = r#"apiVersion: weft.dev/v1alpha1
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

pub const RULES: &str = r#"apiVersion: networking.istio.io/v1
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

/// A mesh directory and its own `$WEFT_HOME`, readable by anyone (the
/// unprivileged test runs the binary as another user).
pub struct MeshDir {
    pub dir: tempfile::TempDir,
    pub home: tempfile::TempDir,
    pub name: String,
}

impl MeshDir {
    pub fn new(tag: &str) -> Self {
        Self::with_mesh(tag, MESH)
    }

    /// With another mesh file than [`MESH`].
    pub fn with_mesh(tag: &str, mesh: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("app.py"), APP).expect("app");
        std::fs::write(dir.path().join("mesh.yaml"), mesh).expect("mesh");
        std::fs::write(dir.path().join("rules.yaml"), RULES).expect("rules");
        set_mode(dir.path(), 0o755);
        let home = tempfile::tempdir().expect("weft home");
        set_mode(home.path(), 0o755);
        // Distinct per test process too: namespaces are machine-wide.
        let name = format!("{tag}{}", std::process::id());
        Self { dir, home, name }
    }

    pub fn weft(&self) -> Command {
        let mut command = Command::new(WEFT);
        command
            .env("WEFT_HOME", self.home.path())
            .env_remove("WEFT_ADDR");
        command
    }

    /// Starts `weft up` and waits for its summary.
    pub fn up(&self) -> Up {
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

    pub fn state(&self) -> Value {
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
pub struct Up {
    pub child: Child,
    pub summary: String,
    stderr: std::sync::Arc<Mutex<String>>,
    pub ingress: SocketAddr,
    pub name: String,
}

impl Up {
    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().expect("log").clone()
    }

    pub fn netns(&self, pod: &str) -> String {
        format!("weft-{}-{pod}", self.name)
    }

    /// Waits for `weft up` to exit; its exit code.
    pub fn wait(&mut self, timeout: Duration) -> Option<i32> {
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
pub fn ensure_binaries() {
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
pub fn get_in(netns: &str, host: &str, port: u16, path: &str) -> (u16, String) {
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
pub fn requests_total(metrics: &str, labels: &[&str]) -> u64 {
    metrics
        .lines()
        .filter(|line| line.starts_with("istio_requests_total{"))
        .filter(|line| labels.iter().all(|label| line.contains(label)))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

pub fn get_host(address: SocketAddr, path: &str) -> (u16, String) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let reply = runtime
        .block_on(weft_testkit::client::get(address, "shop.example", path))
        .expect("request through the ingress");
    (reply.status.as_u16(), reply.text())
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

pub fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

pub fn namespaces_of(mesh: &str) -> Vec<String> {
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
pub fn assert_nothing_left(mesh: &MeshDir, pids: &[i32]) {
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

pub fn recorded_pids(state: &Value) -> Vec<i32> {
    state["processes"]
        .as_array()
        .expect("processes")
        .iter()
        .map(|p| p["pid"].as_i64().expect("pid") as i32)
        .collect()
}
