//! Authorization of inbound requests and connections (Istio's
//! AuthorizationPolicy), evaluated in Istio's order:
//!
//! 1. CUSTOM: a request or opaque connection a CUSTOM policy matches is
//!    checked by the policy's external authorizer
//!    ([`crate::policy::ext_authz`]); its denial is final, its approval
//!    goes on to DENY and ALLOW. A CUSTOM policy without a usable provider
//!    denies (fail closed, as Istio). On opaque TCP only a gRPC provider
//!    is asked (Envoy's network ext_authz filter); a policy with an HTTP
//!    provider is left out there, as Istio leaves it out of TCP filter
//!    chains.
//! 2. Any DENY policy matches → deny.
//! 3. No ALLOW policy → allow.
//! 4. Any ALLOW policy matches → allow; otherwise deny.
//!
//! AUDIT policies are evaluated and logged, never decide. Dry-run policies
//! (`istio.io/dry-run: "true"`) are evaluated as if enforced and the
//! outcome is logged when it would differ; the real decision ignores them.
//!
//! Opaque TCP has no HTTP attributes: a condition on one never matches in
//! an ALLOW (or AUDIT) policy and always matches in a DENY (or CUSTOM) one,
//! as in Istio, so DENY policies meant for HTTP should be scoped by port.
//!
//! A denied HTTP request gets 403 `RBAC: access denied`, with no response
//! flag (Envoy's RBAC filter sets none); the matched policy is named in the
//! proxy's log only, never to the caller. A denied connection is closed.

mod attributes;
mod inbound;

use std::sync::Arc;

use bytes::Bytes;
use http::{Response, StatusCode};

pub use self::attributes::{Attribute, Attributes, Condition, HttpAttributes, Pattern, ValueMatch};
pub use self::inbound::{Caller, Connection, Refusal, authorize_connection, authorize_request};
use crate::body::ProxyBody;
use crate::policy::ext_authz::{Protocol, Provider};
use crate::policy::jwt::Authenticator;

/// The body of a denied HTTP request, as Envoy writes it (clients and
/// scripts grep for it).
pub const DENIED_BODY: &str = "RBAC: access denied";

/// What guards one inbound port: JWT validation, then policies.
#[derive(Default)]
pub struct InboundGuard {
    pub policies: Policies,
    pub jwt: Option<Authenticator>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Allow,
    Deny,
    Audit,
    Custom,
}

impl Action {
    /// How a condition on an HTTP-only attribute counts on opaque TCP.
    fn http_only_matches(self) -> bool {
        matches!(self, Self::Deny | Self::Custom)
    }
}

pub struct Policy {
    /// "namespace/name".
    pub name: Arc<str>,
    pub action: Action,
    pub dry_run: bool,
    pub rules: Vec<Rule>,
    /// CUSTOM: the external authorizer to ask; None denies.
    pub provider: Option<Arc<Provider>>,
}

/// Matches when one of `from`, one of `to` and all of `when` match (an
/// empty list matches everything).
#[derive(Default)]
pub struct Rule {
    pub from: Vec<Vec<Condition>>,
    pub to: Vec<Vec<Condition>>,
    pub when: Vec<Condition>,
}

/// The policies of one port, grouped by action in evaluation order.
#[derive(Default)]
pub struct Policies {
    custom: Vec<Policy>,
    deny: Vec<Policy>,
    allow: Vec<Policy>,
    audit: Vec<Policy>,
    /// Whether any policy is dry-run (the shadow decision is worth computing).
    any_dry_run: bool,
}

/// The outcome for one request or connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// `policy`: the DENY or CUSTOM policy that matched; None when ALLOW
    /// policies exist and none matched.
    Deny {
        policy: Option<Arc<str>>,
    },
    /// A CUSTOM policy matched: its provider decides first.
    Ask {
        policy: Arc<str>,
        provider: Arc<Provider>,
    },
}

impl Decision {
    pub fn is_allow(&self) -> bool {
        *self == Self::Allow
    }

    /// Envoy's response-code detail, for logs.
    pub fn detail(&self) -> String {
        match self {
            Self::Allow => "allowed".to_string(),
            Self::Deny { policy: Some(name) } => {
                format!("rbac_access_denied_matched_policy[{name}]")
            }
            Self::Deny { policy: None } => "rbac_access_denied_matched_policy[none]".to_string(),
            Self::Ask { policy, provider } => {
                format!("ext_authz[{}] asked for policy {policy}", provider.name)
            }
        }
    }
}

