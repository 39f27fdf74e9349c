//! Each test builds a small mesh from Istio YAML plus workloads, compiles a
//! proxy's config, checks that the proxy would accept it, and asserts on
//! what a user would look for in `/config_dump`.

use std::collections::BTreeMap;

use weft_proto::discovery::v1::{ExplicitListener, Node, WorkloadPort};
use weft_proto::proxy::v1::{self as pb, ProxyConfig};

use super::{MeshIndex, ProxyOutput};
use crate::registry::Workload;

pub(super) fn mesh(yaml: &str, workloads: &[Workload]) -> MeshIndex {
    let decoded = weft_api::decode_str(yaml, "test.yaml");
    assert!(decoded.problems.is_empty(), "{:?}", decoded.problems);
    MeshIndex::build(&decoded.resources, workloads)
}

/// The index of `yaml` under the MeshConfig `mesh` (YAML), no workloads.
pub(super) fn mesh_with_config(yaml: &str, mesh: &str) -> MeshIndex {
    let decoded = weft_api::decode_str(yaml, "test.yaml");
    assert!(decoded.problems.is_empty(), "{:?}", decoded.problems);
    let config = weft_api::mesh::parse(mesh)
        .expect("valid MeshConfig")
        .config;
    let inputs = super::BuildInputs {
        cluster: &Default::default(),
        workloads: &[],
        peers: &Default::default(),
        credentials: std::sync::Arc::new(crate::store::credentials::NoCredentials),
    };
    MeshIndex::build_with_mesh(&decoded.resources, inputs, &config)
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub(super) fn node(namespace: &str, pairs: &[(&str, &str)]) -> Node {
    Node {
        id: "n1".into(),
        workload: "client".into(),
        namespace: namespace.into(),
        labels: labels(pairs),
        address: "10.0.0.100".into(),
        ..Default::default()
    }
}

pub(super) fn workload(
    name: &str,
    namespace: &str,
    address: &str,
    pairs: &[(&str, &str)],
) -> Workload {
    let mut node = node(namespace, pairs);
    node.workload = name.into();
    node.address = address.into();
    node.ports = vec![WorkloadPort {
        port: 8080,
        protocol: 0,
        name: "http".into(),
    }];
    Workload::from_node(&node).expect("valid workload")
}

/// Compiles and checks that the proxy accepts the result.
pub(super) fn compile(index: &MeshIndex, node: &Node) -> ProxyOutput {
    let out = index.compile(node);
    if let Err(err) = weft_proxy::config::Snapshot::compile(out.config.clone(), "x") {
        panic!(
            "proxy rejects the config: {}\n{:#?}",
            err.message, out.config
        );
    }
    out
}

pub(super) fn config(index: &MeshIndex, node: &Node) -> ProxyConfig {
    compile(index, node).config
}

pub(super) fn service<'a>(config: &'a ProxyConfig, name: &str) -> Option<&'a pb::Service> {
    config.services.iter().find(|s| s.name == name)
}

fn cluster<'a>(config: &'a ProxyConfig, name: &str) -> &'a pb::Cluster {
    config
        .clusters
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no cluster {name}: {:#?}", config.clusters))
}

fn addresses(cluster: &pb::Cluster) -> Vec<&str> {
    cluster
        .endpoints
        .iter()
        .map(|e| e.address.as_str())
        .collect()
}

pub(super) const REVIEWS: &str = "
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews, namespace: shop}
spec:
  hosts: [reviews.shop.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9080, name: http, protocol: HTTP, targetPort: 9000}]
  workloadSelector: {labels: {app: reviews}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-vm, namespace: shop}
spec:
  address: 10.0.0.1
  labels: {app: reviews, version: v1}
  ports: {http: 7000}
  weight: 3
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-elsewhere, namespace: other}
spec:
  address: 10.0.0.9
  labels: {app: reviews, version: v1}
";

pub(super) const REVIEWS_HOST: &str = "reviews.shop.svc.cluster.local";

