//! Types and checks shared by several networking kinds: destinations, string
//! matches, ports, TLS settings, host names.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::field::FieldErrors;

/// The floor Istio puts on most durations.
pub(crate) const ONE_MS: Option<Duration> = Some(Duration::from_millis(1));

/// `{number}`: a port of the destination service.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortSelector {
    #[serde(default)]
    pub number: u32,
}

/// Where traffic goes: a service host, optionally a subset and a port.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Destination {
    #[serde(default)]
    pub host: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub subset: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<PortSelector>,
}

impl Destination {
    pub(crate) fn validate(&self, path: &str, errors: &mut FieldErrors) {
        if self.host.is_empty() {
            errors.push(format!("{path}.host"), "Required value");
        } else if self.host == "*" {
            errors.push(format!("{path}.host"), "invalid destination host *");
        } else {
            check_wildcard_host(&format!("{path}.host"), &self.host, errors);
        }
        if !self.subset.is_empty() && !is_dns1123_label(&self.subset) {
            errors.push(format!("{path}.subset"), "subset name is invalid");
        }
        if let Some(port) = &self.port {
            errors.check_port(format!("{path}.port.number"), port.number);
        }
    }
}

/// `{value}` percentage (a protobuf double), 0..100.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Percent {
    #[serde(default)]
    pub value: f64,
}

impl Percent {
    pub(crate) fn validate(&self, path: &str, errors: &mut FieldErrors) {
        check_percent(&format!("{path}.value"), self.value, errors);
    }
}

pub(crate) fn check_percent(path: &str, value: f64, errors: &mut FieldErrors) {
    if !(0.0..=100.0).contains(&value) {
        errors.push(path, "percentage must be in range 0..100");
    }
}

/// `exact` | `prefix` | `regex` (RE2). None set means "present" for headers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StringMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
}

impl StringMatch {
    pub(crate) fn validate(&self, path: &str, errors: &mut FieldErrors) {
        let set = [
            self.exact.is_some(),
            self.prefix.is_some(),
            self.regex.is_some(),
        ];
        if set.iter().filter(|s| **s).count() > 1 {
            errors.push(path, "only one of exact, prefix or regex may be set");
        }
        if let Some(regex) = &self.regex {
            check_regex(&format!("{path}.regex"), regex, errors);
        }
    }
}

pub(crate) fn check_regex(path: &str, regex: &str, errors: &mut FieldErrors) {
    // Envoy uses RE2, whose syntax the regex crate follows.
    if let Err(err) = regex::Regex::new(regex) {
        errors.push(path, format!("{regex:?} is not a valid regex: {err}"));
    }
}

/// `{set, add, remove}` on request or response headers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderOperations {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub set: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub add: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Headers {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<HeaderOperations>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<HeaderOperations>,
}

impl Headers {
    pub(crate) fn validate(&self, path: &str, errors: &mut FieldErrors) {
        for (side, ops) in [("request", &self.request), ("response", &self.response)] {
            let Some(ops) = ops else { continue };
            let names = ops
                .set
                .keys()
                .chain(ops.add.keys())
                .chain(ops.remove.iter());
            for name in names {
                if name.is_empty() || name.contains(char::is_whitespace) {
                    errors.push(
                        format!("{path}.{side}"),
                        format!("invalid header name {name:?}"),
                    );
                }
            }
        }
    }
}

/// `workloadSelector: {labels}` as ServiceEntry and Sidecar spell it
/// (DestinationRule uses `matchLabels`, see `common::WorkloadSelector`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelector {
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

impl LabelSelector {
    pub(crate) fn validate(&self, path: &str, errors: &mut FieldErrors) {
        for (key, value) in &self.labels {
            if key.is_empty() {
                errors.push(format!("{path}.labels"), "label key must not be empty");
            }
            if key.contains('*') || value.contains('*') {
                errors.push(
                    format!("{path}.labels.{key}"),
                    "wildcard is not supported in selector",
                );
            }
        }
    }
}

/// A listener or service port: `{number, protocol, name, targetPort}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Port {
    #[serde(default)]
    pub number: u32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub protocol: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<u32>,
}

impl Port {
    pub(crate) fn validate(&self, path: &str, errors: &mut FieldErrors) {
        errors.check_port(format!("{path}.number"), self.number);
        if let Some(target) = self.target_port {
            errors.check_port(format!("{path}.targetPort"), target);
        }
        if !self.protocol.is_empty() && !is_known_protocol(&self.protocol) {
            errors.push(
                format!("{path}.protocol"),
                format!("invalid protocol {:?}", self.protocol),
            );
        }
    }
}

