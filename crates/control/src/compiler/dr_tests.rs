//! DestinationRules in the caller's, the service's and the root namespace
//! competing for one host: each caller gets the rule Istio gives it
//! (`PushContext.destinationRule`), seen as the connect timeout and the
//! subsets of the clusters in its config.

use super::MeshIndex;
use super::tests::{REVIEWS, REVIEWS_HOST, config, mesh, node};
use weft_proto::proxy::v1::{self as pb, ProxyConfig};

const ALL: &str = "outbound|9080||reviews.shop.svc.cluster.local";

/// `reviews` with a rule in the caller's namespace `front`, in the
/// service's namespace `shop` and in the root namespace; each sets its
/// own connect timeout (1s, 2s, 3s) and subset.
fn rules(front_export: &str, shop_export: &str) -> String {
    format!(
        "{REVIEWS}---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: reviews-front, namespace: front}}
spec:
  host: {REVIEWS_HOST}
  exportTo: [{front_export}]
  trafficPolicy: {{connectionPool: {{tcp: {{connectTimeout: 1s}}}}}}
  subsets: [{{name: front, labels: {{version: v1}}}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: reviews, namespace: shop}}
spec:
  host: reviews
  exportTo: [{shop_export}]
  trafficPolicy: {{connectionPool: {{tcp: {{connectTimeout: 2s}}}}}}
  subsets: [{{name: shop, labels: {{version: v1}}}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: everything, namespace: istio-system}}
spec:
  host: \"*.cluster.local\"
  trafficPolicy: {{connectionPool: {{tcp: {{connectTimeout: 3s}}}}}}
  subsets: [{{name: root, labels: {{version: v1}}}}]
"
    )
}

/// All of [`rules`], plus a rule `name` in `namespace` for workloads
/// labelled `app: canary` only, with a 7s connect timeout.
fn rules_and_canary(name: &str, namespace: &str) -> String {
    format!(
        "{}---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  host: {REVIEWS_HOST}
  workloadSelector: {{matchLabels: {{app: canary}}}}
  trafficPolicy: {{connectionPool: {{tcp: {{connectTimeout: 7s}}}}}}
",
        rules("\"*\"", "\"*\"")
    )
}

/// The connect timeout a proxy in `namespace` with `labels` gets for `reviews`.
fn timeout_for(index: &MeshIndex, namespace: &str, labels: &[(&str, &str)]) -> i64 {
    timeout(&config(index, &node(namespace, labels)))
}

fn timeout(config: &ProxyConfig) -> i64 {
    cluster(config, ALL)
        .connect_timeout
        .as_ref()
        .map_or(0, |d| d.seconds)
}

fn cluster<'a>(config: &'a ProxyConfig, name: &str) -> &'a pb::Cluster {
    config
        .clusters
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no cluster {name}"))
}

/// Routes `reviews` to `subset` so the subset's cluster is in configs.
fn route_to(subset: &str) -> String {
    format!(
        "---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews-{subset}, namespace: shop}}
spec:
  hosts: [reviews]
  http: [{{route: [{{destination: {{host: reviews, subset: {subset}}}}}]}}]
"
    )
}

#[test]
fn the_callers_namespace_wins_then_the_services_then_the_root() {
    let index = mesh(&rules("\"*\"", "\"*\""), &[]);
    assert_eq!(timeout_for(&index, "front", &[]), 1);
    assert_eq!(timeout_for(&index, "shop", &[]), 2);
    // A namespace without rules of its own gets the service's.
    assert_eq!(timeout_for(&index, "elsewhere", &[]), 2);
}

#[test]
fn a_rule_not_exported_to_the_caller_falls_through_to_the_root() {
    // shop keeps its rule to itself; front's rule is for front only.
    let index = mesh(&rules("\".\"", "\".\""), &[]);
    assert_eq!(timeout_for(&index, "front", &[]), 1);
    assert_eq!(timeout_for(&index, "shop", &[]), 2);
    assert_eq!(timeout_for(&index, "elsewhere", &[]), 3);
    // Exported to one named namespace only.
    let index = mesh(&rules("\".\"", "front, team"), &[]);
    assert_eq!(timeout_for(&index, "team", &[]), 2);
    assert_eq!(timeout_for(&index, "elsewhere", &[]), 3);
}

#[test]
fn a_subset_only_the_other_rule_defines_fails_for_this_caller() {
    let yaml = rules("\"*\"", "\"*\"") + &route_to("shop");
    let index = mesh(&yaml, &[]);
    let subset = "outbound|9080|shop|reviews.shop.svc.cluster.local";
    // shop's rule defines `shop`: its endpoints are there.
    let from_shop = config(&index, &node("shop", &[]));
    assert_eq!(cluster(&from_shop, subset).endpoints.len(), 1);
    // front's rule has no subset `shop`: Istio has no such cluster for
    // front's proxies, so requests to it fail rather than reach v1.
    let from_front = config(&index, &node("front", &[]));
    assert!(cluster(&from_front, subset).endpoints.is_empty());
}

#[test]
fn a_workload_selector_rule_applies_only_to_the_proxies_it_selects_in_its_namespace() {
    let index = mesh(&rules_and_canary("reviews-canary", "front"), &[]);
    assert_eq!(timeout_for(&index, "front", &[("app", "canary")]), 7);
    assert_eq!(timeout_for(&index, "front", &[("app", "web")]), 1);
    // The same labels in another namespace: the selector does not reach.
    assert_eq!(timeout_for(&index, "shop", &[("app", "canary")]), 2);
}

