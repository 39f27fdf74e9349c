//! Endpoint changes without a full build.
//!
//! Most changes in a large mesh move endpoints (a WorkloadEntry edited, a
//! workload added or gone) and nothing else. [`MeshIndex::patch_endpoints`]
//! then rebuilds only the clusters of the services whose endpoints differ,
//! under each DestinationRule their callers may get, and shares every
//! other part with the index it patches. [`MeshIndex::patched_cluster`]
//! lets a proxy shape's compiled config be patched the same way: only the
//! changed clusters are resolved again for it (`push::mesh`).
//!
//! Anything this cannot patch exactly gives `None`, and the caller builds
//! in full: services, ports, VIPs or registry warnings that differ, a
//! changed service with `resolution: NONE` (its endpoints are also its
//! match ranges, in the service itself), or one whose host another
//! namespace defines too (their clusters share names).

use std::collections::BTreeSet;
use std::sync::Arc;

use weft_proto::discovery::v1::Node;
use weft_proto::proxy::v1 as pb;

use super::MeshIndex;
use super::tls::{self, MeshPeers};
use crate::registry::{Registry, Resolution, namespace_or_default};

/// An index patched for an endpoint change.
#[derive(Debug)]
pub struct Patched {
    pub index: MeshIndex,
    /// The clusters (mesh-wide names) whose content may differ from the
    /// patched index's; every other part is the same.
    pub clusters: BTreeSet<String>,
}

impl MeshIndex {
    /// The index for `after`, `self` having been built from `before` with
    /// the same resources but endpoints, the same `peers` and MeshConfig.
    /// `None` when more than endpoints differ or this cannot patch exactly.
    pub fn patch_endpoints(
        &self,
        before: &Registry,
        after: &Registry,
        peers: &MeshPeers,
    ) -> Option<Patched> {
        let services = after.services();
        if !before.same_services(after) || before.warnings() != after.warnings() {
            return None;
        }
        if services.len() != self.services.len() {
            return None;
        }
        let mut index = self.clone();
        let mut changed = BTreeSet::new();
        for (at, service) in services.iter().enumerate() {
            let id = service.id();
            // A pointer comparison for the services a registry patch did
            // not touch.
            if after.same_endpoints(before, &id) {
                continue;
            }
            let endpoints = after.endpoints(&id);
            let shares_host = [at.checked_sub(1), at.checked_add(1)]
                .into_iter()
                .flatten()
                .filter_map(|other| services.get(other))
                .any(|other| other.hostname == service.hostname);
            if service.resolution == Resolution::None || shares_host {
                return None;
            }
            let rebuilt = index
                .rule_clusters
                .rebuild_service(at, service, endpoints, |map| {
                    tls::secure_endpoints(map, peers, &self.peer_policies)
                });
            for (name, cluster) in rebuilt {
                // Names come from ports and subsets, which did not change.
                if !index.clusters.contains_key(&name) {
                    return None;
                }
                index.clusters.insert(name.clone(), Arc::new(cluster));
                changed.insert(name);
            }
        }
        Some(Patched {
            index,
            clusters: changed,
        })
    }

    /// Whether a config's clusters all come from its services and routes
    /// (no ext_authz or rate-limit service cluster, which are added another
    /// way): only then may [`patched_cluster`](Self::patched_cluster)
    /// replace clusters in a compiled config.
    pub fn clusters_patchable(&self) -> bool {
        self.mesh.ext_authz == Default::default() && self.rate_limits.is_empty()
    }

    /// Cluster `name` as [`compile`](Self::compile) puts it in `node`'s
    /// config; `None` when it cannot be had alone (unknown, or carrying a
    /// `credentialName`, whose problems the full compile reports).
    pub fn patched_cluster(&self, name: &str, node: &Node) -> Option<pb::Cluster> {
        let namespace = namespace_or_default(&node.namespace);
        let mut warnings = Vec::new();
        let cluster = self.cluster_for(name, node, namespace, &mut warnings)?;
        let credential = cluster
            .tls
            .as_ref()
            .is_some_and(|t| !t.credential_name.is_empty());
        (!credential && warnings.is_empty()).then_some(cluster)
    }
}

#[cfg(test)]
#[path = "incremental_tests.rs"]
mod tests;
