//! `weft up DIR`: a whole mesh on this machine. A node network namespace
//! with a bridge; per workload instance a pod namespace with the app and a
//! sidecar (UID 1337) behind Istio-style interception rules; ingress
//! gateways; weftd on the host, reached from the node through a relay.
//! Stays in the foreground; Ctrl-C (or `weft down`) tears it all down.
//! docs/weft-up.md describes the mesh file and each step.

/// `eprintln!` that cannot panic: after SIGHUP the terminal is gone, and a
/// failed write must not cut the teardown short.
macro_rules! note {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

mod down;
mod identity;
pub mod meshfile;
pub(crate) mod network;
mod plan;
mod pod;
mod privileges;
mod process;
mod relay;
mod start;
pub mod state;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use tokio::signal::unix::{Signal, SignalKind, signal};
use weft_kube::inject::annotations::Options;

pub use down::down;

use self::plan::Plan;
use self::start::Running;

/// Exit code when the machine lacks what `weft up` needs.
const EXIT_PRIVILEGES: u8 = 2;

#[derive(clap::Args, Debug)]
pub struct UpArgs {
    /// A directory with `mesh.yaml` (kind Mesh) and Istio resources.
    pub dir: PathBuf,
    /// The mesh's name (namespaces `weft-NAME-*`, state under
    /// `$WEFT_HOME/meshes/NAME`); default: metadata.name, else the
    /// directory's name.
    #[arg(long)]
    pub name: Option<String>,
    /// Host address of the first gateway's first exposed port (default: as
    /// the mesh file says, 127.0.0.1:8080 in the demo).
    #[arg(long, value_name = "ADDR")]
    pub ingress: Option<SocketAddr>,
    /// weftd's API address (default 127.0.0.1:15014, or a free port if
    /// that one is taken).
    #[arg(long, value_name = "ADDR")]
    pub api: Option<SocketAddr>,
}

pub fn up(args: UpArgs) -> ExitCode {
    let plan = match prepare(&args) {
        Ok(plan) => plan,
        Err(message) => {
            note!("{message}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(message) = privileges::check() {
        note!("{message}");
        return ExitCode::from(EXIT_PRIVILEGES);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            note!("weft up: cannot start the I/O runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(plan, &args))
}

/// Everything that can be checked before touching the machine: the mesh
/// file, the Istio files beside it, the mesh name, the binaries.
fn prepare(args: &UpArgs) -> Result<Plan, String> {
    let dir = std::fs::canonicalize(&args.dir)
        .map_err(|err| format!("weft up: {}: {err}", args.dir.display()))?;
    let file = args.dir.join(meshfile::FILE_NAME);
    let mesh = meshfile::load(&dir).map_err(|message| {
        // Name the file as the user wrote the directory.
        message.replace(meshfile::FILE_NAME, &file.display().to_string())
    })?;
    let name = args
        .name
        .clone()
        .or_else(|| mesh.metadata.name.clone())
        .or_else(|| dir.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default();
    if !meshfile::is_name(&name, meshfile::MESH_NAME_MAX) {
        return Err(format!(
            "weft up: mesh name {name:?} (from --name, metadata.name or the directory) {}",
            meshfile::name_rule(meshfile::MESH_NAME_MAX)
        ));
    }
    check_istio_files(&dir)?;
    let bin_dir = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf))
        .ok_or("weft up: cannot tell where the weft binary is")?;
    for binary in ["weftd", "weft-proxy"] {
        if !bin_dir.join(binary).is_file() {
            return Err(format!(
                "weft up: {binary} is not next to weft in {}; build the workspace (`cargo build --release --workspace`, as scripts/up does)",
                bin_dir.display()
            ));
        }
    }
    let mut plan = Plan::new(&mesh, &name, &dir, &bin_dir);
    plan.proxy_defaults = mesh_proxy_defaults(&dir)?;
    plan.dns_capture |= plan.proxy_defaults.capture.dns;
    Ok(plan)
}

/// DIR/meshconfig.yaml's `defaultConfig`, read as injection reads it on
/// Kubernetes (the file was checked by [`check_istio_files`]).
fn mesh_proxy_defaults(dir: &Path) -> Result<Options, String> {
    let path = dir.join(weft_api::mesh::FILE_NAME);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Options::default()),
        Err(err) => return Err(format!("weft up: {}: {err}", path.display())),
    };
    let loaded = weft_api::mesh::parse(&text)
        .map_err(|errors| format!("weft up: {}: {}", path.display(), errors.join("; ")))?;
    let defaults = loaded.config.default_config.unwrap_or_default();
    let read = weft_kube::inject::annotations::read_with_defaults(&Default::default(), &defaults)
        .map_err(|err| format!("weft up: {}: {err}", path.display()))?;
    for warning in read.warnings {
        eprintln!("weft up: warning: {}: {warning}", path.display());
    }
    Ok(read.options)
}

/// The Istio resources (and MeshConfig) weftd will load from DIR
/// (`--config-dir`), checked now so that a typo stops `weft up` before
/// anything starts.
fn check_istio_files(dir: &Path) -> Result<(), String> {
    let files = weft_api::config_files(dir)
        .map_err(|err| format!("weft up: cannot list {}: {err}", dir.display()))?;
    let mut problems = Vec::new();
    for file in files {
        if file.parent() == Some(dir) && file.file_name() == Some(meshfile::FILE_NAME.as_ref()) {
            continue;
        }
        let decoded = weft_api::decode_file(&file);
        problems.extend(decoded.problems.iter().map(ToString::to_string));
    }
    // DIR/meshconfig.yaml: weftd would refuse to start with an invalid one.
    for message in crate::meshconfig::offline_messages(&[dir.to_path_buf()]) {
        if message.level == weft_api::analyze::Level::Error {
            problems.push(format!("{}: MeshConfig {}", message.origin, message.text));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        problems.push(format!(
            "weft up: {} problem(s) in the Istio files of {}; nothing started",
            problems.len(),
            dir.display()
        ));
        Err(problems.join("\n"))
    }
}

/// The signals that stop the mesh: Ctrl-C, `weft down` (SIGTERM), and a
/// closed terminal.
struct Signals(Vec<Signal>);

impl Signals {
    fn install() -> std::io::Result<Self> {
        Ok(Self(vec![
            signal(SignalKind::interrupt())?,
            signal(SignalKind::terminate())?,
            signal(SignalKind::hangup())?,
        ]))
    }

    async fn next(&mut self) {
        let [a, b, c] = self.0.as_mut_slice() else {
            return std::future::pending().await;
        };
        tokio::select! {
            _ = a.recv() => {}
            _ = b.recv() => {}
            _ = c.recv() => {}
        }
    }
}

async fn run(plan: Plan, args: &UpArgs) -> ExitCode {
    let mut signals = match Signals::install() {
        Ok(signals) => signals,
        Err(err) => {
            note!("weft up: cannot handle signals: {err}");
            return ExitCode::FAILURE;
        }
    };
    let mut running = match Running::claim(plan) {
        Ok(running) => running,
        Err(err) => {
            note!("weft up: {err:#}");
            return ExitCode::FAILURE;
        }
    };
    let began = std::time::Instant::now();
    let started = tokio::select! {
        result = running.start(args.ingress, args.api) => result,
        _ = signals.next() => Err(anyhow::anyhow!("interrupted while starting")),
    };
    let code = match started {
        Ok(()) => {
            running.print_summary(began.elapsed());
            running.supervise(&mut signals).await;
            note!("weft up: stopping");
            ExitCode::SUCCESS
        }
        Err(err) => {
            note!("weft up: {err:#}");
            note!("weft up: undoing what was started");
            ExitCode::FAILURE
        }
    };
    let problems = running.tear_down().await;
    for problem in &problems {
        note!("weft up: cleanup: {problem}");
    }
    if problems.is_empty() {
        note!(
            "weft up: stopped; logs kept in {}",
            running.logs_dir().display()
        );
        code
    } else {
        ExitCode::FAILURE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_invalid_mesh_config_stops_weft_up_before_anything_starts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join(weft_api::mesh::FILE_NAME);
        std::fs::write(&file, "connectTimeout: 3s\nenablePrometheusMerge: true\n").expect("write");
        assert_eq!(
            check_istio_files(dir.path()),
            Ok(()),
            "warnings do not stop it"
        );
        std::fs::write(&file, "connectTimeout: later\n").expect("write");
        let err = check_istio_files(dir.path()).expect_err("refused");
        assert!(
            err.contains("MeshConfig connectTimeout: \"later\" is not a duration")
                && err.contains("nothing started"),
            "{err}"
        );
    }

    #[test]
    fn the_mesh_default_config_reaches_every_proxy_weft_up_starts() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(mesh_proxy_defaults(dir.path()), Ok(Options::default()));
        let file = dir.path().join(weft_api::mesh::FILE_NAME);
        std::fs::write(
            &file,
            "defaultConfig:\n  concurrency: 2\n  terminationDrainDuration: 1.5s\n  \
             proxyMetadata: {ISTIO_META_DNS_CAPTURE: \"true\"}\n",
        )
        .expect("write");
        let options = mesh_proxy_defaults(dir.path()).expect("read");
        assert_eq!(
            options.proxy_flags(),
            ["--workers", "2", "--drain-timeout", "1500ms"]
        );
        assert!(options.capture.dns, "DNS capture for every workload pod");
    }
}
