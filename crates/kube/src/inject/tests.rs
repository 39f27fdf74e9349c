//! Injection on Pods written here, checked field by field.

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::*;

fn pod(yaml_annotations: &[(&str, &str)]) -> Pod {
    let mut pod: Pod = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "reviews-v1-5c7d9f6b8-",
            "namespace": "bookinfo",
            "labels": {"app": "reviews", "version": "v1"},
            "ownerReferences": [{
                "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "reviews-v1-5c7d9f6b8",
                "uid": "u1", "controller": true
            }]
        },
        "spec": {
            "serviceAccountName": "bookinfo-reviews",
            "containers": [{
                "name": "reviews",
                "image": "docker.io/istio/examples-bookinfo-reviews-v1:1.20.2",
                "ports": [{"containerPort": 9080, "name": "http"}],
                "readinessProbe": {"httpGet": {"path": "/health", "port": 9080}}
            }]
        }
    }))
    .expect("pod");
    let annotations = pod
        .metadata
        .annotations
        .get_or_insert_with(Default::default);
    for (k, v) in yaml_annotations {
        annotations.insert(k.to_string(), v.to_string());
    }
    pod
}

fn injected(pod: &Pod, settings: &Settings) -> (Pod, Vec<String>) {
    match inject_pod(pod, "bookinfo", Namespace::Selected, settings).expect("inject") {
        Outcome::Injected { pod, warnings } => (*pod, warnings),
        Outcome::Skipped(why) => panic!("skipped: {why}"),
    }
}

fn find<'a>(containers: &'a [Container], name: &str) -> &'a Container {
    containers
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no container {name}"))
}

fn flag<'a>(args: &'a [String], name: &str) -> Vec<&'a str> {
    args.windows(2)
        .filter(|w| w[0] == name)
        .map(|w| w[1].as_str())
        .collect()
}

#[test]
fn native_sidecar_by_default_with_identity_token_and_root() {
    let (pod, _) = injected(&pod(&[]), &Settings::default());
    let spec = pod.spec.expect("spec");
    let inits = spec.init_containers.expect("init containers");
    assert_eq!(inits[0].name, "weft-init");
    assert_eq!(inits[1].name, "weft-proxy");
    assert_eq!(spec.containers.len(), 1, "the app only");
    let proxy = &inits[1];
    assert_eq!(proxy.restart_policy.as_deref(), Some("Always"));
    assert!(proxy.startup_probe.is_some());
    let args = proxy.args.clone().expect("args");
    assert_eq!(
        flag(&args, "--control-plane"),
        ["weftd.weft-system.svc:15012"]
    );
    assert_eq!(
        flag(&args, "--token-file"),
        ["/var/run/secrets/tokens/istio-token"]
    );
    assert_eq!(
        flag(&args, "--ca-root"),
        ["/var/run/secrets/weft/root-cert.pem"]
    );
    assert_eq!(flag(&args, "--workload"), ["reviews-v1"]);
    assert_eq!(flag(&args, "--address"), ["$(INSTANCE_IP)"]);
    assert_eq!(flag(&args, "--port"), ["9080/http"]);
    assert!(flag(&args, "--label").contains(&"app=reviews"));
    assert!(args.contains(&"--capture".to_string()));
    let env = proxy.env.clone().expect("env");
    for (name, path) in [
        ("POD_NAME", "metadata.name"),
        ("POD_NAMESPACE", "metadata.namespace"),
        ("INSTANCE_IP", "status.podIP"),
        ("SERVICE_ACCOUNT", "spec.serviceAccountName"),
    ] {
        let var = env.iter().find(|e| e.name == name).expect(name);
        let field = var
            .value_from
            .as_ref()
            .and_then(|v| v.field_ref.as_ref())
            .expect("field ref");
        assert_eq!(field.field_path, path);
    }
    let security = proxy.security_context.as_ref().expect("security");
    assert_eq!(security.run_as_user, Some(1337));
    assert_eq!(security.read_only_root_filesystem, Some(true));

    let volumes = spec.volumes.expect("volumes");
    let token = volumes
        .iter()
        .find(|v| v.name == "weft-token")
        .and_then(|v| v.projected.as_ref())
        .and_then(|p| p.sources.as_ref())
        .and_then(|s| s[0].service_account_token.as_ref())
        .expect("projected token");
    assert_eq!(token.audience.as_deref(), Some("istio-ca"));
    assert_eq!(token.expiration_seconds, Some(43200));
    assert_eq!(token.path, "istio-token");
    let root = volumes
        .iter()
        .find(|v| v.name == "weft-ca-root")
        .and_then(|v| v.config_map.as_ref())
        .expect("root config map");
    assert_eq!(root.name, "weft-ca-root-cert");

    let init = &inits[0];
    assert_eq!(init.command.as_deref(), Some(&["weft".to_string()][..]));
    assert_eq!(init.args.as_ref().expect("args")[0], "intercept");
    let caps = init
        .security_context
        .as_ref()
        .and_then(|s| s.capabilities.as_ref())
        .and_then(|c| c.add.clone())
        .expect("caps");
    assert_eq!(caps, ["NET_ADMIN", "NET_RAW"]);

    let labels = pod.metadata.labels.expect("labels");
    assert_eq!(labels["security.istio.io/tlsMode"], "istio");
    assert_eq!(labels["service.istio.io/canonical-name"], "reviews");
    assert_eq!(labels["service.istio.io/canonical-revision"], "v1");
    let status: serde_json::Value = serde_json::from_str(
        &pod.metadata.annotations.expect("annotations")["sidecar.istio.io/status"],
    )
    .expect("status json");
    assert_eq!(status["initContainers"][1], "weft-proxy");
}

