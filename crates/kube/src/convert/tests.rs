use serde_json::json;

use super::*;

fn object<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> T {
    serde_json::from_value(value).expect("test object")
}

fn reviews_service() -> Service {
    object(json!({
        "metadata": {"name": "reviews", "namespace": "shop",
                     "annotations": {"networking.istio.io/exportTo": "., istio-system"}},
        "spec": {"clusterIP": "10.96.0.20", "clusterIPs": ["10.96.0.20"],
                 "selector": {"app": "reviews"},
                 "ports": [{"name": "http-web", "port": 9080, "targetPort": "web"},
                           {"name": "metrics", "port": 9090, "targetPort": 19090}]}
    }))
}

fn pod(name: &str, ip: &str, node: &str, labels: serde_json::Value) -> Pod {
    object(json!({
        "metadata": {"name": name, "namespace": "shop", "uid": format!("uid-{name}"),
                     "labels": labels},
        "spec": {"nodeName": node, "serviceAccountName": "bookinfo-reviews",
                 "containers": [{"name": "app"}]},
        "status": {"podIP": ip,
                   "conditions": [{"type": "Ready", "status": if name == "reviews-3" { "False" } else { "True" }}]}
    }))
}

fn node(name: &str, region: &str, zone: &str) -> Node {
    object(json!({"metadata": {"name": name, "labels": {
        "topology.kubernetes.io/region": region, "topology.kubernetes.io/zone": zone}}}))
}

/// `(address, pod, ready, serving, terminating)` endpoints in one slice.
fn slice(name: &str, endpoints: &[(&str, &str, bool, bool, bool)]) -> EndpointSlice {
    let endpoints: Vec<serde_json::Value> = endpoints
        .iter()
        .map(|(address, pod, ready, serving, terminating)| {
            json!({"addresses": [address],
                   "conditions": {"ready": ready, "serving": serving, "terminating": terminating},
                   "targetRef": {"kind": "Pod", "name": pod, "namespace": "shop"}})
        })
        .collect();
    object(json!({
        "metadata": {"name": name, "namespace": "shop",
                     "labels": {"kubernetes.io/service-name": "reviews"}},
        "addressType": "IPv4",
        "ports": [{"name": "http-web", "port": 9080}, {"name": "metrics", "port": 19090}],
        "endpoints": endpoints
    }))
}

fn cluster(slices: &[EndpointSlice]) -> ClusterSnapshot {
    snapshot(
        &[reviews_service()],
        slices,
        &[
            pod(
                "reviews-1",
                "10.1.0.1",
                "node-a",
                json!({"app": "reviews", "version": "v1"}),
            ),
            pod(
                "reviews-2",
                "10.1.0.2",
                "node-b",
                json!({"app": "reviews", "version": "v2",
                                                           "istio-locality": "eu.west.z9"}),
            ),
            pod(
                "reviews-3",
                "10.1.0.3",
                "node-a",
                json!({"app": "reviews", "version": "v3"}),
            ),
        ],
        &[
            node("node-a", "us", "us-east-1a"),
            node("node-b", "eu", "b"),
        ],
        "cluster.local",
    )
}

fn addresses(service: &KubeService) -> Vec<String> {
    service
        .endpoints
        .iter()
        .map(|e| e.address.to_string())
        .collect()
}

#[test]
fn port_protocol_is_chosen_as_istio_does() {
    /// (port, name, transport protocol, appProtocol, Istio's protocol).
    type Case<'a> = (
        u32,
        &'a str,
        Option<&'a str>,
        Option<&'a str>,
        Option<&'a str>,
    );
    let cases: &[Case] = &[
        (80, "http", None, None, Some("HTTP")),
        (80, "HTTP-web", None, None, Some("HTTP")),
        (80, "http2-x", None, None, Some("HTTP2")),
        (80, "grpc-web-ui", None, None, Some("GRPC-Web")),
        (80, "grpc", None, None, Some("GRPC")),
        (80, "tcp-db", None, None, Some("TCP")),
        (80, "https", None, None, Some("HTTPS")),
        (80, "tls-x", None, None, Some("TLS")),
        (80, "mongo", None, None, Some("Mongo")),
        (80, "http_proxy", None, None, Some("HTTP")),
        (80, "web", None, None, None),
        (80, "", None, None, None),
        // appProtocol replaces the name.
        (80, "tcp", None, Some("http"), Some("HTTP")),
        (80, "web", None, Some("kubernetes.io/h2c"), Some("HTTP2")),
        (80, "web", None, Some("kubernetes.io/ws"), Some("HTTP")),
        (80, "web", None, Some("kubernetes.io/wss"), Some("HTTPS")),
        (80, "http", None, Some("example.com/custom"), None),
        // UDP before anything else.
        (53, "http", Some("UDP"), None, Some("UDP")),
        // Server-first ports default to TCP when nothing names them.
        (3306, "db", None, None, Some("TCP")),
        (25, "", None, None, Some("TCP")),
        (3306, "http", None, None, Some("HTTP")),
    ];
    for (port, name, transport, app, want) in cases {
        assert_eq!(
            protocol_of(*port, name, *transport, *app),
            *want,
            "port {port} name {name:?} appProtocol {app:?}"
        );
    }
}

