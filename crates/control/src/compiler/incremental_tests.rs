//! Property test of the endpoint patch: random meshes (services over
//! namespaces, DestinationRules with subsets in the service's and the
//! caller's namespace, VirtualServices to subsets, Sidecars, connected
//! proxies with mTLS) and random endpoint edits. Wherever the patch is
//! taken, what each proxy gets must be byte for byte what a full build
//! gives, both from the patched index and from a previous config with
//! only the changed clusters replaced (what `push::incremental` does).

use std::fmt::Write as _;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use weft_api::Resource;
use weft_proto::discovery::v1::{Node, WorkloadPort};
use weft_proto::proxy::v1::ProxyConfig;
use weft_proto::resources::split;

use super::super::MeshIndex;
use crate::compiler::tls::MeshPeers;
use crate::registry::{Registry, Workload};

const NAMESPACES: [&str; 3] = ["ns-a", "ns-b", "ns-c"];

/// One WorkloadEntry of the random mesh.
#[derive(Clone)]
struct Entry {
    name: String,
    namespace: usize,
    service: usize,
    address: String,
    version: &'static str,
    weight: u32,
    zone: &'static str,
}

struct RandomMesh {
    services: usize,
    /// Everything but the WorkloadEntries, fixed for one seed.
    fixed: String,
    entries: Vec<Entry>,
}

impl RandomMesh {
    fn new(rng: &mut StdRng) -> Self {
        let services = rng.random_range(2..7);
        let mut fixed = String::new();
        for s in 0..services {
            let ns = NAMESPACES[s % NAMESPACES.len()];
            let resolution = if rng.random_bool(0.15) {
                "NONE"
            } else if rng.random_bool(0.2) {
                "DNS"
            } else {
                "STATIC"
            };
            let _ = write!(
                fixed,
                "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: svc-{s}, namespace: {ns}}}\nspec:\n  hosts: [svc-{s}.{ns}.svc.cluster.local]\n  location: MESH_INTERNAL\n  resolution: {resolution}\n  ports: [{{number: 8080, name: http, protocol: HTTP}}, {{number: 9000, name: tcp, protocol: TCP}}]\n  workloadSelector: {{labels: {{app: svc-{s}}}}}\n---\n"
            );
            // The same host in another namespace: patched only in full.
            if rng.random_bool(0.1) {
                let _ = write!(
                    fixed,
                    "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: twin-{s}, namespace: ns-c}}\nspec:\n  hosts: [svc-{s}.{ns}.svc.cluster.local]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports: [{{number: 8080, name: http, protocol: HTTP}}]\n  endpoints: [{{address: 10.9.9.{s}}}]\n---\n"
                );
            }
            if rng.random_bool(0.6) {
                let lb = ["ROUND_ROBIN", "LEAST_REQUEST", "RANDOM"][rng.random_range(0..3)];
                let _ = write!(
                    fixed,
                    "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: svc-{s}, namespace: {ns}}}\nspec:\n  host: svc-{s}.{ns}.svc.cluster.local\n  trafficPolicy: {{loadBalancer: {{simple: {lb}}}}}\n  subsets:\n  - {{name: v1, labels: {{version: v1}}}}\n  - {{name: v2, labels: {{version: v2}}}}\n---\n"
                );
            }
            // A rule in a caller's namespace: callers there get another variant.
            if rng.random_bool(0.4) {
                let caller = NAMESPACES[(s + 1) % NAMESPACES.len()];
                let _ = write!(
                    fixed,
                    "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: for-svc-{s}, namespace: {caller}}}\nspec:\n  host: svc-{s}.{ns}.svc.cluster.local\n  trafficPolicy: {{tls: {{mode: ISTIO_MUTUAL}}}}\n  subsets:\n  - {{name: v2, labels: {{version: v2}}}}\n  - {{name: v3, labels: {{version: v3}}}}\n---\n"
                );
            }
            if rng.random_bool(0.5) {
                let _ = write!(
                    fixed,
                    "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: svc-{s}, namespace: {ns}}}\nspec:\n  hosts: [svc-{s}.{ns}.svc.cluster.local]\n  http:\n  - route:\n    - {{destination: {{host: svc-{s}.{ns}.svc.cluster.local, subset: v1}}, weight: 70}}\n    - {{destination: {{host: svc-{s}.{ns}.svc.cluster.local, subset: v3}}, weight: 30}}\n---\n"
                );
            }
        }
        if rng.random_bool(0.5) {
            fixed.push_str("apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: default, namespace: ns-b}\nspec:\n  egress: [{hosts: [./*]}]\n---\n");
        }
        let mut mesh = Self {
            services,
            fixed,
            entries: Vec::new(),
        };
        for _ in 0..rng.random_range(0..12) {
            mesh.add_entry(rng);
        }
        mesh
    }

