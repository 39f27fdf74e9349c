//! The config store: Istio resources keyed by kind, namespace and name, each
//! with a resource version, persisted so a restart loses nothing.
//!
//! Contract:
//! - An apply request is validated whole before anything changes: one
//!   invalid object and nothing of that request is applied.
//! - Every change bumps the store's revision; subscribers are told the new
//!   revision (a `watch`, so a slow reader only ever sees the latest).
//! - Re-applying an identical object changes nothing and keeps its version.

mod changes;
mod chunked;
mod cluster;
pub mod credentials;
mod disk;
pub mod files;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;
use std::sync::RwLock;

use tokio::sync::watch;
use weft_api::resource::KINDS;
use weft_api::{Problem, Resource};

pub use cluster::{POD_GROUP_PREFIX, follow as follow_cluster};
use disk::Disk;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ResourceKey {
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

impl ResourceKey {
    pub fn new(kind: &str, namespace: &str, name: &str) -> Self {
        Self {
            kind: kind.to_string(),
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }

    pub fn of(resource: &Resource) -> Self {
        let meta = resource.metadata();
        Self::new(resource.kind(), &meta.namespace, &meta.name)
    }
}

impl fmt::Display for ResourceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    pub resource: Resource,
    pub resource_version: u64,
}

impl Stored {
    /// The object with its version in `metadata.resourceVersion`, where
    /// Kubernetes keeps it: what the API answers and what a file holds.
    pub fn to_versioned_value(&self) -> serde_json::Value {
        let mut value = self.resource.to_value();
        if let Some(meta) = value
            .get_mut("metadata")
            .and_then(serde_json::Value::as_object_mut)
        {
            meta.insert(
                "resourceVersion".into(),
                serde_json::Value::String(self.resource_version.to_string()),
            );
        }
        value
    }
}

/// What an apply or delete did to one resource, in kubectl's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Created,
    Configured,
    Unchanged,
    Deleted,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub key: ResourceKey,
    pub change: Change,
    pub resource_version: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("nothing was applied; {} problem(s):\n{}", .0.len(), .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Problem>),
    #[error("cannot persist the change, nothing was applied: {0}")]
    Persist(std::io::Error),
    #[error("stored state in {path} is unreadable: {message}")]
    Corrupt { path: String, message: String },
}

#[derive(Default)]
struct State {
    resources: BTreeMap<ResourceKey, Stored>,
    revision: u64,
    /// What a Kubernetes cluster holds (cluster.rs): in memory only.
    cluster: cluster::ClusterLayer,
    /// Which keys changed at which revision (changes.rs).
    changes: changes::ChangeLog,
}

pub struct Store {
    state: RwLock<State>,
    revisions: watch::Sender<u64>,
    disk: Option<Disk>,
}

impl Store {
    /// A store that forgets everything on exit (tests, dry runs).
    pub fn in_memory() -> Self {
        Self::with(State::default(), None)
    }

