//! weft-proxy: the sidecar and gateway proxy.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use tokio::signal::unix::{SignalKind, signal};
use weft_proxy::admin::{self, Surface};
use weft_proxy::config::watch::{read_config, watch_file};
use weft_proxy::identity::Identity;
use weft_proxy::identity::control_plane::{ControlPlane, Security};
use weft_proxy::identity::fetch::{self, FetchOptions};
use weft_proxy::identity::trust::{self, HeldRoot};
use weft_proxy::proxy::Proxy;
use weft_proxy::state::ProxyState;
use weft_proxy::tls::MeshTls;
use weft_proxy::xds::{self, node};

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read before `main` from this symbol (its
/// `malloc_conf`; `_RJEM_MALLOC_CONF` in the environment still overrides
/// them). One arena instead of four per core: a sidecar allocates from one
/// or two threads (0.2 MiB less resident, the same instructions per
/// request under callgrind). jemalloc's "low resource" advice (small
/// thread caches, a 1 s decay) was measured too and dropped: no less
/// resident memory, 7 % more instructions per request (bench/RESULTS.md).
#[unsafe(export_name = "_rjem_malloc_conf")]
static MALLOC_CONF: &[u8; 10] = b"narenas:1\0";

/// Weft's data-plane proxy. Loads its config from a file (YAML or JSON) and
/// reloads it when the file changes; a bad file is refused and the last good
/// config keeps serving.
#[derive(Parser, Debug)]
#[command(name = "weft-proxy", version)]
struct Args {
    /// Proxy config file (YAML or JSON rendering of weft.proxy.v1.ProxyConfig).
    #[arg(
        long,
        short = 'c',
        required_unless_present = "control_plane",
        conflicts_with = "control_plane"
    )]
    config: Option<PathBuf>,
    /// weftd's discovery address (host:port, its TLS `--xds` port): take
    /// config from the control plane instead of a file. Needs --token-file
    /// and --ca-root, or --plaintext-control-plane.
    #[arg(long)]
    control_plane: Option<String>,
    /// The mesh root held out of band (weftd's <state-dir>/root-cert.pem):
    /// weftd's certificate must chain to it, and trust bundles weftd sends
    /// are accepted only if it vouches for them. Re-read every 5 s.
    #[arg(long, value_name = "FILE")]
    ca_root: Option<PathBuf>,
    /// The name weftd's serving certificate must carry.
    #[arg(long, default_value = "weftd")]
    control_plane_name: String,
    /// --control-plane is weftd's --plaintext-grpc port: no TLS, no
    /// certificate (a plaintext-only workload; tests and development).
    #[arg(long, requires = "control_plane", conflicts_with_all = ["token_file", "ca_root"])]
    plaintext_control_plane: bool,
    #[command(flatten)]
    node: NodeArgs,
    /// Admin endpoint: /config_dump, /ready, /clusters, /quitquitquit.
    #[arg(long, default_value = "127.0.0.1:15000")]
    admin: SocketAddr,
    /// Health endpoint: /healthz/ready.
    #[arg(long, default_value = "0.0.0.0:15021")]
    health: SocketAddr,
    /// Prometheus endpoint: /stats/prometheus.
    #[arg(long, default_value = "0.0.0.0:15090")]
    metrics: SocketAddr,
    /// Merged metrics endpoint (Istio's 15020, e.g. 0.0.0.0:15020): the
    /// proxy's metrics plus the application's. Off unless given.
    #[arg(long, value_name = "ADDR")]
    merged_metrics: Option<SocketAddr>,
    /// Where the application serves Prometheus metrics on 127.0.0.1,
    /// PORT[/PATH] (path default /metrics), merged into --merged-metrics.
    #[arg(long, value_name = "PORT[/PATH]", value_parser = weft_proxy::admin::merged_metrics::parse_app_metrics, requires = "merged_metrics")]
    app_metrics: Option<weft_proxy::admin::merged_metrics::AppMetrics>,
    /// The app's original probes, Istio's JSON (`{"/app-health/app/livez":
    /// {"httpGet": {"path": "/healthz", "port": 8080}, "timeoutSeconds": 1}}`,
    /// also `tcpSocket` and `grpc`), replayed to the pod's --address (else
    /// 127.0.0.1) when the kubelet asks the status port for their path.
    #[arg(long, env = "ISTIO_KUBE_APP_PROBERS", value_name = "JSON", value_parser = weft_proxy::admin::app_probes::parse_probers)]
    app_probers: Option<weft_proxy::admin::app_probes::ProberTable>,
    /// The status port (Istio's 15020) when --app-probers is given without
    /// --merged-metrics (which otherwise names it).
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:15020")]
    status: SocketAddr,
    /// Data-path worker threads (default: cores, at most 2, as for a sidecar).
    #[arg(long)]
    workers: Option<usize>,
    /// How long in-flight work may take to finish after SIGTERM.
    #[arg(long, default_value = "5s")]
    drain_timeout: humantime::Duration,
    /// How often the config file is checked for changes.
    #[arg(long, default_value = "500ms")]
    reload_interval: humantime::Duration,
    #[command(flatten)]
    identity: IdentityArgs,
    #[command(flatten)]
    telemetry: TelemetryArgs,
    /// DNS server (ip:port, repeatable or comma-separated) that resolves
    /// the hosts of DNS ServiceEntries; none: the system's (/etc/resolv.conf).
    #[arg(
        long = "dns-server",
        env = "WEFT_DNS_SERVERS",
        value_delimiter = ',',
        value_name = "ADDR"
    )]
    dns_servers: Vec<std::net::SocketAddr>,
    #[command(flatten)]
    dns: DnsArgs,
}