#[test]
fn rules_for_one_host_in_one_namespace_merge_subsets_and_a_missing_policy() {
    let yaml = format!(
        "{REVIEWS}---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: a-subsets, namespace: shop}}
spec:
  host: reviews
  subsets: [{{name: v1, labels: {{version: v1}}}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: b-policy, namespace: shop}}
spec:
  host: reviews
  trafficPolicy: {{connectionPool: {{tcp: {{connectTimeout: 4s}}}}}}
  subsets: [{{name: v2, labels: {{version: v2}}}}]
{}",
        route_to("v2")
    );
    let index = mesh(&yaml, &[]);
    let config = config(&index, &node("shop", &[]));
    // The first rule had no top-level policy: the second's is taken, and
    // its subset added.
    assert_eq!(timeout(&config), 4);
    let v2 = cluster(&config, "outbound|9080|v2|reviews.shop.svc.cluster.local");
    assert_eq!(v2.connect_timeout.as_ref().map(|d| d.seconds), Some(4));
}

#[test]
fn selector_rules_shadow_the_others_for_proxies_they_do_not_select() {
    // Istio's lookup stops at the caller's namespace when it has rules for
    // the host, even if they all select other workloads: such a proxy
    // gets no rule at all (Istio's default policy), not the service's.
    let index = mesh(&rules_and_canary("canary-only", "lab"), &[]);
    assert_eq!(timeout_for(&index, "lab", &[("app", "canary")]), 7);
    let plain = config(&index, &node("lab", &[("app", "web")]));
    assert_eq!(timeout(&plain), 10, "Istio's default connect timeout");
    assert_eq!(cluster(&plain, ALL).endpoints.len(), 1);
    // Elsewhere the service's rule still applies.
    assert_eq!(timeout_for(&index, "elsewhere", &[]), 2);
}

/// `tls.credentialName`, resolved in each proxy's namespace: MUTUAL takes
/// the certificate, key and CA; SIMPLE only a CA, from `<name>-cacert` when
/// the credential has none; a sidecar takes it only from a rule with a
/// `workloadSelector` (Istio), and is told otherwise.
#[test]
fn credential_names_fill_the_selected_proxies_tls_from_their_namespace() {
    use crate::store::credentials::CredentialDir;
    let state = tempfile::tempdir().expect("tempdir");
    let write = |namespace: &str, name: &str, files: &[(&str, &str)]| {
        let dir = state.path().join("credentials").join(namespace).join(name);
        std::fs::create_dir_all(&dir).expect("mkdir");
        for (file, text) in files {
            std::fs::write(dir.join(file), text).expect("write");
        }
    };
    write(
        "shop",
        "client",
        &[("tls.crt", "CERT"), ("tls.key", "KEY"), ("ca.crt", "CA")],
    );
    write("shop", "roots-cacert", &[("ca.crt", "ROOTS")]);
    let yaml = format!(
        "{REVIEWS}---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: egress, namespace: shop}}
spec:
  host: reviews
  workloadSelector: {{matchLabels: {{app: egress}}}}
  trafficPolicy: {{tls: {{mode: MUTUAL, credentialName: client}}}}
  subsets: [{{name: v1, labels: {{version: v1}}, trafficPolicy: {{tls: {{mode: SIMPLE, credentialName: roots}}}}}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: everyone, namespace: front}}
spec:
  host: {REVIEWS_HOST}
  trafficPolicy: {{tls: {{mode: MUTUAL, credentialName: client, clientCertificate: /c.pem, privateKey: /k.pem}}}}
{}",
        route_to("v1")
    );
    let decoded = weft_api::decode_str(&yaml, "test.yaml");
    assert!(decoded.problems.is_empty(), "{:?}", decoded.problems);
    let index = MeshIndex::build_with_credentials(
        &decoded.resources,
        &Default::default(),
        &[],
        &Default::default(),
        std::sync::Arc::new(CredentialDir::new(state.path())),
    );
    let selected = config(&index, &node("shop", &[("app", "egress")]));
    let tls = cluster(&selected, ALL).tls.clone().expect("tls");
    assert_eq!(
        (tls.certificate_pem.as_str(), tls.private_key_pem.as_str()),
        ("CERT", "KEY")
    );
    assert_eq!(tls.ca_certificates_pem, "CA");
    let subset = "outbound|9080|v1|reviews.shop.svc.cluster.local";
    let simple = cluster(&selected, subset).tls.clone().expect("tls");
    assert_eq!(simple.ca_certificates_pem, "ROOTS");
    assert!(simple.private_key_pem.is_empty(), "SIMPLE sends no key");

    // front's rule has no selector: its sidecars keep the files.
    let out = super::tests::compile(&index, &node("front", &[]));
    let tls = cluster(&out.config, ALL).tls.clone().expect("tls");
    assert!(tls.private_key_pem.is_empty());
    assert_eq!(tls.private_key, "/k.pem");
    assert!(
        out.warnings
            .iter()
            .any(|w| w.contains("only with a workloadSelector")),
        "{:?}",
        out.warnings
    );
}
