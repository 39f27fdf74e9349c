//! PeerAuthentication: which mutual-TLS mode a workload accepts, for the whole
//! workload and per port.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::common::WorkloadSelector;
use crate::field::FieldErrors;
use crate::meta::ObjectMeta;
use crate::resource::{Group, Spec};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PeerAuthentication {
    /// Without it the policy covers the namespace (mesh-wide in the root namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtls: Option<Mtls>,
    /// Keys are port numbers written as strings, as in Istio's YAML.
    /// `Option` because an explicitly empty map is an error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_level_mtls: Option<BTreeMap<String, Mtls>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Mtls {
    /// Unset behaves as `UNSET`: inherit from the parent scope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<MtlsMode>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MtlsMode {
    /// Inherit; PERMISSIVE when there is no parent.
    #[default]
    Unset,
    Disable,
    /// Plaintext or mTLS.
    Permissive,
    Strict,
}

impl PeerAuthentication {
    /// The validated port-level modes by port number; keys that fail
    /// validation are left out.
    pub fn port_modes(&self) -> BTreeMap<u16, MtlsMode> {
        self.port_level_mtls
            .iter()
            .flatten()
            .filter_map(|(port, mtls)| {
                let port = port.parse::<u16>().ok().filter(|p| *p != 0)?;
                Some((port, mtls.mode.unwrap_or_default()))
            })
            .collect()
    }
}

impl Spec for PeerAuthentication {
    const KIND: &'static str = "PeerAuthentication";
    const GROUP: Group = Group::Security;

    fn validate(&self, _meta: &ObjectMeta, errors: &mut FieldErrors) {
        if let Some(selector) = &self.selector {
            selector.validate("spec.selector", errors);
        }
        let Some(ports) = &self.port_level_mtls else {
            return;
        };
        // Per-port settings only make sense for specific workloads.
        if self
            .selector
            .as_ref()
            .is_none_or(|s| s.match_labels.is_empty())
        {
            errors.push("spec.portLevelMtls", "portLevelMtls requires selector");
        }
        if ports.is_empty() {
            errors.push("spec.portLevelMtls", "should have at least 1 properties");
        }
        for key in ports.keys() {
            let path = format!("spec.portLevelMtls.{key}");
            match key.parse::<i64>() {
                Ok(port) => errors.check_port(path, u32::try_from(port).unwrap_or(0)),
                // Digits that overflow are a number out of range, not a type error.
                Err(_) if is_integer(key) => errors.check_port(path, 0),
                Err(_) => errors.push(
                    path,
                    format!("type conversion error from {key:?} to a port number"),
                ),
            }
        }
    }
}

fn is_integer(value: &str) -> bool {
    let digits = value.strip_prefix(['-', '+']).unwrap_or(value);
    !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use crate::decode::decode_str;

    fn problems(spec: &str) -> Vec<(String, String)> {
        crate::decode::spec_problems::<super::PeerAuthentication>(spec)
    }

    #[test]
    fn valid_policy_decodes() {
        let yaml = "apiVersion: security.istio.io/v1beta1\nkind: PeerAuthentication\nmetadata:\n  name: t\nspec:\n  selector:\n    matchLabels:\n      app: web\n  mtls:\n    mode: PERMISSIVE\n  portLevelMtls:\n    8080:\n      mode: STRICT\n";
        let decoded = decode_str(yaml, "t.yaml");
        assert!(decoded.problems.is_empty(), "{:?}", decoded.problems);
        let crate::Resource::PeerAuthentication(object) = &decoded.resources[0] else {
            panic!("wrong kind")
        };
        assert_eq!(
            object.spec.port_modes().get(&8080),
            Some(&super::MtlsMode::Strict)
        );
    }

    #[test]
    fn unknown_mode_is_rejected() {
        let found = problems("  mtls:\n    mode: BLAH\n");
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].0, "spec.mtls.mode");
        assert!(found[0].1.contains("BLAH"), "{found:?}");
    }

    #[test]
    fn port_keys_must_be_ports() {
        let selector = "  selector:\n    matchLabels:\n      a: b\n";
        let found = problems(&format!(
            "{selector}  portLevelMtls:\n    acd:\n      mode: STRICT\n"
        ));
        assert_eq!(found[0].0, "spec.portLevelMtls.acd");
        assert!(found[0].1.starts_with("type conversion error"));
        let found = problems(&format!(
            "{selector}  portLevelMtls:\n    \"42949672\":\n      mode: STRICT\n"
        ));
        assert_eq!(
            found,
            vec![(
                "spec.portLevelMtls.42949672".into(),
                "port must be between 1-65535".into()
            )]
        );
    }

    #[test]
    fn port_level_needs_selector_and_entries() {
        let found = problems("  portLevelMtls:\n    \"80\":\n      mode: STRICT\n");
        assert_eq!(
            found,
            vec![(
                "spec.portLevelMtls".into(),
                "portLevelMtls requires selector".into()
            )]
        );
        let found = problems("  selector:\n    matchLabels:\n      a: b\n  portLevelMtls: {}\n");
        assert_eq!(
            found,
            vec![(
                "spec.portLevelMtls".into(),
                "should have at least 1 properties".into()
            )]
        );
    }
}
