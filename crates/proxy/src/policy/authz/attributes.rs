//! Istio's request attributes as the proxy sees them, and the conditions
//! policies put on them (exact / prefix `abc*` / suffix `*abc` / presence
//! `*` strings, CIDRs, ports).

use std::net::{IpAddr, SocketAddr};

use http::{HeaderMap, HeaderName};

use crate::policy::jwt::Verified;

/// One attribute a condition reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attribute {
    SourcePrincipal,
    SourceNamespace,
    SourceTrustDomain,
    SourceIp,
    RemoteIp,
    RequestPrincipal,
    Host,
    Method,
    Path,
    DestinationPort,
    DestinationIp,
    RequestHeader(HeaderName),
    AuthAudience,
    AuthPresenter,
    /// Claim names from the top of the payload down.
    AuthClaim(Vec<String>),
    ConnectionSni,
}

impl Attribute {
    /// Attributes that exist only for HTTP requests.
    pub fn http_only(&self) -> bool {
        matches!(
            self,
            Self::RequestPrincipal
                | Self::Host
                | Self::Method
                | Self::Path
                | Self::RequestHeader(_)
                | Self::AuthAudience
                | Self::AuthPresenter
                | Self::AuthClaim(_)
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    Exact(String),
    Prefix(String),
    Suffix(String),
    /// `*`: any value, as long as there is one.
    Present,
}

impl Pattern {
    /// Istio's string syntax; hosts compare case-insensitively, so they are
    /// lower-cased here and at match time.
    pub fn parse(value: &str, lower: bool) -> Self {
        let value = if lower {
            value.to_ascii_lowercase()
        } else {
            value.to_string()
        };
        if value == "*" {
            Self::Present
        } else if let Some(prefix) = value.strip_suffix('*') {
            Self::Prefix(prefix.to_string())
        } else if let Some(suffix) = value.strip_prefix('*') {
            Self::Suffix(suffix.to_string())
        } else {
            Self::Exact(value)
        }
    }

    pub fn matches(&self, value: &str) -> bool {
        match self {
            Self::Exact(exact) => value == exact,
            Self::Prefix(prefix) => value.starts_with(prefix.as_str()),
            Self::Suffix(suffix) => value.ends_with(suffix.as_str()),
            Self::Present => !value.is_empty(),
        }
    }
}

#[derive(Debug, Clone)]
pub enum ValueMatch {
    Text(Pattern),
    /// A path template (`/a/{*}/b`, `/a/{**}`), as a whole-path regex.
    Template(regex::Regex),
    Cidr {
        network: IpAddr,
        bits: u8,
    },
    Port(u16),
}

impl ValueMatch {
    /// Istio's path templates: `{*}` is one path segment, `{**}` any
    /// number of them (Envoy's URI template syntax).
    pub fn path_template(template: &str) -> Option<Self> {
        if !template.contains("{*}") && !template.contains("{**}") {
            return None;
        }
        let mut pattern = String::from("^");
        let mut rest = template;
        while let Some(start) = rest.find('{') {
            pattern.push_str(&regex::escape(&rest[..start]));
            let tail = &rest[start..];
            if let Some(after) = tail.strip_prefix("{**}") {
                pattern.push_str(".*");
                rest = after;
            } else if let Some(after) = tail.strip_prefix("{*}") {
                pattern.push_str("[^/]+");
                rest = after;
            } else {
                pattern.push_str(&regex::escape("{"));
                rest = &tail[1..];
            }
        }
        pattern.push_str(&regex::escape(rest));
        pattern.push('$');
        regex::Regex::new(&pattern).ok().map(Self::Template)
    }

    fn matches(&self, value: &Value<'_>) -> bool {
        match (self, value) {
            (Self::Text(pattern), Value::Text(text)) => pattern.matches(text),
            (Self::Text(pattern), Value::Owned(text)) => pattern.matches(text),
            (Self::Template(regex), Value::Text(text)) => regex.is_match(text),
            (Self::Template(regex), Value::Owned(text)) => regex.is_match(text),
            (Self::Cidr { network, bits }, Value::Ip(ip)) => in_cidr(*ip, *network, *bits),
            (Self::Port(port), Value::Port(value)) => port == value,
            _ => false,
        }
    }
}

fn in_cidr(ip: IpAddr, network: IpAddr, bits: u8) -> bool {
    // An IPv4 peer on a dual-stack socket shows as ::ffff:a.b.c.d.
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    match (ip, network) {
        (IpAddr::V4(ip), IpAddr::V4(net)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
            u32::from(ip) & mask == u32::from(net) & mask
        }
        (IpAddr::V6(ip), IpAddr::V6(net)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
            u128::from(ip) & mask == u128::from(net) & mask
        }
        _ => false,
    }
}

/// The attribute's value matches one of `values` (when given) and none of
/// `not_values`. A missing attribute matches no value, so it fails
/// `values` and passes `not_values`.
#[derive(Debug, Clone)]
pub struct Condition {
    pub attribute: Attribute,
    pub values: Vec<ValueMatch>,
    pub not_values: Vec<ValueMatch>,
}

impl Condition {
    /// `http_only_matches`: the outcome of an HTTP-only condition on opaque
    /// TCP (see the module doc of `authz`).
    pub fn matches(&self, attrs: &Attributes<'_>, http_only_matches: bool) -> bool {
        if attrs.http.is_none() && self.attribute.http_only() {
            return http_only_matches;
        }
        let mut hit = self.values.is_empty();
        let mut excluded = false;
        attrs.values(
            &self.attribute,
            &mut Sink(&mut |value| {
                hit = hit || self.values.iter().any(|m| m.matches(&value));
                excluded = excluded || self.not_values.iter().any(|m| m.matches(&value));
            }),
        );
        hit && !excluded
    }
}

/// What is known about one request or connection.
pub struct Attributes<'a> {
    pub peer_ip: Option<IpAddr>,
    /// The original client (`remote.ip`), decided when the request entered
    /// the proxy; never read from a client's headers here.
    pub remote_ip: Option<IpAddr>,
    /// The caller's mTLS identity without `spiffe://`.
    pub principal: Option<&'a str>,
    /// The local address and port the caller reached.
    pub destination: Option<SocketAddr>,
    pub sni: Option<&'a str>,
    /// None for opaque TCP.
    pub http: Option<HttpAttributes<'a>>,
}

pub struct HttpAttributes<'a> {
    pub method: &'a str,
    /// Without the query, normalized (`http::normalize`).
    pub path: &'a str,
    /// `:authority` or `Host`, lower-cased.
    pub authority: Option<&'a str>,
    pub headers: &'a HeaderMap,
    /// The validated JWT, if the request carried one.
    pub auth: Option<&'a Verified>,
}

