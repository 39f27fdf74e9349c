//! Gateway servers beyond plaintext HTTP: how each kind reaches the gateway
//! proxy's config, and the warnings for what cannot be served.

use weft_proto::proxy::v1 as pb;

use super::tests::{compile, mesh, node};

const SERVICES: &str = "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: shop, namespace: web}
spec:
  hosts: [shop.web.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 443, name: tls, protocol: TLS}]
  endpoints: [{address: 10.0.0.1}]
---
";

fn router() -> weft_proto::discovery::v1::Node {
    let mut node = node("istio-system", &[("istio", "ingressgateway")]);
    node.router = true;
    node
}

fn gateway(servers: &str) -> String {
    format!(
        "{SERVICES}apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: edge, namespace: istio-system}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
{servers}---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: shop, namespace: web}}
spec:
  hosts: ['*.example.com']
  gateways: [istio-system/edge]
  http: [{{route: [{{destination: {{host: shop.web.svc.cluster.local}}}}]}}]
  tls:
  - match: [{{sniHosts: [a.example.com]}}]
    route: [{{destination: {{host: shop.web.svc.cluster.local}}}}]
"
    )
}

#[test]
fn https_servers_carry_their_tls_settings_to_the_listener() {
    let index = mesh(
        &gateway(
            "  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: ['web/*.example.com']
    tls:
      mode: MUTUAL
      serverCertificate: /etc/certs/tls.crt
      privateKey: /etc/certs/tls.key
      caCertificates: /etc/certs/ca.crt
      subjectAltNames: [client.example.com]
      minProtocolVersion: TLSV1_3
      cipherSuites: [ECDHE-RSA-AES128-GCM-SHA256]
",
        ),
        &[],
    );
    let out = compile(&index, &router());
    assert!(index.warnings().is_empty(), "{:?}", index.warnings());
    let [listener] = out.config.listeners.as_slice() else {
        panic!("{:?}", out.config.listeners);
    };
    assert_eq!(listener.gateway_mode(), pb::GatewayMode::GatewayHttps);
    let [server] = listener.tls_servers.as_slice() else {
        panic!("{:?}", listener.tls_servers);
    };
    assert_eq!(server.sni_hosts, ["*.example.com"]);
    assert_eq!(server.mode(), pb::server_tls::Mode::Mutual);
    assert_eq!(server.certificate_file, "/etc/certs/tls.crt");
    assert_eq!(server.ca_certificates_file, "/etc/certs/ca.crt");
    assert_eq!(server.subject_alt_names, ["client.example.com"]);
    assert_eq!(
        (server.min_version.as_str(), server.max_version.as_str()),
        ("TLSv1_3", "")
    );
    assert_eq!(
        server.cipher_suites,
        ["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"]
    );
    // HTTP routes by host, as on a plaintext port.
    assert!(
        out.config
            .services
            .iter()
            .any(|s| s.name == "*.example.com")
    );
}

#[test]
fn passthrough_and_redirect_servers_get_their_routes() {
    let index = mesh(
        &gateway(
            "  - port: {number: 443, name: tls, protocol: TLS}
    hosts: ['*.example.com']
    tls: {mode: PASSTHROUGH}
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ['*.example.com']
    tls: {httpsRedirect: true}
",
        ),
        &[],
    );
    let out = compile(&index, &router());
    let passthrough = out
        .config
        .listeners
        .iter()
        .find(|l| l.address.ends_with(":443"))
        .expect("443 listens");
    assert_eq!(
        passthrough.gateway_mode(),
        pb::GatewayMode::GatewayTlsPassthrough
    );
    let l4 = out
        .config
        .services
        .iter()
        .find(|s| s.name == passthrough.service)
        .expect("the listener's routes");
    assert_eq!(l4.ports[0].tls_routes[0].sni_hosts, ["a.example.com"]);
    assert_eq!(
        l4.ports[0].tls_routes[0].clusters[0].cluster,
        "outbound|443||shop.web.svc.cluster.local"
    );
    let redirect = out
        .config
        .services
        .iter()
        .find(|s| s.name == "*.example.com")
        .and_then(|s| s.ports.iter().find(|p| p.port == 80))
        .expect("port 80 host");
    let route = &redirect.routes[0];
    assert_eq!(redirect.routes.len(), 1);
    let to = route.redirect.as_ref().expect("a redirect");
    assert_eq!((to.scheme.as_str(), to.code), ("https", 301));
}