/// DNS proxying (Istio's ISTIO_META_DNS_CAPTURE; see docs/dns.md).
#[derive(clap::Args, Debug)]
struct DnsArgs {
    /// Serve DNS for the app (its port-53 traffic is redirected here): answer
    /// the names of mesh services and ServiceEntry hosts weftd sends, forward
    /// the rest to the upstream resolvers.
    #[arg(long, env = "ISTIO_META_DNS_CAPTURE", value_parser = clap::builder::BoolishValueParser::new(), default_value_t = false, num_args = 0..=1, default_missing_value = "true")]
    dns_capture: bool,
    /// Where the DNS server listens (UDP and TCP), with --dns-capture.
    #[arg(long, default_value = weft_proxy::dns::DEFAULT_LISTEN, value_name = "ADDR")]
    dns_listen: SocketAddr,
    /// Resolvers names the proxy does not know are forwarded to (ip:port,
    /// repeatable or comma-separated); none: the nameservers of
    /// /etc/resolv.conf.
    #[arg(long, value_delimiter = ',', value_name = "ADDR")]
    dns_upstream: Vec<SocketAddr>,
    /// Istio's older per-proxy switch for automatic VIPs: no effect (weftd
    /// always allocates them for ServiceEntries without addresses, as
    /// Istio 1.25+ does); given, the proxy says so.
    #[arg(long, env = "ISTIO_META_DNS_AUTO_ALLOCATE", value_parser = clap::builder::BoolishValueParser::new(), default_value_t = false, num_args = 0..=1, default_missing_value = "true")]
    dns_auto_allocate: bool,
}

/// The workload identity (mTLS). Without --token-file the proxy has none:
/// a plaintext-only workload.
#[derive(clap::Args, Debug)]
struct IdentityArgs {
    /// Bootstrap token from weftd (`weft token create`): the proxy gets its
    /// first certificate with it (the identity the token proves) and is not
    /// ready until it holds one; renewals need no token.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// weftd's CA address, its TLS port (default: --control-plane).
    #[arg(long)]
    ca_address: Option<String>,
    /// Used with a token whose identity cannot be read (older tokens):
    /// spiffe://TD/ns/--namespace/sa/--service-account.
    #[arg(long, default_value = "cluster.local")]
    trust_domain: String,
}

