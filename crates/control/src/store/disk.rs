//! The store on disk: one JSON file per resource,
//! `<dir>/<Kind>/<namespace>/<name>.json`, its resource version kept in
//! `metadata.resourceVersion` as Kubernetes does.
//!
//! Crash guarantees:
//! - **One file** is written to a temporary name and renamed over the old
//!   one (atomic), then `syncfs` makes the data, the rename and any new
//!   directory durable before the change is acknowledged.
//! - **A batch** (a multi-object apply) is all or nothing through a journal:
//!   the whole batch is written to `<dir>/store-journal.json` through
//!   [`crate::durable::write`] (file and directory fsync'd), then the
//!   files are written and renamed as above, one `syncfs` makes all of
//!   them durable at once (a thousand fsyncs would make a large apply
//!   slow), and only then is the journal removed (and the directory
//!   fsync'd). A crash before the journal's rename leaves the old
//!   state; after it, [`Disk::open`] finds the journal and replays it
//!   (writing a file twice is harmless), so the batch is there whole. Once
//!   the journal is durable the batch is committed: if its files cannot
//!   all be written then, the journal stays and the next change (or
//!   start-up) finishes it before doing anything else.
//! - **A file that cannot be read back** (empty, not JSON, not a valid
//!   resource) does not stop weftd: it is logged with its path and the
//!   reason, moved to `<dir>/quarantine/`, and the rest is loaded.
//!
//! Only the kind directories are read: the state directory also holds the
//! CA, tokens and other components' files.

use std::io;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use weft_api::decode_file;

use super::{KINDS, ResourceKey, StoreError, Stored};
use crate::durable::{self, Mode};

const JOURNAL: &str = "store-journal.json";
const QUARANTINE: &str = "quarantine";

pub struct Disk {
    dir: PathBuf,
}

