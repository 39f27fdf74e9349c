//! The rendered install: every object decodes as its Kubernetes type and
//! carries what the cluster needs, and RBAC stays least-privilege.

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::rbac::v1::{ClusterRole, Role};
use serde::de::DeserializeOwned;

use super::*;

fn one<T: DeserializeOwned>(objects: &[Value], kind: &str, name: &str) -> T {
    let value = objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"));
    serde_json::from_value(value.clone()).unwrap_or_else(|e| panic!("{kind} {name}: {e}"))
}

#[test]
fn every_object_is_a_known_kind_in_apply_order() {
    let objects = render(&InstallOptions::default()).expect("renders");
    assert_eq!(objects[0]["kind"], "Namespace");
    assert_eq!(objects[0]["metadata"]["name"], "weft-system");
    for object in &objects {
        let kind = object["kind"].as_str().expect("kind");
        let (_, namespaced) = resource_of(kind).unwrap_or_else(|| panic!("{kind} unknown"));
        assert_eq!(
            object["metadata"]["namespace"].is_string(),
            namespaced,
            "{object}"
        );
        assert!(object["apiVersion"].is_string());
    }
    // The YAML form parses back to the same objects.
    let yaml = to_yaml(&objects).expect("yaml");
    let back: Vec<Value> = weft_api::decode::parse_documents(&yaml)
        .expect("parses")
        .into_iter()
        .filter(|d| !d.is_null())
        .collect();
    assert_eq!(back, objects);
}

#[test]
fn rbac_is_least_privilege() {
    let objects = render(&InstallOptions::default()).expect("renders");
    let cluster: ClusterRole = one(&objects, "ClusterRole", "weftd");
    let rules = cluster.rules.expect("rules");
    for rule in &rules {
        let resources = rule.resources.clone().unwrap_or_default();
        assert!(!rule.verbs.contains(&"*".to_string()), "{rule:?}");
        assert!(!rule.verbs.contains(&"delete".to_string()), "{rule:?}");
        assert!(
            !rule
                .api_groups
                .clone()
                .unwrap_or_default()
                .contains(&"*".to_string()),
            "{rule:?}"
        );
        if resources.contains(&"secrets".to_string()) {
            assert_eq!(
                rule.verbs,
                ["get", "list", "watch"],
                "secrets are read only"
            );
        }
        if resources
            .iter()
            .any(|r| r.ends_with("webhookconfigurations"))
        {
            assert!(
                rule.resource_names.is_some(),
                "webhooks by name only: {rule:?}"
            );
            assert!(!rule.verbs.contains(&"create".to_string()));
        }
        let writes = rule
            .verbs
            .iter()
            .any(|v| ["create", "update", "patch"].contains(&v.as_str()));
        if writes {
            let allowed = resources.iter().all(|r| {
                r == "configmaps"
                    || r == "tokenreviews"
                    || r.ends_with("/status")
                    || r.ends_with("webhookconfigurations")
            });
            assert!(allowed, "unexpected write: {rule:?}");
        }
    }
    assert!(rules.iter().any(|r| {
        r.resources.as_deref() == Some(&["tokenreviews".to_string()][..]) && r.verbs == ["create"]
    }));
    let role: Role = one(&objects, "Role", "weftd");
    let rules = role.rules.expect("rules");
    assert_eq!(
        rules[0].resources.as_deref(),
        Some(&["leases".to_string()][..])
    );
    // Its admin token's Secret: created, never updated or deleted.
    assert_eq!(
        rules[1].resources.as_deref(),
        Some(&["secrets".to_string()][..])
    );
    assert_eq!(rules[1].verbs, ["create"]);
    // What a person needs for `weft ... --kubeconfig`: that one Secret and
    // weftd's service proxy, by name.
    let api: Role = one(&objects, "Role", "weftd-api");
    for rule in api.rules.expect("rules") {
        let names = rule.resource_names.expect("by name");
        assert!(
            names == ["weftd-admin-token"] || names == ["http:weftd:http-api"],
            "{names:?}"
        );
        assert!(rule.verbs.iter().all(|v| v == "get" || v == "create"));
    }
}

