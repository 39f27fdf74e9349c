use std::time::Duration;

use super::*;

/// A MeshConfig as Istio users write it (the install docs' examples).
const ISTIO_STYLE: &str = r#"
rootNamespace: istio-config
trustDomain: example.org
trustDomainAliases: [old.example.org]
outboundTrafficPolicy: {mode: REGISTRY_ONLY}
enableAutoMtls: true
accessLogFile: /dev/stdout
accessLogEncoding: TEXT
connectTimeout: 3s
protocolDetectionTimeout: 0s
pathNormalization: {normalization: MERGE_SLASHES}
enablePrometheusMerge: true
dnsRefreshRate: 30s
defaultConfig:
  concurrency: 2
  drainDuration: 30s
  holdApplicationUntilProxyStarts: true
  proxyMetadata: {ISTIO_META_DNS_CAPTURE: "true"}
  gatewayTopology: {numTrustedProxies: 2}
  discoveryAddress: istiod.istio-system.svc:15012
localityLbSetting:
  enabled: true
  failover: [{from: us-east, to: eu-west}]
defaultProviders:
  metrics: [prometheus]
  accessLogging: [envoy]
extensionProviders:
- name: opa
  envoyExtAuthzGrpc: {service: opa.opa.svc.cluster.local, port: 9191, timeout: 2s, failOpen: true}
- name: oauth2-proxy
  envoyExtAuthzHttp:
    service: oauth2-proxy.oauth2.svc.cluster.local
    port: 4180
    pathPrefix: /auth
    statusOnError: "503"
    includeRequestHeadersInCheck: [authorization, cookie, "x-auth-*"]
    includeAdditionalHeadersInCheck: {x-from: mesh}
    headersToUpstreamOnAllow: [authorization, x-user]
    headersToDownstreamOnDeny: [content-type, set-cookie]
    headersToDownstreamOnAllow: [set-cookie]
    includeRequestBodyInCheck: {maxRequestBytes: 4096, allowPartialMessage: true}
- name: otel
  opentelemetry: {service: otel.observability.svc.cluster.local, port: 4317}
- name: zipkin
  zipkin: {service: zipkin.istio-system.svc.cluster.local, port: 9411}
- name: otel-als
  envoyOtelAls: {service: otel.observability.svc.cluster.local, port: 4317, logName: mesh}
- name: json-log
  envoyFileAccessLog: {path: /dev/stdout, logFormat: {labels: {code: "%RESPONSE_CODE%"}}}
- name: prom
  prometheus: {}
"#;

#[test]
fn an_istio_mesh_config_is_read_whole_and_what_weft_skips_is_named() {
    let loaded = parse(ISTIO_STYLE).expect("valid");
    let config = &loaded.config;
    assert_eq!(config.root_namespace(), "istio-config");
    assert_eq!(config.trust_domain(), "example.org");
    assert_eq!(config.outbound_mode(), OutboundMode::RegistryOnly);
    assert_eq!(config.normalization(), Normalization::MergeSlashes);
    assert_eq!(config.connect_timeout(), Duration::from_secs(3));
    assert_eq!(config.protocol_detection_timeout(), Some(Duration::ZERO));
    assert_eq!(config.num_trusted_proxies(), Some(2));
    assert!(config.access_log_on());
    let http = config.extension_providers[1]
        .envoy_ext_authz_http
        .as_ref()
        .expect("http authorizer");
    assert_eq!(http.status_on_error, "503");
    assert_eq!(
        http.include_request_body_in_check
            .as_ref()
            .map(|b| b.max_request_bytes),
        Some(4096)
    );
    assert_eq!(
        config.provider_kind("otel-als"),
        Some(Kind::EnvoyOtelAls),
        "every kind is typed"
    );
    let said = loaded.warnings.join("\n");
    for field in [
        "enablePrometheusMerge: not implemented",
        "dnsRefreshRate: not implemented",
        "defaultConfig.drainDuration: not implemented",
        "defaultConfig.discoveryAddress: not implemented",
    ] {
        assert!(said.contains(field), "no warning {field:?} in:\n{said}");
    }
    assert!(
        !said.contains("otel-als") && !said.contains("json-log"),
        "access-log providers are applied: {said}"
    );
    for applied in [
        "concurrency",
        "holdApplicationUntilProxyStarts",
        "proxyMetadata",
        "numTrustedProxies",
    ] {
        assert!(
            !said.contains(&format!("defaultConfig.{applied}")),
            "{applied} applies at injection and `weft up`: {said}"
        );
    }
    assert!(
        !said.contains("prom"),
        "prometheus is what Weft does: {said}"
    );
    assert!(
        !said.contains("(\"otel\").opentelemetry"),
        "opentelemetry tracing providers are applied: {said}"
    );
    assert!(
        !said.contains("envoyExtAuthz"),
        "ext_authz providers are applied (CUSTOM policies ask them): {said}"
    );
}

