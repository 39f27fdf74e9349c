use std::net::{IpAddr, Ipv4Addr};

use weft_proto::discovery::v1::{Node, WorkloadPort};

use super::{AUTO_VIP_RANGE, PortProtocol, Registry, Resolution, Workload, auto_vip};

fn registry(yaml: &str, workloads: &[Workload]) -> Registry {
    let decoded = weft_api::decode_str(yaml, "test.yaml");
    assert!(decoded.problems.is_empty(), "{:?}", decoded.problems);
    Registry::build(&decoded.resources, workloads)
}

fn entry(name: &str, host: &str, extra: &str) -> String {
    format!(
        "---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {name}, namespace: ns}}
spec:
  hosts: [{host}]
  ports: [{{number: 80, name: http, protocol: http}}]
{extra}"
    )
}

fn in_auto_range(ip: IpAddr) -> bool {
    let (base, _) = AUTO_VIP_RANGE;
    matches!(ip, IpAddr::V4(v4) if v4.octets()[..2] == base.octets()[..2])
}

#[test]
fn auto_vip_is_stable_and_in_range() {
    let yaml = entry("a", "a.example.com", "") + &entry("b", "b.example.com", "");
    let first = registry(&yaml, &[]);
    let vip_a = first.services()[0].vips[0];
    assert!(in_auto_range(vip_a));
    assert_eq!(vip_a, IpAddr::V4(auto_vip("a.example.com")));
    // Same VIP on rebuild, and unaffected by other services coming or going.
    let alone = registry(&entry("a", "a.example.com", ""), &[]);
    assert_eq!(alone.services()[0].vips, [vip_a]);
    assert_ne!(first.services()[1].vips[0], vip_a);
}

#[test]
fn colliding_vips_probe_to_a_free_one() {
    // An explicit address sitting on a's auto slot pushes a to the next one.
    let taken = auto_vip("a.example.com");
    let yaml = entry("a", "a.example.com", "")
        + &entry("z", "z.example.com", &format!("  addresses: [{taken}]\n"));
    let registry = registry(&yaml, &[]);
    let a = &registry.services()[0];
    assert_eq!(a.hostname, "a.example.com");
    assert!(in_auto_range(a.vips[0]));
    assert_ne!(a.vips[0], IpAddr::V4(taken));
    assert_eq!(registry.services()[1].vips, [IpAddr::V4(taken)]);
}

#[test]
fn explicit_addresses_are_kept_and_cidrs_and_wildcards_get_none() {
    let yaml = entry(
        "a",
        "a.example.com",
        "  addresses: [192.0.2.10, 198.51.100.0/24]\n",
    ) + &entry("w", "'*.wild.com'", "  resolution: NONE\n");
    let registry = registry(&yaml, &[]);
    let a = &registry.services()[1];
    assert_eq!(a.vips, [IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10))]);
    let wild = &registry.services()[0];
    assert_eq!(wild.hostname, "*.wild.com");
    assert!(wild.vips.is_empty());
    assert_eq!(wild.resolution, Resolution::None);
}

#[test]
fn duplicate_vip_goes_to_the_first_service_only() {
    let yaml = entry("a", "a.example.com", "  addresses: [192.0.2.10]\n")
        + &entry("b", "b.example.com", "  addresses: [192.0.2.10]\n");
    let registry = registry(&yaml, &[]);
    assert_eq!(
        registry.services()[0].vips,
        [IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10))]
    );
    assert!(
        in_auto_range(registry.services()[1].vips[0]) || registry.services()[1].vips.is_empty()
    );
    assert!(registry.warnings().iter().any(|w| w.contains("192.0.2.10")));
}

#[test]
fn connected_workloads_and_entries_become_endpoints() {
    let node = Node {
        workload: "web-1".into(),
        namespace: "ns".into(),
        labels: [("app".to_string(), "web".to_string())].into(),
        service_account: "web".into(),
        address: "10.0.0.5".into(),
        ports: vec![WorkloadPort {
            port: 8081,
            protocol: 0,
            name: "http".into(),
        }],
        ..Default::default()
    };
    let workload = Workload::from_node(&node).expect("workload");
    let yaml = entry(
        "web",
        "web.example.com",
        "  workloadSelector: {labels: {app: web}}\n",
    ) + "---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: vm, namespace: ns}
spec: {address: 10.0.0.4, labels: {app: web}, serviceAccount: vm}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: sock, namespace: ns}
spec: {address: 'unix:///tmp/sock', labels: {app: web}}
";
    let registry = registry(&yaml, &[workload]);
    let service = &registry.services()[0];
    assert_eq!(service.ports[0].protocol, PortProtocol::Http);
    let endpoints = registry.endpoints(&service.id());
    let found: Vec<(String, u32, &str)> = endpoints
        .iter()
        .map(|e| {
            (
                e.address.to_string(),
                e.port_for(&service.ports[0]),
                e.service_account.as_str(),
            )
        })
        .collect();
    assert_eq!(
        found,
        [
            ("10.0.0.4".into(), 80, "vm"),
            ("10.0.0.5".into(), 8081, "web")
        ]
    );
}

#[test]
fn node_without_an_ip_is_not_a_workload() {
    let node = Node {
        address: "not-an-ip".into(),
        ..Default::default()
    };
    assert!(Workload::from_node(&node).is_none());
}
