//! `targetRef` / `targetRefs` (PolicyTargetReference) and the scope rules
//! shared by AuthorizationPolicy and RequestAuthentication.

use serde::{Deserialize, Serialize};

use crate::common::WorkloadSelector;
use crate::field::FieldErrors;
use crate::meta::ObjectMeta;

/// A resource a policy attaches to instead of a label selector, e.g. a
/// Gateway API `Gateway` or a `Service`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyTargetReference {
    /// Empty is the core group (`Service`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub group: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub name: String,
    /// Only the policy's own namespace is supported.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
}

impl PolicyTargetReference {
    pub fn validate(&self, path: &str, meta: &ObjectMeta, errors: &mut FieldErrors) {
        if !self.group.is_empty() && !is_dns_subdomain(&self.group) {
            errors.push(
                format!("{path}.group"),
                "must be a lowercase DNS subdomain (e.g. gateway.networking.k8s.io)",
            );
        }
        check_max_len(&format!("{path}.group"), &self.group, 253, errors);
        if self.kind.is_empty() {
            errors.push(format!("{path}.kind"), "Required value");
        } else if !is_kind(&self.kind) {
            errors.push(
                format!("{path}.kind"),
                "must start with a letter and hold only letters, digits and '-' (e.g. Gateway)",
            );
        }
        check_max_len(&format!("{path}.kind"), &self.kind, 63, errors);
        if self.name.is_empty() {
            errors.push(format!("{path}.name"), "Required value");
        }
        check_max_len(&format!("{path}.name"), &self.name, 253, errors);
        if !self.namespace.is_empty() && self.namespace != meta.namespace {
            errors.push(
                format!("{path}.namespace"),
                "cross namespace referencing is not currently supported",
            );
        }
    }
}

/// Istio allows at most one way of choosing workloads: `selector`,
/// `targetRef` or `targetRefs`.
pub fn validate_scope(
    selector: Option<&WorkloadSelector>,
    target_ref: Option<&PolicyTargetReference>,
    target_refs: &[PolicyTargetReference],
    meta: &ObjectMeta,
    errors: &mut FieldErrors,
) {
    let set = usize::from(selector.is_some())
        + usize::from(target_ref.is_some())
        + usize::from(!target_refs.is_empty());
    if set > 1 {
        errors.push("spec", "only one of targetRefs or selector can be set");
    }
    if let Some(selector) = selector {
        selector.validate("spec.selector", errors);
    }
    if let Some(target_ref) = target_ref {
        target_ref.validate("spec.targetRef", meta, errors);
    }
    if target_refs.len() > 16 {
        errors.push("spec.targetRefs", "must have at most 16 items");
    }
    for (i, target_ref) in target_refs.iter().enumerate() {
        target_ref.validate(&format!("spec.targetRefs[{i}]"), meta, errors);
    }
}

/// `must have at most N characters` when `value` is longer.
pub(crate) fn check_max_len(path: &str, value: &str, max: usize, errors: &mut FieldErrors) {
    if value.chars().count() > max {
        errors.push(path, format!("must have at most {max} characters"));
    }
}

/// Dot-separated labels of `[a-z0-9-]`, each starting and ending alphanumeric.
fn is_dns_subdomain(value: &str) -> bool {
    value.split('.').all(|label| {
        let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
        label.starts_with(alnum)
            && label.ends_with(alnum)
            && label.chars().all(|c| alnum(c) || c == '-')
    })
}

/// A letter, then letters, digits and '-', not ending with '-'.
fn is_kind(value: &str) -> bool {
    value.starts_with(|c: char| c.is_ascii_alphabetic())
        && !value.ends_with('-')
        && value.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_the_crd() {
        assert!(is_dns_subdomain("gateway.networking.k8s.io"));
        assert!(!is_dns_subdomain("__"));
        assert!(!is_dns_subdomain("a..b"));
        assert!(!is_dns_subdomain("-a"));
        assert!(is_kind("Gateway"));
        assert!(is_kind("S"));
        assert!(!is_kind("Serv_ice"));
        assert!(!is_kind("1abc"));
    }
}
