//! Endpoint changes pushed without compiling every proxy shape again.
//!
//! When the build loop could patch the index ([`MeshIndex::patch_endpoints`]),
//! a shape's new config is the config it had in the build before with the
//! changed clusters resolved again for it: services, routes and listeners
//! are the same by construction. A shape the build before did not compile,
//! or whose changed cluster cannot be resolved alone, is compiled in full.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use tokio::sync::OnceCell;
use weft_proto::discovery::v1::Node;
use weft_proto::discovery::v1::resource::Body;

use super::mesh::Mesh;
use super::shared::{Config, Interner};
use crate::compiler::MeshIndex;
use crate::compiler::incremental::Patched;
use crate::compiler::tls::MeshPeers;
use crate::meshconfig::InForce;
use crate::registry::Registry;
use crate::store::{ResourceKey, Store};
use weft_api::Resource;

/// What a patched build keeps of the build before it.
pub struct ShapePatch {
    /// The build before's compiled configs, by shape key.
    pub compiled: HashMap<Vec<u8>, Arc<OnceCell<Config>>>,
    /// The clusters whose content changed (mesh-wide names).
    pub clusters: BTreeSet<String>,
}

impl ShapePatch {
    /// Shape `key`'s config (`node` being one of its proxies), patched
    /// from the build before; `None` to compile it in full.
    pub fn config_for(
        &self,
        key: &[u8],
        node: &Node,
        index: &MeshIndex,
        interner: &Interner,
    ) -> Option<Config> {
        let held = self.compiled.get(key)?.get()?;
        let mut replaced = Vec::new();
        for name in &self.clusters {
            let resource = format!("cluster/{name}");
            if held.resources.contains_key(&resource) {
                let cluster = index.patched_cluster(name, node)?;
                replaced.push((resource, Body::Cluster(cluster)));
            }
        }
        if replaced.is_empty() {
            // Nothing this shape holds changed: the same config (and
            // version), so its proxies are not pushed anything.
            return Some(held.clone());
        }
        Some(interner.replace(held, replaced))
    }
}

/// What the build loop keeps of its last build.
pub struct Previous {
    /// The store revision its resources are as of.
    pub revision: u64,
    pub registry: Registry,
    /// The registered proxies it was built with (its mesh TLS peers).
    pub nodes: Vec<Node>,
    pub in_force: Arc<InForce>,
    pub mesh: Arc<Mesh>,
}

impl Previous {
    /// The build before and its index patched for `registry`, when since
    /// it only WorkloadEntries changed (nothing else in the store, the same
    /// proxies and MeshConfig) and the index can be patched exactly.
    pub fn patch(
        self,
        store: &Store,
        revision: u64,
        nodes: &[Node],
        in_force: &Arc<InForce>,
        registry: &Registry,
        peers: &MeshPeers,
    ) -> Option<(Arc<Mesh>, Patched)> {
        if self.nodes != nodes || *self.in_force != **in_force || revision < self.revision {
            return None;
        }
        let changed = store.changed_since(self.revision)?;
        if changed.iter().any(|key| key.kind != "WorkloadEntry") {
            return None;
        }
        let patched = self
            .mesh
            .index
            .patch_endpoints(&self.registry, registry, peers)?;
        Some((self.mesh, patched))
    }
}

/// The store's resources as the build loop holds them between builds:
/// brought up to date from the store's change log (only the changed
/// objects are copied), read whole only at start or when the log cannot
/// say what changed. In the store's order (by kind, namespace, name).
#[derive(Default)]
pub struct Resources {
    /// `None` until read whole.
    revision: Option<u64>,
    keys: Vec<ResourceKey>,
    resources: Vec<Resource>,
}

impl Resources {
    /// Brought up to (at least) the store's current revision, returned.
    pub fn refresh(&mut self, store: &Store) -> u64 {
        let revision = store.revision();
        let changed = self.revision.and_then(|held| store.changed_since(held));
        let Some(changed) = changed else {
            let (revision, resources) = store.snapshot();
            self.keys = resources.iter().map(ResourceKey::of).collect();
            self.resources = resources;
            self.revision = Some(revision);
            return revision;
        };
        // Keys changed after `revision` may be among these: they are
        // fetched as they are now, and again next time (the same result).
        for key in changed {
            let at = self.keys.binary_search(&key);
            match (store.get(&key), at) {
                (Some(stored), Ok(at)) => self.resources[at] = stored.resource,
                (Some(stored), Err(at)) => {
                    self.keys.insert(at, key);
                    self.resources.insert(at, stored.resource);
                }
                (None, Ok(at)) => {
                    self.keys.remove(at);
                    self.resources.remove(at);
                }
                (None, Err(_)) => {}
            }
        }
        self.revision = Some(revision);
        revision
    }

    pub fn as_slice(&self) -> &[Resource] {
        &self.resources
    }
}

#[cfg(test)]
#[path = "incremental_tests.rs"]
mod tests;