/// Access logs and tracing (see `weft_proxy::telemetry`).
#[derive(clap::Args, Debug)]
struct TelemetryArgs {
    /// Access log: a file to append to, or `-` for stdout. Off without it
    /// (Istio's default profile), unless weftd's Telemetry config or
    /// `POST /logging?access=on` switches it on (then to stdout).
    #[arg(long, value_name = "PATH|-")]
    access_log: Option<String>,
    /// `text` (Istio's default format) or `json` (the same fields).
    #[arg(long, default_value = "text")]
    access_log_format: weft_proxy::telemetry::access_log::Format,
    /// Percent of new traces sampled (Istio's default: 1). An incoming
    /// sampling decision is always honoured.
    #[arg(long, default_value_t = 1.0, value_name = "PERCENT")]
    trace_sampling: f64,
    /// OTLP/gRPC collector (host:port) to export spans to; none: spans are
    /// not exported (trace headers still propagate).
    #[arg(long, value_name = "ADDR")]
    otlp: Option<String>,
}

/// Who this proxy's workload is (sent to weftd with --control-plane).
#[derive(clap::Args, Debug)]
struct NodeArgs {
    /// Unique proxy id (default: WORKLOAD.NAMESPACE).
    #[arg(long)]
    node_id: Option<String>,
    /// The workload's name.
    #[arg(long, default_value = "weft-proxy")]
    workload: String,
    /// The workload's namespace. Left out, weftd takes the one the
    /// proxy's certificate proves (or "default" on the plaintext port).
    #[arg(long)]
    namespace: Option<String>,
    /// A workload label, KEY=VALUE (repeatable), e.g. app=reviews.
    #[arg(long = "label", value_parser = node::parse_label)]
    labels: Vec<(String, String)>,
    /// Left out, weftd takes the one the proxy's certificate proves.
    #[arg(long)]
    service_account: Option<String>,
    /// The address other proxies reach this workload at. Left out, weftd
    /// takes the address the token bound, else the one the proxy connects
    /// from.
    #[arg(long)]
    address: Option<String>,
    /// A port the workload serves, PORT[/PROTOCOL] (repeatable).
    #[arg(long = "port", value_parser = node::parse_port)]
    ports: Vec<weft_proto::discovery::v1::WorkloadPort>,
    /// Traffic is intercepted: ask for the 15001/15006 capture listeners.
    #[arg(long)]
    capture: bool,
    /// An explicit listener, ADDRESS=SERVICE[:PORT] or ADDRESS (repeatable).
    #[arg(long = "listen", value_parser = node::parse_listener)]
    listeners: Vec<weft_proto::discovery::v1::ExplicitListener>,
    /// Run as a gateway (Istio's "router"): listeners and routes come from
    /// the Gateway resources whose selector matches this proxy's labels.
    #[arg(long, conflicts_with = "capture")]
    router: bool,
    /// With --router: how many proxies (load balancers) in front of the
    /// gateway append to X-Forwarded-For; the client address policies
    /// (`remoteIpBlocks`) and the mesh see is that many entries from the
    /// end. Istio's gatewayTopology.numTrustedProxies.
    #[arg(long, default_value_t = 0, requires = "router")]
    num_trusted_proxies: u32,
    /// Where the workload runs, REGION/ZONE/SUBZONE, for locality-aware
    /// load balancing.
    #[arg(long, default_value = "")]
    locality: String,
    /// Without interception, ADDRESS=PORT: mesh callers reach workload
    /// port PORT through this proxy at ADDRESS (repeatable; Istio's 15006).
    #[arg(long = "inbound", value_parser = node::parse_inbound)]
    inbound: Vec<weft_proto::discovery::v1::InboundListener>,
    /// The cluster the workload runs in (metrics' source/destination_cluster).
    #[arg(long, default_value = "Kubernetes")]
    cluster_id: String,
}

impl NodeArgs {
    /// Namespace and service account as this proxy reports them in
    /// telemetry: the flags, else what its identity (`spiffe://TD/ns/NS/sa/SA`)
    /// says, else "default". weftd never takes these from here when a
    /// certificate proves them.
    fn reported_identity(&self, spiffe: Option<&str>) -> (String, String) {
        let proven = spiffe.and_then(|uri| {
            let (_, path) = uri.strip_prefix("spiffe://")?.split_once('/')?;
            match path.split('/').collect::<Vec<_>>().as_slice() {
                ["ns", namespace, "sa", account] => {
                    Some((namespace.to_string(), account.to_string()))
                }
                _ => None,
            }
        });
        let (proven_namespace, proven_account) = proven.unzip();
        (
            self.namespace
                .clone()
                .or(proven_namespace)
                .unwrap_or_else(|| "default".into()),
            self.service_account
                .clone()
                .or(proven_account)
                .unwrap_or_else(|| "default".into()),
        )
    }

