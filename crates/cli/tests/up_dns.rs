//! `weft up` with the mesh file's `dnsCapture: true`: every workload pod's
//! port-53 traffic goes to its sidecar (Istio's ISTIO_META_DNS_CAPTURE), so
//! an app resolves a ServiceEntry host that no hosts file lists, and
//! reaches it by that name through the VIP weftd gave it.
//!
//! Needs root, `ip`, `iptables` and `setpriv`; under `CI=true` it fails
//! rather than skip.

mod support;

use std::process::Command;

use weft_testkit::netns::privileged_or_skip;

use support::*;

/// A host only the mesh knows: no `addresses` (weftd allocates a VIP), its
/// one endpoint the backend-v1 pod (the first pod after frontend-v1-0).
const ENTRY: &str = r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: shop-api}
spec:
  hosts: [api.shop.example]
  location: MESH_INTERNAL
  resolution: STATIC
  endpoints: [{address: 10.203.0.3}]
  ports: [{number: 9000, name: http, protocol: HTTP}]
"#;

/// The IPv4 addresses `getent ahostsv4 NAME` prints in `netns` (with the
/// pod's resolv.conf, as `ip netns exec` mounts it).
fn resolve_in(netns: &str, name: &str) -> Vec<String> {
    let output = Command::new("ip")
        .args(["netns", "exec", netns, "getent", "ahostsv4", name])
        .output()
        .expect("getent");
    let mut addresses: Vec<String> = text(&output.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().next().map(str::to_string))
        .collect();
    addresses.dedup();
    addresses
}

#[test]
fn with_dns_capture_a_pod_resolves_and_reaches_a_service_entry_host_by_name() {
    if !privileged_or_skip(
        "with_dns_capture_a_pod_resolves_and_reaches_a_service_entry_host_by_name",
    ) {
        return;
    }
    let mesh_file = format!("{MESH}  dnsCapture: true\n");
    let mesh = MeshDir::with_mesh("updns", &mesh_file);
    std::fs::write(mesh.dir.path().join("external.yaml"), ENTRY).expect("write entry");
    let up = mesh.up();
    let frontend = up.netns("frontend-v1-0");

    // Answered by the frontend's sidecar: the VIP weftd allocated.
    let mut vips = Vec::new();
    for _ in 0..50 {
        vips = resolve_in(&frontend, "api.shop.example");
        if !vips.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert_eq!(vips.len(), 1, "{vips:?}\n{}", up.stderr());
    assert!(vips[0].starts_with("240.240."), "{vips:?}");
    // The app reaches the host by name, through its sidecar.
    let (status, body) = get_in(&frontend, "api.shop.example", 9000, "/");
    assert_eq!(
        (status, body.as_str()),
        (200, "backend v1 backend-v1-0"),
        "{}",
        up.stderr()
    );
    // A name nothing knows still fails (forwarded to the pod's resolver).
    assert!(resolve_in(&frontend, "nowhere.example").is_empty());
}