#[test]
fn workload_selector_picks_matching_workloads_of_its_namespace() {
    let connected = workload(
        "reviews-v2",
        "shop",
        "10.0.0.2",
        &[("app", "reviews"), ("version", "v2")],
    );
    let unrelated = workload("ratings", "shop", "10.0.0.3", &[("app", "ratings")]);
    let index = mesh(REVIEWS, &[connected, unrelated]);
    let config = config(&index, &node("shop", &[]));
    let all = cluster(&config, "outbound|9080||reviews.shop.svc.cluster.local");
    // The WorkloadEntry's named port wins; the connected workload serves
    // "http" on 8080; the entry in another namespace is not selected.
    assert_eq!(addresses(all), ["10.0.0.1:7000", "10.0.0.2:8080"]);
    assert_eq!(all.endpoints[0].weight, 3);
    assert_eq!(
        all.endpoints[0].labels.get("version").map(String::as_str),
        Some("v1")
    );
    assert_eq!(all.upstream_protocol, pb::UpstreamProtocol::Http1 as i32);
    assert_eq!(all.service, REVIEWS_HOST);
    let reviews = service(&config, REVIEWS_HOST).expect("reviews visible");
    assert_eq!(reviews.ports[0].protocol, pb::Protocol::Http as i32);
    // No VirtualService: one route to the port's cluster with Istio's
    // default retry policy.
    let [route] = reviews.ports[0].routes.as_slice() else {
        panic!("one default route: {:?}", reviews.ports[0].routes);
    };
    assert_eq!(
        route.clusters[0].cluster,
        "outbound|9080||reviews.shop.svc.cluster.local"
    );
    assert_eq!(route.retries.as_ref().map(|r| r.attempts), Some(2));
}

#[test]
fn inline_endpoints_use_target_port_and_skip_dns_names() {
    let index = mesh(
        "
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: db, namespace: data}
spec:
  hosts: [db.example.com]
  resolution: STATIC
  ports: [{number: 3306, name: mysql, protocol: MYSQL, targetPort: 3307}]
  endpoints: [{address: 10.1.0.1}, {address: db-2.example.com}]
",
        &[],
    );
    let config = config(&index, &node("data", &[]));
    let db = service(&config, "db.example.com").expect("db");
    assert!(db.ports[0].server_first);
    assert_eq!(db.ports[0].protocol, pb::Protocol::Tcp as i32);
    let all = cluster(&config, "outbound|3306||db.example.com");
    assert_eq!(addresses(all), ["10.1.0.1:3307"]);
    assert_eq!(
        all.upstream_protocol,
        pb::UpstreamProtocol::UseClientProtocol as i32
    );
    assert!(
        index
            .warnings()
            .iter()
            .any(|w| w.contains("db-2.example.com"))
    );
}

#[test]
fn subsets_select_endpoints_by_labels() {
    let yaml = format!(
        "{REVIEWS}---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: reviews, namespace: shop}}
spec:
  host: reviews
  trafficPolicy: {{connectionPool: {{tcp: {{connectTimeout: 3s}}}}}}
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - name: v2
    labels: {{version: v2}}
    trafficPolicy: {{connectionPool: {{tcp: {{connectTimeout: 250ms}}}}}}
"
    );
    let connected = workload(
        "reviews-v2",
        "shop",
        "10.0.0.2",
        &[("app", "reviews"), ("version", "v2")],
    );
    let index = mesh(&yaml, &[connected]);
    let config = config(&index, &node("shop", &[]));
    // Only clusters something refers to: no route names the subsets yet.
    assert_eq!(config.clusters.len(), 1);
    let default = cluster(&config, "outbound|9080||reviews.shop.svc.cluster.local");
    assert_eq!(default.connect_timeout.as_ref().map(|d| d.seconds), Some(3));

    let v1 = &index.clusters["outbound|9080|v1|reviews.shop.svc.cluster.local"];
    assert_eq!(addresses(v1), ["10.0.0.1:7000"]);
    assert_eq!(v1.subset, "v1");
    let v2 = &index.clusters["outbound|9080|v2|reviews.shop.svc.cluster.local"];
    assert_eq!(addresses(v2), ["10.0.0.2:8080"]);
    assert_eq!(
        v2.connect_timeout.as_ref().map(|d| d.nanos),
        Some(250_000_000)
    );
}

