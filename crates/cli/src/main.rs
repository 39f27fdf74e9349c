//! weft: the Weft command line (Istio's istioctl). Starts small: `version`.

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "weft", version, about = "The Weft service mesh command line")]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print the version of this client.
    Version,
}

fn main() {
    match Args::parse().command {
        Command::Version => println!("weft {}", env!("CARGO_PKG_VERSION")),
    }
}
