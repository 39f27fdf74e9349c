//! The mesh as the compiler sees it, rebuilt after every change.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prost::Message;
use tokio::sync::{OnceCell, watch};
use weft_proto::discovery::v1::Node;

use super::registrations::{self, Registrations};
use super::shared::{Config, Delta, Held, Interner};
use crate::compiler::MeshIndex;
use crate::status::StatusBoard;
use crate::store::Store;
use crate::store::credentials::{CREDENTIALS_DIR, CredentialDir, CredentialSource, Layered};

/// Made once by the first stream that needs it, while the others wait.
type Shared<T> = Arc<OnceCell<T>>;
/// (held set version, target set version).
type DeltaKey = (String, String);

/// One build of the mesh.
pub struct Mesh {
    pub index: MeshIndex,
    /// Increases with every build.
    pub generation: u64,
    /// The registrations (`Connected` sequence) this build includes, and
    /// with them every store change made before them.
    pub registrations: u64,
    /// Shared with every build: the encoded resources.
    interner: Arc<Interner>,
    /// Compiled configs by proxy shape (see [`shape_key`]): replicas of a
    /// workload share one compilation per build, compiled by the first
    /// stream that needs it while the others wait for it.
    compiled: Mutex<HashMap<Vec<u8>, Shared<Config>>>,
    /// Deltas by (held set version, target set version): proxies holding
    /// the same config and due the same one share one delta.
    deltas: Mutex<HashMap<DeltaKey, Shared<Arc<Delta>>>>,
    /// Set when this build's index was patched for an endpoint change:
    /// shapes are then patched from the build before ([`incremental`]).
    patch: Option<super::incremental::ShapePatch>,
}

impl Mesh {
    pub fn new(index: MeshIndex, generation: u64, registrations: u64) -> Self {
        Self::with_interner(index, generation, registrations, Arc::default())
    }

    /// A build whose configs share resources with the builds before it.
    pub fn with_interner(
        index: MeshIndex,
        generation: u64,
        registrations: u64,
        interner: Arc<Interner>,
    ) -> Self {
        Self {
            index,
            generation,
            registrations,
            interner,
            compiled: Mutex::default(),
            deltas: Mutex::default(),
            patch: None,
        }
    }

    /// A build whose index was patched from `before`'s, where only the
    /// `clusters` named differ: each shape `before` compiled is patched
    /// rather than compiled again.
    pub fn patched_from(
        before: &Mesh,
        patched: crate::compiler::incremental::Patched,
        generation: u64,
        registrations: u64,
    ) -> Self {
        let patch = patched
            .index
            .clusters_patchable()
            .then(|| super::incremental::ShapePatch {
                compiled: before
                    .compiled
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone(),
                clusters: patched.clusters,
            });
        Self {
            patch,
            ..Self::with_interner(
                patched.index,
                generation,
                registrations,
                before.interner.clone(),
            )
        }
    }

    pub fn empty() -> Self {
        Self::new(MeshIndex::build(&[], &[]), 0, 0)
    }

    /// This proxy's config, compiled once per shape and build.
    pub async fn config_for(&self, node: &Node) -> Config {
        let key = shape_key(node, &self.index);
        let cell = self
            .compiled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key.clone())
            .or_default()
            .clone();
        cell.get_or_init(|| async {
            let patched = self
                .patch
                .as_ref()
                .and_then(|patch| patch.config_for(&key, node, &self.index, &self.interner));
            if let Some(config) = patched {
                return config;
            }
            let output = self.index.compile(node);
            // Problems of one proxy's config (a gateway credential that is
            // missing, ...) are said here, once per shape and build, so
            // nothing is left out in silence.
            for warning in &output.warnings {
                tracing::warn!(proxy = %node.id, "{warning}");
            }
            self.interner.encode(output.config)
        })
        .await
        .clone()
    }

    /// Whether this build's index was patched from the build before (an
    /// endpoint-only change) rather than built in full.
    pub fn is_patched(&self) -> bool {
        self.patch.is_some()
    }

    /// What a proxy holding `held` is sent to hold `to`.
    pub async fn delta(&self, held: &Held, to: &Config) -> Arc<Delta> {
        let cell = self
            .deltas
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((held.version().to_string(), to.version.clone()))
            .or_default()
            .clone();
        cell.get_or_init(|| async { Arc::new(Delta::between(held, to)) })
            .await
            .clone()
    }
}