#[test]
fn classic_sidecar_on_old_servers_and_held_first_when_asked() {
    let old = Settings {
        native_sidecars: supports_native_sidecars("1", "28"),
        ..Settings::default()
    };
    let (pod1, _) = injected(&pod(&[]), &old);
    let spec = pod1.spec.expect("spec");
    assert_eq!(spec.init_containers.expect("inits").len(), 1);
    assert_eq!(spec.containers[1].name, "weft-proxy");
    assert!(spec.containers[1].restart_policy.is_none());

    let held = pod(&[(
        "proxy.istio.io/config",
        "holdApplicationUntilProxyStarts: true",
    )]);
    let (pod2, _) = injected(&held, &old);
    let spec = pod2.spec.expect("spec");
    assert_eq!(spec.containers[0].name, "weft-proxy");
    let hook = spec.containers[0]
        .lifecycle
        .as_ref()
        .and_then(|l| l.post_start.as_ref())
        .and_then(|h| h.exec.as_ref())
        .and_then(|e| e.command.clone())
        .expect("postStart");
    assert_eq!(hook[..2], ["weft".to_string(), "wait-proxy".to_string()]);

    // The pod's annotation wins over the server default.
    let native = pod(&[("sidecar.istio.io/nativeSidecar", "true")]);
    let (pod3, _) = injected(&native, &old);
    assert_eq!(pod3.spec.expect("spec").containers.len(), 1);
}

#[test]
fn annotations_reach_the_containers() {
    let annotated = pod(&[
        ("traffic.sidecar.istio.io/excludeOutboundPorts", "5432"),
        (
            "traffic.sidecar.istio.io/includeOutboundIPRanges",
            "10.96.0.0/12",
        ),
        ("sidecar.istio.io/proxyCPU", "250m"),
        ("sidecar.istio.io/proxyMemoryLimit", "512Mi"),
        ("sidecar.istio.io/logLevel", "debug"),
        (
            "proxy.istio.io/config",
            r#"{"concurrency": 3, "terminationDrainDuration": "20s"}"#,
        ),
    ]);
    let (pod, _) = injected(&annotated, &Settings::default());
    let inits = pod.spec.expect("spec").init_containers.expect("inits");
    let init_args = inits[0].args.clone().expect("args");
    assert_eq!(flag(&init_args, "--exclude-outbound-ports"), ["5432"]);
    assert_eq!(
        flag(&init_args, "--include-outbound-ip-ranges"),
        ["10.96.0.0/12"]
    );
    let proxy = find(&inits, "weft-proxy");
    let args = proxy.args.clone().expect("args");
    assert_eq!(flag(&args, "--workers"), ["3"]);
    assert_eq!(flag(&args, "--drain-timeout"), ["20000ms"]);
    let resources = proxy.resources.as_ref().expect("resources");
    assert_eq!(
        resources.requests.as_ref().expect("requests")["cpu"].0,
        "250m"
    );
    assert_eq!(
        resources.limits.as_ref().expect("limits")["memory"].0,
        "512Mi"
    );
    let env = proxy.env.as_ref().expect("env");
    assert!(
        env.iter()
            .any(|e| e.name == "RUST_LOG" && e.value.as_deref() == Some("debug"))
    );
}