    /// A store persisted under `dir`, loading what an earlier run left.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let disk = Disk::open(dir)?;
        let mut state = State::default();
        for stored in disk.load()? {
            state.revision = state.revision.max(stored.resource_version);
            state
                .resources
                .insert(ResourceKey::of(&stored.resource), stored);
        }
        state.changes = changes::ChangeLog::starting_at(state.revision);
        Ok(Self::with(state, Some(disk)))
    }

    fn with(state: State, disk: Option<Disk>) -> Self {
        let (revisions, _) = watch::channel(state.revision);
        Self {
            state: RwLock::new(state),
            revisions,
            disk,
        }
    }

    /// Decodes and validates `text` (multi-document YAML or JSON) and applies
    /// every resource in it, or nothing if any object is invalid.
    /// The WorkloadGroup `namespace`/`name`, if stored.
    pub fn workload_group(
        &self,
        namespace: &str,
        name: &str,
    ) -> Option<weft_api::Object<weft_api::networking::WorkloadGroup>> {
        if let Some(pod) = name.strip_prefix(POD_GROUP_PREFIX) {
            return self.pod_workload_group(namespace, pod);
        }
        match self.get(&ResourceKey::new("WorkloadGroup", namespace, name))? {
            Stored {
                resource: Resource::WorkloadGroup(group),
                ..
            } => Some(group),
            _ => None,
        }
    }

    pub fn apply_text(&self, text: &str, source: &str) -> Result<Vec<Applied>, StoreError> {
        self.apply_text_with_warnings(text, source)
            .map(|(applied, _)| applied)
    }

    /// [`apply_text`](Self::apply_text), with a warning for every field
    /// Weft does not honour (what `weft apply` prints).
    pub fn apply_text_with_warnings(
        &self,
        text: &str,
        source: &str,
    ) -> Result<(Vec<Applied>, Vec<weft_api::FieldWarning>), StoreError> {
        // Sliced: a 110,000-object apply does not hold every parsed
        // document at once.
        let decoded = chunked::decode(text, source);
        if !decoded.problems.is_empty() {
            return Err(StoreError::Invalid(decoded.problems));
        }
        let applied = self.apply(decoded.resources)?;
        Ok((applied, decoded.warnings))
    }

    /// Applies already validated resources, all or nothing.
    pub fn apply(&self, resources: Vec<Resource>) -> Result<Vec<Applied>, StoreError> {
        let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
        let mut revision = state.revision;
        let mut report = Vec::new();
        let mut pending: BTreeMap<ResourceKey, Stored> = BTreeMap::new();
        for mut resource in resources {
            let meta = resource.metadata_mut();
            if meta.namespace.is_empty() {
                meta.namespace = "default".to_string();
            }
            meta.other.remove("resourceVersion");
            let key = ResourceKey::of(&resource);
            let current = pending.get(&key).or_else(|| state.resources.get(&key));
            let change = match current {
                Some(stored) if stored.resource == resource => {
                    report.push(Applied {
                        key,
                        change: Change::Unchanged,
                        resource_version: stored.resource_version,
                    });
                    continue;
                }
                Some(_) => Change::Configured,
                None => Change::Created,
            };
            revision += 1;
            let stored = Stored {
                resource,
                resource_version: revision,
            };
            report.push(Applied {
                key: key.clone(),
                change,
                resource_version: revision,
            });
            pending.insert(key, stored);
        }
        if let Some(disk) = &self.disk {
            // What changed, once: the objects are not copied for the disk.
            disk.write_all(pending.values())
                .map_err(StoreError::Persist)?;
        }
        if revision != state.revision {
            for (key, stored) in &pending {
                state.changes.record(stored.resource_version, key.clone());
            }
            state.resources.extend(pending);
            state.revision = revision;
            self.revisions.send_replace(revision);
        }
        Ok(report)
    }

    /// Deletes one resource; `None` if it did not exist.
    pub fn delete(&self, key: &ResourceKey) -> Result<Option<Applied>, StoreError> {
        let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
        if !state.resources.contains_key(key) {
            return Ok(None);
        }
        if let Some(disk) = &self.disk {
            disk.remove(key).map_err(StoreError::Persist)?;
        }
        state.resources.remove(key);
        state.revision += 1;
        let revision = state.revision;
        state.changes.record(revision, key.clone());
        self.revisions.send_replace(revision);
        Ok(Some(Applied {
            key: key.clone(),
            change: Change::Deleted,
            resource_version: revision,
        }))
    }

    pub fn get(&self, key: &ResourceKey) -> Option<Stored> {
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        state
            .resources
            .get(key)
            .or_else(|| state.cluster.resources.get(key))
            .cloned()
    }

    /// Every stored resource, without its store metadata.
    pub fn resources(&self) -> Vec<Resource> {
        self.list(None, None)
            .into_iter()
            .map(|stored| stored.resource)
            .collect()
    }

    /// Every stored resource and the revision they are as of, read
    /// together (what a build compares with [`changed_since`](Self::changed_since)).
    pub fn snapshot(&self) -> (u64, Vec<Resource>) {
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        let revision = state.revision;
        drop(state);
        // The list below may see later changes than `revision`: a later
        // build then sees them as changed again, which costs nothing wrong.
        (revision, self.resources())
    }

    /// The keys changed (applied, deleted) after `revision`; `None` when
    /// that is not known key by key (too long ago, a cluster-layer change).
    pub fn changed_since(&self, revision: u64) -> Option<BTreeSet<ResourceKey>> {
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        state.changes.since(revision)
    }

    /// Resources of a kind (any kind if `None`) in a namespace (any if
    /// `None`), ordered by kind, namespace and name.
    pub fn list(&self, kind: Option<&str>, namespace: Option<&str>) -> Vec<Stored> {
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        // The cluster's resources, unless an applied one has the same key.
        let cluster = state
            .cluster
            .resources
            .iter()
            .filter(|(key, _)| !state.resources.contains_key(*key));
        let mut found: Vec<(&ResourceKey, &Stored)> = state
            .resources
            .iter()
            .chain(cluster)
            .filter(|(key, _)| kind.is_none_or(|k| key.kind == k))
            .filter(|(key, _)| namespace.is_none_or(|n| key.namespace == n))
            .collect();
        if !state.cluster.resources.is_empty() {
            found.sort_by(|a, b| a.0.cmp(b.0));
        }
        found
            .into_iter()
            .map(|(_, stored)| stored.clone())
            .collect()
    }

    /// The revision of the last change (0 for an empty, new store).
    pub fn revision(&self) -> u64 {
        *self.revisions.borrow()
    }

    /// Told the revision after every change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.revisions.subscribe()
    }
}

#[cfg(test)]
mod tests;