#[test]
fn weighted_split_becomes_weighted_subset_clusters() {
    let yaml = format!(
        "{REVIEWS}---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: reviews, namespace: shop}}
spec:
  host: reviews.shop.svc.cluster.local
  subsets: [{{name: v1, labels: {{version: v1}}}}, {{name: v2, labels: {{version: v2}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews, namespace: shop}}
spec:
  hosts: [reviews]
  http:
  - match: [{{uri: {{prefix: /api}}}}, {{uri: {{exact: /health}}}}]
    timeout: 2s
    route:
    - {{destination: {{host: reviews, subset: v1}}, weight: 90}}
    - {{destination: {{host: reviews, subset: v2}}, weight: 10}}
  - route: [{{destination: {{host: reviews, subset: v1}}}}]
"
    );
    let index = mesh(&yaml, &[]);
    assert!(index.warnings().is_empty(), "{:?}", index.warnings());
    let config = config(&index, &node("web", &[]));
    let port = &service(&config, REVIEWS_HOST).expect("reviews").ports[0];
    let names: Vec<&str> = port.routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["reviews.0", "reviews.0", "reviews.1"]);
    let first = &port.routes[0];
    assert_eq!(
        first.r#match.as_ref().and_then(|m| m.path.clone()),
        Some(pb::route_match::Path::PathPrefix("/api".into()))
    );
    assert_eq!(first.timeout.as_ref().map(|t| t.seconds), Some(2));
    let split: Vec<(&str, u32)> = first
        .clusters
        .iter()
        .map(|c| (c.cluster.as_str(), c.weight))
        .collect();
    assert_eq!(
        split,
        [
            ("outbound|9080|v1|reviews.shop.svc.cluster.local", 90),
            ("outbound|9080|v2|reviews.shop.svc.cluster.local", 10),
        ]
    );
    assert!(port.routes[2].r#match.is_none());
    let names: Vec<&str> = config.clusters.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        // Sorted by name ('|' sorts after letters).
        [
            "outbound|9080|v1|reviews.shop.svc.cluster.local",
            "outbound|9080|v2|reviews.shop.svc.cluster.local",
            "outbound|9080||reviews.shop.svc.cluster.local",
        ]
    );
}

#[test]
fn unsupported_match_is_skipped_with_a_warning() {
    let yaml = format!(
        "{REVIEWS}---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews, namespace: shop}}
spec:
  hosts: [reviews]
  http:
  - match: [{{uri: {{prefix: /a}}}}, {{queryParams: {{user: {{prefix: j}}}}}}]
    route: [{{destination: {{host: reviews, subset: v2}}}}]
  - route: [{{destination: {{host: reviews}}}}]
"
    );
    let index = mesh(&yaml, &[]);
    assert!(
        index.warnings().iter().any(
            |w| w.contains("VirtualService shop/reviews: http[0] skipped")
                && w.contains("queryParams")
        ),
        "{:?}",
        index.warnings()
    );
    let config = config(&index, &node("shop", &[]));
    let port = &service(&config, REVIEWS_HOST).expect("reviews").ports[0];
    assert_eq!(port.routes.len(), 1);
    assert_eq!(port.routes[0].name, "reviews.1");
}

#[test]
fn dangling_destination_gets_an_empty_cluster_not_another_one() {
    let yaml = format!(
        "{REVIEWS}---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews, namespace: shop}}
spec:
  hosts: [reviews]
  http: [{{route: [{{destination: {{host: reviews, subset: v9}}}}]}}]
"
    );
    let index = mesh(
        &yaml,
        &[workload("r", "shop", "10.0.0.2", &[("app", "reviews")])],
    );
    assert!(index.warnings().iter().any(|w| w.contains("v9")));
    let config = config(&index, &node("shop", &[]));
    assert!(
        cluster(&config, "outbound|9080|v9|reviews.shop.svc.cluster.local")
            .endpoints
            .is_empty()
    );
}

#[test]
fn export_to_dot_hides_from_other_namespaces() {
    let yaml = "
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: private, namespace: team}
spec:
  hosts: [private.internal]
  exportTo: [.]
  ports: [{number: 80, name: http, protocol: HTTP}]
";
    let index = mesh(yaml, &[]);
    assert!(service(&config(&index, &node("team", &[])), "private.internal").is_some());
    let outside = config(&index, &node("other", &[]));
    assert!(service(&outside, "private.internal").is_none());
    assert!(outside.clusters.is_empty());
}

const TWO_SERVICES: &str = "
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: a, namespace: app}
spec:
  hosts: [a.app.svc.cluster.local]
  ports: [{number: 80, name: http, protocol: HTTP}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: b, namespace: lib}
spec:
  hosts: [b.lib.svc.cluster.local]
  ports: [{number: 80, name: http, protocol: HTTP}]
";

