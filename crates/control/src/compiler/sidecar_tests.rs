//! Sidecar egress listeners scoped by port, and ingress listeners: what a
//! proxy sees and where its inbound ports forward (with which limits), as
//! Istio builds them.

use super::tests::{config, mesh, node};

const SERVICES: &str = "
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: a, namespace: app}
spec:
  hosts: [a.app.svc.cluster.local]
  ports:
  - {number: 80, name: http, protocol: HTTP}
  - {number: 8080, name: admin, protocol: HTTP}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: b, namespace: lib}
spec:
  hosts: [b.lib.svc.cluster.local]
  ports:
  - {number: 80, name: http, protocol: HTTP}
  - {number: 8080, name: web, protocol: HTTP}
  - {number: 5432, name: db, protocol: TCP}
";

fn ports(config: &weft_proto::proxy::v1::ProxyConfig, name: &str) -> Vec<u32> {
    config
        .services
        .iter()
        .find(|s| s.name == name)
        .map(|s| s.ports.iter().map(|p| p.port).collect())
        .unwrap_or_default()
}

/// The config of a proxy in `app` whose namespace's default Sidecar has
/// `egress` (YAML list items) over [`SERVICES`].
fn app_config_with_egress(egress: &str) -> weft_proto::proxy::v1::ProxyConfig {
    let yaml = format!(
        "{SERVICES}---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{name: default, namespace: app}}
spec:
  egress:
{egress}"
    );
    config(&mesh(&yaml, &[]), &node("app", &[]))
}

#[test]
fn a_port_scoped_egress_host_is_visible_on_that_port_only() {
    let config = app_config_with_egress(
        "  - port: {number: 8080, protocol: HTTP, name: web}
    hosts: [lib/*]
  - hosts: [./*]
",
    );
    // lib's service only on the listener's port, not widened to 80 or 5432.
    assert_eq!(ports(&config, "b.lib.svc.cluster.local"), [8080]);
    // The catch-all listener's hosts on every port but the scoped one,
    // which belongs to the port-scoped listener alone.
    assert_eq!(ports(&config, "a.app.svc.cluster.local"), [80]);
    // Clusters follow: nothing for b's unlisted ports.
    assert!(
        !config
            .clusters
            .iter()
            .any(|c| c.name == "outbound|5432||b.lib.svc.cluster.local")
    );
}

#[test]
fn a_port_scoped_listener_alone_hides_services_without_that_port() {
    let config = app_config_with_egress(
        "  - port: {number: 5432, protocol: TCP, name: db}
    hosts: ['*/*']
",
    );
    let names: Vec<&str> = config.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["b.lib.svc.cluster.local"]);
    assert_eq!(ports(&config, "b.lib.svc.cluster.local"), [5432]);
}

#[test]
fn ingress_listeners_replace_the_inbound_ports_and_forward_to_the_default_endpoint() {
    let yaml = format!(
        "{SERVICES}---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{name: ratings, namespace: app}}
spec:
  workloadSelector: {{labels: {{app: ratings}}}}
  ingress:
  - port: {{number: 9080, protocol: HTTP, name: http}}
    defaultEndpoint: 127.0.0.1:8080
  - port: {{number: 9443, protocol: TCP, name: tcp}}
    defaultEndpoint: 0.0.0.0:9000
  - port: {{number: 9500, protocol: TCP, name: uds}}
    defaultEndpoint: unix:///var/run/app.sock
"
    );
    let index = mesh(&yaml, &[]);
    let mut ratings = node("app", &[("app", "ratings")]);
    ratings.ports = vec![weft_proto::discovery::v1::WorkloadPort {
        port: 8080,
        protocol: 0,
        name: "http".into(),
    }];
    let out = super::tests::compile(&index, &ratings);
    let inbound: Vec<(u32, &str)> = out
        .config
        .inbound_ports
        .iter()
        .map(|p| (p.port, p.target.as_str()))
        .collect();
    // The node's own port 8080 is not listed: Istio listens on the
    // Sidecar's ingress ports only. 0.0.0.0 (the workload's address) is
    // reached over loopback: replicas share one config.
    assert_eq!(
        inbound,
        [(9080, "127.0.0.1:8080"), (9443, "127.0.0.1:9000")]
    );
    assert!(
        out.warnings
            .iter()
            .any(|w| w.contains("9500") && w.contains("unix")),
        "{:?}",
        out.warnings
    );
}

