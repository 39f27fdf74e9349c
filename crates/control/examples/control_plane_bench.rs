//! Control-plane load: weftd (a real process) with N services and M
//! endpoints, P simulated proxies on real gRPC streams. Measures the time
//! from an endpoint change (`POST /v1/apply`) to every proxy having received
//! and ACKed it, and weftd's CPU time and RSS.
//!
//! cargo run --release -p weft-control --example control_plane_bench -- \
//!     [--services 1000] [--endpoints 10000] [--proxies 100] [--changes 5] \
//!     [--json FILE]
//!
//! `bench/run --control-plane P` runs it and puts the JSON in RESULTS.md.
//!
//! The simulated proxies stream from weftd's opt-in plaintext port
//! (`--plaintext-grpc`, testkit's `WeftdProcess::grpc`): they hold no
//! workload certificate, and what is measured is config push, not TLS.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::Message;
use tokio::sync::{Mutex, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use weft_proto::discovery::v1::discovery_client::DiscoveryClient;
use weft_proto::discovery::v1::{Ack, Hello, Node, ProxyMessage, proxy_message};
use weft_testkit::free_addr;
use weft_testkit::weftd::WeftdProcess;

static FINISHED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
/// Encoded size of the largest push any simulated proxy received (the
/// first, full one): what weftd sends per proxy on connect.
/// Streams that failed and were opened again.
static RECONNECTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
static LARGEST_PUSH: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

struct Options {
    services: usize,
    endpoints: usize,
    proxies: usize,
    changes: usize,
    json: Option<std::path::PathBuf>,
}

fn options() -> anyhow::Result<Options> {
    let mut options = Options {
        services: 1000,
        endpoints: 10_000,
        proxies: 100,
        changes: 5,
        json: None,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let [flag, value] = pair else {
            anyhow::bail!("{} needs a value", pair[0]);
        };
        let count = || -> anyhow::Result<usize> {
            value
                .parse()
                .map_err(|_| anyhow::anyhow!("{flag}: {value:?} is not a count"))
        };
        match flag.as_str() {
            "--services" => options.services = count()?.max(1),
            "--endpoints" => options.endpoints = count()?,
            "--proxies" => options.proxies = count()?,
            "--changes" => options.changes = count()?.max(1),
            "--json" => options.json = Some(value.into()),
            other => anyhow::bail!("unknown option {other}"),
        }
    }
    Ok(options)
}

fn mesh_yaml(options: &Options) -> String {
    let mut yaml = String::new();
    for s in 0..options.services {
        yaml.push_str(&format!(
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: svc-{s}}}\nspec:\n  hosts: [svc-{s}.default.svc.cluster.local]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports: [{{number: 8080, name: http, protocol: HTTP}}]\n  workloadSelector: {{labels: {{app: svc-{s}}}}}\n---\n"
        ));
    }
    for e in 0..options.endpoints {
        yaml.push_str(&endpoint_yaml(e, options.services, 1));
    }
    yaml
}

fn endpoint_yaml(e: usize, services: usize, weight: u32) -> String {
    let s = e % services.max(1);
    format!(
        "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{name: ep-{e}}}\nspec:\n  address: 10.{}.{}.{}\n  ports: {{http: 8080}}\n  weight: {weight}\n  labels: {{app: svc-{s}}}\n---\n",
        (e >> 16) & 255,
        (e >> 8) & 255,
        e & 255
    )
}

/// Time each simulated proxy last received and ACKed a push.
type Received = Arc<Mutex<Vec<Option<Instant>>>>;

async fn simulated_proxy(
    index: usize,
    grpc: std::net::SocketAddr,
    received: Received,
) -> anyhow::Result<()> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{grpc}"))?
        .connect()
        .await?;
    let mut client = DiscoveryClient::new(channel);
    let (tx, rx) = mpsc::channel(4);
    let node = Node {
        id: format!("sim-{index}"),
        workload: format!("sim-{index}"),
        namespace: "default".into(),
        ..Node::default()
    };
    tx.send(ProxyMessage {
        message: Some(proxy_message::Message::Hello(Hello {
            node: Some(node),
            known_versions: Default::default(),
        })),
    })
    .await?;
    let mut pushes = client.stream(ReceiverStream::new(rx)).await?.into_inner();
    while let Some(push) = pushes.message().await? {
        LARGEST_PUSH.fetch_max(push.encoded_len(), std::sync::atomic::Ordering::Relaxed);
        tx.send(ProxyMessage {
            message: Some(proxy_message::Message::Ack(Ack {
                nonce: push.nonce,
                version: push.version,
                error: String::new(),
            })),
        })
        .await?;
        received.lock().await[index] = Some(Instant::now());
    }
    Ok(())
}

/// weftd's CPU seconds (user + system), current RSS and peak RSS in KiB.
struct Usage {
    cpu_s: f64,
    rss_kib: u64,
    peak_rss_kib: u64,
}

