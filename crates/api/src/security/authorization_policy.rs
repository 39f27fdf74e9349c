//! AuthorizationPolicy: allow, deny, audit or delegate (CUSTOM) requests that
//! match `rules` (sources, operations and conditions).

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::common::WorkloadSelector;
use crate::field::FieldErrors;
use crate::meta::ObjectMeta;
use crate::resource::{Group, Spec};
use crate::security::target_ref::{PolicyTargetReference, check_max_len, validate_scope};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthorizationPolicy {
    /// `Option`: an empty `selector: {}` still counts as "set" against targetRef(s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<PolicyTargetReference>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target_refs: Vec<PolicyTargetReference>,
    /// No rules: an ALLOW policy matches nothing, so it denies everything.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<Rule>,
    #[serde(default, skip_serializing_if = "Action::is_allow")]
    pub action: Action,
    /// The external authorizer of a CUSTOM policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<ExtensionProvider>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Action {
    #[default]
    Allow,
    Deny,
    /// Only marks matching requests for an audit plugin.
    Audit,
    /// Delegates to `provider`.
    Custom,
}

impl Action {
    fn is_allow(&self) -> bool {
        *self == Self::Allow
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExtensionProvider {
    /// A MeshConfig `extensionProviders` entry.
    #[serde(default)]
    pub name: String,
}

/// Matches when any `from`, any `to` and every `when` match; empty parts match all.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rule {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from: Vec<RuleFrom>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<RuleTo>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub when: Vec<Condition>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuleFrom {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuleTo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<Operation>,
}

/// Every string matches exactly, by prefix `abc*`, suffix `*abc` or presence `*`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Source {
    /// `<trust-domain>/ns/<ns>/sa/<sa>`, from the peer certificate (needs mTLS).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub principals: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_principals: Vec<String>,
    /// `<iss>/<sub>` of the validated JWT.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub request_principals: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_request_principals: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_namespaces: Vec<String>,
    /// Source address of the connection.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_blocks: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_ip_blocks: Vec<String>,
    /// Original client address (X-Forwarded-For / PROXY protocol).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remote_ip_blocks: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_remote_ip_blocks: Vec<String>,
    /// `<ns>/<sa>` or `<sa>` (policy namespace).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_accounts: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_service_accounts: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trust_domains: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_trust_domains: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Operation {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_hosts: Vec<String>,
    /// Port numbers as strings.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_ports: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_methods: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_paths: Vec<String>,
}

/// An Istio attribute, e.g. `request.auth.claims[iss]` or `source.ip`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Condition {
    #[serde(default)]
    pub key: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_values: Vec<String>,
}

impl Spec for AuthorizationPolicy {
    const KIND: &'static str = "AuthorizationPolicy";
    const GROUP: Group = Group::Security;

    fn validate(&self, meta: &ObjectMeta, errors: &mut FieldErrors) {
        validate_scope(
            self.selector.as_ref(),
            self.target_ref.as_ref(),
            &self.target_refs,
            meta,
            errors,
        );
        match (&self.action, &self.provider) {
            (Action::Custom, None) => {
                errors.push("spec.provider", "CUSTOM action requires provider")
            }
            (Action::Custom, Some(provider)) if provider.name.is_empty() => {
                errors.push("spec.provider.name", "Required value");
            }
            (Action::Custom, Some(_)) | (_, None) => {}
            (_, Some(_)) => errors.push(
                "spec.provider",
                "provider is only allowed with CUSTOM action",
            ),
        }
        if self.rules.len() > 512 {
            errors.push("spec.rules", "must have at most 512 items");
        }
        for (i, rule) in self.rules.iter().enumerate() {
            rule.validate(&format!("spec.rules[{i}]"), errors);
        }
    }
}

