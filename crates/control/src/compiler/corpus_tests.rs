//! Robustness: real Istio YAML and a large mesh still compile into configs
//! the proxy accepts.

use std::time::Instant;

use weft_api::Resource;
use weft_proto::discovery::v1::Node;

use super::MeshIndex;
use crate::registry::Workload;

fn accepted(index: &MeshIndex, namespace: &str) -> usize {
    let node = Node {
        namespace: namespace.into(),
        capture: true,
        ..Default::default()
    };
    let config = index.proxy_config(&node);
    let services = config.services.len();
    if let Err(err) = weft_proxy::config::Snapshot::compile(config, "x") {
        panic!("proxy in {namespace} rejects its config: {}", err.message);
    }
    services
}

/// Every valid resource of `../shared/corpus` in one mesh: whatever the
/// conflicts between them, every proxy gets a config it accepts.
#[test]
fn istio_corpus_compiles_into_accepted_configs() {
    let Some(root) =
        weft_testkit::corpus::root_or_skip("istio_corpus_compiles_into_accepted_configs")
    else {
        return;
    };
    let files = weft_api::config_files(&root).expect("corpus directory readable");
    let resources: Vec<Resource> = files
        .iter()
        .flat_map(|f| weft_api::decode_file(f).resources)
        .collect();
    let index = MeshIndex::build(&resources, &[]);
    let mut namespaces: Vec<String> = resources
        .iter()
        .map(|r| r.metadata().namespace.clone())
        .collect();
    namespaces.extend(["default".into(), "istio-system".into(), "elsewhere".into()]);
    namespaces.sort();
    namespaces.dedup();
    for namespace in &namespaces {
        accepted(&index, namespace);
    }
}

/// 1,000 services with 3 endpoints each: building is done once, and each
/// proxy's config is a cheap selection (generous bound: debug build, shared CI).
#[test]
fn large_mesh_stays_cheap_per_proxy() {
    let mut yaml = String::new();
    let mut workloads = Vec::new();
    for i in 0..1000 {
        yaml.push_str(&format!(
            "---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: s{i}, namespace: ns{ns}}}
spec:
  hosts: [s{i}.ns{ns}.svc.cluster.local]
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  workloadSelector: {{labels: {{app: s{i}}}}}
",
            ns = i % 10
        ));
        for e in 0..3 {
            let node = Node {
                workload: format!("s{i}-{e}"),
                namespace: format!("ns{}", i % 10),
                labels: [("app".to_string(), format!("s{i}"))].into(),
                address: format!("10.{}.{}.{}", i / 250, i % 250, e + 1),
                ..Default::default()
            };
            workloads.extend(Workload::from_node(&node));
        }
    }
    let decoded = weft_api::decode_str(&yaml, "big.yaml");
    assert!(decoded.problems.is_empty());
    let index = MeshIndex::build(&decoded.resources, &workloads);
    let start = Instant::now();
    for _ in 0..10 {
        assert_eq!(accepted(&index, "ns3"), 1000);
    }
    let per_proxy = start.elapsed() / 10;
    // Includes the proxy's own validation; in practice a few milliseconds.
    assert!(per_proxy.as_millis() < 500, "{per_proxy:?} per proxy");
}
