//! Istio's own configuration in `../shared/corpus`, read in place (never
//! copied into the project).

use std::path::{Path, PathBuf};

/// The corpus root (`WEFT_CORPUS`, else `../shared/corpus` beside the
/// checkout), or `None` after saying plainly that `test` skipped. Under
/// `CI=true` a missing corpus fails the test instead.
pub fn root_or_skip(test: &str) -> Option<PathBuf> {
    let root = std::env::var_os("WEFT_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus"));
    if root.is_dir() {
        return Some(root);
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!(
            "{test}: the Istio corpus ({}) is missing; under CI=true this test must run",
            root.display()
        );
    }
    eprintln!(
        "SKIPPED {test}: {} not found (set WEFT_CORPUS)",
        root.display()
    );
    None
}
