//! What telemetry costs on the data path: `wrk` through one weft-proxy at
//! saturation, with access logs off, on (to a file), and on with every
//! request traced to an OTLP collector; and with Telemetry overrides (a
//! label upserted from a request header, an access-log filter). Not part of the test suite
//! (`#[ignore]`); run it with
//!
//! ```text
//! cargo test -p weft-proxy --test telemetry_bench -- --ignored --nocapture
//! ```
//!
//! `WEFT_BENCH_BASELINE=/path/to/older/weft-proxy` adds a run of another
//! binary (e.g. one built before telemetry) with the same config. Needs
//! `wrk` on the PATH; prints SKIPPED without it.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use weft_testkit::backend::HttpBackend;
use weft_testkit::free_addr;
use weft_testkit::otlp::Collector;
use weft_testkit::proxy::{ProxyOptions, ProxyProcess};

const BIN: &str = env!("CARGO_BIN_EXE_weft-proxy");
const SECONDS: &str = "5";
/// Every case runs this many times, interleaved, to spread out noise.
const ROUNDS: usize = 2;

/// Telemetry `tagOverrides` as weftd pushes it: REQUEST_COUNT of the
/// client side gets a label from the User-Agent header.
const TAG_OVERRIDE: &str = r#"telemetry:
  clientMetrics:
    metrics: [{metric: REQUEST_COUNT, tags: [{name: user_agent, value: "request.headers['user-agent']"}]}]"#;

/// An access-log filter no request of the run passes (all are 200s).
const LOG_FILTER: &str = r#"telemetry:
  clientAccessLog: {filter: "response.code >= 400"}"#;

struct Run {
    requests_per_second: f64,
    requests: f64,
    p99: String,
    /// The proxy's CPU time (user + system) per request: unlike req/s it
    /// does not depend on what else the machine runs.
    cpu_us_per_request: f64,
}

/// `wrk` against `addr`; its Requests/sec and 99th percentile latency.
fn wrk(addr: std::net::SocketAddr) -> Run {
    let output = Command::new("wrk")
        .args(["-t1", "-c16", "-d", &format!("{SECONDS}s"), "--latency"])
        .arg(format!("http://{addr}/"))
        .output()
        .expect("run wrk");
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    let requests_per_second = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no Requests/sec in:\n{text}"));
    let p99 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("99%"))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| panic!("no 99% in:\n{text}"));
    let requests = text
        .lines()
        .find_map(|l| l.trim().split_once(" requests in "))
        .and_then(|(n, _)| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no request count in:\n{text}"));
    Run {
        requests_per_second,
        requests,
        p99,
        cpu_us_per_request: 0.0,
    }
}

/// CPU seconds (user + system) a process has used, from /proc.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("proc stat");
    // Fields after the command name (which may hold spaces) start at 3.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 =
        fields[11].parse::<f64>().unwrap_or(0.0) + fields[12].parse::<f64>().unwrap_or(0.0);
    // USER_HZ is 100 on Linux.
    ticks / 100.0
}

async fn measure(binary: &Path, backend: &HttpBackend, args: &[String], extra: &str) -> Run {
    let listen = free_addr();
    let config = format!(
        r#"
version: bench
listeners:
- {{name: web, address: "{listen}", kind: EXPLICIT, service: web.test.svc.cluster.local}}
services:
- {{name: web.test.svc.cluster.local, hosts: [web], ports: [{{port: 80, protocol: HTTP}}]}}
clusters:
- {{name: "outbound|80||web.test.svc.cluster.local", endpoints: [{{address: "{}"}}]}}
{extra}
"#,
        backend.addr
    );
    let mut options = ProxyOptions::new(binary, &config);
    options.args = args.to_vec();
    let mut proxy = ProxyProcess::spawn(options).expect("spawn");
    proxy
        .wait_ready(Duration::from_secs(20))
        .await
        .unwrap_or_else(|err| panic!("{err:#}"));
    let pid = proxy.pid().expect("running");
    let before = cpu_seconds(pid);
    // wrk blocks; the backend runs on the test's other thread.
    let mut run = tokio::task::spawn_blocking(move || wrk(listen))
        .await
        .expect("wrk");
    run.cpu_us_per_request = (cpu_seconds(pid) - before) * 1e6 / run.requests.max(1.0);
    run
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: run with --ignored"]
async fn telemetry_cost_at_saturation() {
    if Command::new("wrk").arg("--version").output().is_err() {
        println!("SKIPPED telemetry_cost_at_saturation: wrk is not installed");
        return;
    }
    let backend = HttpBackend::start("web").await;
    let collector = Collector::start().await;
    let log = std::env::temp_dir()
        .join(format!("weft-bench-{}.log", std::process::id()))
        .display()
        .to_string();
    let workers = vec!["--workers".to_string(), "1".to_string()];
    let mut cases: Vec<(String, std::path::PathBuf, Vec<String>, &str)> = Vec::new();
    if let Ok(baseline) = std::env::var("WEFT_BENCH_BASELINE") {
        cases.push((
            "baseline binary".into(),
            baseline.into(),
            workers.clone(),
            "",
        ));
    }
    let with = |more: &[&str]| {
        let mut args = workers.clone();
        args.extend(more.iter().map(|s| s.to_string()));
        args
    };
    let otlp = collector.addr.to_string();
    cases.push(("metrics, access log off".into(), BIN.into(), with(&[]), ""));
    cases.push((
        "metrics + tagOverride from a header (CEL)".into(),
        BIN.into(),
        with(&[]),
        TAG_OVERRIDE,
    ));
    cases.push((
        "metrics + access log (file)".into(),
        BIN.into(),
        with(&["--access-log", &log]),
        "",
    ));
    cases.push((
        "metrics + access log, filter code >= 400".into(),
        BIN.into(),
        with(&["--access-log", &log]),
        LOG_FILTER,
    ));
    cases.push((
        "metrics + access log + 100% traced (OTLP)".into(),
        BIN.into(),
        with(&[
            "--access-log",
            &log,
            "--trace-sampling",
            "100",
            "--otlp",
            &otlp,
        ]),
        "",
    ));
    for round in 1..=ROUNDS {
        for (name, binary, args, extra) in &cases {
            let run = measure(binary, &backend, args, extra).await;
            println!(
                "round {round}: {name:45} {:>7.0} req/s   p99 {:>8}   proxy CPU {:>5.0} µs/request",
                run.requests_per_second, run.p99, run.cpu_us_per_request
            );
        }
    }
    println!("spans received: {}", collector.spans().len());
    let _ = std::fs::remove_file(&log);
}
