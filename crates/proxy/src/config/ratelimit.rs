//! The proxy's compiled rate limits (`ProxyConfig.rate_limits`, from Weft's
//! RateLimit resources): which requests each rule covers, its token bucket's
//! shape, and the descriptors it sends to the global rate-limit service.
//! Plain data: the buckets themselves (runtime state) and the calls to the
//! service live in `http::ratelimit`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;
use weft_proto::proxy::v1 as pb;

use super::snapshot::{Cluster, Problems, duration};

/// Envoy's default timeout for a ShouldRateLimit call.
const DEFAULT_RLS_TIMEOUT: Duration = Duration::from_millis(20);
/// Envoy refuses token buckets refilled more often than this.
const MIN_FILL_INTERVAL: Duration = Duration::from_millis(50);

/// Every rate limit of one snapshot; empty when none applies.
#[derive(Default)]
pub struct RateLimits {
    pub rules: Vec<Rule>,
    /// Present when some rule has descriptors.
    pub service: Option<Arc<RateLimitService>>,
}

/// Where and how to ask the global rate-limit service.
pub struct RateLimitService {
    pub cluster: Arc<Cluster>,
    pub domain: String,
    pub timeout: Duration,
    /// On a failed call: true answers 500 RLSE, false lets the request on.
    pub failure_mode_deny: bool,
}

#[derive(Debug)]
pub struct Rule {
    /// `namespace/name[index]`, as logs name it.
    pub name: String,
    pub matches: RuleMatch,
    pub local: Option<TokenBucketSpec>,
    pub descriptors: Vec<Descriptor>,
}

/// Every non-empty list must contain the request's value.
#[derive(Debug, Default)]
pub struct RuleMatch {
    pub routes: Vec<String>,
    /// Lowercase; `*.suffix` entries match any subdomain.
    pub hosts: Vec<String>,
    pub path_prefixes: Vec<String>,
    pub paths: Vec<String>,
    pub methods: Vec<http::Method>,
    pub ports: Vec<u16>,
}

/// What a rule is matched against: the request as routed.
pub struct RuleInput<'a> {
    pub route: Option<&'a str>,
    /// Without port, any case.
    pub host: Option<&'a str>,
    pub path: &'a str,
    pub method: &'a http::Method,
    pub port: u16,
}

impl RuleMatch {
    pub fn matches(&self, input: &RuleInput<'_>) -> bool {
        let route_ok = self.routes.is_empty()
            || input
                .route
                .is_some_and(|r| self.routes.iter().any(|x| x == r));
        let host_ok = self.hosts.is_empty()
            || input.host.is_some_and(|host| {
                let host = host.to_ascii_lowercase();
                self.hosts
                    .iter()
                    .any(|pattern| match pattern.strip_prefix('*') {
                        Some(suffix) => host.ends_with(suffix),
                        None => *pattern == host,
                    })
            });
        let path_ok = (self.paths.is_empty() && self.path_prefixes.is_empty())
            || self.paths.iter().any(|p| p == input.path)
            || self
                .path_prefixes
                .iter()
                .any(|p| input.path.starts_with(p.as_str()));
        route_ok
            && host_ok
            && path_ok
            && (self.methods.is_empty() || self.methods.contains(input.method))
            && (self.ports.is_empty() || self.ports.contains(&input.port))
    }
}

/// Envoy's token bucket: starts full, gains `tokens_per_fill` every
/// `fill_interval`, never more than `max_tokens`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenBucketSpec {
    pub max_tokens: u32,
    pub tokens_per_fill: u32,
    pub fill_interval: Duration,
}

#[derive(Debug)]
pub struct Descriptor {
    pub entries: Vec<Entry>,
}

#[derive(Debug)]
pub struct Entry {
    pub key: String,
    pub source: Source,
}

/// Where a descriptor entry's value comes from.
#[derive(Debug)]
pub enum Source {
    Literal(String),
    Header(HeaderName),
    Path,
    Method,
    SourceAddress,
    SourcePrincipal,
    DestinationService,
}

