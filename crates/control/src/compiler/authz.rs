//! AuthorizationPolicy → proxy-shaped [`pb::AuthzPolicy`], and which
//! workloads each one applies to.
//!
//! Scope, as Istio: a policy in the root namespace (`istio-system`) without
//! a selector covers the whole mesh; with a selector, matching workloads
//! in every namespace. Elsewhere it covers its namespace, narrowed by the
//! selector. `targetRef(s)` names Gateway API gateways, which Weft does not
//! run yet: such a policy applies to nothing and is reported.
//!
//! What cannot be translated (an unsupported `when` key, a bad address) is
//! reported naming the resource and field, and fails closed: the rule is
//! left out of an ALLOW or AUDIT policy (it allows nothing) and becomes
//! match-all in a DENY or CUSTOM policy (it denies everything it covers).

use std::collections::BTreeMap;

use weft_api::Object;
use weft_api::security::AuthorizationPolicy;
use weft_api::security::authorization_policy::{Action, Condition, Operation, Rule, Source};
use weft_proto::proxy::v1 as pb;

use crate::registry::{RootNamespace, labels_match, namespace_or_default};

const DRY_RUN_ANNOTATION: &str = "istio.io/dry-run";

/// Where a security resource applies.
#[derive(Debug, Clone)]
pub(super) struct PolicyScope {
    namespace: String,
    selector: Option<BTreeMap<String, String>>,
    /// targetRef(s) set: applies to no sidecar.
    gateways_only: bool,
    /// MeshConfig `rootNamespace`.
    root: RootNamespace,
}

impl PolicyScope {
    pub(super) fn new(
        namespace: &str,
        selector: Option<&BTreeMap<String, String>>,
        has_target_ref: bool,
    ) -> Self {
        Self {
            namespace: namespace_or_default(namespace).to_string(),
            selector: selector.cloned(),
            gateways_only: has_target_ref,
            root: RootNamespace::default(),
        }
    }

    /// Under MeshConfig's `rootNamespace`.
    pub(super) fn set_root(&mut self, root: &str) {
        self.root = RootNamespace::new(root);
    }

    pub(super) fn applies(&self, namespace: &str, labels: &BTreeMap<String, String>) -> bool {
        if self.gateways_only {
            return false;
        }
        let namespace_ok = self.namespace == self.root.as_str() || self.namespace == namespace;
        namespace_ok
            && self
                .selector
                .as_ref()
                .is_none_or(|s| labels_match(s, labels))
    }
}

/// Every AuthorizationPolicy, compiled once per mesh change.
#[derive(Debug, Default)]
pub(super) struct AuthzPolicies(Vec<(PolicyScope, pb::AuthzPolicy)>);

impl AuthzPolicies {
    pub(super) fn build<'a>(
        objects: impl Iterator<Item = &'a Object<AuthorizationPolicy>>,
        warnings: &mut Vec<String>,
    ) -> Self {
        let mut out: Vec<(PolicyScope, pb::AuthzPolicy)> = objects
            .map(|object| {
                let spec = &object.spec;
                let scope = PolicyScope::new(
                    &object.metadata.namespace,
                    spec.selector.as_ref().map(|s| &s.match_labels),
                    spec.target_ref.is_some() || !spec.target_refs.is_empty(),
                );
                let name = object.metadata.key();
                if scope.gateways_only {
                    warnings.push(format!(
                        "AuthorizationPolicy {name}: spec.targetRef: gateways named by targetRef \
                         are not supported yet; this policy applies to nothing"
                    ));
                }
                (scope, compile(object, &name, warnings))
            })
            .collect();
        out.sort_by(|a, b| a.1.name.cmp(&b.1.name));
        Self(out)
    }

    /// Policies in `root` apply mesh-wide (MeshConfig `rootNamespace`).
    pub(super) fn with_root(mut self, root: &str) -> Self {
        for (scope, _) in &mut self.0 {
            scope.set_root(root);
        }
        self
    }

    /// Every policy, in name order.
    pub(super) fn policies(&self) -> impl Iterator<Item = &pb::AuthzPolicy> {
        self.0.iter().map(|(_, policy)| policy)
    }

    /// The policies of a workload in `namespace` with `labels`.
    pub(super) fn for_workload(
        &self,
        namespace: &str,
        labels: &BTreeMap<String, String>,
    ) -> Vec<pb::AuthzPolicy> {
        self.0
            .iter()
            .filter(|(scope, _)| scope.applies(namespace, labels))
            .map(|(_, policy)| policy.clone())
            .collect()
    }
}

