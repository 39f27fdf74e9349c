//! The mesh as the compiler sees it, rebuilt after every change.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prost::Message;
use tokio::sync::watch;
use weft_proto::discovery::v1::{Node, Resource};
use weft_proto::resources::split;

use crate::compiler::MeshIndex;
use crate::compiler::tls::MeshPeers;
use crate::registry::Workload;
use crate::store::Store;

/// A proxy's config as named, versioned resources.
pub type Resources = Arc<BTreeMap<String, Resource>>;

/// One build of the mesh.
pub struct Mesh {
    pub index: MeshIndex,
    /// Increases with every build.
    pub generation: u64,
    /// The registrations (`Connected` sequence) this build includes, and
    /// with them every store change made before them.
    pub registrations: u64,
    /// Compiled configs by proxy shape (see [`shape_key`]): replicas of a
    /// workload share one compilation per build.
    compiled: Mutex<HashMap<Vec<u8>, Resources>>,
}

impl Mesh {
    pub fn new(index: MeshIndex, generation: u64, registrations: u64) -> Self {
        Self {
            index,
            generation,
            registrations,
            compiled: Mutex::default(),
        }
    }

    pub fn empty() -> Self {
        Self::new(MeshIndex::build(&[], &[]), 0, 0)
    }

    /// This proxy's config, compiled once per shape and build.
    pub fn resources_for(&self, node: &Node) -> Resources {
        let key = shape_key(node);
        if let Some(hit) = self
            .compiled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return hit.clone();
        }
        // Compiled outside the lock: proxies of other shapes need not wait.
        let resources = Arc::new(split(self.index.proxy_config(node)));
        self.compiled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, resources.clone());
        resources
    }
}

/// What the compiler reads of a node: namespace, labels, capture, explicit
/// listeners and ports — not its id, workload name, address or account.
fn shape_key(node: &Node) -> Vec<u8> {
    let shape = Node {
        id: String::new(),
        workload: String::new(),
        service_account: String::new(),
        address: String::new(),
        ..node.clone()
    };
    shape.encode_to_vec()
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
    /// Registers a node. Returns the token that unregisters exactly this
    /// session (a proxy that reconnected under the same id stays registered)
    /// and the registration sequence a mesh must include to know the node.
    pub fn register(&self, node: Node) -> (u64, u64) {
        let token = self
            .sessions
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        let mut nodes = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
        nodes.insert(node.id.clone(), (token, node));
        self.changes.send_modify(|n| *n += 1);
        (token, *self.changes.borrow())
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

    /// The connected proxies' nodes, for mesh TLS (inbound listeners and
    /// who holds a certificate).
    pub fn nodes(&self) -> Vec<Node> {
        let nodes = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
        nodes.values().map(|(_, node)| node.clone()).collect()
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }
}

/// The connected workloads the latest build saw, for `GET /v1/describe`
/// (the API serves from the store and cannot see the sessions). One
/// weftd per process, as `weftd` runs it.
static LATEST_WORKLOADS: std::sync::RwLock<Vec<Workload>> = std::sync::RwLock::new(Vec::new());

/// What weftd last gave each proxy, by node id: the version and the whole
/// set of resources the proxy should hold (pushed, or already held when
/// it connected), for
/// `GET /v1/proxies/<id>/config` (same one-weftd-per-process caveat).
static LAST_SENT: std::sync::RwLock<BTreeMap<String, (String, Resources)>> =
    std::sync::RwLock::new(BTreeMap::new());

/// Records a push (see [`LAST_SENT`]).
pub fn record_sent(node: &str, version: &str, resources: Resources) {
    LAST_SENT
        .write()
        .unwrap_or_else(|p| p.into_inner())
        .insert(node.to_string(), (version.to_string(), resources));
}

/// The version and resources last pushed to `node`.
pub fn last_sent(node: &str) -> Option<(String, Resources)> {
    LAST_SENT
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .get(node)
        .cloned()
}

/// See [`LATEST_WORKLOADS`].
pub fn latest_workloads() -> Vec<Workload> {
    LATEST_WORKLOADS
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
}

/// Rebuilds the mesh whenever the store or the connected workloads change,
/// waiting `debounce` after the first change so a burst (a multi-document
/// apply, many proxies connecting) costs one build.
pub async fn build_loop(
    store: Arc<Store>,
    connected: Arc<Connected>,
    debounce: Duration,
    publish: watch::Sender<Arc<Mesh>>,
    trust_domain: String,
) {
    let mut store_changes = store.subscribe();
    let mut workload_changes = connected.subscribe();
    let mut generation = 0;
    let mut last_warnings: Vec<String> = Vec::new();
    loop {
        store_changes.mark_unchanged();
        // Read before the store and workloads: the build then includes at
        // least these registrations and every store change before them.
        let registrations = *workload_changes.borrow_and_update();
        let resources = store.resources();
        generation += 1;
        let started = std::time::Instant::now();
        let workloads = connected.workloads();
        let peers = MeshPeers::new(&trust_domain, &connected.nodes());
        let index = MeshIndex::build_with_peers(&resources, &workloads, &peers);
        *LATEST_WORKLOADS.write().unwrap_or_else(|p| p.into_inner()) = workloads;
        tracing::debug!(
            generation,
            resources = resources.len(),
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
        publish.send_replace(Arc::new(Mesh::new(index, generation, registrations)));
        tokio::select! {
            changed = store_changes.changed() => if changed.is_err() { return },
            changed = workload_changes.changed() => if changed.is_err() { return },
        }
        tokio::time::sleep(debounce).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn replicas_share_one_compilation_and_get_what_they_would_alone() {
        let resources = weft_api::decode_str(MESH, "m.yaml").resources;
        let mesh = Mesh::new(MeshIndex::build(&resources, &[]), 1, 0);
        let first = mesh.resources_for(&node("a", "default"));
        let replica = mesh.resources_for(&node("bb", "default"));
        assert!(Arc::ptr_eq(&first, &replica), "same shape, one compilation");
        // The shortcut gives exactly what compiling for the replica gives.
        assert_eq!(
            *replica,
            split(mesh.index.proxy_config(&node("bb", "default")))
        );
        let elsewhere = mesh.resources_for(&node("a", "other"));
        assert!(
            !Arc::ptr_eq(&first, &elsewhere),
            "another namespace is another shape"
        );
    }
}