/// Hands each value of an attribute to the condition, without collecting.
struct Sink<'f, 'a>(&'f mut dyn FnMut(Value<'a>));

impl<'a> Sink<'_, 'a> {
    fn push(&mut self, value: Value<'a>) {
        (self.0)(value);
    }

    fn extend(&mut self, values: impl IntoIterator<Item = Value<'a>>) {
        for value in values {
            (self.0)(value);
        }
    }
}

enum Value<'a> {
    Text(&'a str),
    Owned(String),
    Ip(IpAddr),
    Port(u16),
}

impl<'a> Attributes<'a> {
    fn values(&self, attribute: &Attribute, out: &mut Sink<'_, 'a>) {
        let principal_part = |index: usize| {
            // "<trust-domain>/ns/<namespace>/sa/<account>"
            self.principal
                .and_then(|p| p.split('/').nth(index))
                .map(Value::Text)
        };
        match attribute {
            Attribute::SourcePrincipal => out.extend(self.principal.map(Value::Text)),
            Attribute::SourceTrustDomain => out.extend(principal_part(0)),
            Attribute::SourceNamespace => {
                if self
                    .principal
                    .is_some_and(|p| p.split('/').nth(1) == Some("ns"))
                {
                    out.extend(principal_part(2));
                }
            }
            Attribute::SourceIp => out.extend(self.peer_ip.map(Value::Ip)),
            Attribute::RemoteIp => out.extend(self.remote_ip.map(Value::Ip)),
            Attribute::DestinationPort => {
                out.extend(self.destination.map(|d| Value::Port(d.port())))
            }
            Attribute::DestinationIp => out.extend(self.destination.map(|d| Value::Ip(d.ip()))),
            Attribute::ConnectionSni => out.extend(self.sni.map(Value::Text)),
            _ => {
                if let Some(http) = &self.http {
                    http.values(attribute, out);
                }
            }
        }
    }
}

impl<'a> HttpAttributes<'a> {
    fn values(&self, attribute: &Attribute, out: &mut Sink<'_, 'a>) {
        match attribute {
            Attribute::Method => out.push(Value::Text(self.method)),
            Attribute::Path => out.push(Value::Text(self.path)),
            Attribute::Host => out.extend(self.authority.map(Value::Text)),
            Attribute::RequestHeader(name) => {
                // Several lines of one header are matched as one joined value,
                // as Envoy sees them.
                let lines: Vec<&str> = self
                    .headers
                    .get_all(name)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .collect();
                if !lines.is_empty() {
                    out.push(Value::Owned(lines.join(",")));
                }
            }
            Attribute::RequestPrincipal => {
                out.extend(self.auth.map(|a| Value::Text(a.principal.as_str())))
            }
            Attribute::AuthAudience => {
                if let Some(auth) = self.auth {
                    out.extend(auth.audiences.iter().map(|a| Value::Text(a.as_str())));
                }
            }
            Attribute::AuthPresenter => out.extend(
                self.auth
                    .and_then(|a| a.presenter.as_deref())
                    .map(Value::Text),
            ),
            Attribute::AuthClaim(path) => {
                if let Some(auth) = self.auth {
                    out.extend(auth.claim_values(path).into_iter().map(Value::Owned));
                }
            }
            _ => {}
        }
    }
}
