//! RateLimit (`weft.io/v1alpha1`): Weft's own resource for what Istio users
//! write as EnvoyFilters patching in Envoy's `local_ratelimit` and
//! `ratelimit` filters. One resource says which proxies (sidecars, on their
//! inbound side, and gateways), which requests (routes, hosts, paths,
//! methods, ports), a per-proxy token bucket and/or descriptors for a
//! global rate-limit service speaking Envoy's API. See
//! `docs/rate-limiting.md`.
//!
//! ```yaml
//! apiVersion: weft.io/v1alpha1
//! kind: RateLimit
//! metadata: {name: productpage, namespace: bookinfo}
//! spec:
//!   selector: {matchLabels: {app: productpage}}
//!   service: {host: ratelimit.infra.svc.cluster.local, port: 8081, domain: bookinfo}
//!   limits:
//!   - match: {paths: [{prefix: /api}]}
//!     local: {maxTokens: 100, tokensPerFill: 100, fillInterval: 1s}
//!     descriptors:
//!     - entries: [{requestHeader: {header: x-user-id, key: user}}]
//! ```

use serde::{Deserialize, Serialize};

use crate::common::WorkloadSelector;
use crate::field::{FieldErrors, parse_duration};
use crate::meta::ObjectMeta;
use crate::resource::{Group, Spec};

/// Envoy's smallest token-bucket fill interval.
const MIN_FILL_INTERVAL: std::time::Duration = std::time::Duration::from_millis(50);

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimit {
    /// Sidecars and gateways of the resource's namespace with these labels;
    /// without it, every one of the namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    /// The global rate-limit service; required when a limit has
    /// descriptors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<RateLimitService>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub limits: Vec<Limit>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimitService {
    /// A mesh service host (short names are taken in the resource's
    /// namespace).
    #[serde(default)]
    pub host: String,
    #[serde(default)]
    pub port: u32,
    /// The rate-limit service's `domain`.
    #[serde(default)]
    pub domain: String,
    /// Default 20ms (Envoy's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// On a failed or late answer: false (default) lets requests through,
    /// true answers 500.
    #[serde(default)]
    pub failure_mode_deny: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Limit {
    /// Which requests; omitted: all.
    #[serde(default, rename = "match", skip_serializing_if = "Option::is_none")]
    pub match_: Option<LimitMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<LocalLimit>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub descriptors: Vec<Descriptor>,
}

/// Every non-empty field must match.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LimitMatch {
    /// VirtualService `http[].name`s.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<String>,
    /// Request hosts, exact or `*.suffix`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<PathMatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    /// Workload (inbound) or gateway ports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PathMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
}

/// Envoy's token bucket, per proxy.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalLimit {
    #[serde(default)]
    pub max_tokens: u32,
    /// Default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_fill: Option<u32>,
    #[serde(default)]
    pub fill_interval: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Descriptor {
    #[serde(default)]
    pub entries: Vec<DescriptorEntry>,
}