    fn telemetry(
        &self,
        args: &TelemetryArgs,
        spiffe: Option<&str>,
    ) -> weft_proxy::telemetry::Settings {
        let (namespace, service_account) = self.reported_identity(spiffe);
        let workload = weft_proxy::workload::Workload::local(
            &self.workload,
            &namespace,
            &self.labels,
            &service_account,
            &self.cluster_id,
        );
        weft_proxy::telemetry::Settings {
            node_id: self
                .node_id
                .clone()
                .unwrap_or_else(|| format!("{}.{namespace}", self.workload)),
            workload,
            access_log: args.access_log.clone(),
            access_log_format: args.access_log_format,
            trace_sampling: args.trace_sampling,
            otlp: args.otlp.clone(),
        }
    }

    fn into_node(self, mtls: bool, dns_capture: bool) -> weft_proto::discovery::v1::Node {
        node::NodeFlags {
            id: self.node_id,
            workload: self.workload,
            // What was not given is left for weftd to fill from the
            // credential (empty is "not claimed").
            namespace: self.namespace.unwrap_or_default(),
            labels: self.labels,
            service_account: self.service_account.unwrap_or_default(),
            address: self.address.unwrap_or_default(),
            ports: self.ports,
            capture: self.capture,
            listeners: self.listeners,
            router: self.router,
            locality: self.locality,
            inbound_listeners: self.inbound,
            mtls,
            num_trusted_proxies: self.num_trusted_proxies,
            dns_capture,
        }
        .into_node()
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    // Not dumpable: no other process of this UID (every sidecar under
    // `weft up` is 1337) may open this one's /proc/PID/root, mem or
    // environ, and through them its pod's files (its token, its key).
    if let Err(err) = nix::sys::prctl::set_dumpable(false) {
        tracing::warn!("cannot mark the process non-dumpable: {err}");
    }
    let args = Args::parse();
    if let Err(usage) = args.check() {
        eprintln!("weft-proxy: {usage}");
        return ExitCode::from(2);
    }
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("weft-proxy: {err:#}");
            ExitCode::FAILURE
        }
    }
}

impl Args {
    /// Combinations clap cannot express, refused before anything starts
    /// (exit 2) rather than looping on a connection that cannot work.
    fn check(&self) -> Result<(), String> {
        let tls_control_plane = self.control_plane.is_some() && !self.plaintext_control_plane;
        if tls_control_plane && self.identity.token_file.is_none() {
            return Err(
                "--control-plane is weftd's TLS port, where discovery needs a workload \
                 certificate and the first certificate needs a bootstrap token: give \
                 --token-file FILE (from `weft token create -n NAMESPACE --group GROUP`), or \
                 --plaintext-control-plane to use weftd's --plaintext-grpc port"
                    .into(),
            );
        }
        if (tls_control_plane || self.identity.token_file.is_some()) && self.ca_root.is_none() {
            return Err(
                "weftd is verified against a root held out of band: give --ca-root FILE \
                 (a copy of weftd's <state-dir>/root-cert.pem)"
                    .into(),
            );
        }
        if self.identity.token_file.is_some()
            && self.control_plane.is_none()
            && self.identity.ca_address.is_none()
        {
            return Err(
                "--token-file needs --ca-address or --control-plane (weftd's TLS port)".into(),
            );
        }
        Ok(())
    }
}