fn compile(
    object: &Object<AuthorizationPolicy>,
    name: &str,
    warnings: &mut Vec<String>,
) -> pb::AuthzPolicy {
    let spec = &object.spec;
    let action = match spec.action {
        Action::Allow => pb::AuthzAction::Allow,
        Action::Deny => pb::AuthzAction::Deny,
        Action::Audit => pb::AuthzAction::Audit,
        // The provider is resolved per proxy (`ext_authz`), which warns
        // when it cannot be used.
        Action::Custom => pb::AuthzAction::Custom,
    };
    let fail_closed = matches!(spec.action, Action::Deny | Action::Custom);
    let namespace = namespace_or_default(&object.metadata.namespace);
    let mut rules = Vec::with_capacity(spec.rules.len());
    for (i, rule) in spec.rules.iter().enumerate() {
        let path = format!("spec.rules[{i}]");
        match compile_rule(rule, namespace, &path) {
            Ok(rule) => rules.push(rule),
            Err(problem) if fail_closed => {
                warnings.push(format!(
                    "AuthorizationPolicy {name}: {problem}; the rule matches every request instead \
                     (fail closed)"
                ));
                rules.push(pb::AuthzRule::default());
            }
            Err(problem) => warnings.push(format!(
                "AuthorizationPolicy {name}: {problem}; the rule is left out (it allows nothing)"
            )),
        }
    }
    pb::AuthzPolicy {
        name: name.to_string(),
        action: action as i32,
        dry_run: object
            .metadata
            .annotations
            .get(DRY_RUN_ANNOTATION)
            .is_some_and(|v| v.eq_ignore_ascii_case("true")),
        rules,
        provider: match spec.action {
            Action::Custom => spec.provider.as_ref().map_or("", |p| &p.name).to_string(),
            _ => String::new(),
        },
    }
}

/// One rule, or the first problem found as "field: message".
fn compile_rule(rule: &Rule, namespace: &str, path: &str) -> Result<pb::AuthzRule, String> {
    let from = rule
        .from
        .iter()
        .filter_map(|entry| entry.source.as_ref())
        .map(|source| source_clause(source, namespace))
        .collect();
    let to = rule
        .to
        .iter()
        .filter_map(|entry| entry.operation.as_ref())
        .map(operation_clause)
        .collect();
    let mut when = Vec::with_capacity(rule.when.len());
    for (i, condition) in rule.when.iter().enumerate() {
        when.push(when_condition(condition, &format!("{path}.when[{i}]"))?);
    }
    Ok(pb::AuthzRule {
        from,
        to,
        when: (!when.is_empty()).then_some(pb::AuthzClause { conditions: when }),
    })
}

fn condition(
    attribute: pb::AuthzAttribute,
    values: &[String],
    not_values: &[String],
) -> Option<pb::AuthzCondition> {
    (!values.is_empty() || !not_values.is_empty()).then(|| pb::AuthzCondition {
        attribute: attribute as i32,
        key: String::new(),
        values: values.to_vec(),
        not_values: not_values.to_vec(),
        claim_path: Vec::new(),
    })
}

