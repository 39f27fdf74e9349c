//! weft: the Weft command line (Istio's istioctl).
//!
//! `validate` and `version` work offline; `up` runs a whole mesh on this
//! machine and `down` stops it; `install`/`uninstall` and `kube-inject` are
//! Kubernetes mode (`intercept` and `wait-proxy` run inside pods); `apply`, `get`, `delete`, `token` and
//! `proxy-status` talk to weftd's HTTP API, found with its credential as
//! [`client::Target::resolve`] says (`--weftd`/`$WEFT_ADDR` with
//! `--token-file`/`$WEFT_TOKEN_FILE`, else the running `weft up`, else
//! `.weft/state/api.sock`, else 127.0.0.1:15014). With `--kubeconfig` or
//! `--context`, `proxy-status`, `get`, `describe`, `proxy-config` and
//! `analyze` reach weftd on that cluster through its API server
//! ([`cluster`]); `analyze` reads the cluster's objects itself.

mod analyze;
mod apply;
mod client;
mod cluster;
mod describe;
mod get;
mod install;
mod intercept;
mod kube_inject;
mod meshconfig;
mod proxy_config;
mod token;
mod up;
mod validate;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::client::Weftd;
use crate::get::{Output, Query};

#[derive(Parser, Debug)]
#[command(name = "weft", version, about = "The Weft service mesh command line")]
struct Args {
    /// Where weftd's API listens: ADDR (TCP, with --token-file) or a
    /// socket path (`/...` or `unix:...`). Default: the weftd of the
    /// running `weft up`, if exactly one runs, else .weft/state/api.sock,
    /// else 127.0.0.1:15014 with .weft/state/admin-token.
    #[arg(long = "weftd", value_name = "ADDR", env = "WEFT_ADDR", global = true)]
    weftd: Option<String>,
    /// The file holding weftd's admin token (its <state-dir>/admin-token),
    /// for the TCP API.
    #[arg(long, value_name = "FILE", env = "WEFT_TOKEN_FILE", global = true)]
    token_file: Option<PathBuf>,
    /// weftd on a Kubernetes cluster, reached through its API server as
    /// this kubeconfig's user (who must be allowed to read weftd's Secret
    /// weftd-admin-token: the Role weftd-api). `weft analyze` reads the
    /// cluster's Istio objects, Services, Pods and Namespaces.
    #[arg(long, value_name = "PATH", global = true)]
    kubeconfig: Option<PathBuf>,
    /// The kubeconfig context (also selects the cluster, from $KUBECONFIG
    /// or ~/.kube/config when --kubeconfig is not given).
    #[arg(long, value_name = "NAME", global = true)]
    context: Option<String>,
    /// With --kubeconfig: the namespace weftd runs in.
    #[arg(
        long,
        value_name = "NAMESPACE",
        env = "WEFT_NAMESPACE",
        default_value = weft_kube::install::NAMESPACE,
        global = true
    )]
    weft_namespace: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Check Istio resources (files or directories; `-` reads stdin) the
    /// way weftd will: prints every problem with its file, resource and
    /// field, and exits 1 if there is any.
    Validate {
        #[arg(short = 'f', long = "filename", required = true, num_args = 1..)]
        paths: Vec<PathBuf>,
        /// Also list the objects skipped because Weft does not use their kind.
        #[arg(short, long)]
        verbose: bool,
    },
    /// Apply Istio resources (files or directories; `-` reads stdin) to
    /// weftd: checked here first, then applied all together or not at all.
    Apply {
        #[arg(short = 'f', long = "filename", required = true, num_args = 1..)]
        paths: Vec<PathBuf>,
    },
    /// List resources of a kind (`virtualservices`, `vs`, `dr`, ...), or
    /// show one by name; `weft get meshconfig` shows the MeshConfig in force.
    Get {
        kind: String,
        name: Option<String>,
        #[arg(
            short,
            long,
            default_value = "default",
            conflicts_with = "all_namespaces"
        )]
        namespace: String,
        /// List across every namespace.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Delete a resource by kind and name, or every resource in files.
    Delete {
        #[arg(required_unless_present = "paths", conflicts_with = "paths")]
        kind: Option<String>,
        #[arg(required_unless_present = "paths")]
        name: Option<String>,
        #[arg(short, long, default_value = "default")]
        namespace: String,
        #[arg(short = 'f', long = "filename", num_args = 1..)]
        paths: Vec<PathBuf>,
    },
    /// Show whether each proxy serves the config weftd last pushed.
    ProxyStatus,
    /// Run the mesh of a directory on this machine: weftd, every workload
    /// in its own network namespace beside its sidecar, ingress gateways.
    /// Stays in the foreground; Ctrl-C stops it all.
    Up(up::UpArgs),
    /// Stop a running `weft up` (or clean up after one that crashed).
    Down {
        /// The mesh's name; may be left out when only one is recorded.
        name: Option<String>,
    },
    /// Print the version of this client.
    Version,
    /// What one proxy holds now (from its admin port; by id alone, weftd's copy).
    ProxyConfig(proxy_config::Args),
    /// Which routes, policies and endpoints apply to a service, and why;
    /// or to a pod's Services, with its sidecar's state (`describe pod`,
    /// with --kubeconfig).
    Describe(describe::Args),
    /// Report likely mistakes with Istio's analyzer codes.
    Analyze(analyze::Args),
    /// Bootstrap tokens for proxies outside Kubernetes: create, list, revoke.
    #[command(subcommand)]
    Token(token::Command),
    /// Inject the sidecar into the Pods and workload templates of a
    /// manifest, offline (what the injection webhook does); prints the result.
    KubeInject(kube_inject::Args),
    /// Install a pod's interception rules in this network namespace (the
    /// injected `weft-init` container runs this).
    Intercept(intercept::InterceptArgs),
    /// Wait until the pod's weft-proxy is ready (the classic sidecar's
    /// postStart hook with holdApplicationUntilProxyStarts).
    WaitProxy(intercept::WaitArgs),
    /// Install Weft on a Kubernetes cluster (server-side apply), or print
    /// what would be applied with --dry-run.
    Install(install::InstallArgs),
    /// Remove what `weft install` applied.
    Uninstall(install::UninstallArgs),
}