/// Protocols Istio parses (case-insensitive); anything else is "unsupported".
pub(crate) fn is_known_protocol(protocol: &str) -> bool {
    const KNOWN: &[&str] = &[
        "tcp",
        "udp",
        "grpc",
        "grpc-web",
        "http",
        "http_proxy",
        "http2",
        "https",
        "tls",
        "mongo",
        "redis",
        "mysql",
        "hbone",
    ];
    KNOWN.contains(&protocol.to_ascii_lowercase().as_str())
}

/// `DISABLE | SIMPLE | MUTUAL | ISTIO_MUTUAL` for upstream connections.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ClientTlsMode {
    #[default]
    Disable,
    Simple,
    Mutual,
    IstioMutual,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClientTlsSettings {
    #[serde(default)]
    pub mode: ClientTlsMode,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub client_certificate: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub private_key: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ca_certificates: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub credential_name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subject_alt_names: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sni: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure_skip_verify: Option<bool>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ca_crl: String,
}

impl ClientTlsSettings {
    pub(crate) fn validate(&self, path: &str, errors: &mut FieldErrors) {
        match self.mode {
            ClientTlsMode::Mutual if self.credential_name.is_empty() => {
                if self.client_certificate.is_empty() {
                    errors.push(
                        format!("{path}.clientCertificate"),
                        "client certificate required for mutual tls",
                    );
                }
                if self.private_key.is_empty() {
                    errors.push(
                        format!("{path}.privateKey"),
                        "private key required for mutual tls",
                    );
                }
            }
            // Istio provisions these itself; user-supplied ones would be ignored.
            ClientTlsMode::IstioMutual
                if !(self.client_certificate.is_empty()
                    && self.private_key.is_empty()
                    && self.ca_certificates.is_empty()
                    && self.credential_name.is_empty()) =>
            {
                errors.push(
                    path,
                    "cannot specify client certificates or CA certificate or credentialName if tls mode is ISTIO_MUTUAL",
                );
            }
            _ => {}
        }
    }
}

/// `.`/`*`/namespace names; `*` cannot be mixed with others.
pub(crate) fn check_export_to(path: &str, export_to: &[String], errors: &mut FieldErrors) {
    let mut seen = BTreeSet::new();
    for (i, entry) in export_to.iter().enumerate() {
        if !seen.insert(entry.as_str()) {
            errors.push(format!("{path}[{i}]"), "Duplicate value");
        }
        if entry != "." && entry != "*" && entry != "~" && !is_dns1123_label(entry) {
            errors.push(
                format!("{path}[{i}]"),
                format!("invalid exportTo value {entry:?}"),
            );
        }
    }
    if export_to.len() > 1 && seen.contains("*") {
        errors.push(
            path,
            "cannot have both public (*) and non-public exportTo values",
        );
    }
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63 characters.
pub(crate) fn is_dns1123_label(label: &str) -> bool {
    let bytes = label.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

/// A DNS name whose labels are letters, digits and dashes (Istio accepts
/// upper case here); a trailing dot is allowed.
fn is_dns_name(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    !name.is_empty()
        && name.len() <= 255
        && name.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && b.len() <= 63
                && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
                && b[0] != b'-'
                && b[b.len() - 1] != b'-'
        })
}

/// `*`, `*.example.com`, `example.com`, a short name, or an IP address.
pub(crate) fn check_wildcard_host(path: &str, host: &str, errors: &mut FieldErrors) {
    if host == "*" || host.parse::<IpAddr>().is_ok() {
        return;
    }
    let rest = host.strip_prefix("*.").unwrap_or(host);
    if !is_dns_name(rest) {
        errors.push(
            path,
            format!("{host:?} is not a valid host name or wildcard"),
        );
    }
}

/// `namespace/dnsName` as Gateway servers and Sidecar egress list hosts.
pub(crate) fn check_namespaced_host(
    path: &str,
    host: &str,
    allow_bare: bool,
    errors: &mut FieldErrors,
) {
    let Some((namespace, name)) = host.split_once('/') else {
        if allow_bare {
            check_wildcard_host(path, host, errors);
        } else {
            errors.push(path, format!("{host:?} must be of form namespace/dnsName"));
        }
        return;
    };
    if namespace != "*" && namespace != "." && namespace != "~" && !is_dns1123_label(namespace) {
        errors.push(
            path,
            format!("invalid namespace {namespace:?} in host {host:?}"),
        );
    }
    check_wildcard_host(path, name, errors);
}

/// An IP address or a CIDR block (host bits may be set, as Istio allows).
pub(crate) fn is_ip_or_cidr(value: &str) -> bool {
    value.parse::<IpAddr>().is_ok() || value.parse::<ipnet::IpNet>().is_ok()
}