#[test]
fn dns_capture_from_proxy_metadata_reaches_the_init_rules_and_the_proxy_env() {
    let annotated = pod(&[(
        "proxy.istio.io/config",
        "proxyMetadata:\n  ISTIO_META_DNS_CAPTURE: \"true\"\n",
    )]);
    let (pod, warnings) = injected(&annotated, &Settings::default());
    assert!(warnings.is_empty(), "{warnings:?}");
    let inits = pod.spec.expect("spec").init_containers.expect("inits");
    let init_args = inits[0].args.clone().expect("args");
    assert!(
        init_args.contains(&"--capture-dns".to_string()),
        "{init_args:?}"
    );
    let proxy = find(&inits, "weft-proxy");
    let env = proxy.env.as_ref().expect("env");
    assert!(
        env.iter()
            .any(|e| e.name == "ISTIO_META_DNS_CAPTURE" && e.value.as_deref() == Some("true"))
    );
    // Without it: no DNS rules.
    let (plain, _) = injected(&self::pod(&[]), &Settings::default());
    let inits = plain.spec.expect("spec").init_containers.expect("inits");
    assert!(
        !inits[0]
            .args
            .clone()
            .expect("args")
            .contains(&"--capture-dns".to_string())
    );
}

#[test]
fn mesh_default_config_is_the_base_the_pod_annotation_overrides() {
    let mesh = weft_api::mesh::parse(
        "defaultConfig:\n  concurrency: 4\n  terminationDrainDuration: 30s\n  \
         proxyMetadata: {ISTIO_META_DNS_CAPTURE: \"true\", TEAM: payments}\n",
    )
    .expect("MeshConfig");
    let settings = Settings {
        proxy_defaults: mesh.config.default_config.expect("defaultConfig"),
        ..Settings::default()
    };
    let args_env = |pod: Pod| {
        let inits = pod.spec.expect("spec").init_containers.expect("inits");
        let init_args = inits[0].args.clone().expect("args");
        let proxy = find(&inits, "weft-proxy");
        let env: BTreeMap<String, String> = proxy
            .env
            .iter()
            .flatten()
            .map(|e| (e.name.clone(), e.value.clone().unwrap_or_default()))
            .collect();
        (init_args, proxy.args.clone().expect("args"), env)
    };

    // No annotation: the mesh's defaults, DNS capture included.
    let (init_args, args, env) = args_env(injected(&pod(&[]), &settings).0);
    assert_eq!(flag(&args, "--workers"), ["4"]);
    assert_eq!(flag(&args, "--drain-timeout"), ["30000ms"]);
    assert!(init_args.contains(&"--capture-dns".to_string()));
    assert_eq!(env.get("TEAM").map(String::as_str), Some("payments"));

    // The pod's annotation wins field by field, metadata entry by entry.
    let annotated = pod(&[(
        "proxy.istio.io/config",
        "concurrency: 1\nproxyMetadata: {ISTIO_META_DNS_CAPTURE: \"false\", OWNER: me}\n",
    )]);
    let (init_args, args, env) = args_env(injected(&annotated, &settings).0);
    assert_eq!(flag(&args, "--workers"), ["1"]);
    assert_eq!(
        flag(&args, "--drain-timeout"),
        ["30000ms"],
        "kept from the mesh"
    );
    assert!(!init_args.contains(&"--capture-dns".to_string()));
    assert_eq!(env.get("TEAM").map(String::as_str), Some("payments"));
    assert_eq!(env.get("OWNER").map(String::as_str), Some("me"));
    assert_eq!(
        env.get("ISTIO_META_DNS_CAPTURE").map(String::as_str),
        Some("false")
    );

    // Without the mesh's defaults nothing of it appears.
    let (_, args, env) = args_env(injected(&pod(&[]), &Settings::default()).0);
    assert!(flag(&args, "--workers").is_empty());
    assert!(!env.contains_key("TEAM"));
}