impl Policies {
    pub fn new(policies: Vec<Policy>) -> Self {
        let mut out = Self::default();
        for policy in policies {
            out.any_dry_run |= policy.dry_run;
            match policy.action {
                Action::Allow => out.allow.push(policy),
                Action::Deny => out.deny.push(policy),
                Action::Audit => out.audit.push(policy),
                Action::Custom => out.custom.push(policy),
            }
        }
        out
    }

    pub fn is_empty(&self) -> bool {
        self.custom.is_empty()
            && self.deny.is_empty()
            && self.allow.is_empty()
            && self.audit.is_empty()
    }

    /// Decides, and logs what Istio users look for: denials with the policy,
    /// AUDIT matches, and dry-run policies that would change the outcome.
    /// `custom_asked`: the CUSTOM policies' authorizer already allowed the
    /// request (their match no longer decides).
    pub fn evaluate(&self, attrs: &Attributes<'_>, custom_asked: bool) -> Decision {
        let decision = self.decide(attrs, false, custom_asked);
        for policy in &self.audit {
            if policy.matches(attrs) {
                tracing::info!(policy = %policy.name, "AUDIT policy matched");
            }
        }
        if self.any_dry_run {
            let shadow = self.decide(attrs, true, custom_asked);
            if shadow != decision {
                tracing::info!(
                    real = %decision.detail(),
                    dry_run = %shadow.detail(),
                    "dry-run policies would change this decision (not enforced)"
                );
            }
        }
        if matches!(decision, Decision::Deny { .. }) {
            tracing::info!(detail = %decision.detail(), "request denied by authorization policy");
        }
        decision
    }

    /// The decision, counting dry-run policies as enforced when
    /// `with_dry_run`.
    fn decide(&self, attrs: &Attributes<'_>, with_dry_run: bool, custom_asked: bool) -> Decision {
        let counts = |p: &&Policy| with_dry_run || !p.dry_run;
        for policy in self.custom.iter().filter(counts) {
            if !policy.matches(attrs) {
                continue;
            }
            match &policy.provider {
                // Istio builds no network filter for a CUSTOM policy whose
                // provider is HTTP: on opaque TCP the policy does nothing.
                Some(provider) if attrs.http.is_none() && provider.protocol == Protocol::Http => {
                    continue;
                }
                Some(_) if custom_asked => continue,
                Some(provider) => {
                    return Decision::Ask {
                        policy: policy.name.clone(),
                        provider: provider.clone(),
                    };
                }
                None => {
                    return Decision::Deny {
                        policy: Some(policy.name.clone()),
                    };
                }
            }
        }
        for policy in self.deny.iter().filter(counts) {
            if policy.matches(attrs) {
                return Decision::Deny {
                    policy: Some(policy.name.clone()),
                };
            }
        }
        let mut allow = self.allow.iter().filter(counts).peekable();
        if allow.peek().is_none() {
            return Decision::Allow;
        }
        if allow.any(|policy| policy.matches(attrs)) {
            Decision::Allow
        } else {
            Decision::Deny { policy: None }
        }
    }
}

impl Policy {
    pub fn matches(&self, attrs: &Attributes<'_>) -> bool {
        let http_only = self.action.http_only_matches();
        self.rules.iter().any(|rule| rule.matches(attrs, http_only))
    }
}

impl Rule {
    fn matches(&self, attrs: &Attributes<'_>, http_only: bool) -> bool {
        let clause =
            |conditions: &Vec<Condition>| conditions.iter().all(|c| c.matches(attrs, http_only));
        (self.from.is_empty() || self.from.iter().any(clause))
            && (self.to.is_empty() || self.to.iter().any(clause))
            && clause(&self.when)
    }
}

/// 403 `RBAC: access denied`, without a response flag (see the module doc).
pub fn denied_response() -> Response<ProxyBody> {
    crate::reply::answer(
        StatusCode::FORBIDDEN,
        Bytes::from_static(DENIED_BODY.as_bytes()),
    )
}

#[cfg(test)]
mod tests;