    fn add_entry(&mut self, rng: &mut StdRng) {
        let service = rng.random_range(0..self.services);
        let n = self.entries.len() + rng.random_range(0..1000) * 100;
        self.entries.push(Entry {
            name: format!("ep-{n}"),
            namespace: service % NAMESPACES.len(),
            service,
            // Few addresses, so connected proxies often sit behind them.
            address: format!("10.0.0.{}", rng.random_range(1..12)),
            version: ["v1", "v2", "v3"][rng.random_range(0..3)],
            weight: rng.random_range(1..5),
            zone: ["", "r1/z1", "r1/z2"][rng.random_range(0..3)],
        });
    }

    /// One random endpoint edit: weight, labels, address, added, removed.
    fn edit(&mut self, rng: &mut StdRng) {
        if self.entries.is_empty() || rng.random_bool(0.2) {
            return self.add_entry(rng);
        }
        let at = rng.random_range(0..self.entries.len());
        match rng.random_range(0..5) {
            0 => self.entries[at].weight += 1,
            1 => self.entries[at].version = ["v1", "v2", "v3"][rng.random_range(0..3)],
            2 => self.entries[at].address = format!("10.0.1.{}", rng.random_range(1..50)),
            3 => self.entries[at].zone = ["", "r1/z1", "r2/z9"][rng.random_range(0..3)],
            _ => {
                self.entries.remove(at);
            }
        }
    }

    fn resources(&self) -> Vec<Resource> {
        let mut yaml = self.fixed.clone();
        for e in &self.entries {
            let ns = NAMESPACES[e.namespace];
            let locality = if e.zone.is_empty() {
                String::new()
            } else {
                format!("\n  locality: {}", e.zone)
            };
            let _ = write!(
                yaml,
                "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{name: {}, namespace: {ns}}}\nspec:\n  address: {}\n  ports: {{http: 8080}}\n  weight: {}\n  labels: {{app: svc-{}, version: {}}}{locality}\n---\n",
                e.name, e.address, e.weight, e.service, e.version
            );
        }
        let decoded = weft_api::decode_str(&yaml, "random.yaml");
        assert!(decoded.problems.is_empty(), "{:?}", decoded.problems);
        decoded.resources
    }
}

/// Proxies connected to the random mesh: some behind endpoint addresses
/// (their endpoints get mesh TLS), in every namespace, one in a zone.
fn connected(rng: &mut StdRng) -> Vec<Node> {
    (0..rng.random_range(0..4))
        .map(|i| Node {
            id: format!("p-{i}"),
            workload: format!("p-{i}"),
            namespace: NAMESPACES[i % NAMESPACES.len()].into(),
            address: format!("10.0.0.{}", rng.random_range(1..12)),
            ports: vec![WorkloadPort {
                name: "http".into(),
                port: 8080,
                ..WorkloadPort::default()
            }],
            mtls: rng.random_bool(0.7),
            ..Node::default()
        })
        .collect()
}

/// The proxies whose configs are compared: every namespace, with and
/// without a locality, and a gateway.
fn callers() -> Vec<Node> {
    let mut out = Vec::new();
    for ns in NAMESPACES {
        for locality in ["", "r1/z1"] {
            out.push(Node {
                id: format!("c-{ns}-{locality}"),
                namespace: ns.into(),
                locality: locality.into(),
                labels: [("app".to_string(), "client".to_string())].into(),
                ..Node::default()
            });
        }
    }
    out.push(Node {
        id: "gw".into(),
        namespace: "ns-a".into(),
        router: true,
        ..Node::default()
    });
    out
}

fn build(resources: &[Resource], nodes: &[Node]) -> (MeshIndex, Registry) {
    let workloads: Vec<Workload> = nodes.iter().filter_map(Workload::from_node).collect();
    let peers = MeshPeers::new("cluster.local", nodes);
    let index = MeshIndex::build_with_peers(resources, &workloads, &peers);
    (index, Registry::build(resources, &workloads))
}

/// `before`'s config for `node` with the changed clusters replaced, as
/// `push::incremental` patches a shape; `None` when it would compile anew.
fn patch_config(before: ProxyConfig, patched: &super::Patched, node: &Node) -> Option<ProxyConfig> {
    let mut config = before;
    for cluster in &mut config.clusters {
        if patched.clusters.contains(&cluster.name) {
            *cluster = patched.index.patched_cluster(&cluster.name, node)?;
        }
    }
    Some(config)
}

