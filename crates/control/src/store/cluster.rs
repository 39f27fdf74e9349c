//! The cluster layer: what weftd reads from a Kubernetes cluster, held in
//! memory beside the store's own resources and never written to its disk
//! (the cluster is the record; a restarted weftd reads it again).
//!
//! - Istio resources from the cluster's CRDs are listed, got and compiled
//!   like applied ones; an applied resource of the same kind, namespace and
//!   name hides the cluster's (it was written to weftd on purpose).
//! - The discovery snapshot (Services, endpoints, Pods) is for the registry.
//! - Each Pod answers as a WorkloadGroup named `pod/<name>` (a name no real
//!   WorkloadGroup can have), so a sidecar proven by its pod's token is
//!   admitted with the pod's labels and account by the same admission code
//!   as a VM.
//!
//! Contract: [`Store::replace_cluster`] bumps the store revision only when
//! something actually changed, so a relist or an API-server restart pushes
//! nothing.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::watch;
use weft_api::networking::WorkloadGroup;
use weft_api::{Object, Resource};
use weft_kube::convert::{ClusterSnapshot, PodInfo};
use weft_kube::source::ClusterState;

use super::{ResourceKey, Store, Stored};

/// Keeps the store's cluster layer equal to the cluster source's latest
/// state, until the source ends.
pub async fn follow(store: Arc<Store>, mut states: watch::Receiver<Option<Arc<ClusterState>>>) {
    loop {
        let state = states.borrow_and_update().clone();
        if let Some(state) = state {
            let changed = store.replace_cluster(state.config.clone(), state.discovery.clone());
            if changed {
                tracing::info!(
                    services = state.discovery.services.len(),
                    pods = state.discovery.pods.len(),
                    resources = state.config.len(),
                    revision = store.revision(),
                    "cluster changed"
                );
            }
        }
        if states.changed().await.is_err() {
            return;
        }
    }
}

/// WorkloadGroup names of the form `pod/<pod name>` stand for that Pod.
pub const POD_GROUP_PREFIX: &str = "pod/";

/// What the cluster layer holds.
#[derive(Debug, Default)]
pub(super) struct ClusterLayer {
    pub(super) resources: BTreeMap<ResourceKey, Stored>,
    pub(super) discovery: Arc<ClusterSnapshot>,
}

impl Store {
    /// Replaces what the cluster holds: its Istio resources and discovery
    /// snapshot. Returns whether anything changed (and the revision moved).
    pub fn replace_cluster(
        &self,
        resources: Vec<Resource>,
        discovery: Arc<ClusterSnapshot>,
    ) -> bool {
        let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
        let mut revision = state.revision;
        let mut next = BTreeMap::new();
        for mut resource in resources {
            let meta = resource.metadata_mut();
            if meta.namespace.is_empty() {
                meta.namespace = "default".to_string();
            }
            let key = ResourceKey::of(&resource);
            let stored = match state.cluster.resources.get(&key) {
                // Unchanged keeps its version.
                Some(held) if held.resource == resource => held.clone(),
                _ => {
                    revision += 1;
                    Stored {
                        resource,
                        resource_version: revision,
                    }
                }
            };
            next.insert(key, stored);
        }
        let removed = state
            .cluster
            .resources
            .keys()
            .any(|key| !next.contains_key(key));
        let discovery_changed = *state.cluster.discovery != *discovery;
        if revision == state.revision && !removed && !discovery_changed {
            return false;
        }
        if revision == state.revision {
            revision += 1;
        }
        state.cluster.resources = next;
        if discovery_changed {
            state.cluster.discovery = discovery;
        }
        state.revision = revision;
        // Not logged key by key: a build after this rebuilds everything.
        state.changes.forget(revision);
        self.revisions.send_replace(revision);
        true
    }

    /// The cluster's Services, endpoints and Pods (empty without a cluster).
    pub fn cluster_discovery(&self) -> Arc<ClusterSnapshot> {
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        state.cluster.discovery.clone()
    }

    /// The Pod `namespace/name`, if the cluster has it with an address.
    pub fn cluster_pod(&self, namespace: &str, name: &str) -> Option<PodInfo> {
        self.cluster_discovery().pod(namespace, name).cloned()
    }

    /// The WorkloadGroup a Pod stands for (see the module doc).
    pub(super) fn pod_workload_group(
        &self,
        namespace: &str,
        pod: &str,
    ) -> Option<Object<WorkloadGroup>> {
        let pod = self.cluster_pod(namespace, pod)?;
        pod_group(&pod)
    }
}