/// Exactly one source per entry.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DescriptorEntry {
    /// A literal value (Envoy's `generic_key`; key default `generic_key`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generic_key: Option<GenericKey>,
    /// A request header's value (Envoy's `request_headers`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_header: Option<RequestHeader>,
    /// The path without query (key default `path`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<KeyOnly>,
    /// Key default `method`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<KeyOnly>,
    /// The client IP (Envoy's `remote_address`, its default key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_address: Option<KeyOnly>,
    /// The client's mTLS identity (key default `source_principal`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_principal: Option<KeyOnly>,
    /// The destination service host (key default `destination_service`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_service: Option<KeyOnly>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GenericKey {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default)]
    pub value: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequestHeader {
    #[serde(default)]
    pub header: String,
    /// The descriptor key.
    #[serde(default)]
    pub key: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KeyOnly {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// Where an entry's value comes from, once validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntrySource<'a> {
    Literal(&'a str),
    Header(&'a str),
    Path,
    Method,
    SourceAddress,
    SourcePrincipal,
    DestinationService,
}

impl DescriptorEntry {
    /// The sources set, with the key each gives (its default when unset).
    pub fn sources(&self) -> Vec<(String, EntrySource<'_>)> {
        let key = |k: &Option<KeyOnly>, default: &str| {
            k.as_ref()
                .map(|k| k.key.clone().unwrap_or_else(|| default.to_string()))
        };
        let mut out = Vec::new();
        if let Some(g) = &self.generic_key {
            let key = g.key.clone().unwrap_or_else(|| "generic_key".into());
            out.push((key, EntrySource::Literal(&g.value)));
        }
        if let Some(h) = &self.request_header {
            out.push((h.key.clone(), EntrySource::Header(&h.header)));
        }
        let simple = [
            (key(&self.path, "path"), EntrySource::Path),
            (key(&self.method, "method"), EntrySource::Method),
            (
                key(&self.source_address, "remote_address"),
                EntrySource::SourceAddress,
            ),
            (
                key(&self.source_principal, "source_principal"),
                EntrySource::SourcePrincipal,
            ),
            (
                key(&self.destination_service, "destination_service"),
                EntrySource::DestinationService,
            ),
        ];
        out.extend(
            simple
                .into_iter()
                .filter_map(|(key, source)| Some((key?, source))),
        );
        out
    }
}

impl Spec for RateLimit {
    const KIND: &'static str = "RateLimit";
    const GROUP: Group = Group::Weft;

    fn validate(&self, _meta: &ObjectMeta, errors: &mut FieldErrors) {
        if let Some(selector) = &self.selector {
            selector.validate("spec.selector", errors);
        }
        if let Some(service) = &self.service {
            if service.host.is_empty() {
                errors.push("spec.service.host", "Required value");
            }
            errors.check_port("spec.service.port", service.port);
            if service.domain.is_empty() {
                errors.push("spec.service.domain", "Required value");
            }
            if let Some(timeout) = &service.timeout {
                errors.check_duration(
                    "spec.service.timeout",
                    timeout,
                    Some(std::time::Duration::from_millis(1)),
                );
            }
        }
        if self.limits.is_empty() {
            errors.push("spec.limits", "at least one limit is required");
        }
        for (index, limit) in self.limits.iter().enumerate() {
            validate_limit(limit, &format!("spec.limits[{index}]"), self, errors);
        }
    }
}

fn validate_limit(limit: &Limit, path: &str, spec: &RateLimit, errors: &mut FieldErrors) {
    if limit.local.is_none() && limit.descriptors.is_empty() {
        errors.push(path, "a limit needs `local`, `descriptors` or both");
    }
    if let Some(m) = &limit.match_ {
        for (index, p) in m.paths.iter().enumerate() {
            let p_path = format!("{path}.match.paths[{index}]");
            match (&p.exact, &p.prefix) {
                (Some(value), None) | (None, Some(value)) if value.starts_with('/') => {}
                (Some(_), None) | (None, Some(_)) => {
                    errors.push(p_path, "a path must start with '/'")
                }
                _ => errors.push(p_path, "exactly one of `exact` or `prefix` is required"),
            }
        }
        for (index, method) in m.methods.iter().enumerate() {
            if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
                errors.push(
                    format!("{path}.match.methods[{index}]"),
                    "must be an upper-case HTTP method (GET, POST, ...)",
                );
            }
        }
        for (index, port) in m.ports.iter().enumerate() {
            errors.check_port(format!("{path}.match.ports[{index}]"), *port);
        }
        for (index, host) in m.hosts.iter().enumerate() {
            if host.is_empty() || host.contains(':') || host.chars().skip(1).any(|c| c == '*') {
                errors.push(
                    format!("{path}.match.hosts[{index}]"),
                    "must be a host name without port, optionally starting with `*`",
                );
            }
        }
    }
    if let Some(local) = &limit.local {
        if local.max_tokens == 0 {
            errors.push(format!("{path}.local.maxTokens"), "must be at least 1");
        }
        if local.tokens_per_fill == Some(0) {
            errors.push(format!("{path}.local.tokensPerFill"), "must be at least 1");
        }
        if local.fill_interval.is_empty() {
            errors.push(format!("{path}.local.fillInterval"), "Required value");
        } else {
            errors.check_duration(
                format!("{path}.local.fillInterval"),
                &local.fill_interval,
                Some(MIN_FILL_INTERVAL),
            );
        }
    }
    if !limit.descriptors.is_empty() && spec.service.is_none() {
        errors.push(
            format!("{path}.descriptors"),
            "descriptors are sent to the global rate-limit service: spec.service is required",
        );
    }
    for (d, descriptor) in limit.descriptors.iter().enumerate() {
        let d_path = format!("{path}.descriptors[{d}]");
        if descriptor.entries.is_empty() {
            errors.push(
                format!("{d_path}.entries"),
                "at least one entry is required",
            );
        }
        for (e, entry) in descriptor.entries.iter().enumerate() {
            let e_path = format!("{d_path}.entries[{e}]");
            let sources = entry.sources();
            if sources.len() != 1 {
                errors.push(
                    e_path.clone(),
                    "exactly one of genericKey, requestHeader, path, method, sourceAddress, sourcePrincipal, destinationService is required",
                );
                continue;
            }
            let (key, source) = &sources[0];
            if key.is_empty() {
                errors.push(format!("{e_path}.key"), "Required value");
            }
            match source {
                EntrySource::Header(h) if !is_header_name(h) => errors.push(
                    format!("{e_path}.requestHeader.header"),
                    "must be a lower-case HTTP header name",
                ),
                EntrySource::Literal("") => {
                    errors.push(format!("{e_path}.genericKey.value"), "Required value")
                }
                _ => {}
            }
        }
    }
}

fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
}

/// The parsed `fillInterval` / `timeout` (validation has checked them).
pub fn duration(value: &str) -> Option<std::time::Duration> {
    parse_duration(value)
}

#[cfg(test)]
mod tests {
    use crate::decode::decode_str;

    const GOOD: &str = "apiVersion: weft.io/v1alpha1\nkind: RateLimit\nmetadata: {name: rl, namespace: shop}\nspec:\n  selector: {matchLabels: {app: web}}\n  service: {host: ratelimit, port: 8081, domain: shop}\n  limits:\n  - match: {routes: [api], paths: [{prefix: /api}], methods: [GET]}\n    local: {maxTokens: 10, tokensPerFill: 5, fillInterval: 1s}\n    descriptors:\n    - entries: [{genericKey: {value: api}}, {requestHeader: {header: x-user, key: user}}, {sourceAddress: {}}]\n";

    #[test]
    fn a_rate_limit_decodes() {
        let decoded = decode_str(GOOD, "rl.yaml");
        assert!(decoded.problems.is_empty(), "{:?}", decoded.problems);
        assert_eq!(decoded.resources[0].kind(), "RateLimit");
    }

    #[test]
    fn problems_name_their_fields() {
        let bad = GOOD
            .replace("fillInterval: 1s", "fillInterval: 10ms")
            .replace("port: 8081", "port: 0")
            .replace("{sourceAddress: {}}", "{sourceAddress: {}, method: {}}")
            .replace("header: x-user", "header: X User");
        let decoded = decode_str(&bad, "rl.yaml");
        let text: Vec<String> = decoded.problems.iter().map(|p| p.to_string()).collect();
        let all = text.join("\n");
        for field in [
            "spec.limits[0].local.fillInterval",
            "spec.service.port",
            "spec.limits[0].descriptors[0].entries[2]",
            "spec.limits[0].descriptors[0].entries[1].requestHeader.header",
        ] {
            assert!(all.contains(field), "{field} not in {all}");
        }
        let no_service = GOOD.replace(
            "  service: {host: ratelimit, port: 8081, domain: shop}\n",
            "",
        );
        let decoded = decode_str(&no_service, "rl.yaml");
        assert!(
            decoded.problems[0]
                .to_string()
                .contains("spec.limits[0].descriptors: descriptors are sent"),
            "{:?}",
            decoded.problems
        );
        let unknown = GOOD.replace("maxTokens: 10", "maxTokens: 10, burst: 3");
        let decoded = decode_str(&unknown, "rl.yaml");
        assert!(
            decoded.problems[0].to_string().contains("burst"),
            "{:?}",
            decoded.problems
        );
    }
}

#[cfg(test)]
mod envoy_filter_tests {
    use crate::decode::decode_str;

    #[test]
    fn a_rate_limit_envoy_filter_is_skipped_with_a_pointer_to_rate_limit() {
        let yaml = "apiVersion: networking.istio.io/v1alpha3\nkind: EnvoyFilter\nmetadata: {name: rl, namespace: shop}\nspec:\n  configPatches:\n  - applyTo: HTTP_FILTER\n    patch:\n      operation: INSERT_BEFORE\n      value: {name: envoy.filters.http.local_ratelimit}\n";
        let decoded = decode_str(yaml, "rl.yaml");
        assert!(decoded.problems.is_empty(), "{:?}", decoded.problems);
        assert!(
            decoded.notices[0].contains("write a RateLimit (weft.io/v1alpha1"),
            "{:?}",
            decoded.notices
        );
        let other = yaml.replace("local_ratelimit", "lua");
        let decoded = decode_str(&other, "rl.yaml");
        assert!(
            !decoded.notices[0].contains("RateLimit"),
            "{:?}",
            decoded.notices
        );
    }
}