#[test]
fn servers_that_cannot_be_served_are_warnings_naming_them() {
    let index = mesh(
        &gateway(
            "  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: [a.example.com]
    tls: {mode: SIMPLE, serverCertificate: /c, privateKey: /k}
  - port: {number: 443, name: tls, protocol: TLS}
    hosts: [b.example.com]
    tls: {mode: PASSTHROUGH}
  - port: {number: 27017, name: mongo, protocol: MONGO}
    hosts: ['*']
  - port: {number: 8443, name: mesh, protocol: HTTPS}
    hosts: ['*']
    tls: {mode: AUTO_PASSTHROUGH}
  - port: {number: 9443, name: mutual, protocol: HTTPS}
    hosts: ['*']
    tls: {mode: MUTUAL, serverCertificate: /c, privateKey: /k}
  - port: {number: 10443, name: cred, protocol: HTTPS}
    hosts: ['*']
    tls: {mode: SIMPLE, credentialName: missing}
",
        ),
        &[],
    );
    let warnings = index.warnings().join("\n");
    for expected in [
        "servers[1]: port 443 already carries HTTPS",
        "servers[2]: protocol \"MONGO\" is not supported",
        "servers[3]: tls.mode AUTO_PASSTHROUGH needs protocol TLS",
        "servers[4]: MUTUAL and OPTIONAL_MUTUAL need tls.caCertificates",
    ] {
        assert!(warnings.contains(expected), "{expected:?} in\n{warnings}");
    }
    // A credential is looked up per gateway proxy: the warning is its own.
    let out = compile(&index, &router());
    let proxy_warnings = out.warnings.join("\n");
    assert!(
        proxy_warnings.contains("servers[5]: credentialName \"missing\""),
        "{proxy_warnings}"
    );
    let ports: Vec<&str> = out
        .config
        .listeners
        .iter()
        .map(|l| l.address.as_str())
        .collect();
    assert_eq!(ports, ["0.0.0.0:443"], "only the servable port listens");
}

#[test]
fn istio_mutual_servers_end_mesh_tls_with_the_workload_certificate() {
    let index = mesh(
        &gateway(
            "  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ['*.example.com']
    tls: {mode: ISTIO_MUTUAL}
  - port: {number: 443, name: tls, protocol: TLS}
    hosts: [a.example.com]
    tls: {mode: ISTIO_MUTUAL}
",
        ),
        &[],
    );
    assert!(index.warnings().is_empty(), "{:?}", index.warnings());
    let mut with_certificate = router();
    with_certificate.mtls = true;
    let out = compile(&index, &with_certificate);
    let listener = |port: &str| {
        out.config
            .listeners
            .iter()
            .find(|l| l.address.ends_with(port))
            .unwrap_or_else(|| panic!("{port} listens: {:?}", out.config.listeners))
    };
    // Port 80: mesh mTLS, then HTTP by host.
    let http = listener(":80");
    assert_eq!(http.gateway_mode(), pb::GatewayMode::GatewayHttps);
    assert_eq!(
        http.tls_servers[0].mode(),
        pb::server_tls::Mode::IstioMutual
    );
    assert_eq!(http.tls_servers[0].sni_hosts, ["*.example.com"]);
    assert!(http.tls_servers[0].certificate_file.is_empty());
    // Port 443: mesh mTLS, then the bytes by the handshake's SNI.
    let tls = listener(":443");
    assert_eq!(tls.gateway_mode(), pb::GatewayMode::GatewayTlsTerminate);
    let l4 = out
        .config
        .services
        .iter()
        .find(|s| s.name == tls.service)
        .expect("the listener's routes");
    assert_eq!(l4.ports[0].tls_routes[0].sni_hosts, ["a.example.com"]);

    // A gateway proxy without a workload certificate cannot serve them,
    // and says so.
    let out = compile(&index, &router());
    assert!(
        out.config.listeners.is_empty(),
        "{:?}",
        out.config.listeners
    );
    let warnings = out.warnings.join("\n");
    assert!(
        warnings.contains(
            "servers[0]: tls.mode ISTIO_MUTUAL needs the gateway proxy's workload certificate"
        ),
        "{warnings}"
    );
}

#[test]
fn auto_passthrough_routes_each_admitted_cluster_by_its_sni() {
    let index = mesh(
        &format!(
            "{SERVICES}apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: eastwest, namespace: istio-system}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 15443, name: tls, protocol: TLS}}
    hosts: ['*.local']
    tls: {{mode: AUTO_PASSTHROUGH}}
"
        ),
        &[],
    );
    assert!(index.warnings().is_empty(), "{:?}", index.warnings());
    let out = compile(&index, &router());
    let [listener] = out.config.listeners.as_slice() else {
        panic!("{:?}", out.config.listeners);
    };
    assert_eq!(
        listener.gateway_mode(),
        pb::GatewayMode::GatewayTlsPassthrough
    );
    let l4 = out
        .config
        .services
        .iter()
        .find(|s| s.name == listener.service)
        .expect("the listener's routes");
    let route = &l4.ports[0].tls_routes[0];
    assert_eq!(
        route.sni_hosts,
        ["outbound_.443_._.shop.web.svc.cluster.local"]
    );
    let cluster = &route.clusters[0].cluster;
    assert_eq!(cluster, "auto-passthrough|443||shop.web.svc.cluster.local");
    // The gateway forwards the caller's mTLS as it is: no TLS of its own.
    let held = out
        .config
        .clusters
        .iter()
        .find(|c| &c.name == cluster)
        .expect("the cluster is pushed");
    assert_eq!(
        held.tls.as_ref().map(|t| t.mode()),
        Some(pb::client_tls::Mode::Disable)
    );
    assert_eq!(held.endpoints[0].address, "10.0.0.1:443");
}
