//! MeshConfig `defaultConfig` (Istio's ProxyConfig): the fields Weft reads
//! typed, every other ProxyConfig field kept as written so that it can be
//! named in a warning rather than dropped.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::field::FieldErrors;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProxyDefaults {
    /// Worker threads; 0: every core. Unset: the CPU limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
    /// Default 45s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_duration: Option<String>,
    /// Default 5s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub termination_drain_duration: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_application_until_proxy_starts: Option<bool>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub proxy_metadata: BTreeMap<String, String>,
    /// Tracer settings (`sampling`, `customTags`, `maxPathTagLength`, one
    /// tracer block): kept as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracing: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_topology: Option<GatewayTopology>,
    /// Every other ProxyConfig field, as written.
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewayTopology {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_trusted_proxies: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward_client_cert_details: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_protocol: Option<Value>,
}

/// Istio's ProxyConfig fields Weft does not read (the typed ones above
/// aside). A field outside this list is probably a typo: warned about as
/// unknown, not refused (ProxyConfig grows with every Istio release).
pub const OTHER_PROXY_FIELDS: &[&str] = &[
    "configPath",
    "binaryPath",
    "serviceCluster",
    "parentShutdownDuration",
    "discoveryAddress",
    "discoveryRefreshDelay",
    "zipkinAddress",
    "statsdUdpAddress",
    "envoyMetricsServiceAddress",
    "proxyAdminPort",
    "availabilityZone",
    "controlPlaneAuthPolicy",
    "customConfigFile",
    "statNameLength",
    "proxyBootstrapTemplatePath",
    "interceptionMode",
    "sds",
    "envoyAccessLogService",
    "envoyMetricsService",
    "runtimeValues",
    "statusPort",
    "extraStatTags",
    "meshId",
    "readinessProbe",
    "proxyStatsMatcher",
    "caCertificatesPem",
    "image",
    "privateKeyProvider",
    "proxyHeaders",
    "fileFlushInterval",
    "fileFlushMinSizeKb",
    "clusterName",
    "stsPort",
    "rotateCertsOnFileChange",
];

impl ProxyDefaults {
    /// `tracing.sampling`: the percent of new traces sampled where no
    /// Telemetry sets `randomSamplingPercentage` (as in Istio).
    pub fn trace_sampling(&self) -> Option<f64> {
        self.tracing.as_ref()?.get("sampling")?.as_f64()
    }

    pub(super) fn validate(&self, path: &str, errors: &mut FieldErrors) {
        for (field, value) in [
            ("drainDuration", &self.drain_duration),
            ("terminationDrainDuration", &self.termination_drain_duration),
        ] {
            if let Some(value) = value {
                errors.check_duration(format!("{path}.{field}"), value, None);
            }
        }
        if let Some(Value::Object(tracing)) = &self.tracing
            && let Some(sampling) = tracing.get("sampling")
            && !sampling
                .as_f64()
                .is_some_and(|s| (0.0..=100.0).contains(&s))
        {
            errors.push(
                format!("{path}.tracing.sampling"),
                "must be a percentage between 0 and 100",
            );
        } else if let Some(tracing) = &self.tracing
            && !tracing.is_object()
        {
            errors.push(format!("{path}.tracing"), "must be an object");
        }
    }

    /// Each field that is not applied, with why. `concurrency`,
    /// `terminationDrainDuration`, `holdApplicationUntilProxyStarts`,
    /// `proxyMetadata` and `gatewayTopology.numTrustedProxies` apply where
    /// a proxy is started (Kubernetes injection, `weft kube-inject
    /// --mesh-config`, `weft up`), as in Istio: a running proxy keeps what
    /// it started with.
    pub(super) fn warnings(&self, path: &str, out: &mut Vec<String>) {
        let mut say = |field: &str, why: &str| out.push(format!("{path}.{field}: {why}"));
        if self.drain_duration.is_some() {
            say(
                "drainDuration",
                "not implemented: weft-proxy drains for terminationDrainDuration alone",
            );
        }
        if let Some(Value::Object(tracing)) = &self.tracing {
            for key in tracing.keys().filter(|k| k.as_str() != "sampling") {
                say(
                    &format!("tracing.{key}"),
                    "not applied (Weft takes tracing providers from extensionProviders and \
                     Telemetry; only tracing.sampling is applied)",
                );
            }
        }
        if let Some(topology) = &self.gateway_topology {
            if topology.forward_client_cert_details.is_some() {
                say(
                    "gatewayTopology.forwardClientCertDetails",
                    "not implemented; ignored",
                );
            }
            if topology.proxy_protocol.is_some() {
                say("gatewayTopology.proxyProtocol", "not implemented; ignored");
            }
        }
        for field in self.other.keys() {
            if OTHER_PROXY_FIELDS.contains(&field.as_str()) {
                say(field, "not implemented by Weft; ignored");
            } else {
                say(
                    field,
                    "not a ProxyConfig field Weft knows (a typo?); ignored",
                );
            }
        }
    }
}