fn weftd_usage(pid: u32) -> Usage {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks: f64 = fields
        .get(11)
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0)
        + fields
            .get(12)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = |field: &str| {
        status
            .lines()
            .find(|l| l.starts_with(field))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    // Linux reports stat times in USER_HZ, 100 on every platform Weft runs on.
    Usage {
        cpu_s: ticks / 100.0,
        rss_kib: kib("VmRSS:"),
        peak_rss_kib: kib("VmHWM:"),
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let options = options()?;
    let weftd_bin = std::env::current_exe()?
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join("weftd"))
        .ok_or_else(|| anyhow::anyhow!("cannot locate weftd next to this example"))?;
    let state = tempfile::tempdir()?;
    let weftd = WeftdProcess::start(
        &weftd_bin,
        &state.path().join("store"),
        free_addr(),
        free_addr(),
    )
    .await?;
    let pid = weftd
        .pid()
        .ok_or_else(|| anyhow::anyhow!("weftd has no pid"))?;

    let started = Instant::now();
    let reply = weftd.apply(&mesh_yaml(&options)).await?;
    anyhow::ensure!(reply.status == 200, "apply failed: {}", reply.text());
    let apply_time = started.elapsed();
    println!(
        "applied {} services and {} endpoints in {apply_time:?}",
        options.services, options.endpoints,
    );

    let received: Received = Arc::new(Mutex::new(vec![None; options.proxies]));
    for index in 0..options.proxies {
        let received = received.clone();
        let grpc = weftd.grpc;
        tokio::spawn(async move {
            // A stream that fails (1,000 connects at once can overflow the
            // accept queue) reconnects after a pause, as weft-proxy does.
            // Streams end with an error when weftd stops at the end of the run.
            let mut attempt = 0u32;
            while let Err(err) = simulated_proxy(index, grpc, received.clone()).await {
                if FINISHED.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                attempt += 1;
                RECONNECTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if attempt >= 20 {
                    eprintln!("simulated proxy {index}: giving up after {attempt} tries: {err}");
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
            }
        });
    }
    let connect_started = Instant::now();
    loop {
        if received.lock().await.iter().all(Option::is_some) {
            break;
        }
        anyhow::ensure!(
            connect_started.elapsed() < Duration::from_secs(120),
            "proxies never synced"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let sync_time = connect_started.elapsed();
    let push_mib =
        LARGEST_PUSH.load(std::sync::atomic::Ordering::Relaxed) as f64 / (1024.0 * 1024.0);
    println!(
        "{} proxies connected and synced in {sync_time:?} (full push {push_mib:.2} MiB each, {} reconnects)",
        options.proxies,
        RECONNECTS.load(std::sync::atomic::Ordering::Relaxed)
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before_changes = weftd_usage(pid);

    let mut delays = Vec::new();
    for change in 0..options.changes {
        received.lock().await.iter_mut().for_each(|r| *r = None);
        let applied = Instant::now();
        let reply = weftd
            .apply(&endpoint_yaml(0, options.services, 2 + change as u32))
            .await?;
        anyhow::ensure!(reply.status == 200, "apply failed: {}", reply.text());
        loop {
            let snapshot = received.lock().await.clone();
            if snapshot.iter().all(Option::is_some) {
                delays.extend(
                    snapshot
                        .into_iter()
                        .flatten()
                        .map(|t| t.duration_since(applied)),
                );
                break;
            }
            anyhow::ensure!(
                applied.elapsed() < Duration::from_secs(60),
                "change {change} never reached every proxy"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // From here on weftd stops and the streams end: no longer an error.
    FINISHED.store(true, std::sync::atomic::Ordering::Relaxed);
    delays.sort();
    let usage = weftd_usage(pid);
    let (p50, p99) = (percentile(&delays, 0.5), percentile(&delays, 0.99));
    let max = delays.last().copied().unwrap_or_default();
    let cpu_per_change = (usage.cpu_s - before_changes.cpu_s) / options.changes as f64;
    let mib = |kib: u64| kib as f64 / 1024.0;
    println!(
        "endpoint change → ACK by all {} proxies ({} changes): p50 {p50:?}, p99 {p99:?}, max {max:?}",
        options.proxies, options.changes,
    );
    println!(
        "weftd: {:.1} s CPU in total ({cpu_per_change:.2} s per change), RSS {:.1} MiB, peak {:.1} MiB",
        usage.cpu_s,
        mib(usage.rss_kib),
        mib(usage.peak_rss_kib)
    );
    if let Some(path) = &options.json {
        let report = serde_json::json!({
            "services": options.services,
            "endpoints": options.endpoints,
            "proxies": options.proxies,
            "changes": options.changes,
            "apply_s": apply_time.as_secs_f64(),
            "sync_s": sync_time.as_secs_f64(),
            "full_push_mib": push_mib,
            "reconnects": RECONNECTS.load(std::sync::atomic::Ordering::Relaxed),
            "ack_p50_ms": p50.as_secs_f64() * 1e3,
            "ack_p99_ms": p99.as_secs_f64() * 1e3,
            "ack_max_ms": max.as_secs_f64() * 1e3,
            "weftd_cpu_s": usage.cpu_s,
            "weftd_cpu_s_per_change": cpu_per_change,
            "weftd_rss_mib": mib(usage.rss_kib),
            "weftd_peak_rss_mib": mib(usage.peak_rss_kib),
        });
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .map_err(|err| anyhow::anyhow!("writing {}: {err}", path.display()))?;
    }
    Ok(())
}
