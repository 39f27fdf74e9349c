//! RequestAuthentication: which JWTs a workload validates, where it finds
//! them and what it forwards after validation.

use serde::{Deserialize, Serialize};

use crate::common::WorkloadSelector;
use crate::field::FieldErrors;
use crate::meta::ObjectMeta;
use crate::resource::{Group, Spec};
use crate::security::target_ref::{PolicyTargetReference, check_max_len, validate_scope};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequestAuthentication {
    /// `Option`: an empty `selector: {}` still counts as "set" against targetRef(s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<PolicyTargetReference>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target_refs: Vec<PolicyTargetReference>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub jwt_rules: Vec<JwtRule>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JwtRule {
    #[serde(default)]
    pub issuer: String,
    /// Empty: the service name is accepted as audience.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audiences: Vec<String>,
    /// Istio's CRD also accepts the proto spelling `jwks_uri`.
    #[serde(default, alias = "jwks_uri", skip_serializing_if = "Option::is_none")]
    pub jwks_uri: Option<String>,
    /// Inline JSON Web Key Set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks: Option<String>,
    /// Default locations: `Authorization: Bearer`, then `access_token`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from_headers: Vec<JwtHeader>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from_params: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from_cookies: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub output_payload_to_header: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub forward_original_token: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub output_claim_to_headers: Vec<ClaimToHeader>,
    /// How long to wait for the JWKS fetch, e.g. "5s".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub space_delimited_claims: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence: Option<JwtPresence>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JwtHeader {
    #[serde(default)]
    pub name: String,
    /// Stripped before decoding, e.g. "Bearer ".
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub prefix: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClaimToHeader {
    #[serde(default)]
    pub header: String,
    #[serde(default)]
    pub claim: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JwtPresence {
    Optional,
    Required,
}

impl Spec for RequestAuthentication {
    const KIND: &'static str = "RequestAuthentication";
    const GROUP: Group = Group::Security;

    fn validate(&self, meta: &ObjectMeta, errors: &mut FieldErrors) {
        validate_scope(
            self.selector.as_ref(),
            self.target_ref.as_ref(),
            &self.target_refs,
            meta,
            errors,
        );
        if self.jwt_rules.len() > 4096 {
            errors.push("spec.jwtRules", "must have at most 4096 items");
        }
        for (i, rule) in self.jwt_rules.iter().enumerate() {
            rule.validate(&format!("spec.jwtRules[{i}]"), errors);
        }
    }
}

impl JwtRule {
    fn validate(&self, path: &str, errors: &mut FieldErrors) {
        if self.issuer.is_empty() {
            errors.push(format!("{path}.issuer"), "Required value");
        }
        non_empty_items(&format!("{path}.audiences"), &self.audiences, errors);
        non_empty_items(&format!("{path}.fromParams"), &self.from_params, errors);
        non_empty_items(&format!("{path}.fromCookies"), &self.from_cookies, errors);
        non_empty_items(
            &format!("{path}.spaceDelimitedClaims"),
            &self.space_delimited_claims,
            errors,
        );
        if self.space_delimited_claims.len() > 64 {
            errors.push(
                format!("{path}.spaceDelimitedClaims"),
                "must have at most 64 items",
            );
        }
        if let Some(uri) = &self.jwks_uri {
            let uri_path = format!("{path}.jwksUri");
            if uri.is_empty() {
                errors.push(&uri_path, "should be at least 1 chars long");
            } else if !has_http_scheme(uri) {
                errors.push(&uri_path, "url must have scheme http:// or https://");
            }
            check_max_len(&uri_path, uri, 2048, errors);
            // Two key sources would leave it unclear which one verifies tokens.
            if self.jwks.is_some() {
                errors.push(path, "only one of jwks or jwksUri can be set");
            }
        }
        for (i, header) in self.from_headers.iter().enumerate() {
            if header.name.is_empty() {
                errors.push(format!("{path}.fromHeaders[{i}].name"), "Required value");
            }
        }
        for (i, output) in self.output_claim_to_headers.iter().enumerate() {
            let item = format!("{path}.outputClaimToHeaders[{i}]");
            if output.header.is_empty() {
                errors.push(format!("{item}.header"), "Required value");
            } else if !output
                .header
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                errors.push(format!("{item}.header"), "should match '^[-_A-Za-z0-9]+$'");
            }
            if output.claim.is_empty() {
                errors.push(format!("{item}.claim"), "Required value");
            }
        }
        if let Some(timeout) = &self.timeout {
            errors.check_duration(
                format!("{path}.timeout"),
                timeout,
                Some(std::time::Duration::from_millis(1)),
            );
        }
    }
}

/// Istio gives each of these list items a minimum length of 1.
fn non_empty_items(path: &str, items: &[String], errors: &mut FieldErrors) {
    for (i, item) in items.iter().enumerate() {
        if item.is_empty() {
            errors.push(format!("{path}[{i}]"), "should be at least 1 chars long");
        }
    }
}

/// Keys are fetched over HTTP(S) only; anything else (a bare host, a file
/// path) is a mistake Istio rejects.
fn has_http_scheme(uri: &str) -> bool {
    let Some((scheme, rest)) = uri.split_once("://") else {
        return false;
    };
    (scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https"))
        && !rest.is_empty()
}

#[cfg(test)]
mod tests {

    fn problems(spec: &str) -> Vec<(String, String)> {
        crate::decode::spec_problems::<super::RequestAuthentication>(spec)
    }

    #[test]
    fn valid_policy_decodes() {
        let found = problems(
            "  targetRefs:\n  - group: \"\"\n    kind: Service\n    name: foo\n    namespace: ns\n  jwtRules:\n  - issuer: example.com\n    jwksUri: https://example.com/jwks.json\n    audiences: [a]\n    fromHeaders:\n    - name: x-jwt\n      prefix: \"Bearer \"\n    fromParams: [token]\n    fromCookies: [session]\n    outputPayloadToHeader: x-payload\n    forwardOriginalToken: true\n    outputClaimToHeaders:\n    - header: x-sub\n      claim: sub\n    timeout: 5s\n    spaceDelimitedClaims: [scope]\n    presence: OPTIONAL\n",
        );
        assert!(found.is_empty(), "{found:?}");
    }

    #[test]
    fn target_ref_rules() {
        let found = problems(
            "  selector:\n    matchLabels:\n      a: b\n  targetRef:\n    kind: Service\n    name: foo\n",
        );
        assert_eq!(
            found,
            vec![(
                "spec".into(),
                "only one of targetRefs or selector can be set".into()
            )]
        );
        let found = problems("  targetRef:\n    kind: Serv_ice\n    namespace: other\n");
        let paths: Vec<&str> = found.iter().map(|(path, _)| path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "spec.targetRef.kind",
                "spec.targetRef.name",
                "spec.targetRef.namespace"
            ]
        );
        assert_eq!(
            found[2].1,
            "cross namespace referencing is not currently supported"
        );
    }

    #[test]
    fn jwt_rule_rules() {
        let found = problems(
            "  jwtRules:\n  - audiences: [\"\"]\n    jwksUri: example.com/jwks\n    timeout: apple\n    outputClaimToHeaders:\n    - header: \":authority\"\n      claim: x\n",
        );
        let paths: Vec<&str> = found.iter().map(|(path, _)| path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "spec.jwtRules[0].issuer",
                "spec.jwtRules[0].audiences[0]",
                "spec.jwtRules[0].jwksUri",
                "spec.jwtRules[0].outputClaimToHeaders[0].header",
                "spec.jwtRules[0].timeout",
            ]
        );
        assert_eq!(found[2].1, "url must have scheme http:// or https://");
    }

    #[test]
    fn null_rule_and_unknown_presence_are_rejected() {
        let found = problems("  jwtRules:\n  -\n");
        assert_eq!(found[0].0, "spec.jwtRules[0]");
        let found = problems("  jwtRules:\n  - issuer: a\n    presence: MANDATORY\n");
        assert_eq!(found[0].0, "spec.jwtRules[0].presence");
        assert!(found[0].1.contains("MANDATORY"));
    }
}
