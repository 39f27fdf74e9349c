//! Static stability under `weft up`: with ~100 requests/s through the
//! Bookinfo ingress, weftd is killed with SIGKILL three times (the
//! runner's supervisor restarts it each time) and not one request fails:
//! every reply is a 200 product page showing details and reviews. A
//! restarted weftd must neither cut the sidecars off (they keep serving
//! their last config while it is down) nor push them a world that lacks
//! endpoints of proxies that have not reconnected yet.
//!
//! Needs root, `ip` and `iptables`; under `CI=true` it fails rather than
//! skip.

mod bookinfo_support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bookinfo_support::{await_product_page, log_text};
use http::StatusCode;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;
use weft_testkit::client;
use weft_testkit::free_addr;

const WEFT: &str = env!("CARGO_BIN_EXE_weft");
/// Requests per second through the ingress, spread over the workers.
const RATE: u64 = 100;
const WORKERS: u64 = 8;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `weftd`, `weft-proxy` and `bookinfo-reviews` beside `weft`.
fn build_binaries() {
    let dir = Path::new(WEFT).parent().expect("target dir");
    let profile = match dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => "dev",
        Some(other) => other,
    };
    let status = Command::new(env!("CARGO"))
        .args(["build", "--quiet", "--bins", "--profile", profile])
        .arg("--target-dir")
        .arg(dir.parent().expect("target"))
        .args([
            "-p",
            "bookinfo-reviews",
            "-p",
            "weft-proxy",
            "-p",
            "weft-control",
        ])
        .current_dir(repo_root())
        .status()
        .expect("cargo build");
    assert!(status.success(), "building the demo's binaries failed");
}

/// A running `weft up examples/bookinfo` with its own `$WEFT_HOME`.
struct Mesh {
    child: Child,
    home: tempfile::TempDir,
    name: String,
    ingress: SocketAddr,
    log: PathBuf,
}

impl Mesh {
    async fn up() -> Self {
        build_binaries();
        let home = tempfile::tempdir().expect("weft home");
        let name = format!("bkill{}", std::process::id());
        let log = home.path().join("weft-up.log");
        let file = std::fs::File::create(&log).expect("log");
        let ingress = free_addr();
        let child = Command::new(WEFT)
            .env("WEFT_HOME", home.path())
            .env_remove("WEFT_ADDR")
            .arg("up")
            .arg(repo_root().join("examples/bookinfo"))
            .args(["--name", &name, "--ingress", &ingress.to_string()])
            .args(["--api", &free_addr().to_string()])
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log"))
            .stderr(file)
            .spawn()
            .expect("spawn weft up");
        let mut mesh = Self {
            child,
            home,
            name,
            ingress,
            log,
        };
        await_product_page(&mut mesh.child, ingress, &mesh.log, good_page).await;
        mesh
    }

    fn logs(&self) -> String {
        log_text(&self.log)
    }

    /// weftd's PID, as the runner's state file has it now.
    fn weftd_pid(&self) -> i32 {
        let path = self
            .home
            .path()
            .join("meshes")
            .join(&self.name)
            .join("state.json");
        let state: Value =
            serde_json::from_str(&std::fs::read_to_string(path).expect("state file"))
                .expect("json");
        state["processes"]
            .as_array()
            .expect("processes")
            .iter()
            .find(|p| p["label"] == "weftd")
            .and_then(|p| p["pid"].as_i64())
            .expect("weftd in the state file") as i32
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
            let _ = self.child.wait();
        }
    }
}

/// A product page as a user wants it: details and reviews both there.
fn good_page(status: StatusCode, body: &str) -> bool {
    status == StatusCode::OK
        && body.contains("Ada Marlowe")
        && body.contains("Reviews served by: reviews-")
        && !body.contains("currently unavailable")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_weftd_three_times_under_load_costs_no_request() {
    const TEST: &str = "killing_weftd_three_times_under_load_costs_no_request";
    if !weft_testkit::netns::privileged_or_skip(TEST) {
        return;
    }
    let mesh = Mesh::up().await;
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..WORKERS {
        let (stop, ingress) = (stop.clone(), mesh.ingress);
        workers.spawn(async move {
            let every = Duration::from_millis(1000 * WORKERS / RATE);
            // Workers start spread over one interval.
            tokio::time::sleep(every * worker as u32 / WORKERS as u32).await;
            let mut ticks = tokio::time::interval(every);
            let (mut sent, mut failed) = (0u64, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                ticks.tick().await;
                sent += 1;
                let reply = tokio::time::timeout(
                    Duration::from_secs(10),
                    client::get(ingress, "bookinfo", "/productpage"),
                )
                .await;
                match reply {
                    Ok(Ok(reply)) if good_page(reply.status, &reply.text()) => {}
                    Ok(Ok(reply)) => {
                        let text = reply.text();
                        let said = text
                            .lines()
                            .find(|l| l.contains("unavailable"))
                            .unwrap_or("");
                        failed.push(format!("{} {}", reply.status, said.trim()));
                    }
                    Ok(Err(err)) => failed.push(format!("{err:#}")),
                    Err(_) => failed.push("no answer within 10s".into()),
                }
            }
            (sent, failed)
        });
    }

    // Three SIGKILLs, each once the restarted weftd has been up a while.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for round in 1..=3 {
        let pid = mesh.weftd_pid();
        kill(Pid::from_raw(pid), Signal::SIGKILL).expect("SIGKILL weftd");
        let deadline = Instant::now() + Duration::from_secs(30);
        while mesh.weftd_pid() == pid {
            assert!(
                Instant::now() < deadline,
                "weftd not restarted after kill {round}:\n{}",
                mesh.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_secs(7)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let (mut sent, mut failed) = (0, Vec::new());
    for (worker_sent, worker_failed) in workers.join_all().await {
        sent += worker_sent;
        failed.extend(worker_failed);
    }
    eprintln!("{sent} requests, {} failed", failed.len());
    assert!(
        failed.is_empty(),
        "{} of {sent} requests failed across three weftd kills; first: {:?}\n{}",
        failed.len(),
        &failed[..failed.len().min(10)],
        mesh.logs()
    );
    assert!(sent >= 2000, "only {sent} requests sent");
}