#[test]
fn mistakes_are_refused_with_their_field_paths() {
    let cases: &[(&str, &str)] = &[
        ("connectTimeout: 10", "connectTimeout"),
        (
            "connectTimeout: soon",
            "connectTimeout: \"soon\" is not a duration",
        ),
        (
            "protocolDetectionTimeout: 1us",
            "protocolDetectionTimeout: must be 0s",
        ),
        (
            "outboundTrafficPolicy: {mode: DENY_ALL}",
            "outboundTrafficPolicy.mode: unknown variant `DENY_ALL`",
        ),
        (
            "pathNormalization: {normalization: LOWER}",
            "pathNormalization.normalization",
        ),
        (
            "outboundTraficPolicy: {mode: ALLOW_ANY}",
            "outboundTraficPolicy: unknown MeshConfig field",
        ),
        (
            "trustDomain: Example.ORG",
            "trustDomain: \"Example.ORG\" is not a SPIFFE trust domain",
        ),
        (
            "trustDomainAliases: [ok.org, \"\"]",
            "trustDomainAliases[1]: must not be empty",
        ),
        ("rootNamespace: Istio_System", "rootNamespace"),
        (
            "defaultConfig: {drainDuration: 45}",
            "defaultConfig.drainDuration",
        ),
        (
            "defaultConfig: {gatewayTopology: {numTrustedProxies: -1}}",
            "defaultConfig.gatewayTopology.numTrustedProxies",
        ),
        (
            "extensionProviders: [{name: a, zipkin: {service: z, port: 9411}}, {name: a, prometheus: {}}]",
            "extensionProviders[1].name: \"a\" is already the name of extensionProviders[0]",
        ),
        (
            "extensionProviders: [{name: authz, envoyExtAuthzGrpc: {port: 9000}}]",
            "extensionProviders[0].envoyExtAuthzGrpc.service: required",
        ),
        (
            "extensionProviders: [{name: authz, envoyExtAuthzHttp: {service: a.b, port: 0}}]",
            "extensionProviders[0].envoyExtAuthzHttp.port: required",
        ),
        (
            "extensionProviders: [{name: authz, envoyExtAuthzHttp: {service: a.b, port: 80, timeout: 1}}]",
            "extensionProviders[0].envoyExtAuthzHttp.timeout",
        ),
        (
            "extensionProviders: [{name: authz, envoyExtAuthzHttp: {service: a.b, port: 80, statusOnError: nope}}]",
            "extensionProviders[0].envoyExtAuthzHttp.statusOnError",
        ),
        (
            "extensionProviders: [{name: authz, envoyExtAuthzHttp: {service: a.b, port: 80, failOpn: true}}]",
            "extensionProviders[0].envoyExtAuthzHttp.failOpn: unknown field `failOpn`",
        ),
        (
            "extensionProviders: [{name: x}]",
            "extensionProviders[0]: no provider kind",
        ),
        (
            "extensionProviders: [{name: Bad_Name, prometheus: {}}]",
            "extensionProviders[0].name",
        ),
        (
            "defaultProviders: {tracing: [nobody]}",
            "defaultProviders.tracing[0]: no extension provider named \"nobody\"",
        ),
        (
            "defaultProviders: {tracing: [prometheus]}",
            "defaultProviders.tracing[0]: provider \"prometheus\" is a prometheus provider",
        ),
        (
            "localityLbSetting: {failover: [{from: a, to: a}]}",
            "localityLbSetting.failover[0]",
        ),
        ("accessLogEncoding: XML", "accessLogEncoding"),
        (
            "accessLogEncoding: JSON\naccessLogFormat: '%START_TIME%'",
            "accessLogFormat: with accessLogEncoding JSON",
        ),
        (
            "accessLogFormat: '[%START_TIME%] %PATH% %RESPONSE_CODE%'",
            "accessLogFormat: %PATH%: unknown command operator PATH",
        ),
        (
            "accessLogEncoding: JSON\naccessLogFormat: '{\"who\": \"%REQ%\"}'",
            "accessLogFormat.who: %REQ%: REQ needs (header)",
        ),
        (
            "extensionProviders:\n- name: a\n  prometheus: {}\n- name: b\n  prometheus: {}\n\
             - name: file\n  envoyFileAccessLog: {path: /tmp/x, logFormat: {text: '%BOGUS%'}}",
            "extensionProviders[2].envoyFileAccessLog.logFormat.text: %BOGUS%: unknown command operator",
        ),
        (
            "extensionProviders:\n- name: file\n  envoyFileAccessLog: {logFormat: {labels: {code: '%CODE%'}}}",
            "extensionProviders[0].envoyFileAccessLog.logFormat.labels.code: %CODE%",
        ),
        ("- a list", "expected an object"),
    ];
    for (yaml, expected) in cases {
        let errors = parse(yaml).expect_err(yaml).join("\n");
        assert!(
            errors.contains(expected),
            "{yaml}: expected {expected:?} in {errors:?}"
        );
    }
}

#[test]
fn defaults_are_istios_and_an_empty_file_is_valid() {
    for text in ["", "{}", "# nothing\n"] {
        let loaded = parse(text).expect("empty is valid");
        assert!(loaded.warnings.is_empty());
        let config = loaded.config;
        assert_eq!(config.root_namespace(), "istio-system");
        assert_eq!(config.trust_domain(), "cluster.local");
        assert_eq!(config.outbound_mode(), OutboundMode::AllowAny);
        assert_eq!(config.connect_timeout(), Duration::from_secs(10));
        assert_eq!(config.protocol_detection_timeout(), None);
        assert!(config.auto_mtls() && !config.access_log_on());
    }
    let effective = parse("").expect("valid").config.effective();
    let yaml = serde_json::to_value(&effective).expect("serializes");
    assert_eq!(yaml["outboundTrafficPolicy"]["mode"], "ALLOW_ANY");
    assert_eq!(yaml["connectTimeout"], "10s");
    assert_eq!(yaml["enableAutoMtls"], true);
    assert_eq!(yaml["defaultProviders"]["metrics"][0], "prometheus");
}

#[test]
fn json_is_read_too_and_not_applied_fields_are_kept_as_written() {
    let loaded =
        parse(r#"{"ingressClass": "istio", "outboundTrafficPolicy": {"mode": "REGISTRY_ONLY"}}"#)
            .expect("valid");
    assert_eq!(loaded.config.outbound_mode(), OutboundMode::RegistryOnly);
    assert_eq!(loaded.config.not_applied["ingressClass"], "istio");
    assert_eq!(
        loaded.warnings,
        ["ingressClass: not implemented by Weft; ignored"]
    );
}
