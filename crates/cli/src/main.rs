//! weft: the Weft command line (Istio's istioctl).

mod validate;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "weft", version, about = "The Weft service mesh command line")]
struct Args {
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
    /// Print the version of this client.
    Version,
}

fn main() -> ExitCode {
    match Args::parse().command {
        Command::Validate { paths, verbose } => validate::run(&paths, verbose),
        Command::Version => {
            println!("weft {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
    }
}
