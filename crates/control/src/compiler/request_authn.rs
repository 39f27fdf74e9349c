//! RequestAuthentication → proxy-shaped [`pb::JwtRule`]s, scoped like
//! AuthorizationPolicy (root namespace = mesh-wide, namespace, selector).
//!
//! Checked here so the proxy never refuses a config for them: the inline
//! `jwks` must be a key set, header names must be header names, `jwksUri`
//! must be an http(s) URI. Without either, the keys are found through the
//! issuer's OpenID discovery document, as Istio does. A rule that fails is left out and reported:
//! tokens of its issuer are then refused (401) as coming from an unknown
//! issuer, never accepted unchecked.

use std::collections::BTreeMap;

use weft_api::Object;
use weft_api::security::RequestAuthentication;
use weft_api::security::request_authentication::JwtRule;
use weft_proto::proxy::v1 as pb;

use super::authz::PolicyScope;

#[derive(Debug, Default)]
pub(super) struct JwtPolicies(Vec<(PolicyScope, Vec<pb::JwtRule>)>);

impl JwtPolicies {
    /// Rules in `root` apply mesh-wide (MeshConfig `rootNamespace`).
    pub(super) fn with_root(mut self, root: &str) -> Self {
        for (scope, _) in &mut self.0 {
            scope.set_root(root);
        }
        self
    }

    pub(super) fn build<'a>(
        objects: impl Iterator<Item = &'a Object<RequestAuthentication>>,
        warnings: &mut Vec<String>,
    ) -> Self {
        let mut out: Vec<(String, PolicyScope, Vec<pb::JwtRule>)> = Vec::new();
        for object in objects {
            let spec = &object.spec;
            let name = object.metadata.key();
            let has_target = spec.target_ref.is_some() || !spec.target_refs.is_empty();
            if has_target {
                warnings.push(format!(
                    "RequestAuthentication {name}: spec.targetRef: gateways named by targetRef \
                     are not supported yet; this policy applies to nothing"
                ));
            }
            let scope = PolicyScope::new(
                &object.metadata.namespace,
                spec.selector.as_ref().map(|s| &s.match_labels),
                has_target,
            );
            let rules = spec
                .jwt_rules
                .iter()
                .enumerate()
                .filter_map(|(i, rule)| {
                    compile_rule(rule, &name, &format!("spec.jwtRules[{i}]"))
                        .map_err(|problem| {
                            warnings.push(format!(
                                "RequestAuthentication {name}: {problem}; the rule is left out \
                                 (tokens of its issuer are refused)"
                            ))
                        })
                        .ok()
                })
                .collect();
            out.push((name, scope, rules));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Self(
            out.into_iter()
                .map(|(_, scope, rules)| (scope, rules))
                .collect(),
        )
    }

    /// The JWT rules of a workload in `namespace` with `labels`.
    pub(super) fn for_workload(
        &self,
        namespace: &str,
        labels: &BTreeMap<String, String>,
    ) -> Vec<pb::JwtRule> {
        self.0
            .iter()
            .filter(|(scope, _)| scope.applies(namespace, labels))
            .flat_map(|(_, rules)| rules.iter().cloned())
            .collect()
    }
}

fn is_http_uri(text: &str) -> bool {
    text.parse::<http::Uri>().is_ok_and(|uri| {
        matches!(uri.scheme_str(), Some("http" | "https")) && uri.authority().is_some()
    })
}

fn compile_rule(rule: &JwtRule, name: &str, path: &str) -> Result<pb::JwtRule, String> {
    let jwks = rule.jwks.clone().unwrap_or_default();
    let mut jwks_uri = rule.jwks_uri.clone().unwrap_or_default();
    if !jwks.is_empty() {
        let parsed: serde_json::Value =
            serde_json::from_str(&jwks).map_err(|err| format!("{path}.jwks: not JSON: {err}"))?;
        if !parsed.get("keys").is_some_and(serde_json::Value::is_array) {
            return Err(format!("{path}.jwks: not a key set (no \"keys\" list)"));
        }
    } else if jwks_uri.is_empty() {
        // As Istio: the issuer's OpenID discovery document names the keys.
        if !is_http_uri(&rule.issuer) {
            return Err(format!(
                "{path}: needs jwks or jwksUri (the issuer {:?} is not a URL to discover them from)",
                rule.issuer
            ));
        }
        jwks_uri = format!(
            "{}/.well-known/openid-configuration",
            rule.issuer.trim_end_matches('/')
        );
    } else if !is_http_uri(&jwks_uri) {
        return Err(format!(
            "{path}.jwksUri: {jwks_uri:?} is not an http(s) URI"
        ));
    }
    let timeout = match &rule.timeout {
        Some(text) => {
            let parsed = weft_api::field::parse_duration(text)
                .ok_or_else(|| format!("{path}.timeout: {text:?} is not a duration"))?;
            Some(parsed.into())
        }
        None => None,
    };
    let header_ok = |value: &str, field: String| {
        http::HeaderName::try_from(value.to_ascii_lowercase())
            .map(|_| ())
            .map_err(|_| format!("{field}: {value:?} is not a header name"))
    };
    for (i, header) in rule.from_headers.iter().enumerate() {
        header_ok(&header.name, format!("{path}.fromHeaders[{i}].name"))?;
    }
    if !rule.output_payload_to_header.is_empty() {
        header_ok(
            &rule.output_payload_to_header,
            format!("{path}.outputPayloadToHeader"),
        )?;
    }
    for (i, claim) in rule.output_claim_to_headers.iter().enumerate() {
        header_ok(
            &claim.header,
            format!("{path}.outputClaimToHeaders[{i}].header"),
        )?;
    }
    Ok(pb::JwtRule {
        issuer: rule.issuer.clone(),
        audiences: rule.audiences.clone(),
        jwks,
        jwks_uri,
        from_headers: rule
            .from_headers
            .iter()
            .map(|h| pb::JwtHeader {
                name: h.name.to_ascii_lowercase(),
                prefix: h.prefix.clone(),
            })
            .collect(),
        from_params: rule.from_params.clone(),
        output_payload_to_header: rule.output_payload_to_header.to_ascii_lowercase(),
        forward_original_token: rule.forward_original_token,
        output_claim_to_headers: rule
            .output_claim_to_headers
            .iter()
            .map(|c| pb::JwtClaimToHeader {
                header: c.header.to_ascii_lowercase(),
                claim: c.claim.clone(),
            })
            .collect(),
        policy: name.to_string(),
        from_cookies: rule.from_cookies.clone(),
        space_delimited_claims: rule.space_delimited_claims.clone(),
        jwks_fetch_timeout: timeout,
    })
}
