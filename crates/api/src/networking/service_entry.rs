//! ServiceEntry: adds services (often outside the mesh) to the registry.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::types::{LabelSelector, Port, check_export_to, check_wildcard_host, is_ip_or_cidr};
use super::workload_entry::{AddressRule, WorkloadEntry};
use crate::field::FieldErrors;
use crate::meta::ObjectMeta;
use crate::resource::{Group, Spec};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceEntry {
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(
        default,
        deserialize_with = "addresses",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub addresses: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<Port>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<Resolution>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoints: Option<Vec<WorkloadEntry>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_selector: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub export_to: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subject_alt_names: Vec<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Location {
    #[default]
    MeshExternal,
    MeshInternal,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Resolution {
    #[default]
    None,
    Static,
    Dns,
    DnsRoundRobin,
    DynamicDns,
}

/// Unquoted IPv6 in a flow list (`[1.2.3.4, 2001:db8::]`) reads as a one-key
/// map `{"2001:db8:": null}` under YAML 1.2 rules; Istio's parser keeps it a
/// string, so the key is turned back into the address.
fn addresses<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Entry {
        Text(String),
        Split(std::collections::BTreeMap<String, Option<String>>),
    }
    let entries = Vec::<Entry>::deserialize(deserializer)?;
    entries
        .into_iter()
        .map(|entry| match entry {
            Entry::Text(text) => Ok(text),
            Entry::Split(map) if map.len() == 1 => match map.into_iter().next() {
                Some((key, value)) if value.is_none() => Ok(format!("{key}:")),
                _ => Err(serde::de::Error::custom("expected an address string")),
            },
            Entry::Split(_) => Err(serde::de::Error::custom("expected an address string")),
        })
        .collect()
}

impl Spec for ServiceEntry {
    const KIND: &'static str = "ServiceEntry";
    const GROUP: Group = Group::Networking;
    const SPEC_REQUIRED: bool = true;

    fn validate(&self, _meta: &ObjectMeta, errors: &mut FieldErrors) {
        let resolution = self.resolution.unwrap_or_default();
        let endpoints = self.endpoints.as_deref().unwrap_or_default();
        if self.hosts.is_empty() {
            errors.push("spec.hosts", "Required value");
        }
        let mut hosts = BTreeSet::new();
        for (i, host) in self.hosts.iter().enumerate() {
            let path = format!("spec.hosts[{i}]");
            if host == "*" {
                errors.push(path, "hostname cannot be wildcard");
                continue;
            }
            // Istio allows a partial wildcard such as `*x` here.
            let partial = host.strip_prefix('*').filter(|rest| !rest.starts_with('.'));
            check_wildcard_host(&path, partial.unwrap_or(host), errors);
            if !hosts.insert(host.as_str()) {
                errors.push(&path, "Duplicate value");
            }
            // Nothing to resolve a wildcard against without explicit endpoints.
            if matches!(resolution, Resolution::Dns | Resolution::DnsRoundRobin)
                && endpoints.is_empty()
                && host.starts_with('*')
            {
                errors.push(
                    path,
                    "hosts must be FQDN if no endpoints are provided for resolution mode DNS",
                );
            }
        }
        let mut addresses = BTreeSet::new();
        for (i, address) in self.addresses.iter().enumerate() {
            let path = format!("spec.addresses[{i}]");
            if !is_ip_or_cidr(address) {
                errors.push(
                    &path,
                    format!("invalid address {address:?}: must be an IP or CIDR"),
                );
            } else if address.contains('/')
                && !matches!(resolution, Resolution::None | Resolution::Static)
            {
                errors.push(
                    &path,
                    "CIDR addresses are allowed only for NONE/STATIC resolution types",
                );
            }
            if !addresses.insert(address.as_str()) {
                errors.push(path, "Duplicate value");
            }
        }
        let (mut numbers, mut names) = (BTreeSet::new(), BTreeSet::new());
        for (i, port) in self.ports.iter().enumerate() {
            let path = format!("spec.ports[{i}]");
            port.validate(&path, errors);
            if port.name.is_empty() {
                errors.push(format!("{path}.name"), "Required value");
            } else if !names.insert(port.name.as_str()) {
                errors.push(format!("{path}.name"), "Duplicate value");
            }
            if !numbers.insert(port.number) {
                errors.push(format!("{path}.number"), "port number cannot be duplicated");
            }
        }
        if self.workload_selector.is_some() && self.endpoints.is_some() {
            errors.push(
                "spec",
                "only one of WorkloadSelector or Endpoints can be set",
            );
        }
        if let Some(selector) = &self.workload_selector {
            selector.validate("spec.workloadSelector", errors);
        }
        match resolution {
            Resolution::None if self.endpoints.is_some() => {
                errors.push("spec.endpoints", "NONE mode cannot set endpoints");
            }
            Resolution::DnsRoundRobin if endpoints.len() > 1 => {
                errors.push(
                    "spec.endpoints",
                    "DNS_ROUND_ROBIN mode cannot have multiple endpoints",
                );
            }
            _ => {}
        }
        for (i, endpoint) in endpoints.iter().enumerate() {
            let path = format!("spec.endpoints[{i}]");
            endpoint.validate_at(&path, AddressRule::Required, errors);
            for name in endpoint.ports.keys() {
                if !names.contains(name.as_str()) {
                    errors.push(
                        format!("{path}.ports.{name}"),
                        format!("endpoint port {name:?} is not defined by the service entry"),
                    );
                }
            }
        }
        check_export_to("spec.exportTo", &self.export_to, errors);
    }
}

#[cfg(test)]
mod tests {

    fn problems(spec: &str) -> Vec<(String, String)> {
        crate::decode::spec_problems::<super::ServiceEntry>(spec)
    }

    #[test]
    fn valid_entry_decodes() {
        let spec = "  hosts: [api.example.com]\n  location: MESH_EXTERNAL\n  resolution: DNS\n  ports:\n  - {number: 443, name: https, protocol: TLS}\n";
        assert_eq!(problems(spec), vec![]);
    }

    #[test]
    fn hosts_required_and_unique() {
        assert_eq!(
            problems("  resolution: NONE\n"),
            vec![("spec.hosts".into(), "Required value".into())]
        );
        assert_eq!(
            problems("  hosts: [a.com, a.com]\n"),
            vec![("spec.hosts[1]".into(), "Duplicate value".into())]
        );
    }

    #[test]
    fn resolution_rules() {
        assert_eq!(
            problems("  hosts: [a.com]\n  addresses: [1.2.3.4/16]\n  resolution: DNS\n")[0].1,
            "CIDR addresses are allowed only for NONE/STATIC resolution types"
        );
        assert_eq!(
            problems("  hosts: [a.com]\n  endpoints: [{address: 1.2.3.4}]\n"),
            vec![(
                "spec.endpoints".into(),
                "NONE mode cannot set endpoints".into()
            )]
        );
        assert_eq!(
            problems("  hosts: [a.com]\n  ports: [{name: a, number: 1}, {name: b, number: 1}]\n"),
            vec![(
                "spec.ports[1].number".into(),
                "port number cannot be duplicated".into()
            )]
        );
    }

    #[test]
    fn unknown_resolution_rejected() {
        assert_eq!(problems("  hosts: [a.com]\n  resolution: MAGIC\n").len(), 1);
    }
}
