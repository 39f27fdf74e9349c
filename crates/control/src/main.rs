//! weftd: Weft's control plane (Istio's istiod).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use tokio::sync::watch;
use weft_control::ca::kube::KubeIdentity;
use weft_control::ca::listener::{self, ServingCert};
use weft_control::ca::{Ca, CaOptions};
use weft_control::push::mesh::{self, BuildInputs, Mesh};
use weft_control::push::registrations::{self, Registrations};
use weft_control::push::{
    CertificateService, CertificatesServer, DiscoveryServer, DiscoveryService,
};
use weft_control::status::StatusBoard;
use weft_control::store::Store;
use weft_control::store::files::{DirectorySource, watch_dir};

// jemalloc returns the memory of push bursts (a full sync of many proxies
// at once) to the system, where glibc's allocator keeps it.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read once at start-up: a background thread returns
/// freed pages after a second (the default keeps them ten), so what a mesh
/// build or a mass sync freed stops counting in weftd's RSS soon after.
#[repr(transparent)]
struct MallocConf(*const std::ffi::c_char);
// SAFETY: a pointer to a constant C string, only ever read.
unsafe impl Sync for MallocConf {}
#[unsafe(export_name = "_rjem_malloc_conf")]
static MALLOC_CONF: MallocConf =
    MallocConf(c"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0".as_ptr());

