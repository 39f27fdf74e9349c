//! Which MeshConfig fields exist in Istio, which Weft reads, and the
//! warnings naming what Weft accepts without acting on it.

use super::{Kind, MeshConfig};

/// Top-level fields with a typed home in [`MeshConfig`].
pub(super) const TYPED: &[&str] = &[
    "rootNamespace",
    "trustDomain",
    "trustDomainAliases",
    "outboundTrafficPolicy",
    "enableAutoMtls",
    "defaultConfig",
    "pathNormalization",
    "accessLogFile",
    "accessLogFormat",
    "accessLogEncoding",
    "defaultProviders",
    "extensionProviders",
    "localityLbSetting",
    "connectTimeout",
    "protocolDetectionTimeout",
];

/// Istio's other MeshConfig fields (api `mesh/v1alpha1/config.proto`),
/// current and removed: accepted, not applied, warned about.
const OTHER: &[&str] = &[
    "proxyListenPort",
    "proxyInboundListenPort",
    "proxyHttpPort",
    "tcpKeepalive",
    "ingressClass",
    "ingressService",
    "ingressControllerMode",
    "ingressSelector",
    "enableTracing",
    "enableEnvoyAccessLogService",
    "disableEnvoyListenerLog",
    "inboundTrafficPolicy",
    "configSources",
    "caCertificates",
    "defaultServiceExportTo",
    "defaultVirtualServiceExportTo",
    "defaultDestinationRuleExportTo",
    "dnsRefreshRate",
    "h2UpgradePolicy",
    "inboundClusterStatName",
    "outboundClusterStatName",
    "certificates",
    "serviceSettings",
    "serviceScopeConfigs",
    "enablePrometheusMerge",
    "verifyCertificateAtClient",
    "ca",
    "discoverySelectors",
    "defaultHttpRetryPolicy",
    "meshMTLS",
    "tlsDefaults",
    "compliancePolicy",
    "defaultTrafficPolicy",
    "trustDomainBundles",
    // Removed from Istio; old files may still carry them.
    "mixerCheckServer",
    "mixerReportServer",
    "disablePolicyChecks",
    "disableMixerHttpReports",
    "policyCheckFailOpen",
    "sidecarToTelemetrySessionAffinity",
    "authPolicy",
    "rdsRefreshDelay",
    "mixerAddress",
    "enableClientSidePolicyCheck",
    "sdsUdsPath",
    "sdsRefreshDelay",
    "enableSdsTokenMount",
    "sdsUseK8sSaJwt",
    "terminationDrainDuration",
    "disableReportBatch",
    "reportBatchMaxEntries",
    "reportBatchMaxTime",
    "thriftConfig",
    "localityLbSettings",
];

pub(super) fn is_istio_field(key: &str) -> bool {
    OTHER.contains(&key)
}

/// One line per field that is accepted but not (fully) applied.
pub(super) fn warnings(config: &MeshConfig) -> Vec<String> {
    let mut out = Vec::new();
    for key in config.not_applied.keys() {
        out.push(format!("{key}: not implemented by Weft; ignored"));
    }
    if let Some(file) = config.access_log_file.as_deref()
        && !file.is_empty()
        && file != "/dev/stdout"
    {
        out.push(format!(
            "accessLogFile: {file:?} only switches access logs on; each proxy writes where its \
             --access-log flag says (stdout without it)"
        ));
    }
    if config.protocol_detection_timeout() == Some(std::time::Duration::ZERO) {
        out.push(
            "protocolDetectionTimeout: 0s (wait for ever) is not applied: Weft keeps its 100ms \
             bound so that server-first protocols on undeclared ports still work"
                .into(),
        );
    }
    if let Some(defaults) = &config.default_config {
        defaults.warnings("defaultConfig", &mut out);
    }
    for (index, provider) in config.extension_providers.iter().enumerate() {
        let Some(kind) = provider.kind() else {
            continue;
        };
        let path = format!(
            "extensionProviders[{index}] ({:?}).{}",
            provider.name,
            kind.key()
        );
        let why = match kind {
            Kind::Prometheus
            | Kind::EnvoyExtAuthzHttp
            | Kind::EnvoyExtAuthzGrpc
            | Kind::EnvoyFileAccessLog
            | Kind::EnvoyOtelAls => None,
            Kind::EnvoyHttpAls | Kind::EnvoyTcpAls => Some(
                "Envoy's gRPC access-log service is not implemented by Weft: proxies it is \
                 selected for send it nothing (use envoyOtelAls or envoyFileAccessLog)",
            ),
            Kind::Zipkin | Kind::OpenTelemetry => {
                super::tracing::provider_warnings(provider, &path, &mut out);
                None
            }
            kind if kind.is_tracing() => Some(
                "this tracing provider kind is not implemented by Weft: proxies it is selected \
                 for report no spans (use opentelemetry or zipkin)",
            ),
            _ => Some("not implemented by Weft; ignored"),
        };
        if let Some(why) = why {
            out.push(format!("{path}: {why}"));
        }
    }
    if let Some(defaults) = &config.default_providers {
        super::tracing::default_warnings(config, &defaults.tracing, &mut out);
        let prometheus = defaults
            .metrics
            .iter()
            .any(|name| config.provider_kind(name) == Some(Kind::Prometheus));
        for name in &defaults.metrics {
            if config.provider_kind(name) != Some(Kind::Prometheus) {
                let then = if prometheus {
                    "proxies report to prometheus only"
                } else {
                    "no prometheus provider is named, so proxies record no standard metrics \
                     (unless a Telemetry metrics entry names prometheus)"
                };
                out.push(format!(
                    "defaultProviders.metrics: {name:?} is not implemented; {then}"
                ));
            }
        }
        for name in &defaults.access_logging {
            let kind = config.provider_kind(name);
            if kind != Some(Kind::EnvoyFileAccessLog) && kind != Some(Kind::EnvoyOtelAls) {
                out.push(format!(
                    "defaultProviders.accessLogging: {name:?} is not implemented (only \
                     envoyFileAccessLog and envoyOtelAls are); left out"
                ));
            }
        }
    }
    out
}
