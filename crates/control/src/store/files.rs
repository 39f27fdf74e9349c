//! A directory of YAML files as a config source (the embedded default):
//! each file is applied whole when it changes, and resources that leave a
//! file (or whose file is deleted) are deleted from the store. A file that
//! does not validate is reported and changes nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::{ResourceKey, Store};

#[derive(Default)]
pub struct DirectorySource {
    /// file → (content, keys it contributed)
    files: BTreeMap<PathBuf, (String, BTreeSet<ResourceKey>)>,
}

impl DirectorySource {
    /// One pass over `dir`; returns the problems found (one line each).
    pub fn sync(&mut self, dir: &Path, store: &Store) -> Vec<String> {
        let mut problems = Vec::new();
        let mut present = Vec::new();
        collect(dir, &mut present);
        for file in &present {
            let Ok(text) = std::fs::read_to_string(file) else {
                problems.push(format!("{}: cannot read", file.display()));
                continue;
            };
            if self.files.get(file).is_some_and(|(seen, _)| *seen == text) {
                continue;
            }
            match store.apply_text(&text, &file.display().to_string()) {
                Ok(applied) => {
                    let keys: BTreeSet<_> = applied.into_iter().map(|a| a.key).collect();
                    let previous = self
                        .files
                        .get(file)
                        .map(|(_, keys)| keys.clone())
                        .unwrap_or_default();
                    for gone in previous.difference(&keys) {
                        if let Err(err) = store.delete(gone) {
                            problems
                                .push(format!("{}: cannot delete {gone}: {err}", file.display()));
                        }
                    }
                    self.files.insert(file.clone(), (text, keys));
                }
                Err(err) => problems.push(err.to_string()),
            }
        }
        let removed: Vec<PathBuf> = self
            .files
            .keys()
            .filter(|file| !present.contains(file))
            .cloned()
            .collect();
        for file in removed {
            if let Some((_, keys)) = self.files.remove(&file) {
                for key in keys {
                    if let Err(err) = store.delete(&key) {
                        problems.push(format!("{}: cannot delete {key}: {err}", file.display()));
                    }
                }
            }
        }
        problems
    }
}

/// Syncs `dir` every `interval`, forever, logging problems once per change.
pub async fn watch_dir(
    dir: PathBuf,
    store: Arc<Store>,
    interval: Duration,
    mut source: DirectorySource,
) {
    let mut last_problems = Vec::new();
    loop {
        tokio::time::sleep(interval).await;
        let problems = source.sync(&dir, &store);
        if problems != last_problems {
            for problem in &problems {
                tracing::error!("config directory: {problem}");
            }
            last_problems = problems;
        }
    }
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    paths.sort();
    for path in paths {
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