/// Weft's control plane: validates and stores Istio resources, keeps the
/// service registry, and pushes each proxy its compiled config.
#[derive(Parser, Debug)]
#[command(name = "weftd", version)]
struct Args {
    /// Where applied resources are kept, so a restart loses nothing.
    #[arg(long, default_value = ".weft/state")]
    state_dir: PathBuf,
    /// A directory of Istio YAML to serve (watched for changes).
    #[arg(long)]
    config_dir: Option<PathBuf>,
    /// Discovery and certificate signing over TLS (Istio's 15012), with a
    /// serving certificate from weftd's own CA.
    #[arg(long, default_value = "127.0.0.1:15012")]
    xds: SocketAddr,
    /// One more name (DNS) or IP in the --xds serving certificate
    /// (repeatable); `weftd`, `weftd.weft-system.svc`, `localhost`,
    /// loopback and the listen IP are always there.
    #[arg(long = "xds-san", value_name = "NAME|IP")]
    xds_sans: Vec<String>,
    /// Plaintext discovery (Istio's 15010), OFF unless given: proxies there
    /// are trusted at their word, for tests and development only. No
    /// certificates are signed on it.
    #[arg(long, value_name = "ADDR")]
    plaintext_grpc: Option<SocketAddr>,
    /// HTTP API for `weft apply/get/delete/proxy-status` (TCP: callers
    /// show the bearer token in <state-dir>/admin-token).
    #[arg(long, default_value = "127.0.0.1:15014")]
    api: SocketAddr,
    /// The API's unix socket (mode 0600: no token needed, file permissions
    /// are the credential). Default: <state-dir>/api.sock.
    #[arg(long)]
    api_socket: Option<PathBuf>,
    /// Changes arriving within this window are compiled and pushed together.
    #[arg(long, default_value = "100ms")]
    debounce: humantime::Duration,
    /// How often the config directory is checked for changes.
    #[arg(long, default_value = "500ms")]
    config_interval: humantime::Duration,
    /// Plug-in CA: a directory in Istio's `cacerts` layout (ca-cert.pem,
    /// ca-key.pem, root-cert.pem, cert-chain.pem). Default: a self-signed
    /// root kept in <state-dir>/ca/.
    #[arg(long)]
    cacerts: Option<PathBuf>,
    /// The SPIFFE trust domain of workload identities (default: the
    /// MeshConfig's trustDomain, else cluster.local).
    #[arg(long)]
    trust_domain: Option<String>,
    /// Istio's MeshConfig (YAML or JSON), watched: a valid change applies
    /// live, an invalid one is refused whole. Default: `meshconfig.yaml`
    /// in --config-dir; on Kubernetes without either, the `mesh` key of
    /// the `istio` ConfigMap in the root namespace.
    #[arg(long, value_name = "PATH")]
    mesh_config: Option<PathBuf>,
    /// Kubernetes mode: the namespace of the `istio` MeshConfig ConfigMap
    /// (Istio's root namespace).
    #[arg(long, default_value = weft_api::mesh::DEFAULT_ROOT_NAMESPACE)]
    mesh_config_namespace: String,
    /// Lifetime of workload certificates (at most 90 days).
    #[arg(long, default_value = "24h")]
    workload_cert_ttl: humantime::Duration,
    /// How long a proxy whose stream ended (or that a restarted weftd knew)
    /// stays registered, its endpoints pushed, before it is removed (Istio's
    /// auto-registration cleanup grace). A proxy that says goodbye on a
    /// clean shutdown leaves at once.
    #[arg(long, default_value = "10s")]
    registration_grace: humantime::Duration,
    /// Kubernetes mode with this kubeconfig: Services, EndpointSlices,
    /// Pods, Nodes and the Istio CRDs of its cluster become a source, and
    /// pods' service-account tokens bootstrap identities (TokenReview).
    #[arg(long, value_name = "PATH")]
    kubeconfig: Option<PathBuf>,
    /// Kubernetes mode with the in-cluster config (weftd in a pod: its
    /// service account and KUBERNETES_SERVICE_HOST/PORT).
    #[arg(long, conflicts_with = "kubeconfig")]
    kubernetes: bool,
    /// The cluster's DNS domain: Services are <name>.<ns>.svc.<domain>.
    #[arg(long, default_value = "cluster.local")]
    cluster_domain: String,
    /// An audience pods' tokens must be valid for (repeatable; Istio's
    /// `istio-ca` by default, which injected sidecars project).
    #[arg(
        long = "token-audience",
        value_name = "AUDIENCE",
        default_value = "istio-ca"
    )]
    token_audiences: Vec<String>,
    /// Kubernetes mode: the namespace of the leader Lease (weftd's own).
    #[arg(long, env = "POD_NAMESPACE", default_value = "weft-system")]
    leader_namespace: String,
    /// Kubernetes mode: this replica's name in the Lease (default: the
    /// pod's name, else host name and pid).
    #[arg(long, env = "POD_NAME")]
    leader_id: Option<String>,
    /// Kubernetes mode: how long the leader's Lease holds unrenewed.
    #[arg(long, default_value = "15s")]
    leader_lease: humantime::Duration,
    #[command(flatten)]
    webhook: weft_control::webhook::WebhookArgs,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("weftd: cannot start: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("weftd: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    weft_control::durable::private_dir(&args.state_dir).map_err(|err| {
        anyhow::anyhow!(
            "cannot make the state directory {}: {err}",
            args.state_dir.display()
        )
    })?;
    let store = Arc::new(Store::open(&args.state_dir)?);
    // The MeshConfig first: its trustDomain is the CA's.
    let mesh_config_file = args.mesh_config.clone().or_else(|| {
        args.config_dir
            .as_ref()
            .map(|dir| dir.join(weft_control::meshconfig::FILE_NAME))
    });
    let kube_client = kubernetes_client(&args).await?;
    let mesh_config = match (&mesh_config_file, &kube_client) {
        (None, Some(client)) => {
            let namespace = &args.mesh_config_namespace;
            let text = weft_kube::mesh_config::get(client.clone(), namespace).await?;
            weft_control::meshconfig::initial_config_map(namespace, text.as_deref())
        }
        (file, _) => weft_control::meshconfig::initial(file.as_deref()),
    }
    .map_err(|err| anyhow::anyhow!("{err}"))?;
    let trust_domain = trust_domain(args.trust_domain.as_deref(), &mesh_config)?;
    tracing::info!(
        "MeshConfig from {}; trust domain {trust_domain}",
        mesh_config.source
    );
    for warning in &mesh_config.loaded.warnings {
        tracing::warn!("MeshConfig ({}): {warning}", mesh_config.source);
    }
    let (mesh_config_held, mesh_config_seen) = watch::channel(Arc::new(mesh_config));
    let ca = Arc::new(Ca::open(&CaOptions {
        state_dir: args.state_dir.clone(),
        cacerts: args.cacerts.clone(),
        trust_domain: trust_domain.clone(),
        workload_ttl: args.workload_cert_ttl.into(),
    })?);
    tracing::info!(
        resources = store.list(None, None).len(),
        "store opened at {}",
        args.state_dir.display()
    );
    if let Some(dir) = &args.config_dir {
        let mut source = DirectorySource::default();
        for problem in source.sync(dir, &store) {
            tracing::error!("config directory: {problem}");
        }
        tokio::spawn(watch_dir(
            dir.clone(),
            store.clone(),
            args.config_interval.into(),
            source,
        ));
    }

    // Kubernetes mode: nothing is built or served before the cluster's
    // caches synced, so a (re)started weftd never pushes a cluster without
    // its Services (Istio waits the same way).
    if let Some(client) = &kube_client {
        let options = weft_kube::source::Options {
            cluster_domain: args.cluster_domain.clone(),
            ..Default::default()
        };
        let mut states = weft_kube::source::spawn(client.clone(), options).await;
        tracing::info!("waiting for the cluster's caches to sync");
        states
            .wait_for(Option::is_some)
            .await
            .map_err(|_| anyhow::anyhow!("the cluster source stopped before it synced"))?;
        tokio::spawn(weft_control::store::follow_cluster(
            store.clone(),
            states.clone(),
        ));
        // One replica writes the namespaces' trust roots; all serve.
        let (leading, is_leader) = watch::channel(false);
        let identity = args.leader_id.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
            format!("{}-{}", host.trim(), std::process::id())
        });
        tokio::spawn(weft_kube::leader::run(
            client.clone(),
            weft_kube::leader::Options {
                namespace: args.leader_namespace.clone(),
                name: "weftd-leader".into(),
                identity,
                duration: args.leader_lease.into(),
            },
            leading,
        ));
        tokio::spawn(weft_kube::leader::publish_root_cert(
            client.clone(),
            ca.roots_pem().to_string(),
            is_leader,
            states,
            std::time::Duration::from_secs(60),
        ));
    }

    match (&mesh_config_file, &kube_client) {
        (Some(path), _) => {
            tokio::spawn(weft_control::meshconfig::watch_file(
                path.clone(),
                args.config_interval.into(),
                mesh_config_held.clone(),
                trust_domain.clone(),
            ));
        }
        (None, Some(client)) => {
            let (changes, changed) = tokio::sync::mpsc::channel(4);
            tokio::spawn(weft_kube::mesh_config::watch(
                client.clone(),
                args.mesh_config_namespace.clone(),
                changes,
            ));
            tokio::spawn(weft_control::meshconfig::follow_config_map(
                changed,
                args.mesh_config_namespace.clone(),
                mesh_config_held.clone(),
                trust_domain.clone(),
            ));
        }
        (None, None) => {}
    }

    let status = Arc::new(StatusBoard::default());
    let registrations = Arc::new(Registrations::new(
        args.registration_grace.into(),
        registrations::DEFAULT_STREAMS_PER_IDENTITY,
    ));
    // Before the first build: its pushes keep every endpoint the last
    // weftd pushed, and proxies that do not come back go after the grace.
    let (saved, problem) = registrations::load(&args.state_dir);
    if let Some(problem) = problem {
        tracing::error!("{problem}");
    }
    for registration in &saved {
        status.update(&registration.node.id, |proxy| {
            proxy.workload.clone_from(&registration.node.workload);
            proxy.namespace.clone_from(&registration.node.namespace);
        });
    }
    tracing::info!(
        restored = saved.len(),
        "registrations restored; proxies have {} to reconnect",
        args.registration_grace
    );
    registrations.restore(saved, std::time::Instant::now());
    tokio::spawn(weft_control::push::expire_loop(
        registrations.clone(),
        status.clone(),
    ));
    tokio::spawn(weft_control::push::readmit_loop(
        store.clone(),
        registrations.clone(),
    ));
    let (publish, meshes) = watch::channel(Arc::new(Mesh::empty()));
    tokio::spawn(mesh::build_loop(
        BuildInputs {
            store: store.clone(),
            registrations: registrations.clone(),
            status: status.clone(),
            state_dir: Some(args.state_dir.clone()),
            trust_domain: trust_domain.clone(),
            mesh_config: mesh_config_seen.clone(),
        },
        args.debounce.into(),
        publish,
    ));

    let mut admin_token = weft_control::api::AdminToken::load_or_create(
        &args.state_dir.join(weft_control::api::ADMIN_TOKEN_FILE),
    )?;
    if let Some(client) = &kube_client {
        admin_token = cluster_admin_token(client, &args.leader_namespace, admin_token).await;
    }
    let api = Arc::new(
        weft_control::api::Api::new(store.clone(), status.clone(), admin_token)
            .with_ca(ca.clone())
            .with_mesh_config(mesh_config_seen),
    );
    let socket_path = args
        .api_socket
        .clone()
        .unwrap_or_else(|| args.state_dir.join(weft_control::api::SOCKET_FILE));
    let socket = weft_control::api::bind_socket(&socket_path).map_err(|err| {
        anyhow::anyhow!(
            "cannot listen on {} for the API: {err}",
            socket_path.display()
        )
    })?;
    tokio::spawn(weft_control::api::serve(socket, api.clone()));
    let tcp = tokio::net::TcpListener::bind(args.api)
        .await
        .map_err(|err| anyhow::anyhow!("cannot listen on {} for the API: {err}", args.api))?;
    tokio::spawn(weft_control::api::serve(tcp, api));
    tracing::info!(
        "API listening on {} (bearer token in {}) and {}",
        args.api,
        args.state_dir
            .join(weft_control::api::ADMIN_TOKEN_FILE)
            .display(),
        socket_path.display()
    );

    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let names = listener::serving_names(args.xds.ip(), &args.xds_sans)?;
    let serving = Arc::new(ServingCert::issue(&ca, &names, &provider)?);
    tokio::spawn(
        serving
            .clone()
            .renew_loop(ca.clone(), names, provider.clone()),
    );
    let _webhooks = weft_control::webhook::start(
        &args.webhook,
        serving.clone(),
        provider.clone(),
        ca.roots_pem(),
        kube_client.clone(),
        mesh_config_held.subscribe(),
    )
    .await?;
    let tls = listener::server_config(serving, ca.roots_pem(), provider)?;
    tracing::info!(
        "mesh root for proxies' --ca-root: {}",
        args.state_dir.join("root-cert.pem").display()
    );

    let discovery = Arc::new(
        DiscoveryService::new(meshes, store.clone(), registrations, status)
            .with_trust_bundle(ca.roots_pem()),
    );
    let mut certificates = CertificateService::new(ca.clone());
    if let Some(client) = &kube_client {
        let reviewer =
            weft_kube::identity::TokenReviewer::new(client.clone(), args.token_audiences.clone());
        certificates = certificates.with_kubernetes(KubeIdentity::new(
            reviewer,
            store.clone(),
            trust_domain.clone(),
        ));
    }
    let (stop, stopped) = watch::channel(false);
    let shutdown = |mut stopped: watch::Receiver<bool>| async move {
        let _ = stopped.wait_for(|stop| *stop).await;
    };

    let xds = tokio::net::TcpListener::bind(args.xds)
        .await
        .map_err(|err| anyhow::anyhow!("cannot listen on {} for --xds: {err}", args.xds))?;
    tracing::info!(
        "discovery and certificates (TLS) listening on {}",
        xds.local_addr().unwrap_or(args.xds)
    );
    let secure = tonic::transport::Server::builder()
        .add_service(tonic::service::interceptor::InterceptedService::new(
            DiscoveryServer::from_arc(discovery.clone()),
            listener::require_workload,
        ))
        .add_service(CertificatesServer::new(certificates))
        .serve_with_incoming_shutdown(
            listener::tls_incoming(xds, tls, trust_domain.clone()),
            shutdown(stopped.clone()),
        );
    let secure = tokio::spawn(secure);

    let plaintext = match args.plaintext_grpc {
        Some(address) => {
            let plain = tokio::net::TcpListener::bind(address)
                .await
                .map_err(|err| {
                    anyhow::anyhow!("cannot listen on {address} for --plaintext-grpc: {err}")
                })?;
            tracing::warn!(
                "plaintext discovery listening on {}: proxies there are trusted at their word \
                 (no certificate, no identity); for tests and development only",
                plain.local_addr().unwrap_or(address)
            );
            Some(tokio::spawn(
                tonic::transport::Server::builder()
                    .add_service(DiscoveryServer::from_arc(discovery))
                    .serve_with_incoming_shutdown(
                        listener::plaintext_incoming(plain),
                        shutdown(stopped.clone()),
                    ),
            ))
        }
        None => None,
    };

    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut secure = secure;
    tokio::select! {
        _ = terminate.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
        // A server that ends on its own is an error: weftd must not keep
        // running without its discovery port.
        ended = &mut secure => {
            ended??;
            anyhow::bail!("the --xds server stopped");
        }
    }
    tracing::info!("shutting down");
    let _ = stop.send(true);
    secure.await??;
    if let Some(plaintext) = plaintext {
        plaintext.await??;
    }
    // Held to here: the build loop stops when the MeshConfig's sender goes.
    drop(mesh_config_held);
    Ok(())
}

