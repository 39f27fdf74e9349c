//! Control-plane load: weftd (a real process) with N services and M
//! endpoints, P simulated proxies on real gRPC streams. Measures the time
//! from an endpoint change (`POST /v1/apply`) to every proxy having received
//! and ACKed it, a burst of changes (convergence, pushes per proxy), and
//! weftd's CPU time and RSS.
//!
//! cargo run --release -p weft-control --example control_plane_bench -- \
//!     [--services 1000] [--endpoints 10000] [--proxies 100] [--changes 5] \
//!     [--namespaces N] [--burst 100] [--json FILE]
//!
//! `bench/run --control-plane P` runs it and puts the JSON in RESULTS.md.
//!
//! The mesh is not one shape: services and endpoints are spread over N
//! namespaces (default: one per 500 services, 4 to 20). Three namespaces in
//! four have a Sidecar limiting egress to their own namespace and `ns-0`
//! (which every proxy sees, so every proxy gets the measured change); the
//! fourth sees the whole mesh; in `ns-1` a workload-scoped Sidecar gives
//! `app: client-0` a wider view. Proxies are spread over the namespaces
//! with eight label sets (`app: client-0..7`): up to 8×N proxy shapes.
//!
//! The simulated proxies stream from weftd's opt-in plaintext port
//! (`--plaintext-grpc`, testkit's `WeftdProcess::grpc`): they hold no
//! workload certificate, and what is measured is config push, not TLS.
//! They decode only each push's nonce and version (what an ACK needs), so
//! 5,000 of them do not starve weftd of the machine's CPU.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use prost::Message;
use tokio::sync::{Mutex, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use weft_proto::discovery::v1::{Ack, Hello, Node, ProxyMessage, proxy_message};
use weft_testkit::free_addr;
use weft_testkit::weftd::WeftdProcess;

/// What the run shares with its simulated proxies (no globals).
#[derive(Default)]
struct Counters {
    /// Set when weftd stops at the end: streams ending is then no error.
    finished: AtomicBool,
    /// Streams that failed and were opened again.
    reconnects: AtomicUsize,
    /// Encoded size of the largest push any simulated proxy received (the
    /// first, full one): what weftd sends per proxy on connect.
    largest_push: AtomicUsize,
}

struct Options {
    services: usize,
    endpoints: usize,
    proxies: usize,
    changes: usize,
    namespaces: usize,
    burst: usize,
    json: Option<std::path::PathBuf>,
}

fn options() -> anyhow::Result<Options> {
    let mut options = Options {
        services: 1000,
        endpoints: 10_000,
        proxies: 100,
        changes: 5,
        namespaces: 0,
        burst: 0,
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
            "--namespaces" => options.namespaces = count()?,
            "--burst" => options.burst = count()?,
            "--json" => options.json = Some(value.into()),
            other => anyhow::bail!("unknown option {other}"),
        }
    }
    if options.namespaces == 0 {
        options.namespaces = (options.services / 500).clamp(4, 20);
    }
    options.namespaces = options.namespaces.min(options.services).max(1);
    Ok(options)
}

/// Label sets per namespace.
const LABEL_SETS: usize = 8;

fn namespace_of_service(s: usize, options: &Options) -> usize {
    s % options.namespaces
}

fn mesh_yaml(options: &Options) -> String {
    let mut yaml = String::new();
    for ns in 0..options.namespaces {
        if ns % 4 != 3 {
            yaml.push_str(&format!(
                "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {{name: default, namespace: ns-{ns}}}\nspec:\n  egress: [{{hosts: [./*, ns-0/*]}}]\n---\n"
            ));
        }
    }
    yaml.push_str("apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: wide, namespace: ns-1}\nspec:\n  workloadSelector: {labels: {app: client-0}}\n  egress: [{hosts: [./*, ns-0/*, ns-2/*]}]\n---\n");
    for s in 0..options.services {
        let ns = namespace_of_service(s, options);
        yaml.push_str(&format!(
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: svc-{s}, namespace: ns-{ns}}}\nspec:\n  hosts: [svc-{s}.ns-{ns}.svc.cluster.local]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports: [{{number: 8080, name: http, protocol: HTTP}}]\n  workloadSelector: {{labels: {{app: svc-{s}}}}}\n---\n"
        ));
    }
    for e in 0..options.endpoints {
        yaml.push_str(&endpoint_yaml(e, options, 1));
    }
    yaml
}

/// WorkloadEntry `ep-e`, an endpoint of `svc-(e mod services)`.
fn endpoint_yaml(e: usize, options: &Options, weight: u32) -> String {
    let s = e % options.services;
    let ns = namespace_of_service(s, options);
    format!(
        "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{name: ep-{e}, namespace: ns-{ns}}}\nspec:\n  address: 10.{}.{}.{}\n  ports: {{http: 8080}}\n  weight: {weight}\n  labels: {{app: svc-{s}}}\n---\n",
        (e >> 16) & 255,
        (e >> 8) & 255,
        e & 255
    )
}