#[test]
fn unknown_annotations_are_warned_never_silent() {
    let (pod, warnings) = injected(
        &pod(&[("sidecar.istio.io/userVolumeMount", "{}")]),
        &Settings::default(),
    );
    let all = warnings.join("\n");
    assert!(all.contains("sidecar.istio.io/userVolumeMount"), "{all}");
    // Rewritten probes need no warning and no note.
    assert!(!all.contains("probes"), "{all}");
    let annotations = pod.metadata.annotations.expect("annotations");
    assert!(!annotations.contains_key(probes::NOTE));
}

fn probers_env(pod: &Pod) -> Option<serde_json::Value> {
    let spec = pod.spec.as_ref().expect("spec");
    let all = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten());
    let proxy = find(&all.cloned().collect::<Vec<_>>(), template::PROXY_NAME).clone();
    proxy
        .env
        .iter()
        .flatten()
        .find(|e| e.name == probes::PROBERS_ENV)
        .and_then(|e| e.value.as_deref())
        .map(|v| serde_json::from_str(v).expect("probers json"))
}

#[test]
fn app_probes_go_through_the_sidecar_status_port() {
    for native in [true, false] {
        let settings = Settings {
            native_sidecars: native,
            ..Settings::default()
        };
        let (pod, warnings) = injected(&pod(&[]), &settings);
        assert!(warnings.is_empty(), "{warnings:?}");
        let app = find(&pod.spec.as_ref().expect("spec").containers, "reviews");
        let http = app
            .readiness_probe
            .as_ref()
            .and_then(|p| p.http_get.as_ref())
            .expect("httpGet");
        assert_eq!(http.path.as_deref(), Some("/app-health/reviews/readyz"));
        assert_eq!(http.port, IntOrString::Int(15020));
        assert_eq!(
            probers_env(&pod),
            Some(serde_json::json!({
                "/app-health/reviews/readyz": {"httpGet": {"path": "/health", "port": 9080}}
            }))
        );
        // The sidecar's own readiness probe is left alone.
        let spec = pod.spec.as_ref().expect("spec");
        let all: Vec<_> = spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .cloned()
            .collect();
        let own = find(&all, template::PROXY_NAME)
            .readiness_probe
            .as_ref()
            .and_then(|p| p.http_get.as_ref())
            .expect("sidecar probe");
        assert_eq!(own.path.as_deref(), Some(template::READY_PATH));
    }
}

#[test]
fn opting_out_keeps_probes_and_says_why() {
    let (kept, warnings) = injected(
        &pod(&[("sidecar.istio.io/rewriteAppHTTPProbers", "false")]),
        &Settings::default(),
    );
    let all = warnings.join("\n");
    assert!(
        all.contains("reviews/readinessProbe (httpGet :9080/health)")
            && all.contains("rewriteAppHTTPProbers is \"false\""),
        "{all}"
    );
    assert_eq!(probers_env(&kept), None);
    let annotations = kept.metadata.annotations.as_ref().expect("annotations");
    assert!(annotations[probes::NOTE].contains("reviews/readinessProbe"));
    let app = &kept.spec.as_ref().expect("spec").containers[0];
    let http = app
        .readiness_probe
        .as_ref()
        .and_then(|p| p.http_get.as_ref())
        .expect("httpGet");
    assert_eq!(
        (http.path.as_deref(), &http.port),
        (Some("/health"), &IntOrString::Int(9080))
    );

    // "true" is Istio's default: rewritten, and no warning.
    let (rewritten, warnings) = injected(
        &pod(&[("sidecar.istio.io/rewriteAppHTTPProbers", "true")]),
        &Settings::default(),
    );
    assert!(warnings.is_empty(), "{warnings:?}");
    assert!(probers_env(&rewritten).is_some());
}

