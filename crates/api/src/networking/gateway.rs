//! Gateway: the listeners of an ingress/egress gateway deployment.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::types::{Port, check_namespaced_host};
use crate::field::FieldErrors;
use crate::meta::ObjectMeta;
use crate::resource::{Group, Spec};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Gateway {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<Server>,
    /// Labels of the gateway pods this configuration applies to.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub selector: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Server {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<Port>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub bind: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ServerTlsSettings>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub default_endpoint: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ServerTlsMode {
    #[default]
    Passthrough,
    Simple,
    Mutual,
    AutoPassthrough,
    IstioMutual,
    OptionalMutual,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum TlsProtocol {
    #[default]
    #[serde(rename = "TLS_AUTO")]
    Auto,
    #[serde(rename = "TLSV1_0")]
    V1_0,
    #[serde(rename = "TLSV1_1")]
    V1_1,
    #[serde(rename = "TLSV1_2")]
    V1_2,
    #[serde(rename = "TLSV1_3")]
    V1_3,
}

/// Downstream TLS, as Gateway servers and Sidecar ingress listeners use it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServerTlsSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub https_redirect: Option<bool>,
    #[serde(default)]
    pub mode: ServerTlsMode,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub server_certificate: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub private_key: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ca_certificates: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ca_crl: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub credential_name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub credential_names: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ca_cert_credential_name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tls_certificates: Vec<TlsCertificate>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subject_alt_names: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verify_certificate_spki: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verify_certificate_hash: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_protocol_version: Option<TlsProtocol>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_protocol_version: Option<TlsProtocol>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cipher_suites: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ecdh_curves: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure_skip_verify: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsCertificate {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub server_certificate: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub private_key: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ca_certificates: String,
}

impl ServerTlsSettings {
    pub(crate) fn validate(&self, path: &str, errors: &mut FieldErrors) {
        let credential_sources = [
            !self.credential_name.is_empty(),
            !self.credential_names.is_empty(),
            !self.tls_certificates.is_empty(),
        ];
        if credential_sources.iter().filter(|s| **s).count() > 1 {
            errors.push(
                path,
                "only one of credentialName, credentialNames or tlsCertificates may be set",
            );
        }
        for (name, list) in [
            ("credentialNames", self.credential_names.len()),
            ("tlsCertificates", self.tls_certificates.len()),
        ] {
            if list > 2 {
                errors.push(
                    format!("{path}.{name}"),
                    "Too many: must have at most 2 items",
                );
            }
        }
        // With a credential the certificates come from a Secret; otherwise files are needed.
        let has_credential = credential_sources.iter().any(|s| *s);
        let terminates = matches!(
            self.mode,
            ServerTlsMode::Simple | ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual
        );
        if terminates && !has_credential && self.https_redirect != Some(true) {
            if self.server_certificate.is_empty() {
                errors.push(
                    format!("{path}.serverCertificate"),
                    "server certificate required for SIMPLE/MUTUAL mode",
                );
            }
            if self.private_key.is_empty() {
                errors.push(
                    format!("{path}.privateKey"),
                    "private key required for SIMPLE/MUTUAL mode",
                );
            }
        }
        if self.mode == ServerTlsMode::IstioMutual
            && !(self.server_certificate.is_empty()
                && self.private_key.is_empty()
                && self.ca_certificates.is_empty()
                && !has_credential)
        {
            errors.push(
                path,
                "ISTIO_MUTUAL TLS cannot have associated certificates or credentialName",
            );
        }
    }
}

impl Spec for Gateway {
    const KIND: &'static str = "Gateway";
    const GROUP: Group = Group::Networking;

    fn validate(&self, _meta: &ObjectMeta, errors: &mut FieldErrors) {
        if self.servers.is_empty() {
            errors.push("spec.servers", "gateway must have at least one server");
        }
        for (key, value) in &self.selector {
            if key.contains('*') || value.contains('*') {
                errors.push(
                    format!("spec.selector.{key}"),
                    "wildcard is not supported in selector",
                );
            }
        }
        let mut names = BTreeSet::new();
        for (i, server) in self.servers.iter().enumerate() {
            let path = format!("spec.servers[{i}]");
            match &server.port {
                None => errors.push(format!("{path}.port"), "Required value"),
                Some(port) => {
                    port.validate(&format!("{path}.port"), errors);
                    if port.protocol.is_empty() {
                        errors.push(format!("{path}.port.protocol"), "Required value");
                    }
                    if port.name.is_empty() {
                        errors.push(format!("{path}.port.name"), "Required value");
                    }
                }
            }
            if server.hosts.is_empty() {
                errors.push(
                    format!("{path}.hosts"),
                    "server config must contain at least one host",
                );
            }
            for (j, host) in server.hosts.iter().enumerate() {
                check_namespaced_host(&format!("{path}.hosts[{j}]"), host, true, errors);
            }
            if let Some(tls) = &server.tls {
                tls.validate(&format!("{path}.tls"), errors);
                super::gateway_tls::validate(tls, &format!("{path}.tls"), errors);
            }
            if !server.name.is_empty() && !names.insert(server.name.as_str()) {
                errors.push(format!("{path}.name"), "Duplicate value");
            }
        }
    }
}

#[cfg(test)]
mod tests {

    fn problems(spec: &str) -> Vec<(String, String)> {
        crate::decode::spec_problems::<super::Gateway>(spec)
    }

    #[test]
    fn valid_gateway_decodes() {
        let spec = "  selector: {istio: ingressgateway}\n  servers:\n  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [\"bookinfo/*.example.com\"]\n    tls: {mode: SIMPLE, credentialName: cert}\n";
        assert_eq!(problems(spec), vec![]);
    }

    #[test]
    fn server_needs_hosts_and_valid_port() {
        let found = problems("  servers:\n  - port: {number: 70000, name: http, protocol: HTTP}\n");
        assert!(found.contains(&(
            "spec.servers[0].port.number".into(),
            "port must be between 1-65535".into()
        )));
        assert!(found.contains(&(
            "spec.servers[0].hosts".into(),
            "server config must contain at least one host".into()
        )));
    }

    #[test]
    fn simple_tls_needs_certificates() {
        let found = problems(
            "  servers:\n  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [\"*\"]\n    tls: {mode: SIMPLE}\n",
        );
        assert_eq!(found.len(), 2);
    }
}