/// What changed from `before` to `after`, as the build loop hands it to
/// [`Registry::patch_workload_entries`]: (before, after) by key.
fn changes<'a>(
    before: &'a [Resource],
    after: &'a [Resource],
) -> Vec<(Option<&'a Resource>, Option<&'a Resource>)> {
    use crate::store::ResourceKey;
    use std::collections::BTreeMap;
    let mut by_key: BTreeMap<ResourceKey, (Option<&Resource>, Option<&Resource>)> = BTreeMap::new();
    for r in before {
        by_key.entry(ResourceKey::of(r)).or_default().0 = Some(r);
    }
    for r in after {
        by_key.entry(ResourceKey::of(r)).or_default().1 = Some(r);
    }
    by_key.into_values().filter(|(b, a)| b != a).collect()
}

#[test]
fn patched_endpoints_give_what_a_full_build_gives() {
    let (mut patches, mut fallbacks, mut shapes_patched) = (0, 0, 0);
    let (mut registry_patches, mut registry_fallbacks) = (0, 0);
    for seed in 0..60u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut mesh = RandomMesh::new(&mut rng);
        let nodes = connected(&mut rng);
        let peers = MeshPeers::new("cluster.local", &nodes);
        let mut resources = mesh.resources();
        let (mut index, mut registry) = build(&resources, &nodes);
        for step in 0..6 {
            for _ in 0..rng.random_range(1..4) {
                mesh.edit(&mut rng);
            }
            let previous = std::mem::replace(&mut resources, mesh.resources());
            let (full, mut after) = build(&resources, &nodes);
            // The registry patched from the edited WorkloadEntries is the
            // registry built in full; the index patch then runs on it (the
            // build loop's path, where untouched services share endpoints).
            match registry.patch_workload_entries(&changes(&previous, &resources)) {
                Some(patched) => {
                    registry_patches += 1;
                    assert_eq!(patched, after, "seed {seed} step {step}: registry patch");
                    after = patched;
                }
                None => registry_fallbacks += 1,
            }
            let Some(patched) = index.patch_endpoints(&registry, &after, &peers) else {
                fallbacks += 1;
                (index, registry) = (full, after);
                continue;
            };
            patches += 1;
            assert!(index.clusters_patchable(), "no ext_authz, no rate limits");
            for node in callers() {
                let want = split(full.proxy_config(&node));
                let got = split(patched.index.proxy_config(&node));
                assert_eq!(got, want, "seed {seed} step {step}, proxy {}", node.id);
                if let Some(config) = patch_config(index.proxy_config(&node), &patched, &node) {
                    shapes_patched += 1;
                    assert_eq!(
                        split(config),
                        want,
                        "seed {seed} step {step}, proxy {}: shape patch",
                        node.id
                    );
                }
            }
            (index, registry) = (patched.index, after);
        }
    }
    // The property is only worth something if the patch is taken often.
    assert!(
        patches > 150,
        "patched {patches} times, fell back {fallbacks}"
    );
    assert!(
        fallbacks > 0,
        "NONE services and shared hosts must fall back"
    );
    assert!(shapes_patched > 500, "{shapes_patched} shapes patched");
    assert!(
        registry_patches > 200 && registry_fallbacks > 0,
        "registry patched {registry_patches} times, built in full {registry_fallbacks}"
    );
}

#[test]
fn anything_but_endpoints_is_not_patched() {
    let mut rng = StdRng::seed_from_u64(7);
    let mesh = RandomMesh::new(&mut rng);
    let resources = mesh.resources();
    let (index, registry) = build(&resources, &[]);
    // A new service: the registries' services differ.
    let mut more = resources.clone();
    more.extend(
        weft_api::decode_str(
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: new, namespace: ns-a}\nspec:\n  hosts: [new.ns-a.svc.cluster.local]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports: [{number: 80, name: http, protocol: HTTP}]\n",
            "new.yaml",
        )
        .resources,
    );
    let (_, after) = build(&more, &[]);
    let peers = MeshPeers::default();
    assert!(index.patch_endpoints(&registry, &after, &peers).is_none());
    // Nothing changed: patched, and nothing to replace.
    let same = index
        .patch_endpoints(&registry, &registry, &peers)
        .expect("no change");
    assert!(same.clusters.is_empty());
}
