//! Istio's own AuthorizationPolicy and RequestAuthentication objects
//! (`../shared/corpus`, read in place): every one weft-api accepts compiles
//! into a config the sidecars it selects accept, and weftd says why about
//! what it cannot translate.

use std::collections::BTreeMap;

use weft_api::Resource;
use weft_control::compiler::MeshIndex;
use weft_proto::discovery::v1::{Node, WorkloadPort};

#[test]
fn corpus_security_policies_compile_into_configs_the_proxy_accepts() {
    let test = "corpus_security_policies_compile_into_configs_the_proxy_accepts";
    let Some(root) = weft_testkit::corpus::root_or_skip(test) else {
        return;
    };
    let resources: Vec<Resource> = weft_api::config_files(&root)
        .expect("corpus directory readable")
        .iter()
        .flat_map(|file| weft_api::decode_file(file).resources)
        .filter(|r| {
            matches!(
                r,
                Resource::AuthorizationPolicy(_) | Resource::RequestAuthentication(_)
            )
        })
        .collect();
    assert!(
        resources.len() >= 10,
        "only {} policies found",
        resources.len()
    );
    let index = MeshIndex::build(&resources, &[]);
    let mut guarded = 0;
    for resource in &resources {
        let labels: BTreeMap<String, String> = match resource {
            Resource::AuthorizationPolicy(o) => o.spec.selector.clone(),
            Resource::RequestAuthentication(o) => o.spec.selector.clone(),
            _ => None,
        }
        .map(|s| s.match_labels)
        .unwrap_or_default();
        let node = Node {
            namespace: resource.metadata().namespace.clone(),
            labels,
            ports: vec![WorkloadPort {
                port: 8080,
                ..Default::default()
            }],
            ..Default::default()
        };
        let config = index.proxy_config(&node);
        guarded += usize::from(config.inbound_ports.iter().any(|p| p.security.is_some()));
        if let Err(err) = weft_proxy::config::Snapshot::compile(config, "corpus") {
            panic!(
                "{} {}: the proxy refuses its config: {}",
                resource.kind(),
                resource.metadata().key(),
                err.message
            );
        }
    }
    assert!(guarded > 0, "no workload got a policy");
    // What weftd cannot translate is named, with its field.
    assert!(
        index
            .warnings()
            .iter()
            .any(|w| w.contains("experimental.envoy.filters")
                && w.starts_with("AuthorizationPolicy ")),
        "{:#?}",
        index.warnings()
    );
}