/// What the compiler reads of a node: namespace, the labels some selector
/// names ([`MeshIndex::relevant_labels`]), capture, explicit listeners and
/// ports — not its id, workload name, address, account or other labels.
fn shape_key(node: &Node, index: &MeshIndex) -> Vec<u8> {
    let shape = Node {
        id: String::new(),
        workload: String::new(),
        service_account: String::new(),
        address: String::new(),
        labels: index.relevant_labels(&node.labels),
        ..node.clone()
    };
    shape.encode_to_vec()
}

/// The longest a build waits for a burst of changes to pause (Istio's
/// PILOT_DEBOUNCE_MAX).
pub const DEBOUNCE_MAX: Duration = Duration::from_secs(10);

/// What the build loop reads and where it keeps registrations.
pub struct BuildInputs {
    pub store: Arc<Store>,
    pub registrations: Arc<Registrations>,
    /// Gets each build's registered workloads (for `describe`/`analyze`).
    pub status: Arc<StatusBoard>,
    /// Where the registrations file is written; `None` keeps them in memory.
    pub state_dir: Option<PathBuf>,
    pub trust_domain: String,
    /// The MeshConfig in force; a change rebuilds.
    pub mesh_config: crate::meshconfig::Receiver,
}

/// Rebuilds the mesh whenever the store or the registrations change,
/// debounced as Istio's PILOT_DEBOUNCE_AFTER / PILOT_DEBOUNCE_MAX do: a
/// build starts once no change came for `debounce` (100 ms by default), or
/// [`DEBOUNCE_MAX`] after the first change of a burst that never pauses.
/// So a burst (a multi-document apply, a script applying many changes,
/// many proxies connecting) costs one build and one push per proxy.
///
/// The registrations a build includes are written to disk before the build
/// is published: every endpoint a proxy was ever sent is on disk, so a
/// weftd killed at any moment starts again from them (static stability).
pub async fn build_loop(
    inputs: BuildInputs,
    debounce: Duration,
    publish: watch::Sender<Arc<Mesh>>,
) {
    let BuildInputs {
        store,
        registrations,
        status,
        state_dir,
        trust_domain,
        mut mesh_config,
    } = inputs;
    let mut store_changes = store.subscribe();
    let mut workload_changes = registrations.subscribe();
    let mut generation = 0;
    // Gateway credentials (`credentialName`): files under the state
    // directory, polled so that a renewal is pushed without a restart.
    let credential_dir = state_dir.as_deref().map(CredentialDir::new);
    let mut credential_files = credential_dir.as_ref().map(CredentialDir::fingerprint);
    let mut last_warnings: Vec<String> = Vec::new();
    let mut last_saved = None;
    // Resources live across builds: an unchanged one keeps its bytes.
    let interner = Arc::new(Interner::default());
    // What the last build was made of, for patching the next one when only
    // endpoints changed; `None` forces a full build.
    let mut previous: Option<super::incremental::Previous> = None;
    let mut held = super::incremental::Resources::default();
    let mut derived: Option<super::incremental::Derived> = None;
    loop {
        store_changes.mark_unchanged();
        // Read before the store and workloads: the build then includes at
        // least these registrations and every store change before them.
        let sequence = *workload_changes.borrow_and_update();
        let in_force = mesh_config.borrow_and_update().clone();
        let (revision, changes) = held.refresh_with_changes(&store);
        let resources = held.as_slice();
        generation += 1;
        let started = std::time::Instant::now();
        let saved = registrations.saved();
        let auto_mtls_off = !in_force.loaded.config.auto_mtls();
        let registered =
            super::incremental::Derived::refresh(&mut derived, saved, &trust_domain, auto_mtls_off);
        let Some(state) = derived.as_ref() else {
            continue;
        };
        let (workloads, nodes, peers) = (&state.workloads, &state.nodes, &state.peers);
        if let Some(dir) = &state_dir
            && last_saved.as_deref() != Some(state.saved())
        {
            let (target, to_write) = (dir.clone(), state.saved().to_vec());
            let written =
                tokio::task::spawn_blocking(move || registrations::save(&target, &to_write)).await;
            match written {
                Ok(Ok(())) => last_saved = Some(state.saved().to_vec()),
                Ok(Err(err)) => tracing::error!(
                    "cannot save registrations in {}: {err}; a restart would wait for proxies to reconnect",
                    dir.display()
                ),
                Err(err) => tracing::error!("saving registrations: {err}"),
            }
        }
        let cluster = store.cluster_discovery();
        let credentials: Arc<dyn CredentialSource> = Arc::new(Layered {
            cluster: cluster.clone(),
            dir: credential_dir.clone(),
        });
        let inputs = crate::compiler::BuildInputs {
            cluster: &cluster,
            workloads,
            peers,
            credentials,
        };
        // Only WorkloadEntries changed and the same proxies are registered:
        // the registry before, patched; else built over every resource.
        let patched_registry = previous
            .as_ref()
            .filter(|before| Arc::ptr_eq(&before.nodes, nodes) && before.revision <= revision)
            .zip(changes.as_ref())
            .and_then(|(before, changes)| {
                let changes: Vec<_> = changes
                    .iter()
                    .map(|(b, a)| (b.as_ref(), a.as_ref()))
                    .collect();
                before.registry.patch_workload_entries(&changes)
            });
        let registry_patched = patched_registry.is_some();
        let registry = patched_registry.unwrap_or_else(|| {
            crate::registry::Registry::build_with_cluster(
                resources,
                inputs.cluster,
                inputs.workloads,
            )
        });
        let patched = previous
            .take()
            .and_then(|before| before.patch(&store, revision, nodes, &in_force, &registry, peers));
        let (mesh, patched) = match patched {
            Some((before, patched)) => (
                Mesh::patched_from(&before, patched, generation, sequence),
                true,
            ),
            None => {
                let index = MeshIndex::build_from_registry(
                    &registry,
                    resources,
                    inputs,
                    &in_force.loaded.config,
                );
                let mesh = Mesh::with_interner(index, generation, sequence, interner.clone());
                (mesh, false)
            }
        };
        let mesh = Arc::new(mesh);
        let index = &mesh.index;
        if registered {
            status.set_workloads(workloads.to_vec());
        }
        tracing::debug!(
            generation,
            resources = resources.len(),
            patched,
            registry_patched,
            "mesh rebuilt in {:?}",
            started.elapsed()
        );
        // Said once per change, not once per rebuild.
        if index.warnings() != last_warnings.as_slice() {
            for warning in index
                .warnings()
                .iter()
                .filter(|w| !last_warnings.contains(w))
            {
                tracing::warn!("{warning}");
            }
            last_warnings = index.warnings().to_vec();
        }
        // Gateway credential changes are not seen in the store: the next
        // build after one is a full one.
        previous = Some(super::incremental::Previous {
            revision,
            registry,
            nodes: nodes.clone(),
            in_force,
            mesh: mesh.clone(),
        });
        // The build before is dropped once its last stream moves on; what
        // only it held is forgotten at the next build.
        drop(publish.send_replace(mesh));
        interner.prune();
        tokio::select! {
            changed = store_changes.changed() => if changed.is_err() { return },
            changed = workload_changes.changed() => if changed.is_err() { return },
            changed = mesh_config.changed() => if changed.is_err() { return },
            () = credentials_changed(credential_dir.as_ref(), &mut credential_files) => {
                previous = None;
            }
        }
        let burst = std::time::Instant::now();
        loop {
            store_changes.mark_unchanged();
            workload_changes.mark_unchanged();
            tokio::time::sleep(debounce).await;
            let quiet = !store_changes.has_changed().unwrap_or(false)
                && !workload_changes.has_changed().unwrap_or(false);
            if quiet || burst.elapsed() >= DEBOUNCE_MAX {
                break;
            }
        }
    }
}