#[test]
fn sidecar_egress_limits_what_a_proxy_sees() {
    let yaml = format!(
        "{TWO_SERVICES}---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{name: default, namespace: app}}
spec:
  egress: [{{hosts: [./*]}}]
  outboundTrafficPolicy: {{mode: REGISTRY_ONLY}}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{name: wide, namespace: app}}
spec:
  workloadSelector: {{labels: {{app: wide}}}}
  egress: [{{hosts: ['*/*']}}]
"
    );
    let index = mesh(&yaml, &[]);
    let narrow = config(&index, &node("app", &[("app", "narrow")]));
    let names: Vec<&str> = narrow.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["a.app.svc.cluster.local"]);
    assert_eq!(
        narrow.outbound_traffic_policy,
        pb::OutboundTrafficPolicy::RegistryOnly as i32
    );
    // A selecting Sidecar wins over the namespace default.
    let wide = config(&index, &node("app", &[("app", "wide")]));
    assert_eq!(wide.services.len(), 2);
    assert_eq!(
        wide.outbound_traffic_policy,
        pb::OutboundTrafficPolicy::AllowAny as i32
    );
    // Other namespaces are not affected.
    assert_eq!(config(&index, &node("lib", &[])).services.len(), 2);
}

#[test]
fn root_namespace_sidecar_applies_where_none_is_local() {
    let yaml = format!(
        "{TWO_SERVICES}---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{name: default, namespace: istio-system}}
spec:
  egress: [{{hosts: [lib/*]}}]
"
    );
    let index = mesh(&yaml, &[]);
    let names: Vec<String> = config(&index, &node("app", &[]))
        .services
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, ["b.lib.svc.cluster.local"]);
}

#[test]
fn short_names_and_explicit_listeners_resolve_in_the_node_namespace() {
    let index = mesh(TWO_SERVICES, &[]);
    let mut client = node("app", &[]);
    client.explicit_listeners = vec![
        ExplicitListener {
            address: "127.0.0.1:9001".into(),
            service: "a".into(),
            port: 80,
        },
        ExplicitListener {
            address: "127.0.0.1:9002".into(),
            service: "b.lib".into(),
            port: 0,
        },
        ExplicitListener {
            address: "127.0.0.1:9003".into(),
            service: "b".into(),
            port: 80,
        },
    ];
    let out = compile(&index, &client);
    let a = service(&out.config, "a.app.svc.cluster.local").expect("a");
    assert_eq!(
        a.hosts,
        ["a.app.svc.cluster.local", "a.app.svc", "a.app", "a"]
    );
    let b = service(&out.config, "b.lib.svc.cluster.local").expect("b");
    assert!(
        !b.hosts.iter().any(|h| h == "b"),
        "short name only inside lib"
    );
    let listeners: Vec<(&str, &str, u32)> = out
        .config
        .listeners
        .iter()
        .map(|l| (l.address.as_str(), l.service.as_str(), l.service_port))
        .collect();
    assert_eq!(
        listeners,
        [
            ("127.0.0.1:9001", "a.app.svc.cluster.local", 80),
            ("127.0.0.1:9002", "b.lib.svc.cluster.local", 0),
        ]
    );
    assert!(out.warnings.iter().any(|w| w.contains("127.0.0.1:9003")));
    assert!(
        out.config
            .listeners
            .iter()
            .all(|l| l.kind == pb::ListenerKind::Explicit as i32)
    );
}

#[test]
fn capture_listeners_only_when_asked() {
    let index = mesh(TWO_SERVICES, &[]);
    assert!(config(&index, &node("app", &[])).listeners.is_empty());
    let mut captured = node("app", &[]);
    captured.capture = true;
    captured.ports = vec![
        WorkloadPort {
            port: 8080,
            protocol: pb::Protocol::Http as i32,
            name: "http".into(),
        },
        WorkloadPort {
            port: 3306,
            protocol: 0,
            name: "db".into(),
        },
    ];
    let config = config(&index, &captured);
    let listeners: Vec<(&str, &str, i32)> = config
        .listeners
        .iter()
        .map(|l| (l.name.as_str(), l.address.as_str(), l.kind))
        .collect();
    assert_eq!(
        listeners,
        [
            (
                "virtualOutbound",
                "0.0.0.0:15001",
                pb::ListenerKind::OutboundCapture as i32
            ),
            (
                "virtualInbound",
                "0.0.0.0:15006",
                pb::ListenerKind::InboundCapture as i32
            ),
        ]
    );
    let inbound: Vec<(u32, i32, bool)> = config
        .inbound_ports
        .iter()
        .map(|p| (p.port, p.protocol, p.server_first))
        .collect();
    assert_eq!(
        inbound,
        [(8080, pb::Protocol::Http as i32, false), (3306, 0, true)]
    );
}

#[test]
fn services_get_vips_and_output_is_deterministic() {
    let decoded = weft_api::decode_str(&format!("{REVIEWS}---\n{TWO_SERVICES}"), "t.yaml");
    let mut reversed = decoded.resources.clone();
    reversed.reverse();
    let workloads = [
        workload("r1", "shop", "10.0.0.2", &[("app", "reviews")]),
        workload("r2", "shop", "10.0.0.3", &[("app", "reviews")]),
    ];
    let mut swapped = workloads.clone();
    swapped.reverse();
    let one = MeshIndex::build(&decoded.resources, &workloads).proxy_config(&node("shop", &[]));
    let two = MeshIndex::build(&reversed, &swapped).proxy_config(&node("shop", &[]));
    assert_eq!(one, two);
    for service in &one.services {
        assert_eq!(service.vips.len(), 1, "{service:?}");
        assert!(service.vips[0].starts_with("240.240."), "{service:?}");
    }
}