/// The identity to ask for: the one the bootstrap token proves (its `sub`,
/// read without verifying: weftd verifies), else the node flags'.
fn spiffe_to_ask(args: &Args, token_file: &std::path::Path) -> String {
    #[derive(serde::Deserialize)]
    struct Subject {
        sub: String,
    }
    let from_token = std::fs::read_to_string(token_file).ok().and_then(|token| {
        weft_proxy::jwt::jsonwebtoken::dangerous::insecure_decode::<Subject>(token.trim())
            .ok()
            .map(|data| data.claims.sub)
            .filter(|sub| sub.starts_with("spiffe://"))
    });
    from_token.unwrap_or_else(|| {
        format!(
            "spiffe://{}/ns/{}/sa/{}",
            args.identity.trust_domain,
            args.node.namespace.as_deref().unwrap_or("default"),
            args.node.service_account.as_deref().unwrap_or("default")
        )
    })
}

fn run(args: Args) -> anyhow::Result<()> {
    let workers = args
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get().min(2)));
    let data = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers.max(1))
        .thread_name("weft-data")
        .enable_all()
        .build()?;
    let control = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;

    let held = args.ca_root.as_deref().map(HeldRoot::load).transpose()?;
    let identity = match (&args.identity.token_file, &held) {
        (Some(token_file), Some(held)) => Some(Identity::new(
            spiffe_to_ask(&args, token_file),
            held.clone(),
        )),
        _ => None,
    };
    let security = match &held {
        Some(held) if !args.plaintext_control_plane => Security::Tls {
            held: held.clone(),
            server_name: rustls_pki_types::ServerName::try_from(args.control_plane_name.clone())
                .map_err(|err| {
                    anyhow::anyhow!("--control-plane-name {:?}: {err}", args.control_plane_name)
                })?,
        },
        _ => Security::Plaintext,
    };
    let dns = {
        // The resolver binds its sockets on the runtime it is built in.
        let _entered = data.enter();
        weft_proxy::upstream::Dns::new(&args.dns_servers)
    };
    let proxy = Proxy::with_dns(data.handle().clone(), MeshTls::new(identity.clone()), dns);
    let state = proxy.state.clone();
    state.metrics.telemetry.configure(args.node.telemetry(
        &args.telemetry,
        identity.as_ref().map(|id| id.spiffe.as_str()),
    ))?;
    if args.dns.dns_auto_allocate {
        tracing::warn!(
            "ISTIO_META_DNS_AUTO_ALLOCATE has no effect: weftd always allocates VIPs for \
             ServiceEntries without addresses (as Istio 1.25+), and DNS capture answers them"
        );
    }
    if args.dns.dns_capture {
        let (listen, upstreams) = (args.dns.dns_listen, &args.dns.dns_upstream);
        let server = data
            .block_on(weft_proxy::dns::DnsServer::start(listen, upstreams))
            .map_err(|err| anyhow::anyhow!("--dns-capture: {err}"))?;
        data.spawn(server.serve(state.clone()));
    }
    // At start-up there is no last good config to fall back on: refuse to run.
    let initial = args.config.as_deref().map(read_config).transpose()?;

    control.block_on(async {
        for (surface, address) in [
            (Surface::Admin, args.admin),
            (Surface::Health, args.health),
            (Surface::Metrics, args.metrics),
        ] {
            let server = admin::bind(surface, address, state.clone())
                .await
                .map_err(|err| {
                    anyhow::anyhow!("cannot listen on {address} for {surface:?}: {err}")
                })?;
            tokio::spawn(server);
        }
        let probers = admin::app_probes::AppProbers::new(
            args.app_probers.clone().unwrap_or_default(),
            args.node.address.as_deref(),
        )
        .map_err(|err| anyhow::anyhow!("app probes: {err}"))?;
        // The status port is served for merged metrics or for app probes:
        // a pod whose probes were rewritten needs it either way.
        if args.merged_metrics.is_some() || !probers.is_empty() {
            let address = args.merged_metrics.unwrap_or(args.status);
            let status = admin::StatusPort {
                merged_metrics: args.merged_metrics.is_some(),
                app_metrics: args.app_metrics.clone(),
                probers,
            };
            let server = admin::bind_status(address, state.clone(), status)
                .await
                .map_err(|err| {
                    anyhow::anyhow!("cannot listen on {address} for the status port: {err}")
                })?;
            tokio::spawn(server);
        }
        if let (Some(identity), Some(token_file)) = (&identity, &args.identity.token_file) {
            let Some(ca_address) = args
                .identity
                .ca_address
                .clone()
                .or_else(|| args.control_plane.clone())
            else {
                anyhow::bail!("--token-file needs --ca-address or --control-plane (weftd's CA)");
            };
            let options = FetchOptions {
                ca: ControlPlane {
                    address: ca_address,
                    security: security.clone(),
                },
                token_file: token_file.clone(),
            };
            tokio::spawn(fetch::run(options, identity.clone()));
            let watched = identity.clone();
            tokio::spawn(
                identity
                    .held_root()
                    .clone()
                    .watch(trust::POLL_INTERVAL, move || watched.held_root_changed()),
            );
            tokio::spawn(report_certificate_expiry(identity.clone(), state.clone()));
        }
        if let (Some(config), Some(path)) = (initial, &args.config) {
            // Not ready (no config) until a certificate is held.
            if let Some(identity) = &identity {
                wait_for_certificate(identity).await;
            }
            proxy.apply(config, &path.display().to_string())?;
        }
        match (&args.config, args.control_plane) {
            (Some(path), _) => {
                let source = path.display().to_string();
                tokio::spawn(watch_file(path.clone(), args.reload_interval.into(), {
                    let proxy = proxy.clone();
                    move |parsed| reload(&proxy, parsed, &source)
                }));
            }
            (None, Some(address)) => {
                let node = args
                    .node
                    .into_node(identity.is_some(), args.dns.dns_capture);
                let proxy = proxy.clone();
                let identity = identity.clone();
                tokio::spawn(async move {
                    // Not ready until a certificate is held: config comes after.
                    if let Some(identity) = &identity {
                        wait_for_certificate(identity).await;
                    }
                    let control_plane = ControlPlane { address, security };
                    xds::run(control_plane, node, proxy, identity).await
                });
            }
            (None, None) => anyhow::bail!("give --config FILE or --control-plane ADDRESS"),
        }
        wait_for_shutdown(&state).await?;
        // Drain on the data runtime while this one keeps the admin endpoints
        // answering (`/ready` says DRAINING).
        let drain = state.drain.clone();
        let deadline = args.drain_timeout.into();
        tracing::info!(
            open = drain.open_connections(),
            "draining: listeners closed, waiting up to {deadline:?} for connections"
        );
        let drained = data
            .spawn(async move { drain.wait_connections(deadline).await })
            .await
            .unwrap_or(false);
        if drained {
            tracing::info!("drained: all connections finished");
        } else {
            tracing::warn!(
                open = state.drain.open_connections(),
                "drain deadline passed; closing the rest"
            );
        }
        anyhow::Ok(())
    })?;
    data.shutdown_timeout(std::time::Duration::from_millis(200));
    Ok(())
}

