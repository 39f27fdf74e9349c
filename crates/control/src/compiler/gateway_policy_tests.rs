//! Policy for gateway proxies: which AuthorizationPolicies and
//! RequestAuthentications a gateway gets, its trusted proxy hops, and
//! `@request.auth.claims.*` route matches.

use weft_proto::proxy::v1::{self as pb, ProxyConfig};

use super::tests::{compile, mesh, node};

const MESH: &str = "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: shop, namespace: web}
spec:
  hosts: [shop.web.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http}]
  endpoints: [{address: 10.0.0.1}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: edge, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ['*']}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: shop, namespace: web}
spec:
  hosts: ['*']
  gateways: [istio-system/edge]
  http:
  - match: [{headers: {'@request.auth.claims.org.tier': {exact: gold}}}]
    route: [{destination: {host: shop.web.svc.cluster.local}}]
  - match: [{headers: {'@request.auth.claims[groups]': {exact: beta}}}]
    route: [{destination: {host: shop.web.svc.cluster.local}}]
  - route: [{destination: {host: shop.web.svc.cluster.local}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: shop-mesh, namespace: web}
spec:
  hosts: [shop.web.svc.cluster.local]
  http:
  - match: [{headers: {'@request.auth.claims.groups': {exact: beta}}}]
    route: [{destination: {host: shop.web.svc.cluster.local}}]
  - route: [{destination: {host: shop.web.svc.cluster.local}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: gateway-only, namespace: istio-system}
spec:
  selector: {matchLabels: {istio: ingressgateway}}
  rules: [{to: [{operation: {paths: [/ok]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: mesh-wide, namespace: istio-system}
spec:
  action: DENY
  rules: [{to: [{operation: {paths: [/never]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: other-namespace, namespace: web}
spec:
  rules: [{to: [{operation: {paths: [/web]}}]}]
---
";

fn gateway(labels: &[(&str, &str)], trusted: u32) -> ProxyConfig {
    let mut node = node("istio-system", labels);
    node.router = true;
    node.num_trusted_proxies = trusted;
    compile(&mesh(MESH, &[]), &node).config
}

fn policy_names(config: &ProxyConfig) -> Vec<&str> {
    config
        .gateway_security
        .iter()
        .flat_map(|s| &s.policies)
        .map(|p| p.name.as_str())
        .collect()
}

#[test]
fn a_gateway_gets_the_policies_that_select_it_and_its_trusted_hops() {
    let selected = gateway(&[("istio", "ingressgateway")], 2);
    // Its selector's policy and the root namespace's mesh-wide one; not a
    // policy of another namespace.
    assert_eq!(
        policy_names(&selected),
        ["istio-system/gateway-only", "istio-system/mesh-wide"]
    );
    assert_eq!(selected.num_trusted_proxies, 2);
    let other = gateway(&[("istio", "other")], 0);
    assert_eq!(policy_names(&other), ["istio-system/mesh-wide"]);
}

#[test]
fn claim_matches_compile_to_claim_paths_on_gateways_and_warn_on_sidecars() {
    let config = gateway(&[("istio", "ingressgateway")], 0);
    let service = config
        .services
        .iter()
        .find(|s| s.name == "*")
        .expect("virtual host");
    let claims: Vec<Vec<String>> = service.ports[0]
        .routes
        .iter()
        .filter_map(|r| r.r#match.as_ref())
        .flat_map(|m| m.headers.iter().map(|h: &pb::HeaderMatch| h.claim.clone()))
        .collect();
    // Both spellings of a claim path work.
    assert_eq!(claims, [vec!["org", "tier"], vec!["groups"]]);

    let index = mesh(MESH, &[]);
    let warned: Vec<&String> = index
        .warnings()
        .iter()
        .filter(|w| w.contains("gateways only"))
        .collect();
    assert_eq!(warned.len(), 1, "{:?}", index.warnings());
    assert!(warned[0].contains("shop-mesh"), "{warned:?}");
}

#[test]
fn a_malformed_claim_name_is_refused_by_name() {
    let yaml = MESH.replace(
        "'@request.auth.claims[groups]'",
        "'@request.auth.claims[groups'",
    );
    let index = mesh(&yaml, &[]);
    assert!(
        index
            .warnings()
            .iter()
            .any(|w| w.contains("@request.auth.claims[groups") && w.contains("invalid header name")),
        "{:?}",
        index.warnings()
    );
}
