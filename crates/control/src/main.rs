//! weftd: Weft's control plane (Istio's istiod).
//!
//! Today it only reports its version: validation, the config store, service
//! discovery and the per-proxy config push arrive with the control-plane
//! work (see docs/architecture.md). Until then, weft-proxy runs from a
//! config file.

use clap::Parser;

#[derive(Parser, Debug)]
#[command(name = "weftd", version, about = "Weft's control plane")]
struct Args {}

fn main() {
    let _args = Args::parse();
    eprintln!(
        "weftd {}: the control plane is not built yet; run weft-proxy with --config FILE",
        env!("CARGO_PKG_VERSION")
    );
    std::process::exit(2);
}
