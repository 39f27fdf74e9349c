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
        // A directory that cannot be listed (yet) holds nothing.
        let present = weft_api::config_files(dir).unwrap_or_default();
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

#[cfg(test)]
mod tests {
    use super::*;

    const RULE: &str = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: NAME}\nspec: {host: NAME}\n";

    fn rule(name: &str) -> String {
        RULE.replace("NAME", name)
    }

    #[test]
    fn the_store_follows_the_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::in_memory();
        let mut source = DirectorySource::default();
        let file = dir.path().join("rules.yaml");
        std::fs::write(&file, format!("{}---\n{}", rule("a"), rule("b"))).expect("write");
        assert!(source.sync(dir.path(), &store).is_empty());
        assert_eq!(store.list(None, None).len(), 2);

        // A resource leaving its file is deleted.
        std::fs::write(&file, rule("a")).expect("write");
        assert!(source.sync(dir.path(), &store).is_empty());
        let names: Vec<_> = store
            .list(None, None)
            .iter()
            .map(|s| s.resource.metadata().name.clone())
            .collect();
        assert_eq!(names, ["a"]);

        // An invalid file changes nothing and says why.
        std::fs::write(&file, "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: a}\nspec: {}\n").expect("write");
        let problems = source.sync(dir.path(), &store);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].contains("rules.yaml: DestinationRule default/a: spec.host"),
            "{problems:?}"
        );
        assert_eq!(store.list(None, None).len(), 1);

        // A deleted file takes its resources with it.
        std::fs::write(&file, rule("a")).expect("write");
        source.sync(dir.path(), &store);
        std::fs::remove_file(&file).expect("remove");
        assert!(source.sync(dir.path(), &store).is_empty());
        assert!(store.list(None, None).is_empty());
    }
}
