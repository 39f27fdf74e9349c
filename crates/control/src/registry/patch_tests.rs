//! The registry patch on hand-made cases; random edits against a full
//! build are in `compiler::incremental`'s property test.

use weft_api::Resource;

use super::super::Registry;

const ENTRY: &str = "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: shop, namespace: ns}
spec:
  hosts: [shop.ns.svc.cluster.local, shop.example.com]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  workloadSelector: {labels: {app: shop}}
";

fn workload_entry(name: &str, address: &str, app: &str) -> Resource {
    let yaml = format!(
        "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{name: {name}, namespace: ns}}\nspec:\n  address: {address}\n  labels: {{app: {app}}}\n"
    );
    let mut decoded = weft_api::decode_str(&yaml, "we.yaml");
    assert!(decoded.problems.is_empty(), "{:?}", decoded.problems);
    decoded.resources.remove(0)
}

fn build(entries: &[Resource]) -> Registry {
    let mut resources = weft_api::decode_str(ENTRY, "se.yaml").resources;
    resources.extend(entries.iter().cloned());
    Registry::build(&resources, &[])
}

#[test]
fn an_entry_moving_between_services_patches_both_hosts_and_shares_the_rest() {
    let a = workload_entry("a", "10.0.0.1", "shop");
    let b = workload_entry("b", "10.0.0.2", "shop");
    let before = build(&[a.clone(), b.clone()]);
    // `b` leaves the selector; `c` joins at an address sorted before `a`.
    let b_gone = workload_entry("b", "10.0.0.2", "other");
    let c = workload_entry("c", "10.0.0.0", "shop");
    let patched = before
        .patch_workload_entries(&[(Some(&b), Some(&b_gone)), (None, Some(&c))])
        .expect("patchable");
    let full = build(&[a, b_gone, c]);
    assert_eq!(patched, full);
    let shop = &patched.services()[0];
    let addresses: Vec<String> = patched
        .endpoints(&shop.id())
        .iter()
        .map(|e| e.address.to_string())
        .collect();
    assert_eq!(addresses, ["10.0.0.0", "10.0.0.1"]);
    assert!(patched.same_services(&before));
    assert!(!patched.same_endpoints(&before, &shop.id()));
}

#[test]
fn what_a_patch_cannot_do_exactly_is_left_to_a_full_build() {
    let a = workload_entry("a", "10.0.0.1", "shop");
    let before = build(std::slice::from_ref(&a));
    // A second endpoint at the same address and ports: a full build keeps one.
    let twin = workload_entry("twin", "10.0.0.1", "shop");
    assert!(
        before
            .patch_workload_entries(&[(None, Some(&twin))])
            .is_none()
    );
    // An address that draws a warning: the full build reports it.
    let bad = workload_entry("a", "not-an-address", "shop");
    assert!(
        before
            .patch_workload_entries(&[(Some(&a), Some(&bad))])
            .is_none()
    );
    // Anything but a WorkloadEntry.
    let entry = weft_api::decode_str(ENTRY, "se.yaml").resources.remove(0);
    assert!(
        before
            .patch_workload_entries(&[(Some(&entry), None)])
            .is_none()
    );
}
