//! WorkloadEntry: a non-Kubernetes workload (VM, bare metal) in the mesh.
//! The same shape is a ServiceEntry endpoint and a WorkloadGroup template.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::field::FieldErrors;
use crate::meta::ObjectMeta;
use crate::resource::{Group, Spec};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadEntry {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub address: String,
    /// Service port name → workload port; overrides the service's targetPort.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ports: BTreeMap<String, u32>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub network: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub locality: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub service_account: String,
}

/// What the embedding kind allows of `address`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AddressRule {
    /// A WorkloadEntry or ServiceEntry endpoint: required unless `network` is set.
    Required,
    /// A WorkloadGroup template: the address comes from the registering workload.
    Optional,
}

impl WorkloadEntry {
    pub(crate) fn validate_at(&self, path: &str, rule: AddressRule, errors: &mut FieldErrors) {
        if self.address.is_empty() {
            if rule == AddressRule::Required && self.network.is_empty() {
                errors.push(format!("{path}.address"), "Address is required");
            }
        } else if let Some(socket) = self.address.strip_prefix("unix://") {
            if !(socket.starts_with('/') || socket.starts_with('@')) {
                errors.push(
                    format!("{path}.address"),
                    "UDS must be an absolute path or abstract socket",
                );
            }
            if socket.ends_with('/') {
                errors.push(format!("{path}.address"), "UDS may not be a dir");
            }
            if !self.ports.is_empty() {
                errors.push(format!("{path}.ports"), "UDS may not include ports");
            }
        }
        if self.address.len() > 256 {
            errors.push(
                format!("{path}.address"),
                "Too long: may not be longer than 256",
            );
        }
        for (name, port) in &self.ports {
            if !is_port_name(name) {
                errors.push(
                    format!("{path}.ports"),
                    format!("Invalid value: port name {name:?}"),
                );
            }
            errors.check_port(format!("{path}.ports.{name}"), *port);
        }
    }
}

/// `[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?`, shorter than 63 characters.
fn is_port_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() < 63
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

impl Spec for WorkloadEntry {
    const KIND: &'static str = "WorkloadEntry";
    const GROUP: Group = Group::Networking;
    const SPEC_REQUIRED: bool = true;

    fn validate(&self, _meta: &ObjectMeta, errors: &mut FieldErrors) {
        self.validate_at("spec", AddressRule::Required, errors);
    }
}

#[cfg(test)]
mod tests {

    fn problems(spec: &str) -> Vec<(String, String)> {
        crate::decode::spec_problems::<super::WorkloadEntry>(spec)
    }

    #[test]
    fn valid_entry_decodes() {
        let spec = "  address: 10.0.0.1\n  ports: {http: 8080}\n  labels: {app: vm}\n  serviceAccount: sa\n  network: n1\n";
        assert_eq!(problems(spec), vec![]);
        assert_eq!(problems("  network: n1\n"), vec![]);
    }

    #[test]
    fn address_and_uds_rules() {
        assert_eq!(
            problems("  labels: {a: b}\n"),
            vec![("spec.address".into(), "Address is required".into())]
        );
        assert_eq!(
            problems("  address: unix:///dir/\n"),
            vec![("spec.address".into(), "UDS may not be a dir".into())]
        );
        assert_eq!(
            problems("  address: unix://@foo\n  ports: {http: 80}\n"),
            vec![("spec.ports".into(), "UDS may not include ports".into())]
        );
        assert_eq!(problems("  address: unix://rel\n").len(), 1);
    }

    #[test]
    fn port_range_and_names() {
        assert_eq!(
            problems("  address: 1.1.1.1\n  ports: {http: 99999}\n"),
            vec![(
                "spec.ports.http".into(),
                "port must be between 1-65535".into()
            )]
        );
        assert_eq!(
            problems("  address: 1.1.1.1\n  ports: {\"@\": 80}\n")[0].0,
            "spec.ports"
        );
    }
}