/// How often weftd looks for renewed gateway credentials.
const CREDENTIAL_POLL: Duration = Duration::from_secs(1);

/// Returns once the credential files differ from `held` (updated); never
/// without a credential directory.
async fn credentials_changed(
    dir: Option<&CredentialDir>,
    held: &mut Option<Vec<(PathBuf, u64, Option<std::time::SystemTime>)>>,
) {
    let Some(dir) = dir else {
        return std::future::pending().await;
    };
    loop {
        tokio::time::sleep(CREDENTIAL_POLL).await;
        let probe = dir.clone();
        let Ok(now) = tokio::task::spawn_blocking(move || probe.fingerprint()).await else {
            continue;
        };
        if held.as_ref() != Some(&now) {
            tracing::info!("gateway credentials changed under {CREDENTIALS_DIR}/; rebuilding");
            *held = Some(now);
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_proto::resources::split;

    const MESH: &str = "
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: shop}
spec:
  hosts: [shop.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints: [{address: 10.0.0.1}]
";

    fn node(id: &str, namespace: &str) -> Node {
        Node {
            id: id.into(),
            workload: id.into(),
            namespace: namespace.into(),
            address: format!("127.0.0.{}", id.len()),
            ..Node::default()
        }
    }

    #[tokio::test]
    async fn replicas_share_one_compilation_and_get_what_they_would_alone() {
        let resources = weft_api::decode_str(MESH, "m.yaml").resources;
        let mesh = Mesh::new(MeshIndex::build(&resources, &[]), 1, 0);
        let first = mesh.config_for(&node("a", "default")).await;
        let replica = mesh.config_for(&node("bb", "default")).await;
        assert!(Arc::ptr_eq(&first, &replica), "same shape, one compilation");
        // The shortcut gives exactly what compiling for the replica gives.
        let alone = split(mesh.index.proxy_config(&node("bb", "default")));
        assert_eq!(replica.decode().ok(), Some(alone));
        let elsewhere = mesh.config_for(&node("a", "other")).await;
        assert!(
            !Arc::ptr_eq(&first, &elsewhere),
            "another namespace is another shape"
        );
        // Both shapes hold the service's cluster: its bytes exist once.
        let (name, cluster) = first
            .resources
            .iter()
            .find(|(name, _)| name.starts_with("cluster/"))
            .expect("the service's cluster");
        assert!(Arc::ptr_eq(cluster, &elsewhere.resources[name]));
        // Two proxies holding nothing, due the same config: one delta.
        let empty = Held::reported(Default::default());
        let one = mesh.delta(&empty, &first).await;
        let two = mesh.delta(&empty, &replica).await;
        assert!(Arc::ptr_eq(&one, &two));
        assert_eq!(one.changed.len(), first.resources.len());
    }
}

#[cfg(test)]
mod shape_tests {
    use super::*;
    use weft_proto::resources::split;

    /// A Sidecar for `app: ratings` only: other label sets share one
    /// compilation, `ratings` gets its own, and each is what compiling
    /// for that proxy alone gives.
    #[tokio::test]
    async fn only_labels_a_selector_names_make_another_shape() {
        let yaml = "
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: shop, namespace: app}
spec:
  hosts: [shop.app.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints: [{address: 10.0.0.1}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: far, namespace: other}
spec:
  hosts: [far.other.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints: [{address: 10.0.0.2}]
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: ratings, namespace: app}
spec:
  workloadSelector: {labels: {app: ratings}}
  egress: [{hosts: [./*]}]
";
        let resources = weft_api::decode_str(yaml, "m.yaml").resources;
        let mesh = Mesh::new(MeshIndex::build(&resources, &[]), 1, 0);
        let node = |id: &str, app: &str| Node {
            id: id.into(),
            namespace: "app".into(),
            labels: [("app".to_string(), app.to_string())].into(),
            ..Node::default()
        };
        let reviews = mesh.config_for(&node("r", "reviews")).await;
        let details = mesh.config_for(&node("d", "details")).await;
        let ratings = mesh.config_for(&node("t", "ratings")).await;
        assert!(
            Arc::ptr_eq(&reviews, &details),
            "no selector names app=reviews/details"
        );
        assert!(
            !Arc::ptr_eq(&reviews, &ratings),
            "the Sidecar selects app=ratings"
        );
        for (config, id, app) in [(&details, "d", "details"), (&ratings, "t", "ratings")] {
            let alone = split(mesh.index.proxy_config(&node(id, app)));
            assert_eq!(config.decode().ok(), Some(alone), "{app}");
        }
        let sees_far = |config: &Config| config.resources.keys().any(|n| n.contains("far.other"));
        assert!(sees_far(&details) && !sees_far(&ratings));
    }
}
