//! The mesh as the compiler sees it, rebuilt after every change.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use weft_proto::discovery::v1::Node;

use crate::compiler::MeshIndex;
use crate::registry::Workload;
use crate::store::Store;

/// One build of the mesh.
pub struct Mesh {
    pub index: MeshIndex,
    /// Increases with every build.
    pub generation: u64,
}

impl Mesh {
    pub fn empty() -> Self {
        Self {
            index: MeshIndex::build(&[], &[]),
            generation: 0,
        }
    }
}

/// Proxies connected now: each registers its workload with its Hello.
#[derive(Default)]
pub struct Connected {
    /// node id → (session generation, node)
    nodes: Mutex<BTreeMap<String, (u64, Node)>>,
    changes: watch::Sender<u64>,
    sessions: std::sync::atomic::AtomicU64,
}

impl Connected {
    /// Registers a node; the returned token unregisters exactly this session
    /// (a proxy that reconnected under the same id stays registered).
    pub fn register(&self, node: Node) -> u64 {
        let token = self
            .sessions
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        let mut nodes = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
        nodes.insert(node.id.clone(), (token, node));
        self.changes.send_modify(|n| *n += 1);
        token
    }

    pub fn unregister(&self, id: &str, token: u64) {
        let mut nodes = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
        if nodes.get(id).is_some_and(|(current, _)| *current == token) {
            nodes.remove(id);
            self.changes.send_modify(|n| *n += 1);
        }
    }

    pub fn workloads(&self) -> Vec<Workload> {
        let nodes = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
        nodes
            .values()
            .filter_map(|(_, node)| Workload::from_node(node))
            .collect()
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }
}

/// Rebuilds the mesh whenever the store or the connected workloads change,
/// waiting `debounce` after the first change so a burst (a multi-document
/// apply, many proxies connecting) costs one build.
pub async fn build_loop(
    store: Arc<Store>,
    connected: Arc<Connected>,
    debounce: Duration,
    publish: watch::Sender<Arc<Mesh>>,
) {
    let mut store_changes = store.subscribe();
    let mut workload_changes = connected.subscribe();
    let mut generation = 0;
    let mut last_warnings: Vec<String> = Vec::new();
    loop {
        store_changes.mark_unchanged();
        workload_changes.mark_unchanged();
        let resources: Vec<_> = store
            .list(None, None)
            .into_iter()
            .map(|s| s.resource)
            .collect();
        generation += 1;
        let index = MeshIndex::build(&resources, &connected.workloads());
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
        publish.send_replace(Arc::new(Mesh { index, generation }));
        tokio::select! {
            changed = store_changes.changed() => if changed.is_err() { return },
            changed = workload_changes.changed() => if changed.is_err() { return },
        }
        tokio::time::sleep(debounce).await;
    }
}
