//! VirtualService `http[]` routes: matches, destinations, rewrites, retries,
//! faults, mirroring and CORS.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::types::{Destination, Headers, ONE_MS, Percent, StringMatch, check_percent};
use crate::field::FieldErrors;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRoute {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, rename = "match", skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<HttpMatchRequest>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub route: Vec<HttpRouteDestination>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect: Option<HttpRedirect>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direct_response: Option<HttpDirectResponse>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delegate: Option<Delegate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<HttpRewrite>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub timeout: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<HttpRetry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<HttpFaultInjection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<Destination>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mirrors: Vec<HttpMirrorPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror_percentage: Option<Percent>,
    /// Deprecated integer form of `mirrorPercentage`; Istio also reads `mirror_percent`.
    #[serde(
        default,
        alias = "mirror_percent",
        skip_serializing_if = "Option::is_none"
    )]
    pub mirror_percent: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors_policy: Option<CorsPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<Headers>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpMatchRequest {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<StringMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<StringMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<StringMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<StringMatch>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, StringMatch>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub without_headers: BTreeMap<String, StringMatch>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub query_params: BTreeMap<String, StringMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignore_uri_case: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub source_labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source_namespace: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub stat_prefix: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRouteDestination {
    #[serde(default)]
    pub destination: Destination,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<Headers>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RedirectPortSelection {
    FromProtocolDefault,
    FromRequestPort,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRedirect {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uri: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub authority: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub derive_port: Option<RedirectPortSelection>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub scheme: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect_code: Option<u32>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub prefix_rewrite: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpDirectResponse {
    #[serde(default)]
    pub status: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<HttpBody>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpBody {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub string: Option<String>,
    /// Base64, as protobuf JSON encodes bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Delegate {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRewrite {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uri: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub authority: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri_regex_rewrite: Option<RegexRewrite>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegexRewrite {
    #[serde(default, rename = "match")]
    pub pattern: String,
    #[serde(default)]
    pub rewrite: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRetry {
    #[serde(default)]
    pub attempts: i32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub per_try_timeout: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub retry_on: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_remote_localities: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_ignore_previous_hosts: Option<bool>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub backoff: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpFaultInjection {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<FaultDelay>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort: Option<FaultAbort>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultDelay {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub fixed_delay: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub exponential_delay: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percentage: Option<Percent>,
    /// Deprecated integer form of `percentage`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<i32>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultAbort {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc_status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http2_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percentage: Option<Percent>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpMirrorPolicy {
    #[serde(default)]
    pub destination: Destination,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percentage: Option<Percent>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum UnmatchedPreflights {
    Unspecified,
    Forward,
    Ignore,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CorsPolicy {
    /// Deprecated exact-match list; `allowOrigins` replaces it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_origin: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_origins: Vec<StringMatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_methods: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_headers: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expose_headers: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub max_age: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_credentials: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unmatched_preflights: Option<UnmatchedPreflights>,
}

/// Envoy `x-envoy-retry-on` and `x-envoy-retry-grpc-on` policies.
const RETRY_ON: &[&str] = &[
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "envoy-ratelimited",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "retriable-headers",
    "http3-post-connect-failure",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

impl HttpRoute {
    pub(crate) fn validate(&self, path: &str, errors: &mut FieldErrors) {
        let actions = [
            !self.route.is_empty(),
            self.redirect.is_some(),
            self.direct_response.is_some(),
            self.delegate.is_some(),
        ];
        match actions.iter().filter(|a| **a).count() {
            0 => errors.push(
                path,
                "HTTP route, redirect, direct response or delegate is required",
            ),
            1 => {}
            _ => errors.push(
                path,
                "only one of route, redirect, directResponse or delegate may be set",
            ),
        }
        if self.rewrite.is_some() && self.redirect.is_some() {
            errors.push(
                path,
                "HTTP route rule cannot contain both rewrite and redirect",
            );
        }
        for (i, m) in self.matches.iter().enumerate() {
            m.validate(&format!("{path}.match[{i}]"), errors);
        }
        for (i, route) in self.route.iter().enumerate() {
            let path = format!("{path}.route[{i}]");
            route
                .destination
                .validate(&format!("{path}.destination"), errors);
            if route.weight.is_some_and(|w| !(0..=100).contains(&w)) {
                errors.push(format!("{path}.weight"), "must be 0..100");
            }
            if let Some(headers) = &route.headers {
                headers.validate(&format!("{path}.headers"), errors);
            }
        }
        if let Some(redirect) = &self.redirect {
            let path = format!("{path}.redirect");
            if redirect.uri.is_empty()
                && redirect.authority.is_empty()
                && redirect.scheme.is_empty()
                && redirect.port.is_none()
                && redirect.derive_port.is_none()
                && redirect.prefix_rewrite.is_empty()
            {
                errors.push(
                    &path,
                    "redirect must specify URI, authority, scheme, or port",
                );
            }
            if redirect.port.is_some() && redirect.derive_port.is_some() {
                errors.push(&path, "only one of port or derivePort may be set");
            }
            if let Some(port) = redirect.port {
                errors.check_port(format!("{path}.port"), port);
            }
            if redirect
                .redirect_code
                .is_some_and(|c| !(300..=399).contains(&c))
            {
                errors.push(format!("{path}.redirectCode"), "redirect code must be 3xx");
            }
        }
        if let Some(response) = &self.direct_response {
            if !(200..=599).contains(&response.status) {
                errors.push(
                    format!("{path}.directResponse.status"),
                    "status must be in range 200..599",
                );
            }
            if let Some(body) = &response.body
                && body.string.is_some()
                && body.bytes.is_some()
            {
                errors.push(
                    format!("{path}.directResponse.body"),
                    "only one of string or bytes may be set",
                );
            }
        }
        if let Some(delegate) = &self.delegate
            && delegate.name.is_empty()
        {
            errors.push(format!("{path}.delegate.name"), "Required value");
        }
        if let Some(rewrite) = &self.rewrite
            && let Some(regex) = &rewrite.uri_regex_rewrite
        {
            if !rewrite.uri.is_empty() {
                errors.push(
                    format!("{path}.rewrite"),
                    "only one of uri or uriRegexRewrite may be set",
                );
            }
            super::types::check_regex(
                &format!("{path}.rewrite.uriRegexRewrite.match"),
                &regex.pattern,
                errors,
            );
        }
        if !self.timeout.is_empty() {
            errors.check_duration(format!("{path}.timeout"), &self.timeout, ONE_MS);
        }
        if let Some(retries) = &self.retries {
            retries.validate(&format!("{path}.retries"), errors);
        }
        if let Some(fault) = &self.fault {
            fault.validate(&format!("{path}.fault"), errors);
        }
        if let Some(mirror) = &self.mirror {
            mirror.validate(&format!("{path}.mirror"), errors);
        }
        for (i, mirror) in self.mirrors.iter().enumerate() {
            mirror
                .destination
                .validate(&format!("{path}.mirrors[{i}].destination"), errors);
            if let Some(percent) = &mirror.percentage {
                percent.validate(&format!("{path}.mirrors[{i}].percentage"), errors);
            }
        }
        if self.mirror.is_some() && !self.mirrors.is_empty() {
            errors.push(path, "only one of mirror or mirrors may be set");
        }
        if let Some(percent) = &self.mirror_percentage {
            percent.validate(&format!("{path}.mirrorPercentage"), errors);
        }
        if self.mirror_percent.is_some_and(|p| p > 100) {
            errors.push(
                format!("{path}.mirrorPercent"),
                "percentage must be in range 0..100",
            );
        }
        if let Some(cors) = &self.cors_policy {
            for (i, origin) in cors.allow_origins.iter().enumerate() {
                origin.validate(&format!("{path}.corsPolicy.allowOrigins[{i}]"), errors);
            }
            if !cors.max_age.is_empty() {
                errors.check_duration(format!("{path}.corsPolicy.maxAge"), &cors.max_age, ONE_MS);
            }
        }
        if let Some(headers) = &self.headers {
            headers.validate(&format!("{path}.headers"), errors);
        }
    }
}

impl HttpMatchRequest {
    fn validate(&self, path: &str, errors: &mut FieldErrors) {
        for (name, m) in [
            ("uri", &self.uri),
            ("scheme", &self.scheme),
            ("method", &self.method),
            ("authority", &self.authority),
        ] {
            if let Some(m) = m {
                m.validate(&format!("{path}.{name}"), errors);
            }
        }
        for (field, map) in [
            ("headers", &self.headers),
            ("withoutHeaders", &self.without_headers),
        ] {
            for (key, m) in map {
                // Envoy sees header names lower-cased; an upper-case key never matches.
                if key.is_empty() || key.chars().any(|c| c.is_ascii_uppercase()) {
                    errors.push(
                        format!("{path}.{field}.{key}"),
                        format!("header match {key:?} must be in lower case"),
                    );
                }
                m.validate(&format!("{path}.{field}.{key}"), errors);
            }
        }
        for (key, m) in &self.query_params {
            m.validate(&format!("{path}.queryParams.{key}"), errors);
        }
        if let Some(port) = self.port {
            errors.check_port(format!("{path}.port"), port);
        }
    }
}

impl HttpRetry {
    fn validate(&self, path: &str, errors: &mut FieldErrors) {
        if self.attempts < 0 {
            errors.push(format!("{path}.attempts"), "attempts cannot be negative");
        }
        if !self.per_try_timeout.is_empty() {
            errors.check_duration(
                format!("{path}.perTryTimeout"),
                &self.per_try_timeout,
                ONE_MS,
            );
        }
        if !self.backoff.is_empty() {
            errors.check_duration(format!("{path}.backoff"), &self.backoff, ONE_MS);
        }
        for policy in self
            .retry_on
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
        {
            let status_code = policy
                .parse::<u32>()
                .is_ok_and(|c| (100..=599).contains(&c));
            if !status_code && !RETRY_ON.contains(&policy) {
                errors.push(
                    format!("{path}.retryOn"),
                    format!("{policy:?} is not a valid retryOn policy"),
                );
            }
        }
    }
}

impl HttpFaultInjection {
    fn validate(&self, path: &str, errors: &mut FieldErrors) {
        if self.delay.is_none() && self.abort.is_none() {
            errors.push(path, "fault must have an abort and/or a delay");
        }
        if let Some(delay) = &self.delay {
            let path = format!("{path}.delay");
            match (
                delay.fixed_delay.is_empty(),
                delay.exponential_delay.is_empty(),
            ) {
                (false, true) => {
                    errors.check_duration(format!("{path}.fixedDelay"), &delay.fixed_delay, ONE_MS)
                }
                (true, false) => errors.check_duration(
                    format!("{path}.exponentialDelay"),
                    &delay.exponential_delay,
                    ONE_MS,
                ),
                (true, true) => errors.push(&path, "delay must set fixedDelay"),
                (false, false) => errors.push(
                    &path,
                    "only one of fixedDelay or exponentialDelay may be set",
                ),
            }
            if let Some(percent) = &delay.percentage {
                percent.validate(&format!("{path}.percentage"), errors);
            }
            if let Some(percent) = delay.percent {
                check_percent(&format!("{path}.percent"), f64::from(percent), errors);
            }
        }
        if let Some(abort) = &self.abort {
            let path = format!("{path}.abort");
            let kinds = [
                abort.http_status.is_some(),
                abort.grpc_status.is_some(),
                abort.http2_error.is_some(),
            ];
            if kinds.iter().filter(|k| **k).count() != 1 {
                errors.push(
                    &path,
                    "abort must set exactly one of httpStatus, grpcStatus or http2Error",
                );
            }
            if abort.http_status.is_some_and(|s| !(200..=599).contains(&s)) {
                errors.push(
                    format!("{path}.httpStatus"),
                    "HTTP status must be in range 200..599",
                );
            }
            if let Some(percent) = &abort.percentage {
                percent.validate(&format!("{path}.percentage"), errors);
            }
        }
    }
}
