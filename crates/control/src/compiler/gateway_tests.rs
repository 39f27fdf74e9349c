//! Gateway proxies: which Gateways select them, which hosts each server
//! admits, and which VirtualServices bind to them.

use super::tests::{compile, mesh, node};

const SERVICES: &str = "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: shop, namespace: web}
spec:
  hosts: [shop.web.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http}]
  endpoints: [{address: 10.0.0.1}]
---
";

fn router(labels: &[(&str, &str)]) -> weft_proto::discovery::v1::Node {
    let mut node = node("istio-system", labels);
    node.router = true;
    node
}

#[test]
fn server_hosts_narrow_virtual_service_hosts_and_namespaces() {
    let yaml = format!(
        "{SERVICES}apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: edge, namespace: istio-system}}
spec:
  selector: {{app: edge}}
  servers:
  - port: {{number: 8080, name: http, protocol: HTTP}}
    hosts: ['web/*.example.com', 'other/*']
  - port: {{number: 8443, name: https, protocol: HTTPS}}
    hosts: ['*']
    tls: {{mode: SIMPLE, credentialName: cert}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: any, namespace: web}}
spec:
  hosts: ['*']
  gateways: [istio-system/edge]
  http: [{{route: [{{destination: {{host: shop}}}}]}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: foreign, namespace: web2}}
spec:
  hosts: ['a.example.com']
  gateways: [istio-system/edge]
  http: [{{route: [{{destination: {{host: shop.web.svc.cluster.local}}}}]}}]
"
    );
    let index = mesh(&yaml, &[]);
    let out = compile(&index, &router(&[("app", "edge")]));
    let config = &out.config;
    // `*` in namespace web is narrowed to the server's `*.example.com`;
    // the VirtualService in web2 is admitted by no server host.
    let hosts: Vec<&str> = config.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(hosts, ["*.example.com"]);
    // The HTTPS server's credential does not exist: it is left out with a
    // reason for this proxy; the HTTP one listens.
    let listeners: Vec<&str> = config
        .listeners
        .iter()
        .map(|l| l.address.as_str())
        .collect();
    assert_eq!(listeners, ["0.0.0.0:8080"]);
    assert!(
        out.warnings
            .iter()
            .any(|w| w.contains("servers[1]") && w.contains("credentialName")),
        "{:?}",
        out.warnings
    );
    assert_eq!(
        config.clusters[0].name,
        "outbound|80||shop.web.svc.cluster.local"
    );

    // Another gateway's proxy, and sidecars, see none of it.
    assert!(
        compile(&index, &router(&[("app", "other")]))
            .config
            .listeners
            .is_empty()
    );
    let sidecar = compile(&index, &node("web", &[]));
    assert!(
        sidecar
            .config
            .services
            .iter()
            .all(|s| !s.name.contains('*'))
    );
}

#[test]
fn match_blocks_apply_to_the_gateways_they_name() {
    let yaml = format!(
        "{SERVICES}apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: edge, namespace: web}}
spec:
  servers: [{{port: {{number: 80, name: http, protocol: HTTP}}, hosts: ['*']}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: both, namespace: web}}
spec:
  hosts: [shop]
  gateways: [edge, mesh]
  http:
  - match: [{{uri: {{prefix: /edge-only}}, gateways: [edge]}}]
    route: [{{destination: {{host: shop}}}}]
  - match: [{{uri: {{prefix: /mesh-only}}, gateways: [mesh]}}]
    route: [{{destination: {{host: shop}}}}]
"
    );
    let index = mesh(&yaml, &[]);
    let paths = |config: &weft_proto::proxy::v1::ProxyConfig, host: &str| -> Vec<String> {
        let service = config
            .services
            .iter()
            .find(|s| s.name == host)
            .expect("host");
        service.ports[0]
            .routes
            .iter()
            .filter_map(|r| r.r#match.as_ref()?.path.as_ref().map(|p| format!("{p:?}")))
            .collect()
    };
    // An empty selector selects every gateway proxy.
    let gateway = compile(&index, &router(&[])).config;
    let at_gateway = paths(&gateway, "shop.web.svc.cluster.local");
    assert!(
        at_gateway.len() == 1 && at_gateway[0].contains("/edge-only"),
        "{at_gateway:?}"
    );
    let sidecar = compile(&index, &node("web", &[])).config;
    let at_sidecar = paths(&sidecar, "shop.web.svc.cluster.local");
    assert!(
        at_sidecar.len() == 1 && at_sidecar[0].contains("/mesh-only"),
        "{at_sidecar:?}"
    );
}