impl Rule {
    fn validate(&self, path: &str, errors: &mut FieldErrors) {
        if self.from.len() > 512 {
            errors.push(format!("{path}.from"), "must have at most 512 items");
        }
        for (i, from) in self.from.iter().enumerate() {
            let path = format!("{path}.from[{i}].source");
            match &from.source {
                Some(source) => source.validate(&path, errors),
                None => errors.push(path, "Required value"),
            }
        }
        for (i, to) in self.to.iter().enumerate() {
            let path = format!("{path}.to[{i}].operation");
            match &to.operation {
                Some(operation) => operation.validate(&path, errors),
                None => errors.push(path, "Required value"),
            }
        }
        for (i, condition) in self.when.iter().enumerate() {
            condition.validate(&format!("{path}.when[{i}]"), errors);
        }
    }
}

impl Source {
    fn validate(&self, path: &str, errors: &mut FieldErrors) {
        let lists = [
            &self.principals,
            &self.not_principals,
            &self.request_principals,
            &self.not_request_principals,
            &self.namespaces,
            &self.not_namespaces,
            &self.ip_blocks,
            &self.not_ip_blocks,
            &self.remote_ip_blocks,
            &self.not_remote_ip_blocks,
            &self.service_accounts,
            &self.not_service_accounts,
            &self.trust_domains,
            &self.not_trust_domains,
        ];
        // An empty source would silently match every request.
        if lists.iter().all(|list| list.is_empty()) {
            errors.push(path, "must not be empty");
        }
        // Service accounts already name the namespace and identity.
        if (!self.service_accounts.is_empty() || !self.not_service_accounts.is_empty())
            && (!self.principals.is_empty()
                || !self.not_principals.is_empty()
                || !self.namespaces.is_empty()
                || !self.not_namespaces.is_empty())
        {
            errors.push(
                path,
                "Cannot set serviceAccounts with namespaces or principals",
            );
        }
        for (field, accounts) in [
            ("serviceAccounts", &self.service_accounts),
            ("notServiceAccounts", &self.not_service_accounts),
        ] {
            if accounts.len() > 16 {
                errors.push(format!("{path}.{field}"), "must have at most 16 items");
            }
            for (i, account) in accounts.iter().enumerate() {
                check_max_len(&format!("{path}.{field}[{i}]"), account, 320, errors);
            }
        }
        for (field, blocks) in [
            ("ipBlocks", &self.ip_blocks),
            ("notIpBlocks", &self.not_ip_blocks),
            ("remoteIpBlocks", &self.remote_ip_blocks),
            ("notRemoteIpBlocks", &self.not_remote_ip_blocks),
        ] {
            check_ips(&format!("{path}.{field}"), blocks, errors);
        }
    }
}

impl Operation {
    fn validate(&self, path: &str, errors: &mut FieldErrors) {
        let lists = [
            &self.hosts,
            &self.not_hosts,
            &self.ports,
            &self.not_ports,
            &self.methods,
            &self.not_methods,
            &self.paths,
            &self.not_paths,
        ];
        // An empty operation would silently match every request.
        if lists.iter().all(|list| list.is_empty()) {
            errors.push(path, "must not be empty");
        }
        check_ports(&format!("{path}.ports"), &self.ports, errors);
        check_ports(&format!("{path}.notPorts"), &self.not_ports, errors);
    }
}

impl Condition {
    fn validate(&self, path: &str, errors: &mut FieldErrors) {
        if self.key.is_empty() {
            errors.push(format!("{path}.key"), "Required value");
        }
        if self.values.is_empty() && self.not_values.is_empty() {
            errors.push(path, "at least one of values or notValues must be set");
        }
        // These attributes are typed: the values must parse as such.
        match self.key.as_str() {
            "source.ip" | "remote.ip" | "destination.ip" => {
                check_ips(&format!("{path}.values"), &self.values, errors);
                check_ips(&format!("{path}.notValues"), &self.not_values, errors);
            }
            "destination.port" => {
                check_ports(&format!("{path}.values"), &self.values, errors);
                check_ports(&format!("{path}.notValues"), &self.not_values, errors);
            }
            _ => {}
        }
    }
}

/// Ports are written as strings; each must be a number in 1..65535.
fn check_ports(path: &str, ports: &[String], errors: &mut FieldErrors) {
    for (i, port) in ports.iter().enumerate() {
        match port.parse::<u32>() {
            Ok(number) => errors.check_port(format!("{path}[{i}]"), number),
            Err(_) if !port.is_empty() && port.chars().all(|c| c.is_ascii_digit()) => {
                errors.check_port(format!("{path}[{i}]"), 0);
            }
            Err(_) => errors.push(
                format!("{path}[{i}]"),
                format!("{port:?} is not a port number"),
            ),
        }
    }
}

