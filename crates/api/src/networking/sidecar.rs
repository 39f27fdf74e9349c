//! Sidecar: narrows what a proxy listens on and which services it sees.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::gateway::ServerTlsSettings;
use super::traffic_policy::ConnectionPoolSettings;
use super::types::{LabelSelector, Port, PortSelector, check_namespaced_host};
use crate::field::FieldErrors;
use crate::meta::ObjectMeta;
use crate::resource::{Group, Spec};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Sidecar {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_selector: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<IngressListener>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<EgressListener>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inbound_connection_pool: Option<ConnectionPoolSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbound_traffic_policy: Option<OutboundTrafficPolicy>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CaptureMode {
    #[default]
    Default,
    Iptables,
    None,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IngressListener {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<Port>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub bind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture_mode: Option<CaptureMode>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub default_endpoint: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ServerTlsSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_pool: Option<ConnectionPoolSettings>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EgressListener {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<Port>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub bind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture_mode: Option<CaptureMode>,
    #[serde(default)]
    pub hosts: Vec<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OutboundMode {
    #[default]
    RegistryOnly,
    AllowAny,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutboundTrafficPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<OutboundMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_proxy: Option<EgressProxy>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EgressProxy {
    #[serde(default)]
    pub host: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub subset: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<PortSelector>,
}

/// `127.0.0.1:PORT`, `0.0.0.0:PORT`, `[::1]:PORT`, `[::]:PORT` or `unix://...`.
fn check_default_endpoint(path: &str, endpoint: &str, errors: &mut FieldErrors) {
    if endpoint.starts_with("unix://") {
        return;
    }
    let port = ["127.0.0.1:", "0.0.0.0:", "[::1]:", "[::]:"]
        .iter()
        .find_map(|prefix| endpoint.strip_prefix(prefix))
        .and_then(|port| port.parse::<u32>().ok());
    match port {
        Some(port) => errors.check_port(path, port),
        None => errors.push(
            path,
            "defaultEndpoint must be of form 127.0.0.1:<port>, 0.0.0.0:<port>, [::1]:<port>, [::]:<port> or unix://<path>",
        ),
    }
}

impl Spec for Sidecar {
    const KIND: &'static str = "Sidecar";
    const GROUP: Group = Group::Networking;

    fn validate(&self, _meta: &ObjectMeta, errors: &mut FieldErrors) {
        if let Some(selector) = &self.workload_selector {
            selector.validate("spec.workloadSelector", errors);
        }
        let mut ingress_ports = BTreeSet::new();
        for (i, listener) in self.ingress.iter().enumerate() {
            let path = format!("spec.ingress[{i}]");
            match &listener.port {
                None => errors.push(format!("{path}.port"), "Required value"),
                Some(port) => {
                    port.validate(&format!("{path}.port"), errors);
                    if !ingress_ports.insert(port.number) {
                        errors.push(
                            format!("{path}.port.number"),
                            "ports on IP bound listeners must be unique",
                        );
                    }
                }
            }
            if !listener.default_endpoint.is_empty() {
                check_default_endpoint(
                    &format!("{path}.defaultEndpoint"),
                    &listener.default_endpoint,
                    errors,
                );
            }
            if let Some(tls) = &listener.tls {
                tls.validate(&format!("{path}.tls"), errors);
            }
            if let Some(pool) = &listener.connection_pool {
                pool.validate(&format!("{path}.connectionPool"), errors);
            }
        }
        for (i, listener) in self.egress.iter().enumerate() {
            let path = format!("spec.egress[{i}]");
            match &listener.port {
                Some(port) => port.validate(&format!("{path}.port"), errors),
                // A port-less listener catches everything else, so it must come last.
                None if i + 1 != self.egress.len() => errors.push(
                    &path,
                    "the egress listener with empty port should be the last listener in the list",
                ),
                None => {}
            }
            if listener.hosts.is_empty() {
                errors.push(
                    format!("{path}.hosts"),
                    "sidecar: egress listener must contain at least one host",
                );
            }
            for (j, host) in listener.hosts.iter().enumerate() {
                check_namespaced_host(&format!("{path}.hosts[{j}]"), host, false, errors);
            }
        }
        if let Some(pool) = &self.inbound_connection_pool {
            pool.validate("spec.inboundConnectionPool", errors);
        }
        if let Some(policy) = &self.outbound_traffic_policy
            && let Some(proxy) = &policy.egress_proxy
        {
            let path = "spec.outboundTrafficPolicy.egressProxy";
            if policy.mode != Some(OutboundMode::AllowAny) {
                errors.push(path, "egress proxy can only be set when mode is ALLOW_ANY");
            }
            if proxy.host.is_empty() {
                errors.push(format!("{path}.host"), "Required value");
            }
            if let Some(port) = &proxy.port {
                errors.check_port(format!("{path}.port.number"), port.number);
            }
        }
    }
}

#[cfg(test)]
mod tests {

    fn problems(spec: &str) -> Vec<(String, String)> {
        crate::decode::spec_problems::<super::Sidecar>(spec)
    }

    #[test]
    fn valid_sidecar_decodes() {
        let spec = "  workloadSelector: {labels: {app: ratings}}\n  ingress:\n  - port: {number: 9080, protocol: HTTP, name: http}\n    defaultEndpoint: 127.0.0.1:8080\n  egress:\n  - hosts: [\"./*\", \"istio-system/*\"]\n  outboundTrafficPolicy: {mode: REGISTRY_ONLY}\n";
        assert_eq!(problems(spec), vec![]);
    }

    #[test]
    fn egress_hosts_need_namespace() {
        let found = problems("  egress:\n  - hosts: [\"foo.com\"]\n");
        assert_eq!(found[0].0, "spec.egress[0].hosts[0]");
    }

    #[test]
    fn bad_default_endpoint() {
        let found = problems(
            "  ingress:\n  - port: {number: 80, protocol: HTTP, name: http}\n    defaultEndpoint: 1.2.3.4:80\n",
        );
        assert_eq!(found[0].0, "spec.ingress[0].defaultEndpoint");
    }
}