fn reload(
    proxy: &Proxy,
    parsed: Result<weft_proto::proxy::v1::ProxyConfig, weft_proxy::config::ConfigError>,
    source: &str,
) {
    let result = match parsed {
        // `apply` records its own outcome.
        Ok(config) => proxy.apply(config, source),
        Err(err) => {
            proxy.state.reject(&err);
            Err(err)
        }
    };
    if let Err(err) = result {
        tracing::error!("config rejected, the previous config keeps serving:\n  {err}");
    }
}

/// Keeps `weft_certificate_expiry_timestamp_seconds` on the certificate
/// held now, through every renewal.
async fn report_certificate_expiry(identity: Arc<Identity>, state: Arc<ProxyState>) {
    let mut changes = identity.subscribe();
    loop {
        if let Some(cert) = identity.current() {
            let expiry = cert
                .not_after
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
            state.metrics.set_certificate_expiry(expiry);
        }
        if changes.changed().await.is_err() {
            return;
        }
    }
}

async fn wait_for_certificate(identity: &Identity) {
    let mut changes = identity.subscribe();
    while identity.current().is_none() {
        if changes.changed().await.is_err() {
            return;
        }
    }
}

async fn wait_for_shutdown(state: &ProxyState) -> anyhow::Result<()> {
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = terminate.recv() => tracing::info!("SIGTERM: draining"),
        _ = interrupt.recv() => tracing::info!("SIGINT: draining"),
        _ = state.drain.signaled() => {}
    }
    state.drain.start();
    Ok(())
}
