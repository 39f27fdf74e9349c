//! VirtualService `tcp` and `tls` routes in the full proxy model. Every
//! config is checked against the proxy's own validation (`tests::compile`).

use weft_proto::proxy::v1 as pb;

use crate::compiler::MeshIndex;
use crate::compiler::tests::{config, mesh, node, service};

const DB_HOST: &str = "db.shop.svc.cluster.local";
const V1: &str = "outbound|5432|v1|db.shop.svc.cluster.local";
const V2: &str = "outbound|5432|v2|db.shop.svc.cluster.local";
const TLS_V2: &str = "outbound|443|v2|db.shop.svc.cluster.local";

/// A service with a TCP, a TLS and an HTTP port, subsets v1 and v2, and
/// `spec` as the VirtualService for it.
fn db_mesh(spec: &str) -> MeshIndex {
    mesh(
        &format!(
            "
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: db, namespace: shop}}
spec:
  hosts: [{DB_HOST}]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {{number: 5432, name: tcp, protocol: TCP}}
  - {{number: 443, name: tls, protocol: TLS}}
  - {{number: 80, name: http, protocol: HTTP}}
  endpoints: [{{address: 10.0.0.1, labels: {{version: v1}}}}, {{address: 10.0.0.2, labels: {{version: v2}}}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: db, namespace: shop}}
spec:
  host: {DB_HOST}
  subsets: [{{name: v1, labels: {{version: v1}}}}, {{name: v2, labels: {{version: v2}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: db, namespace: shop}}
spec:
  hosts: [{DB_HOST}]
{spec}"
        ),
        &[],
    )
}

fn port(config: &pb::ProxyConfig, number: u32) -> pb::ServicePort {
    service(config, DB_HOST)
        .expect("db")
        .ports
        .iter()
        .find(|p| p.port == number)
        .cloned()
        .expect("port")
}

fn names(clusters: &[pb::WeightedCluster]) -> Vec<(&str, u32)> {
    clusters
        .iter()
        .map(|c| (c.cluster.as_str(), c.weight))
        .collect()
}

#[test]
fn tcp_route_splits_by_weight_with_subnet_and_port_matches() {
    let index = db_mesh(
        "  tcp:
  - match: [{port: 5432, destinationSubnets: [10.1.0.0/16]}]
    route: [{destination: {host: db, subset: v2}}]
  - route:
    - {destination: {host: db, subset: v1}, weight: 80}
    - {destination: {host: db, subset: v2}, weight: 20}
",
    );
    assert!(index.warnings().is_empty(), "{:?}", index.warnings());
    let config = config(&index, &node("shop", &[]));
    let tcp = port(&config, 5432).tcp_routes;
    assert_eq!(tcp.len(), 2);
    assert_eq!(tcp[0].destination_subnets, ["10.1.0.0/16"]);
    assert_eq!(names(&tcp[0].clusters), [(V2, 0)]);
    assert_eq!(tcp[1].name, "db.tcp.1");
    assert!(tcp[1].destination_subnets.is_empty());
    assert_eq!(names(&tcp[1].clusters), [(V1, 80), (V2, 20)]);
    // The referenced subset clusters reach the proxy.
    for name in [V1, V2] {
        assert!(config.clusters.iter().any(|c| c.name == name), "{name}");
    }
    // The TLS port gets the match-less rule only; HTTP ports none.
    assert_eq!(port(&config, 443).tcp_routes.len(), 1);
    assert!(port(&config, 80).tcp_routes.is_empty());
}

#[test]
fn tls_route_by_sni() {
    let index = db_mesh(
        "  tls:
  - match: [{port: 443, sniHosts: ['*.example.com', db.example.com]}]
    route: [{destination: {host: db, subset: v2}}]
  - match: [{sniHosts: [other.example.org], destinationSubnets: [10.0.0.0/8]}]
    route: [{destination: {host: db, subset: v2, port: {number: 443}}}]
",
    );
    assert!(index.warnings().is_empty(), "{:?}", index.warnings());
    let config = config(&index, &node("shop", &[]));
    let tls = port(&config, 443).tls_routes;
    assert_eq!(tls.len(), 2);
    assert_eq!(tls[0].sni_hosts, ["*.example.com", "db.example.com"]);
    assert_eq!(names(&tls[0].clusters), [(TLS_V2, 0)]);
    assert_eq!(tls[1].destination_subnets, ["10.0.0.0/8"]);
    // The port-less rule also applies to the TCP port, to an explicit port.
    let on_tcp = port(&config, 5432).tls_routes;
    assert_eq!(on_tcp.len(), 1);
    assert_eq!(names(&on_tcp[0].clusters), [(TLS_V2, 0)]);
}

#[test]
fn inexpressible_rules_are_skipped_with_a_warning() {
    let index = db_mesh(
        "  tcp:
  - match: [{sourceSubnet: 10.1.0.0/16}]
    route: [{destination: {host: db, subset: v1}}]
  - match: [{gateways: [edge]}]
    route: [{destination: {host: db, subset: v1}}]
  tls:
  - match: [{sniHosts: [a.example.com]}]
    route: [{destination: {host: nowhere}}]
",
    );
    let warnings = index.warnings().join("\n");
    assert!(
        warnings.contains("tcp[0] skipped: match[0] matches on the caller's subnet"),
        "{warnings}"
    );
    assert!(!warnings.contains("tcp[1]"), "{warnings}");
    // Missing sniHosts never get here: weft-api validation rejects them.
    assert!(
        !warnings.contains("not supported yet; opaque"),
        "{warnings}"
    );
    // A missing destination is added empty (and still passes validation).
    assert!(
        warnings.contains("outbound|443||nowhere.shop.svc.cluster.local"),
        "{warnings}"
    );
    let config = config(&index, &node("shop", &[]));
    assert!(port(&config, 5432).tcp_routes.is_empty());
    assert_eq!(port(&config, 443).tls_routes.len(), 1);
}

#[test]
fn source_matches_give_routes_to_the_named_callers_only() {
    let index = db_mesh(
        "  tcp:
  - match: [{sourceLabels: {app: web}}]
    route: [{destination: {host: db, subset: v2}}]
  - route: [{destination: {host: db, subset: v1}}]
  tls:
  - match: [{sniHosts: [a.example.com], sourceNamespace: web}]
    route: [{destination: {host: db, subset: v2}}]
",
    );
    assert!(index.warnings().is_empty(), "{:?}", index.warnings());
    let tcp_targets = |config: &pb::ProxyConfig| -> Vec<String> {
        port(config, 5432)
            .tcp_routes
            .iter()
            .map(|r| r.clusters[0].cluster.clone())
            .collect()
    };
    let web = config(&index, &node("web", &[("app", "web")]));
    assert_eq!(tcp_targets(&web), [V2, V1]);
    assert_eq!(port(&web, 443).tls_routes.len(), 1);
    let other = config(&index, &node("shop", &[("app", "batch")]));
    assert_eq!(tcp_targets(&other), [V1]);
    assert!(port(&other, 443).tls_routes.is_empty());
}
