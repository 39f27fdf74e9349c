//! RateLimit resources → the proxies they select: rules, the rate-limit
//! service's cluster added outside the Sidecar scope, conflicts and
//! unknown services warned about.

use weft_proto::proxy::v1::ProxyConfig;

use super::tests::{compile, mesh, node};

const MESH: &str = "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ratelimit, namespace: infra}
spec:
  hosts: [ratelimit.infra.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 8081, name: grpc, protocol: GRPC}]
  endpoints: [{address: 10.0.9.1}]
---
apiVersion: networking.istio.io/v1
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
kind: Sidecar
metadata: {name: default, namespace: web}
spec:
  egress: [{hosts: ['./*']}]
---
apiVersion: weft.io/v1alpha1
kind: RateLimit
metadata: {name: shop-limit, namespace: web}
spec:
  selector: {matchLabels: {app: shop}}
  service: {host: ratelimit.infra.svc.cluster.local, port: 8081, domain: web, timeout: 50ms}
  limits:
  - match: {paths: [{prefix: /api}, {exact: /login}], methods: [POST]}
    local: {maxTokens: 5, fillInterval: 1s}
  - descriptors:
    - entries: [{genericKey: {value: shop}}, {requestHeader: {header: x-user, key: user}}]
---
apiVersion: weft.io/v1alpha1
kind: RateLimit
metadata: {name: zz-other-service, namespace: web}
spec:
  selector: {matchLabels: {app: shop}}
  service: {host: another-rls, port: 8081, domain: web}
  limits:
  - local: {maxTokens: 1, fillInterval: 1m}
    descriptors: [{entries: [{sourceAddress: {}}]}]
---
apiVersion: weft.io/v1alpha1
kind: RateLimit
metadata: {name: edge, namespace: istio-system}
spec:
  selector: {matchLabels: {istio: ingressgateway}}
  service: {host: nowhere.infra.svc.cluster.local, port: 8081, domain: edge}
  limits:
  - match: {routes: [checkout]}
    local: {maxTokens: 100, tokensPerFill: 10, fillInterval: 1s}
    descriptors: [{entries: [{sourceAddress: {}}]}]
---
";

fn sidecar(labels: &[(&str, &str)]) -> (ProxyConfig, Vec<String>) {
    let out = compile(&mesh(MESH, &[]), &node("web", labels));
    (out.config, out.warnings)
}

#[test]
fn a_selected_sidecar_gets_its_limits_and_the_service_cluster_outside_its_scope() {
    let (config, warnings) = sidecar(&[("app", "shop")]);
    let limits = config.rate_limits.as_ref().expect("rate limits");
    let names: Vec<&str> = limits.rules.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "web/shop-limit[0]",
            "web/shop-limit[1]",
            "web/zz-other-service[0]"
        ]
    );
    let first = &limits.rules[0];
    let matched = first.r#match.as_ref().expect("match");
    assert_eq!(matched.path_prefixes, ["/api"]);
    assert_eq!(matched.paths, ["/login"]);
    let local = first.local.as_ref().expect("local");
    assert_eq!((local.max_tokens, local.tokens_per_fill), (5, 1));
    let service = limits.service.as_ref().expect("service");
    let cluster = "outbound|8081||ratelimit.infra.svc.cluster.local";
    assert_eq!(service.cluster, cluster);
    assert_eq!(service.domain, "web");
    assert_eq!(service.timeout.as_ref().map(|t| t.nanos), Some(50_000_000));
    // The Sidecar limits egress to the namespace, yet the proxy can dial
    // the rate-limit service.
    assert!(!config.services.iter().any(|s| s.name.contains("ratelimit")));
    assert!(
        config.clusters.iter().any(|c| c.name == cluster),
        "{:?}",
        config.clusters
    );
    // The second resource names another service: its descriptors are
    // left out (its bucket stays), and the proxy is told why.
    assert!(limits.rules[2].descriptors.is_empty());
    assert!(limits.rules[2].local.is_some());
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("RateLimit web/zz-other-service")),
        "{warnings:?}"
    );
}

#[test]
fn an_unselected_sidecar_gets_nothing() {
    let (config, _) = sidecar(&[("app", "cart")]);
    assert!(config.rate_limits.is_none());
    assert!(!config.clusters.iter().any(|c| c.name.contains("ratelimit")));
}

#[test]
fn a_gateway_gets_route_scoped_limits_and_an_unknown_service_drops_descriptors() {
    let mut gateway = node("istio-system", &[("istio", "ingressgateway")]);
    gateway.router = true;
    let out = compile(&mesh(MESH, &[]), &gateway);
    let limits = out.config.rate_limits.as_ref().expect("rate limits");
    assert_eq!(limits.rules.len(), 1);
    let rule = &limits.rules[0];
    assert_eq!(
        rule.r#match.as_ref().map(|m| m.routes.clone()),
        Some(vec!["checkout".to_string()])
    );
    assert!(rule.descriptors.is_empty());
    assert!(limits.service.is_none());
    assert!(
        out.warnings
            .iter()
            .any(|w| w.contains("nowhere.infra.svc.cluster.local")),
        "{:?}",
        out.warnings
    );
}
