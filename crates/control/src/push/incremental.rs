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
use super::registrations::Saved;
use super::shared::{Config, Interner};
use crate::compiler::MeshIndex;
use crate::compiler::incremental::Patched;
use crate::compiler::tls::MeshPeers;
use crate::meshconfig::InForce;
use crate::registry::{Registry, Workload};
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
    pub nodes: Arc<Vec<Node>>,
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
        nodes: &Arc<Vec<Node>>,
        in_force: &Arc<InForce>,
        registry: &Registry,
        peers: &MeshPeers,
    ) -> Option<(Arc<Mesh>, Patched)> {
        let same_nodes = Arc::ptr_eq(&self.nodes, nodes) || self.nodes == *nodes;
        if !same_nodes || *self.in_force != **in_force || revision < self.revision {
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

/// A resource as it was and as it is ((before, after), `None` for absent).
pub type Change = (Option<Resource>, Option<Resource>);

impl Resources {
    /// Brought up to (at least) the store's current revision, returned.
    #[cfg(test)]
    pub fn refresh(&mut self, store: &Store) -> u64 {
        self.refresh_with_changes(store).0
    }

    /// As [`refresh`](Self::refresh), with what changed since the last
    /// refresh; `None` when it was read whole (the log could not say).
    pub fn refresh_with_changes(&mut self, store: &Store) -> (u64, Option<Vec<Change>>) {
        let revision = store.revision();
        let changed = self.revision.and_then(|held| store.changed_since(held));
        let Some(changed) = changed else {
            let (revision, resources) = store.snapshot();
            self.keys = resources.iter().map(ResourceKey::of).collect();
            self.resources = resources;
            self.revision = Some(revision);
            return (revision, None);
        };
        let mut changes = Vec::with_capacity(changed.len());
        // Keys changed after `revision` may be among these: they are
        // fetched as they are now, and again next time (the same result).
        for key in changed {
            let at = self.keys.binary_search(&key);
            match (store.get(&key), at) {
                (Some(stored), Ok(at)) => {
                    let before = std::mem::replace(&mut self.resources[at], stored.resource);
                    if before != self.resources[at] {
                        changes.push((Some(before), Some(self.resources[at].clone())));
                    }
                }
                (Some(stored), Err(at)) => {
                    self.keys.insert(at, key);
                    changes.push((None, Some(stored.resource.clone())));
                    self.resources.insert(at, stored.resource);
                }
                (None, Ok(at)) => {
                    self.keys.remove(at);
                    changes.push((Some(self.resources.remove(at)), None));
                }
                (None, Err(_)) => {}
            }
        }
        self.revision = Some(revision);
        (revision, Some(changes))
    }

    pub fn as_slice(&self) -> &[Resource] {
        &self.resources
    }
}

/// What the build loop derives from the registrations (workloads, nodes,
/// mesh TLS peers), kept across builds while the registrations and the
/// MeshConfig's auto mTLS stay the same: at 5,000 proxies, deriving them
/// again on every endpoint change was a large part of a build.
pub struct Derived {
    saved: Vec<Saved>,
    auto_mtls_off: bool,
    pub workloads: Arc<Vec<Workload>>,
    pub nodes: Arc<Vec<Node>>,
    pub peers: Arc<MeshPeers>,
}

impl Derived {
    /// `held` brought up to date with `saved`; true when it was derived
    /// again (the registrations or auto mTLS changed).
    pub fn refresh(
        held: &mut Option<Self>,
        saved: Vec<Saved>,
        trust_domain: &str,
        auto_mtls_off: bool,
    ) -> bool {
        if let Some(derived) = held.as_ref()
            && derived.auto_mtls_off == auto_mtls_off
            && derived.saved == saved
        {
            return false;
        }
        let workloads = saved
            .iter()
            .filter_map(|entry| Workload::from_node(&entry.node))
            .collect();
        let nodes: Vec<Node> = saved.iter().map(|entry| entry.node.clone()).collect();
        let mut peers = MeshPeers::new(trust_domain, &nodes);
        peers.auto_mtls_off = auto_mtls_off;
        *held = Some(Self {
            saved,
            auto_mtls_off,
            workloads: Arc::new(workloads),
            nodes: Arc::new(nodes),
            peers: Arc::new(peers),
        });
        true
    }

    pub fn saved(&self) -> &[Saved] {
        &self.saved
    }
}

#[cfg(test)]
#[path = "incremental_tests.rs"]
mod tests;