#[test]
fn services_become_hosts_with_their_cluster_ips_ports_and_export() {
    let service = service::convert(&reviews_service(), "example.org").expect("converted");
    assert_eq!(service.hostname, "reviews.shop.svc.example.org");
    assert_eq!(
        service.kind,
        ServiceKind::ClusterIp(vec!["10.96.0.20".parse().expect("ip")])
    );
    assert_eq!(service.export_to, vec![".", "istio-system"]);
    assert_eq!(
        service.selector,
        Some([("app".to_string(), "reviews".to_string())].into())
    );
    assert_eq!(service.ports[0].protocol, Some("HTTP"));
    assert_eq!(service.ports[0].target_port, None, "named: per endpoint");
    assert_eq!(service.ports[1].target_port, Some(19090));
    assert_eq!(service.ports[1].protocol, None, "'metrics' is detected");

    let headless: Service = object(json!({
        "metadata": {"name": "db", "namespace": "shop"},
        "spec": {"clusterIP": "None", "ports": [{"name": "tcp", "port": 5432}]}}));
    let headless = service::convert(&headless, "cluster.local").expect("converted");
    assert_eq!(headless.kind, ServiceKind::Headless);

    let external: Service = object(json!({
        "metadata": {"name": "ext", "namespace": "shop"},
        "spec": {"type": "ExternalName", "externalName": "api.example.com"}}));
    let external = service::convert(&external, "cluster.local").expect("converted");
    assert_eq!(
        external.kind,
        ServiceKind::ExternalName("api.example.com".into())
    );
}

#[test]
fn only_ready_endpoints_get_traffic_with_pod_facts_and_named_ports() {
    let snapshot = cluster(&[slice(
        "reviews-a",
        &[
            ("10.1.0.1", "reviews-1", true, true, false),
            ("10.1.0.2", "reviews-2", true, true, false),
            // Terminating but still serving: not while others are ready.
            ("10.1.0.3", "reviews-3", false, true, true),
            // Not ready, not terminating (starting up): never.
            ("10.1.0.9", "reviews-9", false, false, false),
        ],
    )]);
    let service = &snapshot.services[0];
    assert_eq!(addresses(service), vec!["10.1.0.1", "10.1.0.2"]);
    let first = &service.endpoints[0];
    assert_eq!(first.ports.get("http-web"), Some(&9080));
    assert_eq!(first.ports.get("metrics"), Some(&19090));
    assert_eq!(first.pod, "reviews-1");
    assert_eq!(first.service_account, "bookinfo-reviews");
    assert_eq!(first.labels.get("version").map(String::as_str), Some("v1"));
    assert_eq!(first.locality, "us/us-east-1a", "from the node's labels");
    assert_eq!(
        first
            .labels
            .get("kubernetes.io/hostname")
            .map(String::as_str),
        Some("node-a")
    );
    assert!(!first.draining);
    // The pod label wins over the node, dots become slashes.
    assert_eq!(service.endpoints[1].locality, "eu/west/z9");
    assert_eq!(
        service.endpoints[1]
            .labels
            .get("topology.kubernetes.io/zone")
            .map(String::as_str),
        Some("west")
    );
}

#[test]
fn serving_terminating_endpoints_are_used_only_when_none_is_ready() {
    let snapshot = cluster(&[slice(
        "reviews-a",
        &[
            ("10.1.0.1", "reviews-1", false, true, true),
            ("10.1.0.2", "reviews-2", false, false, true),
        ],
    )]);
    let service = &snapshot.services[0];
    assert_eq!(addresses(service), vec!["10.1.0.1"], "serving, terminating");
    assert!(service.endpoints[0].draining);
}

#[test]
fn fqdn_slices_are_skipped_and_an_address_in_two_slices_counts_once() {
    let mut fqdn = slice("reviews-f", &[("10.1.0.3", "reviews-3", true, true, false)]);
    fqdn.address_type = "FQDN".into();
    let snapshot = cluster(&[
        slice("reviews-a", &[("10.1.0.1", "reviews-1", true, true, false)]),
        slice("reviews-b", &[("10.1.0.1", "reviews-1", true, true, false)]),
        fqdn,
    ]);
    assert_eq!(addresses(&snapshot.services[0]), vec!["10.1.0.1"]);
}

#[test]
fn the_same_cluster_state_in_another_order_is_the_same_snapshot() {
    let a = slice("reviews-a", &[("10.1.0.1", "reviews-1", true, true, false)]);
    let b = slice("reviews-b", &[("10.1.0.2", "reviews-2", true, true, false)]);
    assert_eq!(
        cluster(&[a.clone(), b.clone()]),
        cluster(&[b, a]),
        "a relist in another order changes nothing"
    );
}

#[test]
fn pods_without_an_address_are_not_workloads_yet() {
    let pending: Pod = object(json!({
        "metadata": {"name": "p", "namespace": "shop"}, "spec": {"containers": []}}));
    let none: [Service; 0] = [];
    let snapshot = snapshot(
        &none,
        &[] as &[EndpointSlice],
        &[pending],
        &[] as &[Node],
        "cluster.local",
    );
    assert!(snapshot.pods.is_empty());
    let snapshot = cluster(&[]);
    let found = snapshot.pod("shop", "reviews-2").expect("pod");
    assert_eq!(found.uid, "uid-reviews-2");
    assert_eq!(found.address.to_string(), "10.1.0.2");
    assert!(found.ready);
    assert!(!snapshot.pod("shop", "reviews-3").expect("pod").ready);
    assert!(snapshot.pod("shop", "nope").is_none());
}
