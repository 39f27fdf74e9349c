//! Request authentication with JWTs (Istio's RequestAuthentication).
//!
//! Contract, per request on a guarded inbound port:
//! - Tokens are looked for where each rule says (`fromHeaders`,
//!   `fromParams`, `fromCookies`), by default in `Authorization: Bearer <token>` and then
//!   the `access_token` query parameter.
//! - No token: the request goes on unauthenticated (an AuthorizationPolicy
//!   asking for `requestPrincipals` will deny it).
//! - A token found is verified against the rule of its issuer (signature
//!   with the rule's JWKS, RS256/384/512, PS*, ES256/384 and EdDSA as the
//!   keys allow; `exp`/`nbf` with 60 s of clock skew; audiences when the rule
//!   lists some). Any token that fails, or whose issuer no rule takes
//!   from where it was found, gets 401 with the reason in words.
//! - On success the token is removed from the request unless
//!   `forwardOriginalToken`; `outputPayloadToHeader` gets the payload
//!   (base64url, as in the token) and `outputClaimToHeaders` single claims.

mod jwks;

use std::sync::Arc;

use http::{HeaderName, HeaderValue, Uri};
use jsonwebtoken::Validation;
use jsonwebtoken::errors::ErrorKind;
use serde_json::Value;

pub use self::jwks::{DEFAULT_FETCH_TIMEOUT, KeySet, KeySource, RemoteJwks};
/// The JWT library, for tools and tests that mint tokens this proxy accepts.
pub use jsonwebtoken;

/// Envoy's default allowed clock skew.
const CLOCK_SKEW_SECS: u64 = 60;

/// The JWT rules of one inbound port.
pub struct Authenticator {
    pub rules: Vec<JwtRule>,
}

pub struct JwtRule {
    pub issuer: String,
    /// Empty: any audience.
    pub audiences: Vec<String>,
    pub keys: KeySource,
    pub locations: Vec<Location>,
    pub payload_header: Option<HeaderName>,
    pub forward_original_token: bool,
    pub claim_headers: Vec<(HeaderName, Vec<String>)>,
    /// Claims policies match word by word, besides `scope` and `permission`.
    pub space_delimited_claims: Vec<String>,
    /// "namespace/name" of the RequestAuthentication.
    pub policy: Arc<str>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Header { name: HeaderName, prefix: String },
    Param(String),
    Cookie(String),
}

impl Location {
    /// Istio's default places when a rule names none.
    pub fn defaults() -> Vec<Self> {
        vec![
            Self::Header {
                name: http::header::AUTHORIZATION,
                prefix: "Bearer ".to_string(),
            },
            Self::Param("access_token".to_string()),
        ]
    }
}

/// A validated token: what policies and headers can use.
#[derive(Debug, Clone)]
pub struct Verified {
    /// `<iss>/<sub>`.
    pub principal: String,
    pub audiences: Vec<String>,
    /// `azp`.
    pub presenter: Option<String>,
    pub claims: Value,
    /// Top-level claims whose string value is a space-separated list.
    space_delimited: Vec<String>,
}

/// Istio splits these claims on spaces for policies, whatever the rule says.
const SPACE_DELIMITED_CLAIMS: [&str; 2] = ["scope", "permission"];

impl Verified {
    fn new(claims: Value, rule: &JwtRule) -> Self {
        let text = |name: &str| claims.get(name).and_then(Value::as_str).unwrap_or_default();
        let principal = format!("{}/{}", text("iss"), text("sub"));
        let audiences = match claims.get("aud") {
            Some(Value::String(one)) => vec![one.clone()],
            Some(Value::Array(many)) => many
                .iter()
                .filter_map(|a| a.as_str().map(str::to_string))
                .collect(),
            _ => Vec::new(),
        };
        let presenter = claims
            .get("azp")
            .and_then(Value::as_str)
            .map(str::to_string);
        let space_delimited = SPACE_DELIMITED_CLAIMS
            .iter()
            .map(|c| c.to_string())
            .chain(rule.space_delimited_claims.iter().cloned())
            .collect();
        Self {
            principal,
            audiences,
            presenter,
            claims,
            space_delimited,
        }
    }

    /// A token with these claims, as if a rule without extra
    /// space-delimited claims had validated it (for tests elsewhere).
    #[cfg(test)]
    pub(crate) fn for_test(claims: Value) -> Self {
        Self {
            principal: String::new(),
            audiences: Vec::new(),
            presenter: None,
            claims,
            space_delimited: Vec::new(),
        }
    }

    /// [`claim_strings`](Self::claim_strings) as policies see them: a
    /// space-delimited claim (`scope`, `permission`, the rule's
    /// `spaceDelimitedClaims`) is one value per word.
    pub fn claim_values(&self, path: &[String]) -> Vec<String> {
        let values = self.claim_strings(path);
        match path {
            [name] if self.space_delimited.contains(name) => values
                .iter()
                .flat_map(|v| v.split_whitespace())
                .map(str::to_string)
                .collect(),
            _ => values,
        }
    }