#[test]
fn weftd_serves_its_three_ports_and_the_webhooks_point_at_them() {
    let options = InstallOptions {
        kube_version: Some("1.28".into()),
        ..InstallOptions::default()
    };
    let objects = render(&options).expect("renders");
    let service: Service = one(&objects, "Service", "weftd");
    let ports: Vec<i32> = service
        .spec
        .expect("spec")
        .ports
        .expect("ports")
        .iter()
        .map(|p| p.port)
        .collect();
    assert_eq!(ports, [15012, 15017, 15014]);
    let deployment: Deployment = one(&objects, "Deployment", "weftd");
    let container = &deployment
        .spec
        .expect("spec")
        .template
        .spec
        .expect("pod")
        .containers[0];
    let args = container.args.clone().expect("args").join(" ");
    for wanted in [
        "--kubernetes",
        "--webhook 0.0.0.0:15017",
        "--xds 0.0.0.0:15012",
        "--api 0.0.0.0:15014",
        "--kube-server-version 1.28",
    ] {
        assert!(args.contains(wanted), "{wanted} missing from {args}");
    }

    let validating: ValidatingWebhookConfiguration =
        one(&objects, "ValidatingWebhookConfiguration", "weft-validator");
    let hook = &validating.webhooks.expect("webhooks")[0];
    let service = hook.client_config.service.as_ref().expect("service");
    assert_eq!(
        (service.name.as_str(), service.namespace.as_str()),
        ("weftd", "weft-system")
    );
    assert_eq!(service.path.as_deref(), Some("/validate"));
    assert_eq!(service.port, Some(15017));
    assert!(hook.client_config.ca_bundle.is_none(), "weftd writes it");
    let groups = hook.rules.as_ref().expect("rules")[0]
        .api_groups
        .clone()
        .expect("groups");
    assert!(groups.contains(&"networking.istio.io".to_string()));

    let mutating: MutatingWebhookConfiguration = one(
        &objects,
        "MutatingWebhookConfiguration",
        "weft-sidecar-injector",
    );
    let hooks = mutating.webhooks.expect("webhooks");
    assert_eq!(hooks.len(), 4);
    for hook in &hooks {
        let service = hook.client_config.service.as_ref().expect("service");
        assert_eq!(service.path.as_deref(), Some("/inject"));
        assert_eq!(hook.failure_policy.as_deref(), Some("Fail"));
        let rule = &hook.rules.as_ref().expect("rules")[0];
        assert_eq!(rule.resources.as_deref(), Some(&["pods".to_string()][..]));
        assert_eq!(
            rule.operations.as_deref(),
            Some(&["CREATE".to_string()][..])
        );
    }
    let namespace_hook = hooks
        .iter()
        .find(|h| h.name == "namespace.sidecar-injector.weft.io")
        .expect("namespace hook");
    let expressions = namespace_hook
        .namespace_selector
        .as_ref()
        .and_then(|s| s.match_expressions.clone())
        .expect("selector");
    assert_eq!(expressions[0].key, "istio-injection");
    assert_eq!(
        expressions[0].values.as_deref(),
        Some(&["enabled".to_string()][..])
    );
}

