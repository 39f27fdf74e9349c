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

/// YAML and JSON files under `dir`, recursively, sorted.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    collect(dir, &mut out);
    out.sort();
    out
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect(&path, out);
        } else if path
            .extension()
            .is_some_and(|ext| ext == "yaml" || ext == "yml" || ext == "json")
        {
            out.push(path);
        }
    }
}