/// The part of a `Push` an ACK needs; prost skips the rest unread.
#[derive(Clone, PartialEq, prost::Message)]
struct PushHead {
    #[prost(string, tag = "1")]
    nonce: String,
    #[prost(string, tag = "2")]
    version: String,
}

/// Encodes ProxyMessages, decodes pushes as (head, encoded size).
#[derive(Clone, Copy, Default)]
struct SimCodec;

impl Codec for SimCodec {
    type Encode = ProxyMessage;
    type Decode = (PushHead, usize);
    type Encoder = SimCodec;
    type Decoder = SimCodec;
    fn encoder(&mut self) -> SimCodec {
        SimCodec
    }
    fn decoder(&mut self) -> SimCodec {
        SimCodec
    }
}

impl Encoder for SimCodec {
    type Item = ProxyMessage;
    type Error = Status;
    fn encode(&mut self, item: ProxyMessage, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst)
            .map_err(|err| Status::internal(err.to_string()))
    }
}

impl Decoder for SimCodec {
    type Item = (PushHead, usize);
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Status> {
        let size = bytes::Buf::remaining(src);
        let head = PushHead::decode(src).map_err(|err| Status::internal(err.to_string()))?;
        Ok(Some((head, size)))
    }
}

/// Per simulated proxy: when it last received and ACKed a push, and how
/// many pushes it got.
#[derive(Clone, Copy, Default)]
struct Seen {
    last: Option<Instant>,
    pushes: usize,
}

type Received = Arc<Mutex<Vec<Seen>>>;

fn node(index: usize, options: &Options) -> Node {
    let ns = index % options.namespaces;
    let app = (index / options.namespaces) % LABEL_SETS;
    Node {
        id: format!("sim-{index}"),
        workload: format!("client-{app}"),
        namespace: format!("ns-{ns}"),
        labels: [("app".to_string(), format!("client-{app}"))].into(),
        ..Node::default()
    }
}