/// A batch of changes, as the journal records it (paths relative to the
/// store directory).
#[derive(Debug, Default, Serialize, Deserialize)]
struct Batch {
    writes: Vec<Write>,
    removes: Vec<PathBuf>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Write {
    path: PathBuf,
    content: Value,
}

impl Disk {
    /// The store in `dir`; a journal left by a crash is replayed first.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|err| StoreError::Corrupt {
            path: dir.display().to_string(),
            message: format!("cannot create the store directory: {err}"),
        })?;
        let disk = Self {
            dir: dir.to_path_buf(),
        };
        disk.replay()?;
        Ok(disk)
    }

    fn relative(key: &ResourceKey) -> PathBuf {
        // Kind, namespace and name are validated DNS-style names: no '/' or '..'.
        Path::new(&key.kind)
            .join(&key.namespace)
            .join(format!("{}.json", key.name))
    }

    /// Every readable resource; unreadable files are quarantined.
    pub fn load(&self) -> Result<Vec<Stored>, StoreError> {
        let mut files = Vec::new();
        for kind in KINDS {
            let dir = self.dir.join(kind);
            if dir.is_dir() {
                collect_json(&dir, &mut files).map_err(|err| StoreError::Corrupt {
                    path: dir.display().to_string(),
                    message: err.to_string(),
                })?;
            }
        }
        let mut loaded = Vec::new();
        for file in files {
            match read_resource(&file) {
                Ok(stored) => loaded.push(stored),
                Err(reason) => self.quarantine(&file, &reason),
            }
        }
        Ok(loaded)
    }

    /// Moves an unreadable file out of the way, saying where and why.
    fn quarantine(&self, file: &Path, reason: &str) {
        let relative = file.strip_prefix(&self.dir).unwrap_or(file);
        let flat = relative.to_string_lossy().replace('/', "_");
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let target = self.dir.join(QUARANTINE).join(format!("{stamp}-{flat}"));
        let moved = durable::private_dir(&self.dir.join(QUARANTINE))
            .and_then(|()| std::fs::rename(file, &target))
            .and_then(|()| sync_parent(file))
            .and_then(|()| sync_parent(&target));
        match moved {
            Ok(()) => tracing::error!(
                "store: {} is unreadable ({reason}); moved to {} and started without it",
                file.display(),
                target.display()
            ),
            Err(err) => tracing::error!(
                "store: {} is unreadable ({reason}); started without it (could not move it \
                 aside: {err})",
                file.display()
            ),
        }
    }

    /// Writes every resource, or none (see the module doc).
    pub fn write_all<'a>(&self, items: impl IntoIterator<Item = &'a Stored>) -> io::Result<()> {
        let batch = Batch {
            writes: items
                .into_iter()
                .map(|stored| Write {
                    path: Self::relative(&ResourceKey::of(&stored.resource)),
                    content: stored.to_versioned_value(),
                })
                .collect(),
            removes: Vec::new(),
        };
        self.commit(&batch)
    }

    pub fn remove(&self, key: &ResourceKey) -> io::Result<()> {
        self.commit(&Batch {
            writes: Vec::new(),
            removes: vec![Self::relative(key)],
        })
    }

    fn commit(&self, batch: &Batch) -> io::Result<()> {
        // A batch whose files could not all be written is finished first:
        // its journal is the truth until then, and must not be replaced.
        self.replay()
            .map_err(|err| io::Error::other(err.to_string()))?;
        match (batch.writes.as_slice(), batch.removes.as_slice()) {
            ([], []) => Ok(()),
            // One file: its rename is atomic alone.
            ([_], []) | ([], [_]) => self.apply(batch),
            _ => {
                let journal = self.dir.join(JOURNAL);
                let bytes = serde_json::to_vec(batch).map_err(io::Error::other)?;
                // A failure up to here leaves nothing of the batch.
                durable::write(&journal, &bytes, Mode::Private)?;
                // From here the batch is committed (a restart replays it), so
                // it is not reported as failed: the journal stays until the
                // next change or start-up finishes it.
                let finished = self
                    .apply(batch)
                    .and_then(|()| std::fs::remove_file(&journal))
                    .and_then(|()| durable::sync_dir(&self.dir));
                if let Err(err) = finished {
                    tracing::error!(
                        "store: a change is committed in {} but its files could not all be \
                         written ({err}); the next change or start-up finishes it",
                        journal.display()
                    );
                }
                Ok(())
            }
        }
    }

    /// Writes the batch's files (each through a temporary file and a
    /// rename), then one `syncfs` makes the files, the renames and any new
    /// directories durable together.
    fn apply(&self, batch: &Batch) -> io::Result<()> {
        for write in &batch.writes {
            let path = self.dir.join(&write.path);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            let bytes = serde_json::to_vec_pretty(&write.content).map_err(io::Error::other)?;
            let staging = path.with_extension("json.tmp");
            std::fs::write(&staging, bytes)?;
            std::fs::rename(&staging, &path)?;
        }
        for relative in &batch.removes {
            match std::fs::remove_file(self.dir.join(relative)) {
                Err(err) if err.kind() != io::ErrorKind::NotFound => return Err(err),
                _ => {}
            }
        }
        let dir = std::fs::File::open(&self.dir)?;
        nix::unistd::syncfs(&dir).map_err(io::Error::from)
    }

    /// Finishes a batch a crash interrupted.
    fn replay(&self) -> Result<(), StoreError> {
        let journal = self.dir.join(JOURNAL);
        let bytes = match std::fs::read(&journal) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(err) => return Err(corrupt(&journal, err.to_string())),
        };
        // The journal is only ever renamed into place whole; one that does
        // not parse was not written by weftd, and guessing would be worse.
        let batch: Batch = serde_json::from_slice(&bytes)
            .map_err(|err| corrupt(&journal, format!("not a store journal: {err}")))?;
        let escapes = batch
            .writes
            .iter()
            .map(|write| &write.path)
            .chain(&batch.removes)
            .any(|path| !path.components().all(|c| matches!(c, Component::Normal(_))));
        if escapes {
            return Err(corrupt(
                &journal,
                "a path leaves the store directory".into(),
            ));
        }
        tracing::warn!(
            "store: finishing an interrupted change ({} write(s), {} removal(s))",
            batch.writes.len(),
            batch.removes.len()
        );
        self.apply(&batch)
            .and_then(|()| std::fs::remove_file(&journal))
            .and_then(|()| durable::sync_dir(&self.dir))
            .map_err(|err| corrupt(&journal, format!("cannot replay it: {err}")))
    }
}

fn corrupt(path: &Path, message: String) -> StoreError {
    StoreError::Corrupt {
        path: path.display().to_string(),
        message,
    }
}

/// One resource file, or why it cannot be used.
fn read_resource(file: &Path) -> Result<Stored, String> {
    match std::fs::metadata(file) {
        Ok(meta) if meta.len() == 0 => return Err("the file is empty".into()),
        Ok(_) => {}
        Err(err) => return Err(err.to_string()),
    }
    let decoded = decode_file(file);
    if let Some(problem) = decoded.problems.first() {
        return Err(problem.to_string());
    }
    let [mut resource] = <[_; 1]>::try_from(decoded.resources)
        .map_err(|found| format!("expected one resource, found {}", found.len()))?;
    let version = resource
        .metadata_mut()
        .other
        .remove("resourceVersion")
        .and_then(|v| v.as_str().and_then(|s| s.parse().ok()))
        .ok_or_else(|| "metadata.resourceVersion is missing".to_string())?;
    Ok(Stored {
        resource,
        resource_version: version,
    })
}

fn sync_parent(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(dir) => durable::sync_dir(dir),
        None => Ok(()),
    }
}

fn collect_json(dir: &Path, out: &mut Vec<PathBuf>) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_json(&path, out)?;
        } else if path.extension().is_some_and(|ext| ext == "json") {
            out.push(path);
        }
    }
    Ok(())
}