impl RateLimits {
    pub(super) fn compile(
        config: Option<&pb::RateLimits>,
        clusters: &HashMap<String, Arc<Cluster>>,
        problems: &mut Problems,
    ) -> Self {
        let Some(config) = config else {
            return Self::default();
        };
        let service = config.service.as_ref().and_then(|service| {
            let path = "rateLimits.service";
            let Some(cluster) = clusters.get(&service.cluster) else {
                problems.push(
                    format!("{path}.cluster"),
                    format!("no cluster named {:?}", service.cluster),
                );
                return None;
            };
            let timeout = duration(
                service.timeout.as_ref(),
                &format!("{path}.timeout"),
                problems,
            )
            .filter(|t| !t.is_zero())
            .unwrap_or(DEFAULT_RLS_TIMEOUT);
            Some(Arc::new(RateLimitService {
                cluster: cluster.clone(),
                domain: service.domain.clone(),
                timeout,
                failure_mode_deny: service.failure_mode_deny,
            }))
        });
        let rules: Vec<Rule> = config
            .rules
            .iter()
            .enumerate()
            .filter_map(|(index, rule)| {
                compile_rule(rule, &format!("rateLimits.rules[{index}]"), problems)
            })
            .collect();
        if service.is_none()
            && config.service.is_none()
            && let Some(index) = rules.iter().position(|r| !r.descriptors.is_empty())
        {
            problems.push(
                format!("rateLimits.rules[{index}].descriptors"),
                "descriptors need rateLimits.service (the global rate-limit service)",
            );
        }
        Self { rules, service }
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

fn compile_rule(rule: &pb::RateLimitRule, path: &str, problems: &mut Problems) -> Option<Rule> {
    let before = problems.0.len();
    let matches = rule
        .r#match
        .as_ref()
        .map(|m| compile_match(m, &format!("{path}.match"), problems))
        .unwrap_or_default();
    let local = rule.local.as_ref().and_then(|local| {
        let local_path = format!("{path}.local");
        if local.max_tokens == 0 {
            problems.push(format!("{local_path}.maxTokens"), "must be at least 1");
        }
        let interval = duration(
            local.fill_interval.as_ref(),
            &format!("{local_path}.fillInterval"),
            problems,
        );
        let fill_interval = match interval {
            Some(i) if i >= MIN_FILL_INTERVAL => i,
            _ => {
                problems.push(
                    format!("{local_path}.fillInterval"),
                    "required, at least 50ms",
                );
                return None;
            }
        };
        Some(TokenBucketSpec {
            max_tokens: local.max_tokens,
            tokens_per_fill: local.tokens_per_fill.max(1),
            fill_interval,
        })
    });
    let descriptors = rule
        .descriptors
        .iter()
        .enumerate()
        .map(|(d, descriptor)| Descriptor {
            entries: descriptor
                .entries
                .iter()
                .enumerate()
                .filter_map(|(e, entry)| {
                    compile_entry(
                        entry,
                        &format!("{path}.descriptors[{d}].entries[{e}]"),
                        problems,
                    )
                })
                .collect(),
        })
        .collect();
    if rule.local.is_none() && rule.descriptors.is_empty() {
        problems.push(path, "a rule needs `local`, `descriptors` or both");
    }
    (problems.0.len() == before).then(|| Rule {
        name: rule.name.clone(),
        matches,
        local,
        descriptors,
    })
}

fn compile_match(m: &pb::RateLimitMatch, path: &str, problems: &mut Problems) -> RuleMatch {
    let mut methods = Vec::new();
    for (index, method) in m.methods.iter().enumerate() {
        match http::Method::from_bytes(method.as_bytes()) {
            Ok(parsed) => methods.push(parsed),
            Err(_) => problems.push(format!("{path}.methods[{index}]"), "not an HTTP method"),
        }
    }
    let mut ports = Vec::new();
    for (index, port) in m.ports.iter().enumerate() {
        match u16::try_from(*port) {
            Ok(port) if port > 0 => ports.push(port),
            _ => problems.push(format!("{path}.ports[{index}]"), "must be 1..65535"),
        }
    }
    RuleMatch {
        routes: m.routes.clone(),
        hosts: m.hosts.iter().map(|h| h.to_ascii_lowercase()).collect(),
        path_prefixes: m.path_prefixes.clone(),
        paths: m.paths.clone(),
        methods,
        ports,
    }
}

fn compile_entry(entry: &pb::RateLimitEntry, path: &str, problems: &mut Problems) -> Option<Entry> {
    use pb::rate_limit_entry::Value;
    if entry.key.is_empty() {
        problems.push(format!("{path}.key"), "Required value");
        return None;
    }
    let source = match &entry.value {
        Some(Value::Literal(value)) => Source::Literal(value.clone()),
        Some(Value::Header(name)) => match HeaderName::from_bytes(name.as_bytes()) {
            Ok(name) => Source::Header(name),
            Err(_) => {
                problems.push(format!("{path}.header"), "not a valid header name");
                return None;
            }
        },
        Some(Value::Path(_)) => Source::Path,
        Some(Value::Method(_)) => Source::Method,
        Some(Value::SourceAddress(_)) => Source::SourceAddress,
        Some(Value::SourcePrincipal(_)) => Source::SourcePrincipal,
        Some(Value::DestinationService(_)) => Source::DestinationService,
        None => {
            problems.push(path, "needs a value source (literal, header, path, ...)");
            return None;
        }
    };
    Some(Entry {
        key: entry.key.clone(),
        source,
    })
}