async fn simulated_proxy(
    node: Node,
    index: usize,
    grpc: std::net::SocketAddr,
    received: Received,
    counters: Arc<Counters>,
) -> anyhow::Result<()> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{grpc}"))?
        .connect()
        .await?;
    // A full push to a proxy that sees 10,000 services is over tonic's
    // default 4 MiB.
    let mut client = tonic::client::Grpc::new(channel).max_decoding_message_size(usize::MAX);
    client.ready().await?;
    let (tx, rx) = mpsc::channel(4);
    tx.send(ProxyMessage {
        message: Some(proxy_message::Message::Hello(Hello {
            node: Some(node),
            known_versions: Default::default(),
        })),
    })
    .await?;
    let path = http::uri::PathAndQuery::from_static("/weft.discovery.v1.Discovery/Stream");
    let mut pushes = client
        .streaming(tonic::Request::new(ReceiverStream::new(rx)), path, SimCodec)
        .await?
        .into_inner();
    while let Some((push, size)) = pushes.message().await? {
        counters.largest_push.fetch_max(size, Ordering::Relaxed);
        tx.send(ProxyMessage {
            message: Some(proxy_message::Message::Ack(Ack {
                nonce: push.nonce,
                version: push.version,
                error: String::new(),
            })),
        })
        .await?;
        let mut all = received.lock().await;
        all[index].last = Some(Instant::now());
        all[index].pushes += 1;
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

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Waits until every proxy has seen a push since the counters were reset
/// (`None` entries), at most `limit`.
async fn all_received(received: &Received, limit: Duration, what: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        if received.lock().await.iter().all(|seen| seen.last.is_some()) {
            return Ok(());
        }
        anyhow::ensure!(started.elapsed() < limit, "{what}: not every proxy got it");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Every proxy weftd lists is connected and serving what it was sent.
async fn all_synced(weftd: &WeftdProcess, proxies: usize) -> anyhow::Result<bool> {
    let listed: serde_json::Value = serde_json::from_str(&weftd.proxies().await?)?;
    let list = listed
        .get("proxies")
        .and_then(serde_json::Value::as_array)
        .or_else(|| listed.as_array())
        .ok_or_else(|| anyhow::anyhow!("GET /v1/proxies: no list in {listed}"))?;
    let synced = list
        .iter()
        .filter(|p| {
            p["connected"] == true && p["error"].is_null() && p["sentVersion"] == p["ackedVersion"]
        })
        .count();
    Ok(synced == proxies)
}

/// `POST /v1/apply` of the whole mesh in one request, without testkit's
/// 30 s step limit (110,000 objects take longer on a busy machine).
async fn apply_whole(weftd: &WeftdProcess, yaml: &str) -> anyhow::Result<()> {
    use http_body_util::BodyExt;
    let body = serde_json::json!({ "text": yaml, "source": "bench" }).to_string();
    let stream = tokio::net::TcpStream::connect(weftd.api).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let request = http::Request::post("/v1/apply")
        .header(http::header::HOST, weftd.api.to_string())
        .header(
            http::header::AUTHORIZATION,
            format!("Bearer {}", weftd.token),
        )
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let reply = response.into_body().collect().await?.to_bytes();
    anyhow::ensure!(
        status == http::StatusCode::OK,
        "apply failed ({status}): {}",
        String::from_utf8_lossy(&reply[..reply.len().min(2000)])
    );
    Ok(())
}

struct Burst {
    apply_s: f64,
    converged_s: f64,
    pushes_max: usize,
    pushes_mean: f64,
    cpu_s: f64,
}

/// `count` endpoint changes spread over one second, each its own apply;
/// then waits for two quiet seconds and checks every proxy is in sync.
async fn burst(
    weftd: &WeftdProcess,
    options: &Options,
    received: &Received,
    pid: u32,
    count: usize,
) -> anyhow::Result<Burst> {
    received
        .lock()
        .await
        .iter_mut()
        .for_each(|seen| *seen = Seen::default());
    let before = weftd_usage(pid);
    let started = Instant::now();
    for change in 0..count {
        let due = started + Duration::from_secs(1).mul_f64(change as f64 / count as f64);
        tokio::time::sleep_until(due.into()).await;
        let reply = weftd
            .apply(&endpoint_yaml(change * 7 + 1, options, 50))
            .await?;
        anyhow::ensure!(reply.status == 200, "burst apply failed: {}", reply.text());
    }
    let apply_s = started.elapsed().as_secs_f64();
    // Converged: nothing pushed for two seconds (20× the debounce).
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let last = received.lock().await.iter().filter_map(|s| s.last).max();
        if last.is_none_or(|last| last.elapsed() > Duration::from_secs(2))
            && started.elapsed() > Duration::from_secs(3)
        {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(120),
            "the burst never settled"
        );
    }
    let seen = received.lock().await.clone();
    let converged = seen.iter().filter_map(|s| s.last).max().unwrap_or(started);
    anyhow::ensure!(
        all_synced(weftd, options.proxies).await?,
        "after the burst not every proxy serves what weftd sent it"
    );
    let pushes: Vec<usize> = seen.iter().map(|s| s.pushes).collect();
    Ok(Burst {
        apply_s,
        converged_s: converged.duration_since(started).as_secs_f64(),
        pushes_max: pushes.iter().copied().max().unwrap_or(0),
        pushes_mean: pushes.iter().sum::<usize>() as f64 / pushes.len().max(1) as f64,
        cpu_s: weftd_usage(pid).cpu_s - before.cpu_s,
    })
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

    let outcome = run(&weftd, pid, &options).await;
    if outcome.is_err() {
        // weftd's own words on what went wrong (its log dies with the run).
        let logs = weftd.logs();
        let lines: Vec<&str> = logs.lines().collect();
        for line in &lines[lines.len().saturating_sub(30)..] {
            eprintln!("weftd: {line}");
        }
    }
    outcome
}

async fn run(weftd: &WeftdProcess, pid: u32, options: &Options) -> anyhow::Result<()> {
    let yaml = mesh_yaml(options);
    let objects = yaml.matches("\n---\n").count();
    let started = Instant::now();
    apply_whole(weftd, &yaml).await?;
    let apply_time = started.elapsed();
    drop(yaml);
    let after_apply = weftd_usage(pid);
    println!(
        "applied {objects} objects ({} services, {} endpoints, {} namespaces) in one request in {apply_time:.1?}; weftd peak RSS {:.0} MiB",
        options.services,
        options.endpoints,
        options.namespaces,
        mib(after_apply.peak_rss_kib)
    );

    let counters = Arc::new(Counters::default());
    let received: Received = Arc::new(Mutex::new(vec![Seen::default(); options.proxies]));
    for index in 0..options.proxies {
        let (received, counters) = (received.clone(), counters.clone());
        let (grpc, node) = (weftd.grpc, node(index, options));
        tokio::spawn(async move {
            // A stream that fails (1,000 connects at once can overflow the
            // accept queue) reconnects after a pause, as weft-proxy does.
            // Streams end with an error when weftd stops at the end of the run.
            let mut attempt = 0u32;
            while let Err(err) = simulated_proxy(
                node.clone(),
                index,
                grpc,
                received.clone(),
                counters.clone(),
            )
            .await
            {
                if counters.finished.load(Ordering::Relaxed) {
                    break;
                }
                attempt += 1;
                counters.reconnects.fetch_add(1, Ordering::Relaxed);
                if attempt >= 20 {
                    eprintln!("simulated proxy {index}: giving up after {attempt} tries: {err}");
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
            }
        });
    }
    let connect_started = Instant::now();
    all_received(&received, Duration::from_secs(600), "initial sync").await?;
    let sync_time = connect_started.elapsed();
    let push_mib = counters.largest_push.load(Ordering::Relaxed) as f64 / (1024.0 * 1024.0);
    let synced = weftd_usage(pid);
    println!(
        "{} proxies connected and synced in {sync_time:.1?} (largest full push {push_mib:.2} MiB, {} reconnects); weftd RSS {:.0} MiB, peak {:.0} MiB",
        options.proxies,
        counters.reconnects.load(Ordering::Relaxed),
        mib(synced.rss_kib),
        mib(synced.peak_rss_kib),
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before_changes = weftd_usage(pid);

    let mut delays = Vec::new();
    for change in 0..options.changes {
        received
            .lock()
            .await
            .iter_mut()
            .for_each(|seen| seen.last = None);
        let applied = Instant::now();
        let reply = weftd
            .apply(&endpoint_yaml(0, options, 2 + change as u32))
            .await?;
        anyhow::ensure!(reply.status == 200, "apply failed: {}", reply.text());
        all_received(
            &received,
            Duration::from_secs(60),
            &format!("change {change}"),
        )
        .await?;
        delays.extend(
            received
                .lock()
                .await
                .iter()
                .filter_map(|seen| seen.last)
                .map(|t| t.duration_since(applied)),
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    delays.sort();
    let after_changes = weftd_usage(pid);
    let cpu_per_change = (after_changes.cpu_s - before_changes.cpu_s) / options.changes as f64;
    let (p50, p99) = (percentile(&delays, 0.5), percentile(&delays, 0.99));
    let max = delays.last().copied().unwrap_or_default();
    println!(
        "endpoint change → ACK by all {} proxies ({} changes): p50 {p50:.1?}, p99 {p99:.1?}, max {max:.1?}; {cpu_per_change:.2} s CPU per change",
        options.proxies, options.changes,
    );
    let burst = match options.burst {
        0 => None,
        count => {
            let burst = burst(weftd, options, &received, pid, count).await?;
            println!(
                "burst of {count} changes applied in {:.2} s: converged {:.2} s after the first, pushes per proxy max {} mean {:.2}, weftd {:.1} s CPU",
                burst.apply_s, burst.converged_s, burst.pushes_max, burst.pushes_mean, burst.cpu_s
            );
            Some(burst)
        }
    };
    // With WEFT_TEST_LOG=weft_control::push::mesh=debug weftd logs each
    // build's time: the last few show what a change costs before pushing.
    for line in weftd
        .logs()
        .lines()
        .filter(|line| line.contains("mesh rebuilt"))
        .rev()
        .take(5)
    {
        println!("weftd: {line}");
    }
    // From here on weftd stops and the streams end: no longer an error.
    counters.finished.store(true, Ordering::Relaxed);
    let usage = weftd_usage(pid);
    println!(
        "weftd: {:.1} s CPU in total, RSS {:.1} MiB, peak {:.1} MiB",
        usage.cpu_s,
        mib(usage.rss_kib),
        mib(usage.peak_rss_kib)
    );
    if let Some(path) = &options.json {
        let report = serde_json::json!({
            "services": options.services,
            "endpoints": options.endpoints,
            "namespaces": options.namespaces,
            "proxies": options.proxies,
            "changes": options.changes,
            "objects": objects,
            "apply_s": apply_time.as_secs_f64(),
            "apply_peak_rss_mib": mib(after_apply.peak_rss_kib),
            "sync_s": sync_time.as_secs_f64(),
            "synced_rss_mib": mib(synced.rss_kib),
            "full_push_mib": push_mib,
            "reconnects": counters.reconnects.load(Ordering::Relaxed),
            "ack_p50_ms": p50.as_secs_f64() * 1e3,
            "ack_p99_ms": p99.as_secs_f64() * 1e3,
            "ack_max_ms": max.as_secs_f64() * 1e3,
            "weftd_cpu_s": usage.cpu_s,
            "weftd_cpu_s_per_change": cpu_per_change,
            "weftd_rss_mib": mib(usage.rss_kib),
            "weftd_peak_rss_mib": mib(usage.peak_rss_kib),
            "burst": burst.map(|b| serde_json::json!({
                "changes": options.burst,
                "apply_s": b.apply_s,
                "converged_s": b.converged_s,
                "pushes_per_proxy_max": b.pushes_max,
                "pushes_per_proxy_mean": b.pushes_mean,
                "weftd_cpu_s": b.cpu_s,
            })),
        });
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .map_err(|err| anyhow::anyhow!("writing {}: {err}", path.display()))?;
    }
    Ok(())
}