#[test]
fn the_ingress_gateway_is_selected_by_istios_gateway_labels() {
    let objects = render(&InstallOptions::default()).expect("renders");
    let deployment: Deployment = one(&objects, "Deployment", "weft-ingressgateway");
    let spec = deployment.spec.expect("spec");
    let labels = spec
        .template
        .metadata
        .clone()
        .expect("meta")
        .labels
        .expect("labels");
    assert_eq!(labels["istio"], "ingressgateway");
    let pod = spec.template.spec.expect("pod");
    let args = pod.containers[0].args.clone().expect("args");
    assert!(args.contains(&"--router".to_string()));
    assert!(!args.contains(&"--capture".to_string()));
    assert!(!args.contains(&"--merged-metrics".to_string()));
    assert!(pod.init_containers.is_none(), "a gateway captures nothing");
    let service: Service = one(&objects, "Service", "weft-ingressgateway");
    assert_eq!(
        service.spec.expect("spec").type_.as_deref(),
        Some("LoadBalancer")
    );

    let without = render(&InstallOptions {
        ingress_gateway: false,
        ..InstallOptions::default()
    })
    .expect("renders");
    assert!(
        without
            .iter()
            .all(|o| o["metadata"]["name"] != "weft-ingressgateway")
    );
}

fn chart_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../charts/weft")
}

#[test]
fn helm_chart_is_generated_from_the_renderer() {
    let files = helm::chart_files().expect("chart renders");
    let bless = std::env::var("WEFT_BLESS").is_ok_and(|v| v == "1");
    for (path, text) in &files {
        let file = chart_dir().join(path);
        if bless {
            std::fs::create_dir_all(file.parent().expect("parent")).expect("dir");
            std::fs::write(&file, text).expect("write");
            continue;
        }
        let committed = std::fs::read_to_string(&file).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (WEFT_BLESS=1 regenerates the chart)",
                file.display()
            )
        });
        if &committed != text {
            // The first line that differs, not two whole files.
            let at = committed
                .lines()
                .zip(text.lines())
                .position(|(a, b)| a != b)
                .unwrap_or(committed.lines().count().min(text.lines().count()));
            panic!(
                "{} is stale at line {}: committed {:?}, generated {:?}; regenerate with \
                 WEFT_BLESS=1 cargo test -p weft-kube --lib helm",
                file.display(),
                at + 1,
                committed.lines().nth(at),
                text.lines().nth(at)
            );
        }
    }
}

#[test]
fn helm_chart_with_default_values_is_the_default_install() {
    let files = helm::chart_files().expect("chart renders");
    let mut from_chart = Vec::new();
    for name in ["templates/weft.yaml", "templates/ingressgateway.yaml"] {
        let (_, template) = files.iter().find(|(p, _)| p == name).expect("template");
        let text = helm::render_with_defaults(template, ("1", "36+"));
        from_chart.extend(
            weft_api::decode::parse_documents(&text)
                .unwrap_or_else(|e| panic!("{name}: {e}\n{text}"))
                .into_iter()
                .filter(|d| !d.is_null()),
        );
    }
    let installed: Vec<Value> = render(&InstallOptions {
        kube_version: Some("1.36".into()),
        ..InstallOptions::default()
    })
    .expect("renders")
    .into_iter()
    .filter(|o| o["kind"] != "CustomResourceDefinition")
    .collect();
    assert_eq!(from_chart, installed);
    assert!(helm::values_yaml().contains(&format!("image: {}", crate::inject::default_image())));
}

#[test]
fn weft_crds_come_right_after_the_namespace() {
    let objects = render(&InstallOptions::default()).expect("renders");
    let crds: Vec<&str> = objects
        .iter()
        .skip(1)
        .take_while(|o| o["kind"] == "CustomResourceDefinition")
        .filter_map(|o| o["metadata"]["name"].as_str())
        .collect();
    assert_eq!(crds.len(), 12, "{crds:?}");
    for name in [
        "ratelimits.weft.io",
        "virtualservices.networking.istio.io",
        "authorizationpolicies.security.istio.io",
        "telemetries.telemetry.istio.io",
    ] {
        assert!(crds.contains(&name), "{name} missing from {crds:?}");
    }
    // The chart carries the same files under crds/.
    let files = helm::chart_files().expect("chart");
    assert!(files.iter().any(|(p, _)| p == "crds/networking.yaml"));
}