/// A Pod as a WorkloadGroup: its labels, account and locality; no ports
/// (the proxy's own, as for a WorkloadEntry without ports: services reach
/// the pod on their target ports).
fn pod_group(pod: &PodInfo) -> Option<Object<WorkloadGroup>> {
    let value = serde_json::json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "WorkloadGroup",
        "metadata": {"name": format!("{POD_GROUP_PREFIX}{}", pod.name), "namespace": pod.namespace},
        "spec": {"template": {
            "labels": pod.labels,
            "serviceAccount": pod.service_account,
            "locality": pod.locality,
        }}
    });
    match serde_json::from_value(value) {
        Ok(group) => Some(group),
        Err(err) => {
            tracing::error!(
                "pod {}/{} cannot stand for a WorkloadGroup: {err}",
                pod.namespace,
                pod.name
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VS: &str = "
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: shop}
spec:
  hosts: [reviews]
  http: [{route: [{destination: {host: reviews}}]}]
";

    fn pod(name: &str) -> PodInfo {
        PodInfo {
            name: name.into(),
            namespace: "shop".into(),
            uid: format!("uid-{name}"),
            labels: [("app".to_string(), "reviews".to_string())].into(),
            service_account: "bookinfo-reviews".into(),
            address: "10.1.0.1".parse().expect("ip"),
            node: "node-a".into(),
            locality: "us/east".into(),
            terminating: false,
            ready: true,
        }
    }

    fn discovery(pods: Vec<PodInfo>) -> Arc<ClusterSnapshot> {
        Arc::new(ClusterSnapshot {
            credentials: Default::default(),
            services: Vec::new(),
            pods,
        })
    }

    #[test]
    fn only_real_changes_move_the_revision_and_nothing_is_persisted() {
        let dir = tempfile::tempdir().expect("dir");
        let store = Store::open(dir.path()).expect("store");
        let resources = weft_api::decode_str(VS, "cluster").resources;
        assert!(store.replace_cluster(resources.clone(), discovery(vec![pod("r-1")])));
        let revision = store.revision();
        assert_eq!(store.list(Some("VirtualService"), None).len(), 1);
        // A relist: the same objects again.
        assert!(!store.replace_cluster(resources.clone(), discovery(vec![pod("r-1")])));
        assert_eq!(store.revision(), revision, "no change, no revision");
        // A pod goes: a change.
        assert!(store.replace_cluster(resources, discovery(Vec::new())));
        assert!(store.revision() > revision);
        // Deleted from the cluster: gone from the store.
        assert!(store.replace_cluster(Vec::new(), discovery(Vec::new())));
        assert!(store.list(Some("VirtualService"), None).is_empty());
        // Never written to the store's disk.
        let reopened = Store::open(dir.path()).expect("store");
        let again = weft_api::decode_str(VS, "cluster").resources;
        assert!(reopened.replace_cluster(again, discovery(Vec::new())));
        drop(reopened);
        assert!(
            Store::open(dir.path())
                .expect("store")
                .resources()
                .is_empty()
        );
    }

    #[test]
    fn an_applied_resource_hides_the_clusters_of_the_same_name() {
        let store = Store::in_memory();
        let cluster = weft_api::decode_str(VS, "cluster").resources;
        store.replace_cluster(cluster, discovery(Vec::new()));
        let applied = VS.replace("hosts: [reviews]", "hosts: [reviews, ratings]");
        store.apply_text(&applied, "applied.yaml").expect("applied");
        let listed = store.resources();
        assert_eq!(listed.len(), 1);
        let Resource::VirtualService(vs) = &listed[0] else {
            panic!("a VirtualService");
        };
        assert_eq!(vs.spec.hosts.len(), 2, "the applied one");
    }

    #[test]
    fn a_pod_answers_as_its_workload_group() {
        let store = Store::in_memory();
        store.replace_cluster(Vec::new(), discovery(vec![pod("r-1")]));
        let group = store.workload_group("shop", "pod/r-1").expect("pod group");
        assert_eq!(group.spec.service_account(), "bookinfo-reviews");
        assert_eq!(
            group.spec.template.labels.get("app").map(String::as_str),
            Some("reviews")
        );
        assert_eq!(group.spec.template.locality, "us/east");
        assert!(store.workload_group("shop", "pod/r-2").is_none());
        assert!(store.workload_group("other", "pod/r-1").is_none());
    }
}
