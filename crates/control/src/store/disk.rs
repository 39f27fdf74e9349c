//! The store on disk: one JSON file per resource,
//! `<dir>/<Kind>/<namespace>/<name>.json`, its resource version kept in
//! `metadata.resourceVersion` as Kubernetes does. Files are written to a
//! temporary name and renamed, so a crash never leaves half a resource.

use std::io;
use std::path::{Path, PathBuf};

use serde_json::Value;
use weft_api::decode_file;

use super::{ResourceKey, StoreError, Stored};

pub struct Disk {
    dir: PathBuf,
}

impl Disk {
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|err| StoreError::Corrupt {
            path: dir.display().to_string(),
            message: format!("cannot create the store directory: {err}"),
        })?;
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    fn path(&self, key: &ResourceKey) -> PathBuf {
        // Kind, namespace and name are validated DNS-style names: no '/' or '..'.
        self.dir
            .join(&key.kind)
            .join(&key.namespace)
            .join(format!("{}.json", key.name))
    }

    pub fn load(&self) -> Result<Vec<Stored>, StoreError> {
        let mut files = Vec::new();
        collect_json(&self.dir, &mut files).map_err(|err| StoreError::Corrupt {
            path: self.dir.display().to_string(),
            message: err.to_string(),
        })?;
        let mut loaded = Vec::new();
        for file in files {
            let corrupt = |message: String| StoreError::Corrupt {
                path: file.display().to_string(),
                message,
            };
            let decoded = decode_file(&file);
            if let Some(problem) = decoded.problems.first() {
                return Err(corrupt(problem.to_string()));
            }
            let [mut resource] = <[_; 1]>::try_from(decoded.resources).map_err(|found| {
                corrupt(format!("expected one resource, found {}", found.len()))
            })?;
            let version = resource
                .metadata_mut()
                .other
                .remove("resourceVersion")
                .and_then(|v| v.as_str().and_then(|s| s.parse().ok()))
                .ok_or_else(|| corrupt("metadata.resourceVersion is missing".into()))?;
            loaded.push(Stored {
                resource,
                resource_version: version,
            });
        }
        Ok(loaded)
    }

    /// Writes every resource, or none: all temporary files first, then the
    /// renames (which do not fail on one filesystem short of a dying disk).
    pub fn write_all(&self, items: &[Stored]) -> io::Result<()> {
        let mut staged = Vec::new();
        for stored in items {
            let path = self.path(&super::ResourceKey::of(&stored.resource));
            let mut value = stored.resource.to_value();
            if let Some(meta) = value.get_mut("metadata").and_then(Value::as_object_mut) {
                meta.insert(
                    "resourceVersion".into(),
                    Value::String(stored.resource_version.to_string()),
                );
            }
            let staging = path.with_extension("json.tmp");
            let written = path
                .parent()
                .map_or(Ok(()), std::fs::create_dir_all)
                .and_then(|()| serde_json::to_vec_pretty(&value).map_err(io::Error::other))
                .and_then(|bytes| std::fs::write(&staging, bytes));
            if let Err(err) = written {
                for (staging, _) in &staged {
                    let _ = std::fs::remove_file(staging);
                }
                return Err(err);
            }
            staged.push((staging, path));
        }
        for (staging, path) in staged {
            std::fs::rename(staging, path)?;
        }
        Ok(())
    }

    pub fn remove(&self, key: &ResourceKey) -> io::Result<()> {
        match std::fs::remove_file(self.path(key)) {
            Err(err) if err.kind() != io::ErrorKind::NotFound => Err(err),
            _ => Ok(()),
        }
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