    /// The claim at `path` (outermost name first), of any type.
    pub fn claim(&self, path: &[String]) -> Option<&Value> {
        path.iter()
            .try_fold(&self.claims, |value, name| value.get(name))
    }

    /// The claim at `path` as strings: a string, each string of a list, or
    /// a number or boolean written out. Nothing for objects or absence.
    pub fn claim_strings(&self, path: &[String]) -> Vec<String> {
        let Some(value) = self.claim(path) else {
            return Vec::new();
        };
        match value {
            Value::String(text) => vec![text.clone()],
            Value::Array(items) => items.iter().filter_map(scalar_text).collect(),
            other => scalar_text(other).into_iter().collect(),
        }
    }
}

fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        Value::Bool(flag) => Some(flag.to_string()),
        _ => None,
    }
}

/// Why a request's token was refused (the 401 body says it in words).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("Jwt is expired")]
    Expired,
    #[error("Jwt is not yet valid")]
    NotYetValid,
    #[error("Jwt verification fails: the signature matches no key of issuer {0:?}")]
    BadSignature(String),
    #[error("Jwt issuer {0:?} is not configured for this workload")]
    UnknownIssuer(String),
    #[error("Jwt audiences are not allowed")]
    Audience,
    #[error("Jwt verification fails: no key of issuer {0:?} fits (kid {1:?})")]
    NoKey(String, String),
    #[error("Jwt verification fails: the keys of issuer {0:?} are unavailable: {1}")]
    KeysUnavailable(String, String),
    #[error("Jwt is malformed: {0}")]
    Malformed(String),
}

/// A token found in the request and where.
struct Found {
    location: Location,
    token: String,
}

impl Authenticator {
    /// Removes the headers the rules write (`outputPayloadToHeader`,
    /// `outputClaimToHeaders`) from what the client sent, so that only a
    /// verified token fills them. A header some rule reads a token from is
    /// left for verification.
    pub fn strip_outputs(&self, headers: &mut http::HeaderMap) {
        let is_location = |name: &HeaderName| {
            self.rules.iter().any(|rule| {
                rule.locations
                    .iter()
                    .any(|l| matches!(l, Location::Header { name: n, .. } if n == name))
            })
        };
        for rule in &self.rules {
            let outputs = rule
                .payload_header
                .iter()
                .chain(rule.claim_headers.iter().map(|(name, _)| name));
            for name in outputs {
                if !is_location(name) {
                    headers.remove(name);
                }
            }
        }
    }

    /// Validates every token in the request; on success edits the request
    /// (token removal, payload and claim headers) and returns the first
    /// validated token, or None when the request carried none.
    pub async fn authenticate(
        &self,
        parts: &mut http::request::Parts,
    ) -> Result<Option<Verified>, JwtError> {
        let found = self.find_tokens(parts);
        let mut results = Vec::with_capacity(found.len());
        for token in &found {
            results.push(self.verify(token).await?);
        }
        for (token, (rule, verified)) in found.iter().zip(&results) {
            apply_outputs(&self.rules[*rule], token, verified, parts);
        }
        Ok(results.into_iter().next().map(|(_, verified)| verified))
    }

    fn find_tokens(&self, parts: &http::request::Parts) -> Vec<Found> {
        let mut found: Vec<Found> = Vec::new();
        for rule in &self.rules {
            for location in &rule.locations {
                let Some(token) = extract(location, parts) else {
                    continue;
                };
                // One token in one place is checked once, against the rule
                // of its issuer (chosen in `verify`).
                if !found
                    .iter()
                    .any(|f| f.token == token && f.location == *location)
                {
                    found.push(Found {
                        location: location.clone(),
                        token,
                    });
                }
            }
        }
        found
    }

