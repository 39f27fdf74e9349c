//! Pods that are pods, under `weft up` for real: every app runs as its
//! workload's UID (never root), each pod's processes see only their own
//! pod's files (not another pod's token, not weftd's CA key, nothing of
//! `$WEFT_HOME`), the sidecar's token is the sidecar's alone, IPv6 is off
//! so an app bound to `[::]` cannot be reached around its sidecar, and a
//! connection straight to a sidecar's own `:15006` is closed at once
//! rather than looped. Checks run inside a pod's namespaces as its app
//! would (`nsenter` into the app's network and mount namespaces, then
//! `setpriv` to its UID), each beside a control showing the same check can
//! succeed. A sidecar killed is restarted with a fresh token.
//!
//! Needs root, `ip`, `iptables`, `nsenter` and `setpriv`; under `CI=true`
//! it fails rather than skip.

mod support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;
use weft_testkit::netns::privileged_or_skip;
use weft_testkit::prometheus::sample;

use support::*;

/// Pod addresses in declaration order (see MESH).
const FRONTEND_IP: &str = "10.203.0.2";
const BACKEND_V1_IP: &str = "10.203.0.3";
const PODS: [&str; 4] = ["frontend-v1-0", "backend-v1-0", "backend-v2-0", "ingress-0"];

/// The shared mesh, with backend-v2 on a UID of its choosing and bound to
/// `[::]` (every IPv6 address, and IPv4 through mapped addresses).
fn mesh_file() -> String {
    let mesh = MESH.replace(
        "env: {ROLE: backend, PORT: 9000, VERSION: v2}",
        "env: {ROLE: backend, PORT: 9000, VERSION: v2, BIND: \"::\"}\n    uid: 23456",
    );
    assert_ne!(mesh, MESH);
    mesh
}

fn pid_of(state: &Value, label: &str) -> u32 {
    state["processes"]
        .as_array()
        .expect("processes")
        .iter()
        .find(|p| p["label"] == label)
        .and_then(|p| p["pid"].as_u64())
        .unwrap_or_else(|| panic!("{label} not in the state file: {state}")) as u32
}

/// (real, effective, saved, fs) UIDs and GIDs of a process.
fn ids(pid: u32) -> (Vec<u32>, Vec<u32>) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let field = |name: &str| -> Vec<u32> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .expect("field")
            .split_whitespace()
            .map(|v| v.parse().expect("id"))
            .collect()
    };
    (field("Uid:"), field("Gid:"))
}

/// `argv` inside the network and mount namespaces of process `pid`, as
/// `uid` (and the same GID, no groups).
fn in_pod(pid: u32, uid: u32, argv: &[&str]) -> Output {
    let (pid, uid) = (pid.to_string(), uid.to_string());
    Command::new("nsenter")
        .args(["-t", &pid, "-n", "-m", "--"])
        .args([
            "setpriv",
            "--reuid",
            &uid,
            "--regid",
            &uid,
            "--clear-groups",
        ])
        .args(argv)
        .output()
        .expect("nsenter")
}

/// The link-local address an interface with this MAC would take (EUI-64).
fn link_local(mac: &str) -> String {
    let b: Vec<u8> = mac
        .split(':')
        .map(|x| u8::from_str_radix(x, 16).expect("mac"))
        .collect();
    format!(
        "fe80::{:02x}{:02x}:{:02x}ff:fe{:02x}:{:02x}{:02x}",
        b[0] ^ 0x02,
        b[1],
        b[2],
        b[3],
        b[4],
        b[5]
    )
}

/// Connects to `host:port`, sends an HTTP request and prints what came
/// back: `closed` if the peer closed without a byte, `refused`/`failed`.
const PROBE: &str = r#"
import socket, sys, time
host, port = sys.argv[1], int(sys.argv[2])
began = time.monotonic()
try:
    s = socket.create_connection((host, port), timeout=3)
except OSError as err:
    print("failed", err)
    sys.exit(0)