fn source_clause(source: &Source, namespace: &str) -> pb::AuthzClause {
    use pb::AuthzAttribute as A;
    // Addresses and ports were checked by weft-api when the resource was
    // decoded (every stored resource is).
    // serviceAccounts name a principal in any trust domain.
    let account = |sa: &String| match sa.split_once('/') {
        Some((ns, name)) => format!("*/ns/{ns}/sa/{name}"),
        None => format!("*/ns/{namespace}/sa/{sa}"),
    };
    let accounts: Vec<String> = source.service_accounts.iter().map(account).collect();
    let not_accounts: Vec<String> = source.not_service_accounts.iter().map(account).collect();
    let conditions = [
        condition(
            A::SourcePrincipal,
            &source.principals,
            &source.not_principals,
        ),
        condition(A::SourcePrincipal, &accounts, &not_accounts),
        condition(
            A::RequestPrincipal,
            &source.request_principals,
            &source.not_request_principals,
        ),
        condition(
            A::SourceNamespace,
            &source.namespaces,
            &source.not_namespaces,
        ),
        condition(A::SourceIp, &source.ip_blocks, &source.not_ip_blocks),
        condition(
            A::RemoteIp,
            &source.remote_ip_blocks,
            &source.not_remote_ip_blocks,
        ),
        condition(
            A::SourceTrustDomain,
            &source.trust_domains,
            &source.not_trust_domains,
        ),
    ];
    pb::AuthzClause {
        conditions: conditions.into_iter().flatten().collect(),
    }
}

fn operation_clause(operation: &Operation) -> pb::AuthzClause {
    use pb::AuthzAttribute as A;
    let conditions = [
        condition(A::Host, &operation.hosts, &operation.not_hosts),
        condition(A::DestinationPort, &operation.ports, &operation.not_ports),
        condition(A::Method, &operation.methods, &operation.not_methods),
        condition(A::Path, &operation.paths, &operation.not_paths),
    ];
    pb::AuthzClause {
        conditions: conditions.into_iter().flatten().collect(),
    }
}

/// `when` keys Weft evaluates; anything else is refused by name.
fn when_condition(condition: &Condition, path: &str) -> Result<pb::AuthzCondition, String> {
    use pb::AuthzAttribute as A;
    let key = condition.key.as_str();
    let mut out = pb::AuthzCondition {
        attribute: 0,
        key: String::new(),
        values: condition.values.clone(),
        not_values: condition.not_values.clone(),
        claim_path: Vec::new(),
    };
    let attribute = if let Some(name) = bracketed(key, "request.headers") {
        if http::HeaderName::try_from(name.to_ascii_lowercase()).is_err() {
            return Err(format!("{path}.key: {name:?} is not a header name"));
        }
        out.key = name.to_ascii_lowercase();
        A::RequestHeader
    } else if let Some(rest) = key.strip_prefix("request.auth.claims") {
        out.claim_path = claim_path(rest)
            .ok_or_else(|| format!("{path}.key: {key:?} is not request.auth.claims[name]..."))?;
        A::AuthClaim
    } else {
        match key {
            "source.ip" => A::SourceIp,
            "remote.ip" => A::RemoteIp,
            "source.namespace" => A::SourceNamespace,
            "source.principal" => A::SourcePrincipal,
            "source.trustDomain" => A::SourceTrustDomain,
            "request.auth.principal" => A::RequestPrincipal,
            "request.auth.audiences" => A::AuthAudience,
            "request.auth.presenter" => A::AuthPresenter,
            "destination.ip" => A::DestinationIp,
            "destination.port" => A::DestinationPort,
            "connection.sni" => A::ConnectionSni,
            other if other.starts_with("experimental.envoy.filters.") => {
                return Err(format!(
                    "{path}.key: {other:?} reads Envoy filter metadata, which Weft does not have"
                ));
            }
            other => {
                return Err(format!(
                    "{path}.key: {other:?} is not a supported attribute"
                ));
            }
        }
    };
    out.attribute = attribute as i32;
    Ok(out)
}

/// `prefix[name]` → `name`.
fn bracketed<'a>(key: &'a str, prefix: &str) -> Option<&'a str> {
    let inner = key
        .strip_prefix(prefix)?
        .strip_prefix('[')?
        .strip_suffix(']')?;
    (!inner.is_empty() && !inner.contains(['[', ']'])).then_some(inner)
}

/// `[a][b]` → `["a", "b"]`.
fn claim_path(mut rest: &str) -> Option<Vec<String>> {
    let mut path = Vec::new();
    while !rest.is_empty() {
        let inner = rest.strip_prefix('[')?;
        let end = inner.find(']')?;
        if end == 0 {
            return None;
        }
        path.push(inner[..end].to_string());
        rest = &inner[end + 1..];
    }
    (!path.is_empty()).then_some(path)
}
