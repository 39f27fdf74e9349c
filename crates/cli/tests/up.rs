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

mod support;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;
use weft_testkit::free_addr;
use weft_testkit::netns::privileged_or_skip;

use support::*;

const ALL_TO_V2: &str = r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: backend}
spec:
  hosts: [backend]
  http:
  - route:
    - destination: {host: backend, subset: v2}
"#;

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
