//! `inboundPorts[].security` → the runtime [`InboundGuard`]: policy
//! conditions parsed into matchers, JWT rules with their key sets. Every
//! problem is reported with its field path.

use std::net::IpAddr;
use std::sync::Arc;

use http::HeaderName;
use weft_proto::proxy::v1 as pb;

use super::snapshot::Problems;
use crate::policy::authz::{
    Action, Attribute, Condition, InboundGuard, Pattern, Policies, Policy, Rule, ValueMatch,
};
use crate::policy::jwt::{
    Authenticator, DEFAULT_FETCH_TIMEOUT, JwtRule, KeySource, Location, RemoteJwks,
};

/// None when the port has nothing to check.
pub(super) fn compile_security(
    security: Option<&pb::InboundSecurity>,
    path: &str,
    providers: &super::ext_authz::Providers,
    problems: &mut Problems,
) -> Option<Arc<InboundGuard>> {
    let security = security?;
    if security.policies.is_empty() && security.jwt_rules.is_empty() {
        return None;
    }
    let policies = security
        .policies
        .iter()
        .enumerate()
        .filter_map(|(i, p)| {
            compile_policy(p, &format!("{path}.policies[{i}]"), providers, problems)
        })
        .collect();
    let rules: Vec<JwtRule> = security
        .jwt_rules
        .iter()
        .enumerate()
        .filter_map(|(i, r)| compile_jwt_rule(r, &format!("{path}.jwtRules[{i}]"), problems))
        .collect();
    Some(Arc::new(InboundGuard {
        policies: Policies::new(policies),
        jwt: (!rules.is_empty()).then_some(Authenticator { rules }),
    }))
}

fn compile_policy(
    policy: &pb::AuthzPolicy,
    path: &str,
    providers: &super::ext_authz::Providers,
    problems: &mut Problems,
) -> Option<Policy> {
    let action = match pb::AuthzAction::try_from(policy.action) {
        Ok(pb::AuthzAction::Allow) => Action::Allow,
        Ok(pb::AuthzAction::Deny) => Action::Deny,
        Ok(pb::AuthzAction::Audit) => Action::Audit,
        Ok(pb::AuthzAction::Custom) => Action::Custom,
        Err(_) => {
            problems.push(format!("{path}.action"), "unknown action");
            return None;
        }
    };
    let mut rules = Vec::with_capacity(policy.rules.len());
    for (i, rule) in policy.rules.iter().enumerate() {
        let path = format!("{path}.rules[{i}]");
        let clauses = |list: &[pb::AuthzClause], field: &str, problems: &mut Problems| {
            list.iter()
                .enumerate()
                .map(|(j, c)| compile_clause(c, &format!("{path}.{field}[{j}]"), problems))
                .collect::<Vec<_>>()
        };
        let from = clauses(&rule.from, "from", problems);
        let to = clauses(&rule.to, "to", problems);
        let when = rule
            .when
            .as_ref()
            .map(|c| compile_clause(c, &format!("{path}.when"), problems))
            .unwrap_or_default();
        rules.push(Rule { from, to, when });
    }
    let provider = match action {
        Action::Custom if policy.provider.is_empty() => {
            tracing::warn!(
                policy = %policy.name,
                "CUSTOM policy without a provider: requests it matches are denied"
            );
            None
        }
        Action::Custom => match providers.get(&policy.provider) {
            Some(provider) => Some(provider.clone()),
            None => {
                problems.push(
                    format!("{path}.provider"),
                    format!("no extAuthzProviders entry named {:?}", policy.provider),
                );
                return None;
            }
        },
        _ => None,
    };
    Some(Policy {
        name: Arc::from(policy.name.as_str()),
        action,
        dry_run: policy.dry_run,
        rules,
        provider,
    })
}

fn compile_clause(clause: &pb::AuthzClause, path: &str, problems: &mut Problems) -> Vec<Condition> {
    clause
        .conditions
        .iter()
        .enumerate()
        .filter_map(|(i, c)| compile_condition(c, &format!("{path}.conditions[{i}]"), problems))
        .collect()
}

fn compile_condition(
    condition: &pb::AuthzCondition,
    path: &str,
    problems: &mut Problems,
) -> Option<Condition> {
    use pb::AuthzAttribute as A;
    let attribute = match A::try_from(condition.attribute) {
        Ok(A::SourcePrincipal) => Attribute::SourcePrincipal,
        Ok(A::SourceNamespace) => Attribute::SourceNamespace,
        Ok(A::SourceTrustDomain) => Attribute::SourceTrustDomain,
        Ok(A::SourceIp) => Attribute::SourceIp,
        Ok(A::RemoteIp) => Attribute::RemoteIp,
        Ok(A::RequestPrincipal) => Attribute::RequestPrincipal,
        Ok(A::Host) => Attribute::Host,
        Ok(A::Method) => Attribute::Method,
        Ok(A::Path) => Attribute::Path,
        Ok(A::DestinationPort) => Attribute::DestinationPort,
        Ok(A::DestinationIp) => Attribute::DestinationIp,
        Ok(A::AuthAudience) => Attribute::AuthAudience,
        Ok(A::AuthPresenter) => Attribute::AuthPresenter,
        Ok(A::ConnectionSni) => Attribute::ConnectionSni,
        Ok(A::RequestHeader) => match HeaderName::try_from(condition.key.to_ascii_lowercase()) {
            Ok(name) => Attribute::RequestHeader(name),
            Err(_) => {
                problems.push(
                    format!("{path}.key"),
                    format!("{:?} is not a header name", condition.key),
                );
                return None;
            }
        },
        Ok(A::AuthClaim) => {
            if condition.claim_path.is_empty() {
                problems.push(format!("{path}.claimPath"), "a claim needs a name");
                return None;
            }
            Attribute::AuthClaim(condition.claim_path.clone())
        }
        Ok(A::Unspecified) | Err(_) => {
            problems.push(format!("{path}.attribute"), "unknown attribute");
            return None;
        }
    };
    let values = compile_values(
        &attribute,
        &condition.values,
        &format!("{path}.values"),
        problems,
    );
    let not_values = compile_values(
        &attribute,
        &condition.not_values,
        &format!("{path}.notValues"),
        problems,
    );
    Some(Condition {
        attribute,
        values,
        not_values,
    })
}