/// `--trust-domain`, else the MeshConfig's, else Istio's default; both
/// given and different is an error (which would the CA issue in?).
fn trust_domain(
    flag: Option<&str>,
    mesh_config: &weft_control::meshconfig::InForce,
) -> anyhow::Result<String> {
    let config = &mesh_config.loaded.config;
    match (flag, config.trust_domain.as_deref()) {
        (Some(flag), Some(mesh)) if flag != mesh => anyhow::bail!(
            "--trust-domain {flag:?} and the MeshConfig's trustDomain {mesh:?} ({}) differ; \
             give one",
            mesh_config.source
        ),
        (Some(flag), _) => Ok(flag.to_string()),
        (None, _) => Ok(config.trust_domain().to_string()),
    }
}

/// Also accepts the token of weftd's Secret in its namespace (made here
/// if no replica made it yet): `weft ... --kubeconfig` reads it and comes
/// through the API server's service proxy (`weft_kube::api_token`). Without
/// it weftd still serves, only not to those callers, and says so.
async fn cluster_admin_token(
    client: &weft_kube::kube::Client,
    namespace: &str,
    local: weft_control::api::AdminToken,
) -> weft_control::api::AdminToken {
    let bytes: [u8; 32] = rand::random();
    let candidate: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    match weft_kube::api_token::ensure(client.clone(), namespace, &candidate).await {
        Ok(token) => {
            tracing::info!(
                "API: also accepting the admin token of the Secret {namespace}/{} (callers \
                 through the Kubernetes API server)",
                weft_kube::api_token::SECRET
            );
            local.also(token)
        }
        Err(err) => {
            tracing::warn!(
                "API: `weft --kubeconfig` cannot reach this weftd through the API server: \
                 {err:#} (weftd needs RBAC to get and create Secrets in {namespace})"
            );
            local
        }
    }
}

/// The Kubernetes client of `--kubeconfig` or `--kubernetes`, if either.
async fn kubernetes_client(args: &Args) -> anyhow::Result<Option<weft_kube::kube::Client>> {
    use weft_kube::kube;
    let config = if let Some(path) = &args.kubeconfig {
        let file = kube::config::Kubeconfig::read_from(path)
            .map_err(|err| anyhow::anyhow!("--kubeconfig {}: {err}", path.display()))?;
        kube::Config::from_custom_kubeconfig(file, &Default::default())
            .await
            .map_err(|err| anyhow::anyhow!("--kubeconfig {}: {err}", path.display()))?
    } else if args.kubernetes {
        kube::Config::incluster().map_err(|err| {
            anyhow::anyhow!(
                "--kubernetes: no in-cluster config ({err}); is weftd running in a pod with \
                 a service account? Elsewhere use --kubeconfig PATH"
            )
        })?
    } else {
        return Ok(None);
    };
    let url = config.cluster_url.clone();
    let client = kube::Client::try_from(config)
        .map_err(|err| anyhow::anyhow!("Kubernetes client for {url}: {err}"))?;
    tracing::info!("Kubernetes mode: reading the cluster at {url}");
    Ok(Some(client))
}