fn main() -> ExitCode {
    let args = Args::parse();
    // Resolved only by the commands that talk to weftd.
    let address = Given {
        weftd: args.weftd.as_deref(),
        token_file: args.token_file.as_deref(),
        cluster: cluster::Cluster::chosen(
            args.kubeconfig.clone(),
            args.context.clone(),
            &args.weft_namespace,
        ),
    };
    // On a cluster the Istio config lives in the API server; weftd's own
    // store there is not where it belongs.
    if address.cluster.is_some()
        && matches!(args.command, Command::Apply { .. } | Command::Delete { .. })
    {
        eprintln!(
            "weft: on Kubernetes, Istio resources are applied with `kubectl apply` (weftd reads \
             them from the cluster); --kubeconfig is for proxy-status, get, describe, \
             proxy-config and analyze"
        );
        return ExitCode::FAILURE;
    }
    match args.command {
        Command::Up(up_args) => up::up(up_args),
        Command::Down { name } => up::down(name),
        Command::Validate { paths, verbose } => validate::run(&paths, verbose),
        Command::Version => {
            println!("weft {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Command::Apply { paths } => remote(address, |weftd| apply::apply(weftd, &paths)),
        Command::Get {
            kind,
            name,
            namespace,
            all_namespaces,
            output,
        } => {
            let query = Query {
                kind: &kind,
                name: name.as_deref(),
                namespace: (!all_namespaces).then_some(namespace.as_str()),
                output,
            };
            remote(address, |weftd| get::get(weftd, &query))
        }
        Command::Delete {
            kind: Some(kind),
            name: Some(name),
            namespace,
            ..
        } => remote(address, |weftd| {
            apply::delete_one(weftd, &kind, &name, &namespace)
        }),
        Command::Delete { paths, .. } => {
            remote(address, |weftd| apply::delete_files(weftd, &paths))
        }
        Command::ProxyStatus => remote(address, get::proxy_status),
        Command::ProxyConfig(args) => match resolved(address) {
            Ok(target) => proxy_config::run(&target, &args),
            Err(err) => fail(&err),
        },
        Command::Describe(args) => remote(address, |weftd| describe::describe(weftd, &args)),
        Command::Analyze(args) => match resolved(address) {
            Ok(target) => analyze::run(&target, &args),
            Err(err) => fail(&err),
        },
        Command::Token(command) => remote(address, |weftd| token::run(weftd, &command)),
        Command::KubeInject(args) => kube_inject::run(&args),
        Command::Intercept(args) => intercept::intercept(&args),
        Command::WaitProxy(args) => intercept::wait_proxy(&args),
        Command::Install(_) | Command::Uninstall(_)
            if args.weft_namespace != weft_kube::install::NAMESPACE =>
        {
            eprintln!(
                "weft: install always uses the namespace {}; --weft-namespace (or \
                 $WEFT_NAMESPACE) is for finding a weftd installed elsewhere",
                weft_kube::install::NAMESPACE
            );
            ExitCode::FAILURE
        }
        Command::Install(install_args) => install::install(&install_args, args.context.as_deref()),
        Command::Uninstall(install_args) => {
            install::uninstall(&install_args, args.context.as_deref())
        }
    }
}

/// What the user said about where weftd is.
#[derive(Clone)]
struct Given<'a> {
    weftd: Option<&'a str>,
    token_file: Option<&'a std::path::Path>,
    cluster: Option<cluster::Cluster>,
}

/// weftd's API and credential (see [`client::Target::resolve`]).
fn resolved(given: Given) -> anyhow::Result<client::Target> {
    client::Target::resolve(
        given.cluster,
        given.weftd,
        given.token_file,
        up::state::running_api,
    )
}

/// Runs a command that needs weftd; its errors end up as one line.
fn remote(given: Given, command: impl FnOnce(&Weftd) -> anyhow::Result<ExitCode>) -> ExitCode {
    match resolved(given)
        .and_then(|target| Weftd::new(&target))
        .and_then(|weftd| command(&weftd))
    {
        Ok(code) => code,
        Err(err) => fail(&err),
    }
}

fn fail(err: &anyhow::Error) -> ExitCode {
    eprintln!("weft: {err:#}");
    ExitCode::FAILURE
}