s.settimeout(5)
try:
    s.sendall(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
    data = s.recv(100)
    print("closed" if not data else "answered %r" % data, round(time.monotonic() - began, 2))
except ConnectionResetError:
    print("closed", round(time.monotonic() - began, 2))
except socket.timeout:
    print("open after 5s")
"#;

#[test]
fn pods_run_unprivileged_see_only_their_own_files_and_cannot_go_around_their_sidecars() {
    if !privileged_or_skip(
        "pods_run_unprivileged_see_only_their_own_files_and_cannot_go_around_their_sidecars",
    ) {
        return;
    }
    let mesh = MeshDir::with_mesh("pod", &mesh_file());
    let up = mesh.up();
    let state = mesh.state();
    assert!(
        up.summary.contains("app (uid 23456) + sidecar"),
        "{}",
        up.summary
    );

    // Apps run as their workload's UID and GID: the default 20000 + index,
    // or the mesh file's; sidecars and the gateway as 1337.
    for (pod, uid) in [
        ("frontend-v1-0", 20000),
        ("backend-v1-0", 20001),
        ("backend-v2-0", 23456),
    ] {
        let app = pid_of(&state, &format!("{pod} app"));
        assert_eq!(ids(app), (vec![uid; 4], vec![uid; 4]), "{pod} app");
        let sidecar = pid_of(&state, &format!("{pod} sidecar"));
        assert_eq!(
            ids(sidecar),
            (vec![1337; 4], vec![1337; 4]),
            "{pod} sidecar"
        );
    }
    let gateway = pid_of(&state, "ingress-0 sidecar");
    assert_eq!(ids(gateway).0, vec![1337; 4]);
    // weftd serves discovery over TLS only; the sidecars verify it with
    // the root in their pod directory.
    // One token per pod, bound to its workload's group and its address,
    // as `weft token list` (which finds this mesh by itself) shows.
    let tokens = mesh
        .weft()
        .args(["token", "list"])
        .output()
        .expect("weft token list");
    let table = text(&tokens.stdout);
    for (group, address) in [
        ("default/frontend-v1", FRONTEND_IP),
        ("default/backend-v1", BACKEND_V1_IP),
        ("istio-system/ingress", "10.203.0.5"),
    ] {
        assert!(
            table
                .lines()
                .any(|l| l.contains(&format!(" {group} ")) && l.contains(address)),
            "{group} at {address} in:\n{table}{}",
            text(&tokens.stderr)
        );
    }
    let cmdline = |pid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
            .expect("cmdline")
            .replace('\0', " ")
    };
    let weftd = cmdline(pid_of(&state, "weftd"));
    assert!(
        weftd.contains("--xds ") && !weftd.contains("--plaintext-grpc"),
        "{weftd}"
    );
    let sidecar = cmdline(pid_of(&state, "frontend-v1-0 sidecar"));
    assert!(
        sidecar.contains(&format!(
            "--ca-root /run/weft/{}/pods/frontend-v1-0/sidecar/root-cert.pem",
            mesh.name
        )) && !sidecar.contains("--plaintext-control-plane"),
        "{sidecar}"
    );

    // On the host each sidecar's token is there, the sidecar's own, 0400;
    // weftd's CA key and state file are under $WEFT_HOME.
    let runtime = PathBuf::from("/run/weft").join(&mesh.name);
    let token = |pod: &str| runtime.join("pods").join(pod).join("sidecar/token");
    for pod in PODS {
        let meta = std::fs::metadata(token(pod)).expect("token on the host");
        assert_eq!(
            (meta.uid(), meta.gid(), meta.permissions().mode() & 0o777),
            (1337, 1337, 0o400),
            "{pod}"
        );
        assert!(meta.len() > 0);
    }
    let home = mesh.home.path().to_path_buf();
    let ca_key = home
        .join("meshes")
        .join(&mesh.name)
        .join("weftd/ca/root-key.pem");
    assert!(ca_key.is_file(), "{} on the host", ca_key.display());

    let frontend = pid_of(&state, "frontend-v1-0 app");
    let show = |out: &Output| {
        format!(
            "status {}; stdout {:?}; stderr {:?}",
            out.status,
            text(&out.stdout),
            text(&out.stderr)
        )
    };
    let path = |p: &Path| p.display().to_string();
    // The app sees its own pod's token and cannot read it; its sidecar can.
    let own = path(&token("frontend-v1-0"));
    let out = in_pod(frontend, 20000, &["cat", &own]);
    assert!(
        !out.status.success() && text(&out.stderr).contains("Permission denied"),
        "{}",
        show(&out)
    );
    let out = in_pod(frontend, 1337, &["cat", &own]);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(
        out.stdout,
        std::fs::read(token("frontend-v1-0")).expect("token"),
        "the sidecar reads its own token in its pod"
    );
    // Another pod's token is not there at all, not even for UID 1337; nor
    // weftd's CA key; $WEFT_HOME is empty.
    for uid in [20000, 1337] {
        for hidden in [token("backend-v1-0"), token("ingress-0"), ca_key.clone()] {
            let out = in_pod(frontend, uid, &["cat", &path(&hidden)]);
            assert!(
                !out.status.success() && text(&out.stderr).contains("No such file"),
                "{} as {uid}: {}",
                hidden.display(),
                show(&out)
            );
        }
    }
    // Nor through another pod's sidecar, though it shares UID 1337: a
    // sidecar is not dumpable, so its /proc/PID/root is closed.
    let backend_sidecar = pid_of(&state, "backend-v1-0 sidecar");
    let around = format!(
        "/proc/{backend_sidecar}/root{}",
        path(&token("backend-v1-0"))
    );
    let out = in_pod(frontend, 1337, &["cat", &around]);
    assert!(
        !out.status.success() && text(&out.stderr).contains("Permission denied"),
        "{around} as 1337 from another pod: {}",
        show(&out)
    );
    let out = in_pod(frontend, 20000, &["ls", "-A", &path(&home)]);
    assert!(
        out.status.success() && out.stdout.is_empty(),
        "{}",
        show(&out)
    );
    // Its own code is there (the mesh directory, read-only).
    let code = runtime.join("mesh/app.py");
    let out = in_pod(frontend, 20000, &["cat", &path(&code)]);
    assert!(out.status.success(), "{}", show(&out));
    let out = in_pod(frontend, 20000, &["touch", &path(&runtime.join("mesh/x"))]);
    assert!(!out.status.success(), "mesh dir writable: {}", show(&out));

    // IPv6 is off in every pod: no address (not even link-local).
    for pod in PODS {
        let out = Command::new("ip")
            .args(["-n", &up.netns(pod), "-6", "addr", "show"])
            .output()
            .expect("ip -6 addr");
        assert!(
            !text(&out.stdout).contains("inet6"),
            "{pod}: {}",
            show(&out)
        );
    }
    // backend-v2 listens on [::], yet answers only through its sidecar:
    // through the mesh it does; at the link-local address its eth0 would
    // have, from the frontend pod, nothing does.
    let mut seen_v2 = false;
    for _ in 0..20 {
        let (status, body) = get_host(up.ingress, "/");
        assert_eq!(status, 200, "{body}");
        seen_v2 |= body.starts_with("frontend -> backend v2");
    }
    assert!(seen_v2, "backend-v2 ([::]) answers through the mesh");
    let link = Command::new("ip")
        .args([
            "-n",
            &up.netns("backend-v2-0"),
            "-o",
            "link",
            "show",
            "eth0",
        ])
        .output()
        .expect("ip link");
    let link = text(&link.stdout);
    let mac = link
        .split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .expect("a MAC address");
    let target = format!("{}%eth0", link_local(mac));
    let out = in_pod(frontend, 20000, &[PYTHON, "-c", PROBE, &target, "9000"]);
    assert!(
        text(&out.stdout).starts_with("failed"),
        "IPv6 around the sidecar: {}",
        show(&out)
    );

    // Straight to a sidecar's :15006: from the frontend app to its own
    // pod's, and from the node to backend-v1's. Closed at once, no loop.
    let out = in_pod(
        frontend,
        20000,
        &[PYTHON, "-c", PROBE, FRONTEND_IP, "15006"],
    );
    assert!(text(&out.stdout).starts_with("closed"), "{}", show(&out));
    let out = Command::new("ip")
        .args(["netns", "exec", &up.netns("node"), PYTHON, "-c", PROBE])
        .args([BACKEND_V1_IP, "15006"])
        .output()
        .expect("probe from the node");
    assert!(text(&out.stdout).starts_with("closed"), "{}", show(&out));
    std::thread::sleep(Duration::from_millis(500));
    let node = up.netns("node");
    let refused = |ip: &str, reporter: &str| {
        let metrics = get_in(&node, ip, 15090, "/stats/prometheus").1;
        sample(
            &metrics,
            "weft_loop_connections_refused_total",
            &[("reporter", reporter)],
        )
    };
    assert_eq!(refused(FRONTEND_IP, "source"), 1.0);
    assert_eq!(refused(BACKEND_V1_IP, "destination"), 1.0);

    // A sidecar that dies is restarted with a fresh token, and serves.
    let before = std::fs::read(token("frontend-v1-0")).expect("token");
    let sidecar = pid_of(&state, "frontend-v1-0 sidecar");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(sidecar as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the sidecar");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while pid_of(&mesh.state(), "frontend-v1-0 sidecar") == sidecar {
        assert!(
            std::time::Instant::now() < deadline,
            "sidecar not restarted"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_ne!(
        std::fs::read(token("frontend-v1-0")).expect("token"),
        before,
        "a fresh token for the restarted sidecar"
    );
    while get_host(up.ingress, "/").0 != 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "restarted sidecar does not serve"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let pids = recorded_pids(&mesh.state());
    let down = mesh.weft().arg("down").output().expect("weft down");
    assert!(down.status.success(), "{}", text(&down.stderr));
    let mut up = up;
    assert_eq!(up.wait(Duration::from_secs(30)), Some(0), "{}", up.stderr());
    assert_nothing_left(&mesh, &pids);
}
