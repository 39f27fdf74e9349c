//! weftd: Weft's control plane (Istio's istiod).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use tokio::sync::watch;
use weft_control::push::mesh::{self, Connected, Mesh};
use weft_control::push::{DiscoveryServer, DiscoveryService};
use weft_control::status::StatusBoard;
use weft_control::store::Store;
use weft_control::store::files::{DirectorySource, watch_dir};

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
    /// Discovery (gRPC) address the proxies connect to.
    #[arg(long, default_value = "127.0.0.1:15010")]
    grpc: SocketAddr,
    /// HTTP API for `weft apply/get/delete/proxy-status`.
    #[arg(long, default_value = "127.0.0.1:15014")]
    api: SocketAddr,
    /// Changes arriving within this window are compiled and pushed together.
    #[arg(long, default_value = "100ms")]
    debounce: humantime::Duration,
    /// How often the config directory is checked for changes.
    #[arg(long, default_value = "500ms")]
    config_interval: humantime::Duration,
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
    let store = Arc::new(Store::open(&args.state_dir)?);
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

    let status = Arc::new(StatusBoard::default());
    let connected = Arc::new(Connected::default());
    let (publish, meshes) = watch::channel(Arc::new(Mesh::empty()));
    tokio::spawn(mesh::build_loop(
        store.clone(),
        connected.clone(),
        args.debounce.into(),
        publish,
    ));

    let api = tokio::net::TcpListener::bind(args.api)
        .await
        .map_err(|err| anyhow::anyhow!("cannot listen on {} for the API: {err}", args.api))?;
    tokio::spawn(weft_control::api::serve(api, store.clone(), status.clone()));
    tracing::info!("API listening on {}", args.api);

    let grpc = tokio::net::TcpListener::bind(args.grpc)
        .await
        .map_err(|err| anyhow::anyhow!("cannot listen on {} for discovery: {err}", args.grpc))?;
    tracing::info!("discovery listening on {}", args.grpc);
    let service = DiscoveryServer::new(DiscoveryService::new(meshes, connected, status));
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tonic::transport::Server::builder()
        .add_service(service)
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(grpc),
            async move {
                tokio::select! {
                    _ = terminate.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
                tracing::info!("shutting down");
            },
        )
        .await?;
    Ok(())
}
