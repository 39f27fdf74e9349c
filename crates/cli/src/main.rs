//! weft: the Weft command line (Istio's istioctl).
//!
//! `validate` and `version` work offline; `apply`, `get`, `delete` and
//! `proxy-status` talk to weftd's HTTP API (`--weftd`, `$WEFT_ADDR`).

mod analyze;
mod apply;
mod client;
mod describe;
mod get;
mod proxy_config;
mod validate;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::client::Weftd;
use crate::get::{Output, Query};

#[derive(Parser, Debug)]
#[command(name = "weft", version, about = "The Weft service mesh command line")]
struct Args {
    /// Where weftd's API listens.
    #[arg(
        long = "weftd",
        value_name = "ADDR",
        env = "WEFT_ADDR",
        default_value = "127.0.0.1:15014",
        global = true
    )]
    weftd: String,
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
    /// show one by name.
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
    /// Print the version of this client.
    Version,
    /// What one proxy holds now (from its admin port; by id alone, weftd's copy).
    ProxyConfig(proxy_config::Args),
    /// Which routes, policies and endpoints apply to a service, and why.
    Describe(describe::Args),
    /// Report likely mistakes with Istio's analyzer codes.
    Analyze(analyze::Args),
}

fn main() -> ExitCode {
    let args = Args::parse();
    let address = args.weftd.as_str();
    match args.command {
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
        Command::ProxyConfig(args) => proxy_config::run(address, &args),
        Command::Describe(args) => remote(address, |weftd| describe::describe(weftd, &args)),
        Command::Analyze(args) => analyze::run(address, &args),
    }
}

/// Runs a command that needs weftd; its errors end up as one line.
fn remote(address: &str, command: impl FnOnce(&Weftd) -> anyhow::Result<ExitCode>) -> ExitCode {
    match Weftd::new(address).and_then(|weftd| command(&weftd)) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("weft: {err:#}");
            ExitCode::FAILURE
        }
    }
}