#[test]
fn an_egress_listener_with_bind_gets_its_own_listener_routing_by_host() {
    let config = app_config_with_egress(
        "  - port: {number: 8080, protocol: HTTP, name: web}
    bind: 127.0.0.5
    hosts: [lib/*]
",
    );
    let bound: Vec<(&str, u32, &str)> = config
        .listeners
        .iter()
        .map(|l| (l.address.as_str(), l.service_port, l.service.as_str()))
        .collect();
    assert_eq!(bound, [("127.0.0.5:8080", 8080, "")]);
    assert_eq!(
        config.listeners[0].kind,
        weft_proto::proxy::v1::ListenerKind::Explicit as i32
    );
    assert_eq!(ports(&config, "b.lib.svc.cluster.local"), [8080]);
}

#[test]
fn inbound_connection_pool_limits_every_inbound_port_unless_the_listener_has_its_own() {
    let yaml = format!(
        "{SERVICES}---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{name: ratings, namespace: app}}
spec:
  workloadSelector: {{labels: {{app: ratings}}}}
  inboundConnectionPool: {{tcp: {{maxConnections: 7}}, http: {{http2MaxRequests: 9}}}}
  ingress:
  - port: {{number: 9080, protocol: HTTP, name: http}}
    defaultEndpoint: 127.0.0.1:8080
  - port: {{number: 9090, protocol: HTTP, name: admin}}
    defaultEndpoint: 127.0.0.1:8081
    connectionPool: {{http: {{http1MaxPendingRequests: 2}}}}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{name: default, namespace: app}}
spec:
  inboundConnectionPool: {{tcp: {{maxConnections: 3}}}}
"
    );
    let index = mesh(&yaml, &[]);
    let pools = |labels: &[(&str, &str)]| {
        let mut workload = node("app", labels);
        workload.ports = vec![weft_proto::discovery::v1::WorkloadPort {
            port: 8080,
            protocol: 0,
            name: "http".into(),
        }];
        super::tests::compile(&index, &workload)
            .config
            .inbound_ports
            .iter()
            .map(|p| {
                let pool = p.connection_pool.unwrap_or_default();
                (
                    p.port,
                    pool.max_connections,
                    pool.max_requests,
                    pool.max_pending_requests,
                )
            })
            .collect::<Vec<_>>()
    };
    // The listener's own block replaces inboundConnectionPool whole.
    assert_eq!(
        pools(&[("app", "ratings")]),
        [(9080, 7, 9, 0), (9090, 0, 0, 2)]
    );
    // Without ingress listeners: the workload's own ports.
    assert_eq!(pools(&[]), [(8080, 3, 0, 0)]);
}

#[test]
fn egress_proxy_takes_unknown_traffic_when_its_cluster_is_visible_under_allow_any() {
    let compile = |policy: &str| {
        let yaml = format!(
            "{SERVICES}---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{name: default, namespace: app}}
spec:
  egress:
  - hosts: [./*]
  outboundTrafficPolicy: {policy}
"
        );
        let out = super::tests::compile(&mesh(&yaml, &[]), &node("app", &[]));
        (out.config.egress_proxy_cluster, out.warnings)
    };
    let (cluster, _) = compile(
        "{mode: ALLOW_ANY, egressProxy: {host: a.app.svc.cluster.local, port: {number: 8080}}}",
    );
    assert_eq!(cluster, "outbound|8080||a.app.svc.cluster.local");
    // lib's service is outside the Sidecar's egress hosts: no cluster.
    let (cluster, warnings) = compile(
        "{mode: ALLOW_ANY, egressProxy: {host: b.lib.svc.cluster.local, port: {number: 80}}}",
    );
    assert_eq!(cluster, "");
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("outbound|80||b.lib.svc.cluster.local")),
        "{warnings:?}"
    );
    // No egressProxy: passthrough.
    assert_eq!(compile("{mode: ALLOW_ANY}").0, "");
}
