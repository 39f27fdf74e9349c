//! `examples/egress-gateway` under `weft up`, as its README walks through
//! it: the example's mesh file and YAML unchanged, an "external" HTTP
//! server in the mesh's node namespace (on the bridge address the
//! ServiceEntry names, the only "outside" pods can reach), and requests
//! from inside the sleep pod (a process of the pod, so its sidecar captures
//! them). Asserts: the request reaches the external server from the egress
//! gateway's address, not the pod's; an undeclared host is refused
//! (REGISTRY_ONLY); the gateway's port 80 (a low port, bound by the
//! unprivileged gateway proxy) does not serve plaintext.
//!
//! Needs root, `ip`, `iptables` and `setpriv`; under `CI=true` it fails
//! rather than skip.

mod support;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use weft_testkit::netns::privileged_or_skip;

use support::*;

fn example(file: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/egress-gateway")
        .join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

/// A child process stopped on drop (the external server).
struct Stopped(Child);

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A GET to `10.203.0.1:80` with `Host: host`, from inside `netns`:
/// `(status, flags header, body)`, or the Python error.
fn get_via(netns: &str, host: &str) -> Result<(u16, String, String), String> {
    let script = format!(
        "import http.client\nc = http.client.HTTPConnection('10.203.0.1', 80, timeout=10)\n\
         c.request('GET', '/', headers={{'Host': {host:?}}})\nr = c.getresponse()\n\
         print(r.status)\nprint(r.getheader('x-weft-response-flags', '-'))\n\
         print(r.read().decode(errors='replace'), end='')"
    );
    let output = Command::new("ip")
        .args(["netns", "exec", netns, PYTHON, "-c", &script])
        .output()
        .map_err(|err| err.to_string())?;
    if !output.status.success() {
        return Err(text(&output.stderr));
    }
    let out = text(&output.stdout);
    let mut lines = out.splitn(3, '\n');
    let status = lines
        .next()
        .unwrap_or_default()
        .parse()
        .map_err(|_| out.clone())?;
    let flags = lines.next().unwrap_or_default().to_string();
    Ok((status, flags, lines.next().unwrap_or_default().to_string()))
}

#[test]
fn the_egress_example_runs_under_weft_up_and_leaves_only_through_the_gateway() {
    if !privileged_or_skip(
        "the_egress_example_runs_under_weft_up_and_leaves_only_through_the_gateway",
    ) {
        return;
    }
    let mesh = MeshDir::with_mesh("egr", &example("mesh.yaml"));
    // The example's resources instead of the default test rules.
    std::fs::write(
        mesh.dir.path().join("rules.yaml"),
        example("egress-gateway.yaml"),
    )
    .expect("write rules");
    let up = mesh.up();
    let line = |pod: &str| {
        up.summary
            .lines()
            .find(|l| l.trim_start().starts_with(pod))
            .and_then(|l| l.split_whitespace().nth(2))
            .map(str::to_string)
            .unwrap_or_else(|| panic!("{pod} not in summary:\n{}", up.summary))
    };
    let (sleep_ip, gateway_ip) = (line("sleep-0"), line("istio-egressgateway-0"));

    let log = mesh.dir.path().join("external.log");
    let server = Stopped(
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &up.netns("node"),
                PYTHON,
                "-u",
                "-m",
                "http.server",
            ])
            .args(["80", "--bind", "10.203.0.1"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("external server"),
    );

    let sleep = up.netns("sleep-0");
    let deadline = Instant::now() + Duration::from_secs(20);
    let answer = loop {
        match get_via(&sleep, "edition.example.test") {
            Ok((200, _, body)) => break body,
            other if Instant::now() > deadline => {
                panic!(
                    "never through the egress gateway: {other:?}\n{}",
                    up.stderr()
                )
            }
            _ => std::thread::sleep(Duration::from_millis(200)),
        }
    };
    assert!(answer.contains("Directory listing"), "{answer}");
    let seen = std::fs::read_to_string(&log).expect("server log");
    assert!(seen.contains(&format!("{gateway_ip} - - ")), "{seen}");
    assert!(!seen.contains(&format!("{sleep_ip} - - ")), "{seen}");

    // REGISTRY_ONLY: a host no ServiceEntry declares, at the same address.
    let (status, flags, _) = get_via(&sleep, "other.example.test").expect("an answer");
    assert_eq!((status, flags.as_str()), (502, "NR"));

    // The gateway's port 80 speaks mesh mTLS only.
    let plain = Command::new("ip")
        .args(["netns", "exec", &up.netns("node"), "curl", "-sS", "-m", "5"])
        .arg(format!("http://{gateway_ip}:80/"))
        .output()
        .expect("curl");
    assert!(!plain.status.success(), "{}", text(&plain.stdout));
    drop(server);
}
