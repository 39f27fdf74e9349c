//! Link settings for the `weft-proxy` binary that keep a sidecar's resident
//! memory small (issue 14; figures in bench/RESULTS.md). Most of a
//! sidecar's RSS is the binary's own pages, so:
//!
//! - It stays a position-independent executable. Linking it `-no-pie`
//!   saves about 0.8 MB of private pages (the loader's relocation of
//!   `.data.rel.ro`), but puts the code of a process that parses untrusted
//!   traffic at fixed addresses; a sidecar keeps ASLR (bench/RESULTS.md).
//! - In release builds for x86_64 Linux (linked by rust-lld), functions the
//!   proxy runs (listed in `symbol-order.txt`, made by `bench/symbol-order`
//!   from a callgrind profile) are placed together at the start of `.text`.
//!   The kernel maps code around each page a process first touches, so
//!   when the code that runs is spread over the whole binary, nearly all of
//!   it becomes resident; grouped, little more than what runs does. Names
//!   missing from the binary (the list is older than the code) are skipped:
//!   a stale list costs memory, never correctness.
//!
//! Only the `weft-proxy` binary is affected, not tests or other binaries.

use std::env;
use std::path::Path;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=symbol-order.txt");
    let os = env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if os != "linux" {
        return;
    }
    let release = env::var("PROFILE").is_ok_and(|p| p == "release");
    // rust-lld is the default linker of this target only; GNU ld does not
    // know the option.
    let lld = env::var("TARGET").is_ok_and(|t| t == "x86_64-unknown-linux-gnu");
    let order =
        Path::new(&env::var("CARGO_MANIFEST_DIR").unwrap_or_default()).join("symbol-order.txt");
    if release && lld && order.is_file() {
        println!(
            "cargo:rustc-link-arg-bin=weft-proxy=-Wl,--symbol-ordering-file={}",
            order.display()
        );
        println!("cargo:rustc-link-arg-bin=weft-proxy=-Wl,--no-warn-symbol-ordering");
    }
}
