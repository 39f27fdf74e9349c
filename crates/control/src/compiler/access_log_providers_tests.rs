use weft_proto::proxy::v1::telemetry::AccessLog;

use super::super::tests::{REVIEWS, REVIEWS_HOST, compile, mesh_with_config, node};

const MESH: &str = "accessLogFormat: 'ENVOY %RESPONSE_CODE%'
extensionProviders:
- name: audit
  envoyFileAccessLog: {path: /var/log/audit.log, logFormat: {labels: {code: '%RESPONSE_CODE%'}}}
- name: plain
  envoyFileAccessLog: {}
- name: otel
  envoyOtelAls:
    service: reviews.shop.svc.cluster.local
    port: 9080
    logFormat: {text: '%REQ(:METHOD)%', labels: {code: '%RESPONSE_CODE%'}}
- {name: als, envoyHttpAls: {service: reviews.shop.svc.cluster.local, port: 9080}}
defaultProviders: {accessLogging: [plain, otel]}
";

const TELEMETRY: &str = r#"
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-default, namespace: istio-system}
spec:
  accessLogging:
  - providers: [{name: envoy}, {name: audit}]
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: shop, namespace: shop}
spec:
  accessLogging:
  - providers: [{name: audit}]
    disabled: true
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: web, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  accessLogging:
  - providers: [{name: otel}]
    match: {mode: SERVER}
    filter: {expression: "response.code >= 500"}
  - providers: [{name: otel}]
    match: {mode: SERVER}
    filter: {expression: "response.code >= 400"}
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: quiet, namespace: quiet}
spec:
  accessLogging: [{disabled: true}]
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: legacy, namespace: legacy}
spec:
  accessLogging: [{providers: [{name: als}]}]
"#;

fn names(config: &weft_proto::proxy::v1::ProxyConfig) -> Vec<(String, bool, bool)> {
    config
        .telemetry
        .as_ref()
        .map(|t| {
            t.access_log_providers
                .iter()
                .map(|p| (p.name.clone(), p.client, p.server))
                .collect()
        })
        .unwrap_or_default()
}

fn own(name: &str) -> (String, bool, bool) {
    (name.to_string(), true, true)
}

#[test]
fn providers_merge_down_the_hierarchy_as_istio_does() {
    let index = mesh_with_config(&format!("{REVIEWS}{TELEMETRY}"), MESH);

    // The root names envoy and audit: both get every line, each its way.
    let plain = compile(&index, &node("default", &[])).config;
    assert_eq!(names(&plain), [own("audit"), own("envoy")]);
    let telemetry = plain.telemetry.as_ref().expect("telemetry");
    assert_eq!(telemetry.access_log(), AccessLog::Enabled);
    let audit = &telemetry.access_log_providers[0];
    assert_eq!(audit.path, "/var/log/audit.log");
    assert_eq!(audit.labels[0].format, "%RESPONSE_CODE%");
    let envoy = &telemetry.access_log_providers[1];
    assert_eq!(
        (envoy.path.as_str(), envoy.text_format.as_str()),
        ("", "ENVOY %RESPONSE_CODE%"),
        "the built-in provider: the proxy's sink, MeshConfig's accessLogFormat"
    );

    // The namespace turns audit off; envoy stays from the root.
    let shop = compile(&index, &node("shop", &[("app", "db")])).config;
    assert_eq!(names(&shop), [own("envoy")]);

    // The workload names otel for SERVER only: on that side in scope are
    // its providers alone (the client side keeps the namespace's envoy);
    // the later filter of two for one provider wins (Istio's rule).
    let web = compile(&index, &node("shop", &[("app", "web")])).config;
    assert_eq!(
        names(&web),
        [
            ("envoy".to_string(), true, false),
            ("otel".to_string(), false, true)
        ]
    );
    let telemetry = web.telemetry.as_ref().expect("telemetry");
    let client = telemetry.client_access_log.as_ref().expect("client");
    assert_eq!((client.disabled, client.filter.as_str()), (false, ""));
    let server = telemetry.server_access_log.as_ref().expect("server");
    assert_eq!(server.filter, "(response.code >= 400)");
    let otel = &telemetry.access_log_providers[1];
    let cluster = format!("outbound|9080||{REVIEWS_HOST}");
    assert_eq!(otel.otel_cluster, cluster);
    assert_eq!(otel.log_name, "otel_envoy_accesslog");
    assert_eq!(
        (otel.text_format.as_str(), otel.labels.len()),
        ("%REQ(:METHOD)%", 1)
    );
    assert!(web.clusters.iter().any(|c| c.name == cluster), "collector");

    // disabled without providers: the inherited ones (envoy, audit) off.
    let quiet = compile(&index, &node("quiet", &[])).config;
    assert_eq!(names(&quiet), Vec::<(String, bool, bool)>::new());
    assert_eq!(
        quiet.telemetry.as_ref().expect("telemetry").access_log(),
        AccessLog::Disabled
    );

    // The gRPC ALS: nothing sent (not even to stdout), warned.
    let legacy = compile(&index, &node("legacy", &[])).config;
    assert_eq!(
        legacy.telemetry.as_ref().expect("telemetry").access_log(),
        AccessLog::Disabled
    );
    let warnings = index.warnings().join("\n");
    assert!(
        warnings.contains(
            "legacy/legacy: spec.accessLogging[0].providers[0] \"als\" is a envoyHttpAls provider"
        ),
        "{warnings}"
    );
}

#[test]
fn without_telemetry_every_default_provider_logs() {
    let index = mesh_with_config(REVIEWS, MESH);
    let config = compile(&index, &node("default", &[])).config;
    assert_eq!(names(&config), [own("otel"), own("plain")]);
    let telemetry = config.telemetry.as_ref().expect("telemetry");
    assert_eq!(telemetry.access_log(), AccessLog::Enabled);
    assert_eq!(telemetry.access_log_providers[1].path, "/dev/stdout");

    // No default providers, no Telemetry: nothing pushed.
    let index = mesh_with_config(REVIEWS, "");
    assert_eq!(names(&compile(&index, &node("default", &[])).config), []);
}

#[test]
fn metrics_off_when_default_metrics_providers_exclude_prometheus() {
    let mesh = "extensionProviders:\n- {name: sd, stackdriver: {}}\n\
                defaultProviders: {metrics: [sd]}\n";
    let index = mesh_with_config(REVIEWS, mesh);
    let config = compile(&index, &node("default", &[])).config;
    let telemetry = config.telemetry.expect("telemetry");
    let client = telemetry.client_metrics.expect("client");
    assert_eq!(client.metrics.len(), 10);
    assert!(client.metrics.iter().all(|m| m.disabled));

    // A Telemetry naming prometheus for the workload keeps its metrics.
    let named = "
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: prom, namespace: default}
spec:
  metrics: [{providers: [{name: prometheus}]}]
";
    let index = mesh_with_config(&format!("{REVIEWS}{named}"), mesh);
    let config = compile(&index, &node("default", &[])).config;
    assert_eq!(config.telemetry.and_then(|t| t.client_metrics), None);

    let index = mesh_with_config(REVIEWS, "defaultProviders: {metrics: [prometheus]}");
    let config = compile(&index, &node("default", &[])).config;
    assert_eq!(config.telemetry.and_then(|t| t.client_metrics), None);
}