    /// Picks the rule for the token's issuer among those that look where it
    /// was found, then checks the signature and claims.
    async fn verify(&self, found: &Found) -> Result<(usize, Verified), JwtError> {
        let unverified = jsonwebtoken::dangerous::insecure_decode::<Value>(&found.token)
            .map_err(|err| JwtError::Malformed(err.to_string()))?;
        let issuer = unverified
            .claims
            .get("iss")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let rule_index = self
            .rules
            .iter()
            .position(|rule| rule.issuer == issuer && rule.locations.contains(&found.location))
            .ok_or_else(|| JwtError::UnknownIssuer(issuer.clone()))?;
        let rule = &self.rules[rule_index];
        let header = unverified.header;
        let kid = header.kid.clone().unwrap_or_default();
        let set = rule
            .keys
            .keys_for(header.kid.as_deref())
            .await
            .map_err(|err| JwtError::KeysUnavailable(issuer.clone(), err))?;
        let mut keys = set.matching(header.kid.as_deref(), header.alg).peekable();
        if keys.peek().is_none() {
            return Err(JwtError::NoKey(issuer, kid));
        }
        let mut validation = Validation::new(header.alg);
        validation.leeway = CLOCK_SKEW_SECS;
        validation.set_issuer(&[&rule.issuer]);
        validation.set_required_spec_claims::<&str>(&[]);
        if rule.audiences.is_empty() {
            validation.validate_aud = false;
        } else {
            validation.set_audience(&rule.audiences);
        }
        validation.validate_nbf = true;
        let mut last = JwtError::BadSignature(issuer.clone());
        for key in keys {
            match jsonwebtoken::decode::<Value>(&found.token, key, &validation) {
                Ok(data) => return Ok((rule_index, Verified::new(data.claims, rule))),
                Err(err) => {
                    last = match err.kind() {
                        ErrorKind::ExpiredSignature => return Err(JwtError::Expired),
                        ErrorKind::ImmatureSignature => return Err(JwtError::NotYetValid),
                        ErrorKind::InvalidAudience => return Err(JwtError::Audience),
                        ErrorKind::InvalidIssuer => {
                            return Err(JwtError::UnknownIssuer(issuer));
                        }
                        ErrorKind::InvalidSignature
                        | ErrorKind::InvalidAlgorithm
                        | ErrorKind::InvalidEcdsaKey
                        | ErrorKind::InvalidRsaKey(_)
                        | ErrorKind::InvalidKeyFormat => JwtError::BadSignature(issuer.clone()),
                        other => JwtError::Malformed(format!("{other:?}")),
                    };
                }
            }
        }
        Err(last)
    }
}

fn extract(location: &Location, parts: &http::request::Parts) -> Option<String> {
    match location {
        Location::Header { name, prefix } => {
            let value = parts.headers.get(name)?.to_str().ok()?;
            let token = if prefix.is_empty() {
                value
            } else {
                // "Bearer" is matched case-insensitively, as RFC 6750 allows.
                let head = value.get(..prefix.len())?;
                if !head.eq_ignore_ascii_case(prefix) {
                    return None;
                }
                &value[prefix.len()..]
            };
            let token = token.trim();
            (!token.is_empty()).then(|| token.to_string())
        }
        Location::Param(name) => {
            let query = parts.uri.query()?;
            query.split('&').find_map(|pair| {
                let (key, value) = pair.split_once('=')?;
                (key == name && !value.is_empty()).then(|| value.to_string())
            })
        }
        Location::Cookie(name) => cookies(&parts.headers)
            .find_map(|(key, value)| (key == name && !value.is_empty()).then(|| value.to_string())),
    }
}

/// `(name, value)` of every cookie in the `Cookie` headers.
fn cookies(headers: &http::HeaderMap) -> impl Iterator<Item = (&str, &str)> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|line| line.split(';'))
        .filter_map(|pair| {
            let (key, value) = pair.trim().split_once('=')?;
            Some((key.trim(), value.trim()))
        })
}

/// Drops cookie `name`, keeping the others in one `Cookie` header.
fn remove_cookie(headers: &mut http::HeaderMap, name: &str) {
    let kept: Vec<String> = cookies(headers)
        .filter(|(key, _)| *key != name)
        .map(|(key, value)| format!("{key}={value}"))
        .collect();
    headers.remove(http::header::COOKIE);
    if let Some(value) = (!kept.is_empty())
        .then(|| kept.join("; "))
        .and_then(|v| HeaderValue::from_str(&v).ok())
    {
        headers.insert(http::header::COOKIE, value);
    }
}

/// Token removal and the output headers of one validated token.
fn apply_outputs(
    rule: &JwtRule,
    found: &Found,
    verified: &Verified,
    parts: &mut http::request::Parts,
) {
    if !rule.forward_original_token {
        match &found.location {
            Location::Header { name, .. } => {
                parts.headers.remove(name);
            }
            Location::Param(name) => remove_param(&mut parts.uri, name),
            Location::Cookie(name) => remove_cookie(&mut parts.headers, name),
        }
    }
    if let Some(header) = &rule.payload_header
        && let Some(payload) = found.token.split('.').nth(1)
        && let Ok(value) = HeaderValue::from_str(payload)
    {
        parts.headers.insert(header.clone(), value);
    }
    for (header, path) in &rule.claim_headers {
        let values = verified.claim_strings(path);
        if let Some(value) = (!values.is_empty())
            .then(|| values.join(","))
            .and_then(|v| HeaderValue::from_str(&v).ok())
        {
            parts.headers.insert(header.clone(), value);
        }
    }
}

fn remove_param(uri: &mut Uri, name: &str) {
    let Some(query) = uri.query() else {
        return;
    };
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| pair.split_once('=').map_or(*pair, |(key, _)| key) != name)
        .collect();
    let path = uri.path();
    let path_and_query = if kept.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{}", kept.join("&"))
    };
    let mut builder = Uri::builder();
    if let Some(scheme) = uri.scheme() {
        builder = builder.scheme(scheme.clone());
    }
    if let Some(authority) = uri.authority() {
        builder = builder.authority(authority.clone());
    }
    if let Ok(new) = builder.path_and_query(path_and_query).build() {
        *uri = new;
    }
}

#[cfg(test)]
mod tests;