#[test]
fn the_status_port_is_never_captured_inbound() {
    // The kubelet's rewritten probe reaches 15020 from outside the pod; the
    // replay leaves from the proxy's UID, which outbound capture returns.
    let rules = capture::Capture::default().rules();
    let redirect = rules
        .find("-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT")
        .expect("inbound redirect");
    let status = rules
        .find("-A ISTIO_INBOUND -p tcp --dport 15020 -j RETURN")
        .expect("15020 excluded");
    assert!(status < redirect, "{rules}");
    let uid = rules
        .find("-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN")
        .expect("proxy uid excluded");
    let outbound = rules
        .find("-A ISTIO_OUTPUT -j ISTIO_REDIRECT")
        .expect("outbound redirect");
    assert!(uid < outbound, "{rules}");
}

#[test]
fn injection_happens_once_and_bad_annotations_refuse_the_pod() {
    let (once, _) = injected(&pod(&[]), &Settings::default());
    let again =
        inject_pod(&once, "bookinfo", Namespace::Selected, &Settings::default()).expect("decided");
    assert!(matches!(again, Outcome::Skipped(why) if why.contains("already injected")));

    let bad = pod(&[("traffic.sidecar.istio.io/includeInboundPorts", "http")]);
    let err = inject_pod(&bad, "bookinfo", Namespace::Selected, &Settings::default())
        .expect_err("bad port");
    assert!(err.contains("includeInboundPorts"), "{err}");
}

#[test]
fn workload_names_follow_the_controller() {
    let mut meta = ObjectMeta {
        name: Some("db-0".into()),
        ..ObjectMeta::default()
    };
    assert_eq!(workload_name(&meta), "db-0");
    meta.owner_references = Some(vec![OwnerReference {
        kind: "StatefulSet".into(),
        name: "db".into(),
        controller: Some(true),
        ..OwnerReference::default()
    }]);
    assert_eq!(workload_name(&meta), "db");
    assert!(supports_native_sidecars("1", "29+"));
    assert!(supports_native_sidecars("v1", "36"));
    assert!(!supports_native_sidecars("1", "28"));
    assert!(!supports_native_sidecars("", ""));
}

#[test]
fn a_gateway_reads_its_trusted_proxy_hops_from_proxy_config() {
    let read = annotations::read(&std::collections::BTreeMap::from([(
        "proxy.istio.io/config".to_string(),
        "gatewayTopology: {numTrustedProxies: 2, proxyProtocol: {}}".to_string(),
    )]))
    .expect("read");
    assert_eq!(read.options.num_trusted_proxies, Some(2));
    // What Weft does not do is said, not dropped.
    assert!(
        read.warnings
            .iter()
            .any(|w| w.contains("gatewayTopology.proxyProtocol")),
        "{:?}",
        read.warnings
    );
    let labels = std::collections::BTreeMap::new();
    let workload = template::Workload {
        name: "ingress",
        labels: &labels,
    };
    let container = |role| {
        template::proxy_container(&Settings::default(), &read.options, &workload, &[], role)
            .args
            .unwrap_or_default()
    };
    let gateway = container(template::Role::Gateway);
    assert_eq!(flag(&gateway, "--num-trusted-proxies"), ["2"]);
    // A sidecar has no X-Forwarded-For to trust: the flag is for gateways.
    let sidecar = container(template::Role::Sidecar { native: false });
    assert!(flag(&sidecar, "--num-trusted-proxies").is_empty());

    let bad = annotations::read(&std::collections::BTreeMap::from([(
        "proxy.istio.io/config".to_string(),
        "gatewayTopology: {numTrustedProxies: -1}".to_string(),
    )]));
    assert!(
        bad.is_err_and(|e| e.contains("gatewayTopology.numTrustedProxies")),
        "a negative count is refused by name"
    );
}