fn compile_values(
    attribute: &Attribute,
    values: &[String],
    path: &str,
    problems: &mut Problems,
) -> Vec<ValueMatch> {
    let mut out = Vec::with_capacity(values.len());
    for (i, value) in values.iter().enumerate() {
        let compiled = match attribute {
            Attribute::SourceIp | Attribute::RemoteIp | Attribute::DestinationIp => {
                parse_cidr(value).map(|(network, bits)| ValueMatch::Cidr { network, bits })
            }
            Attribute::DestinationPort => value
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .map(ValueMatch::Port),
            Attribute::Host => Some(ValueMatch::Text(Pattern::parse(value, true))),
            Attribute::Path => ValueMatch::path_template(value)
                .or_else(|| Some(ValueMatch::Text(Pattern::parse(value, false)))),
            _ => Some(ValueMatch::Text(Pattern::parse(value, false))),
        };
        match compiled {
            Some(matcher) => out.push(matcher),
            None => problems.push(
                format!("{path}[{i}]"),
                format!("{value:?} is not valid for {attribute:?}"),
            ),
        }
    }
    out
}

/// `10.0.0.0/8`, `::1/128`, or a bare address (a /32 or /128).
pub fn parse_cidr(value: &str) -> Option<(IpAddr, u8)> {
    match value.split_once('/') {
        Some((address, bits)) => {
            let address: IpAddr = address.parse().ok()?;
            if !bits.chars().all(|c| c.is_ascii_digit()) {
                return None;
            }
            let bits: u8 = bits.parse().ok()?;
            let max = if address.is_ipv4() { 32 } else { 128 };
            (bits <= max).then_some((address, bits))
        }
        None => {
            let address: IpAddr = value.parse().ok()?;
            Some((address, if address.is_ipv4() { 32 } else { 128 }))
        }
    }
}

fn compile_jwt_rule(rule: &pb::JwtRule, path: &str, problems: &mut Problems) -> Option<JwtRule> {
    if rule.issuer.is_empty() {
        problems.push(format!("{path}.issuer"), "required");
        return None;
    }
    let keys = if !rule.jwks.is_empty() {
        match crate::policy::jwt::KeySet::parse(&rule.jwks) {
            Ok(set) => KeySource::Inline(Arc::new(set)),
            Err(err) => {
                problems.push(format!("{path}.jwks"), err);
                return None;
            }
        }
    } else if !rule.jwks_uri.is_empty() {
        match rule.jwks_uri.parse::<http::Uri>() {
            Ok(uri) if uri.scheme_str() == Some("http") || uri.scheme_str() == Some("https") => {
                let timeout = super::snapshot::duration(
                    rule.jwks_fetch_timeout.as_ref(),
                    &format!("{path}.jwksFetchTimeout"),
                    problems,
                )
                .filter(|t| !t.is_zero())
                .unwrap_or(DEFAULT_FETCH_TIMEOUT);
                KeySource::Remote(RemoteJwks::shared(&rule.jwks_uri), timeout)
            }
            _ => {
                problems.push(
                    format!("{path}.jwksUri"),
                    format!("{:?} is not an http(s) URI", rule.jwks_uri),
                );
                return None;
            }
        }
    } else {
        problems.push(path, "needs jwks or jwksUri");
        return None;
    };
    let mut locations = Vec::new();
    for (i, header) in rule.from_headers.iter().enumerate() {
        match HeaderName::try_from(header.name.to_ascii_lowercase()) {
            Ok(name) => locations.push(Location::Header {
                name,
                prefix: header.prefix.clone(),
            }),
            Err(_) => problems.push(
                format!("{path}.fromHeaders[{i}].name"),
                format!("{:?} is not a header name", header.name),
            ),
        }
    }
    locations.extend(rule.from_params.iter().cloned().map(Location::Param));
    locations.extend(rule.from_cookies.iter().cloned().map(Location::Cookie));
    if locations.is_empty() {
        locations = Location::defaults();
    }
    let header = |name: &str, field: String, problems: &mut Problems| {
        HeaderName::try_from(name.to_ascii_lowercase())
            .map_err(|_| problems.push(field, format!("{name:?} is not a header name")))
            .ok()
    };
    let payload_header = (!rule.output_payload_to_header.is_empty())
        .then(|| {
            header(
                &rule.output_payload_to_header,
                format!("{path}.outputPayloadToHeader"),
                problems,
            )
        })
        .flatten();
    let mut claim_headers = Vec::new();
    for (i, claim) in rule.output_claim_to_headers.iter().enumerate() {
        if let Some(name) = header(
            &claim.header,
            format!("{path}.outputClaimToHeaders[{i}].header"),
            problems,
        ) {
            // Nested claims are written with dots, as Istio does here.
            let claim_path = claim.claim.split('.').map(str::to_string).collect();
            claim_headers.push((name, claim_path));
        }
    }
    Some(JwtRule {
        issuer: rule.issuer.clone(),
        audiences: rule.audiences.clone(),
        keys,
        locations,
        payload_header,
        forward_original_token: rule.forward_original_token,
        claim_headers,
        space_delimited_claims: rule.space_delimited_claims.clone(),
        policy: Arc::from(rule.policy.as_str()),
    })
}
