//! The build loop end to end: an endpoint change is patched, what each
//! shape gets is what a full build gives, a shape that does not see the
//! change keeps its config (its proxies get no push), and any other
//! change builds in full.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use weft_proto::discovery::v1::Node;

use super::super::mesh::{BuildInputs, Mesh, build_loop};
use super::super::registrations::Registrations;
use crate::compiler::MeshIndex;
use crate::meshconfig::InForce;
use crate::status::StatusBoard;
use crate::store::Store;

const MESH: &str = "
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: shop, namespace: ns-a}
spec:
  hosts: [shop.ns-a.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  workloadSelector: {labels: {app: shop}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: shop, namespace: ns-a}
spec:
  host: shop.ns-a.svc.cluster.local
  subsets: [{name: v1, labels: {version: v1}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: far, namespace: ns-b}
spec:
  hosts: [far.ns-b.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints: [{address: 10.1.0.1}]
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: ns-b}
spec:
  egress: [{hosts: [./*]}]
";

fn entry(weight: u32, version: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{name: shop-1, namespace: ns-a}}\nspec:\n  address: 10.0.0.1\n  weight: {weight}\n  labels: {{app: shop, version: {version}}}\n"
    )
}

fn node(id: &str, namespace: &str) -> Node {
    Node {
        id: id.into(),
        namespace: namespace.into(),
        ..Node::default()
    }
}

/// The next build published after `generation`.
async fn next(meshes: &mut watch::Receiver<Arc<Mesh>>, generation: u64) -> Arc<Mesh> {
    let wait = meshes.wait_for(|mesh| mesh.generation > generation);
    match tokio::time::timeout(Duration::from_secs(10), wait).await {
        Ok(Ok(mesh)) => mesh.clone(),
        _ => panic!("no build after generation {generation}"),
    }
}

/// What a full build of the store as it is gives `node`.
async fn full(store: &Store, node: &Node) -> super::Config {
    Mesh::new(MeshIndex::build(&store.resources(), &[]), 1, 0)
        .config_for(node)
        .await
}

#[tokio::test]
async fn endpoint_changes_are_patched_and_push_what_a_full_build_would() {
    let store = Arc::new(Store::in_memory());
    let apply = |text: &str| store.apply_text(text, "t.yaml").expect("valid");
    apply(MESH);
    apply(&entry(1, "v1"));
    let (_config, mesh_config) = watch::channel(Arc::new(InForce::default()));
    let (publish, mut meshes) = watch::channel(Arc::new(Mesh::empty()));
    let inputs = BuildInputs {
        store: store.clone(),
        registrations: Arc::new(Registrations::new(Duration::from_secs(60), 100)),
        status: Arc::new(StatusBoard::default()),
        state_dir: None,
        trust_domain: "cluster.local".into(),
        mesh_config,
    };
    let builds = tokio::spawn(build_loop(inputs, Duration::from_millis(10), publish));
    let (a, b) = (node("a", "ns-a"), node("b", "ns-b"));

    let first = next(&mut meshes, 0).await;
    assert!(!first.is_patched(), "the first build is a full one");
    let (a1, b1) = (first.config_for(&a).await, first.config_for(&b).await);

    // A weight and a subset label change: endpoints only.
    apply(&entry(7, "v2"));
    let second = next(&mut meshes, first.generation).await;
    assert!(second.is_patched(), "an endpoint change is patched");
    let (a2, b2) = (second.config_for(&a).await, second.config_for(&b).await);
    let want = full(&store, &a).await;
    assert_eq!(a2.version, want.version, "byte for byte a full build's");
    assert_eq!(a2.decode().ok(), want.decode().ok());
    assert_ne!(a2.version, a1.version, "ns-a sees shop: its config changed");
    let weight = |config: &super::Config| {
        let decoded = config.decode().expect("decodes");
        format!(
            "{:?}",
            decoded["cluster/outbound|80||shop.ns-a.svc.cluster.local"]
        )
    };
    assert!(weight(&a2).contains("weight: 7"), "{}", weight(&a2));
    assert!(
        Arc::ptr_eq(&b1, &b2),
        "ns-b does not see shop: the same config, nothing pushed"
    );

    // Anything else (here a VirtualService) builds in full.
    apply(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: shop, namespace: ns-a}\nspec:\n  hosts: [shop.ns-a.svc.cluster.local]\n  http: [{route: [{destination: {host: shop.ns-a.svc.cluster.local, subset: v1}}]}]\n",
    );
    let third = next(&mut meshes, second.generation).await;
    assert!(
        !third.is_patched(),
        "a VirtualService change is built in full"
    );
    let a3 = third.config_for(&a).await;
    assert_eq!(a3.version, full(&store, &a).await.version);

    // And the build after a full one may patch again.
    apply(&entry(9, "v1"));
    let fourth = next(&mut meshes, third.generation).await;
    assert!(fourth.is_patched());
    let (a4, b4) = (fourth.config_for(&a).await, fourth.config_for(&b).await);
    assert_eq!(a4.version, full(&store, &a).await.version);
    assert_eq!(b4.version, full(&store, &b).await.version);
    builds.abort();
}

/// The build loop's copy of the store, patched from the change log, is
/// always what reading the store whole gives.
#[test]
fn held_resources_follow_the_store() {
    use crate::store::ResourceKey;
    let store = Store::in_memory();
    let mut held = super::Resources::default();
    store.apply_text(MESH, "t.yaml").expect("valid");
    held.refresh(&store);
    assert_eq!(held.as_slice(), store.resources().as_slice());
    for round in 0..20u32 {
        // Created, changed, unchanged and deleted objects, in one refresh.
        store
            .apply_text(&entry(round % 3, "v1"), "t.yaml")
            .expect("valid");
        let name = format!("e-{}", round % 4);
        let other = entry(round, "v2").replace("shop-1", &name);
        store.apply_text(&other, "t.yaml").expect("valid");
        if round % 3 == 0 {
            let key = ResourceKey::new("WorkloadEntry", "ns-a", &format!("e-{}", round % 5));
            store.delete(&key).expect("deleted");
        }
        if round % 7 == 0 {
            let key = ResourceKey::new("Sidecar", "ns-b", "default");
            store.delete(&key).expect("deleted");
        }
        let revision = held.refresh(&store);
        assert_eq!(revision, store.revision());
        assert_eq!(
            held.as_slice(),
            store.resources().as_slice(),
            "round {round}"
        );
    }
}