/// IP addresses (`10.0.0.1`) or CIDR ranges (`10.0.0.0/8`).
fn check_ips(path: &str, blocks: &[String], errors: &mut FieldErrors) {
    for (i, block) in blocks.iter().enumerate() {
        let valid = block.parse::<IpAddr>().is_ok() || block.parse::<ipnet::IpNet>().is_ok();
        if !valid {
            errors.push(
                format!("{path}[{i}]"),
                format!("{block:?} is not an IP address or CIDR range"),
            );
        }
    }
}

#[cfg(test)]
mod tests {

    fn problems(spec: &str) -> Vec<(String, String)> {
        crate::decode::spec_problems::<super::AuthorizationPolicy>(spec)
    }

    #[test]
    fn valid_policy_decodes() {
        let found = problems(
            "  selector:\n    matchLabels:\n      app: web\n  action: DENY\n  rules:\n  - from:\n    - source:\n        principals: [\"cluster.local/ns/a/sa/b\"]\n        ipBlocks: [\"10.0.0.0/8\", \"::1\"]\n    - source:\n        serviceAccounts: [\"a/b\"]\n    to:\n    - operation:\n        methods: [GET]\n        ports: [\"8080\"]\n    when:\n    - key: request.auth.claims[iss]\n      values: [\"https://accounts.google.com\"]\n",
        );
        assert!(found.is_empty(), "{found:?}");
    }

    #[test]
    fn service_accounts_exclude_principals() {
        let found = problems(
            "  rules:\n  - from:\n    - source:\n        serviceAccounts: [a]\n        namespaces: [b]\n",
        );
        assert_eq!(
            found,
            vec![(
                "spec.rules[0].from[0].source".into(),
                "Cannot set serviceAccounts with namespaces or principals".into()
            )]
        );
    }

    #[test]
    fn custom_needs_provider_and_only_custom_has_one() {
        let found = problems("  action: CUSTOM\n");
        assert_eq!(
            found,
            vec![(
                "spec.provider".into(),
                "CUSTOM action requires provider".into()
            )]
        );
        let found = problems("  provider:\n    name: ext\n");
        assert_eq!(
            found,
            vec![(
                "spec.provider".into(),
                "provider is only allowed with CUSTOM action".into()
            )]
        );
        assert!(problems("  action: CUSTOM\n  provider:\n    name: ext\n").is_empty());
        assert_eq!(problems("  action: BLAH\n")[0].0, "spec.action");
    }

    #[test]
    fn ports_ips_and_conditions() {
        let found = problems(
            "  rules:\n  - from:\n    - source:\n        ipBlocks: [\"10.0.0.0/33\"]\n    to:\n    - operation:\n        ports: [\"0\", \"http\"]\n    when:\n    - key: source.ip\n    - values: [a]\n",
        );
        let paths: Vec<&str> = found.iter().map(|(path, _)| path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "spec.rules[0].from[0].source.ipBlocks[0]",
                "spec.rules[0].to[0].operation.ports[0]",
                "spec.rules[0].to[0].operation.ports[1]",
                "spec.rules[0].when[0]",
                "spec.rules[0].when[1].key",
            ]
        );
        assert_eq!(found[1].1, "port must be between 1-65535");
    }

    #[test]
    fn ip_blocks_are_addresses_or_cidrs() {
        let found = problems(
            "  rules:\n  - from:\n    - source:\n        ipBlocks: [\"10.0.0.0/8\", \"10.0.0.1\", \"fd00::/8\", \"10.0.0.0/+8\", \"10.0.0.0/\", \"::1/129\"]\n",
        );
        let paths: Vec<&str> = found.iter().map(|(path, _)| path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "spec.rules[0].from[0].source.ipBlocks[3]",
                "spec.rules[0].from[0].source.ipBlocks[4]",
                "spec.rules[0].from[0].source.ipBlocks[5]",
            ]
        );
    }
}
