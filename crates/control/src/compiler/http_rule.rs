//! One VirtualService `http[]` entry → a [`Rule`]: its match blocks, its
//! action (forward, redirect, direct response), rewrite and header changes,
//! in the proxy model's terms. Anything the model cannot express skips the
//! whole entry with a warning: a rule is never compiled into a wider match
//! or a different action.

use std::collections::BTreeMap;
use std::time::Duration;

use weft_api::networking::{HttpMatchRequest, HttpRoute, RedirectPortSelection, StringMatch};
use weft_proto::proxy::v1 as pb;

use super::{checks, resilience};
use crate::registry::labels_match;

// Declared here rather than in `compiler/mod.rs` so this feature stays in
// the files that own VirtualService rules.
#[path = "mirror_cors.rs"]
pub(super) mod mirror_cors;

use self::mirror_cors::MirrorRule;

/// `(request, response)` changes of an Istio `headers` field; `None` for no
/// change. A macro because weft-api does not export the field's type.
macro_rules! header_operations {
    ($headers:expr) => {{
        let headers = $headers.as_ref();
        (
            headers
                .and_then(|h| h.request.as_ref())
                .and_then(|o| header_ops(&o.set, &o.add, &o.remove)),
            headers
                .and_then(|h| h.response.as_ref())
                .and_then(|o| header_ops(&o.set, &o.add, &o.remove)),
        )
    }};
}

/// The reserved gateway name for sidecars.
pub(super) const MESH_GATEWAY: &str = "mesh";

/// Whom a VirtualService is compiled for: the sidecars, or one gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Audience<'a> {
    Mesh,
    Gateway { namespace: &'a str, name: &'a str },
}

impl Audience<'_> {
    /// Whether `gateways`, as written in a VirtualService of `vs_namespace`,
    /// name this audience. Gateways are named `name` (the VirtualService's
    /// namespace), `namespace/name`, or the old `name.namespace[.svc...]`.
    pub(super) fn named_in(&self, gateways: &[String], vs_namespace: &str) -> bool {
        gateways.iter().any(|g| match self {
            Audience::Mesh => g == MESH_GATEWAY,
            Audience::Gateway { namespace, name } => {
                let (ns, gw) = match g.split_once('/') {
                    Some((ns, gw)) => (ns, gw),
                    None => match g.split_once('.') {
                        Some((gw, rest)) => (rest.split('.').next().unwrap_or(rest), gw),
                        None => (vs_namespace, g.as_str()),
                    },
                };
                ns == *namespace && gw == *name
            }
        })
    }

    /// Whether a VirtualService with these `gateways` applies (none means
    /// the sidecars only, as in Istio).
    pub(super) fn admits(&self, gateways: &[String], vs_namespace: &str) -> bool {
        match (gateways.is_empty(), self) {
            (true, Audience::Mesh) => true,
            (true, Audience::Gateway { .. }) => false,
            (false, _) => self.named_in(gateways, vs_namespace),
        }
    }
}

/// Istio's default redirect status.
const DEFAULT_REDIRECT_CODE: u32 = 301;

pub(super) struct Rule {
    pub(super) name: String,
    /// Empty: every request.
    pub(super) matches: Vec<MatchRule>,
    pub(super) action: Action,
    pub(super) timeout: Option<Duration>,
    pub(super) rewrite: Option<pb::Rewrite>,
    pub(super) request_headers: Option<pb::HeaderOperations>,
    pub(super) response_headers: Option<pb::HeaderOperations>,
    /// Forwarded requests only.
    pub(super) retries: Option<pb::RetryPolicy>,
    pub(super) fault: Option<pb::FaultInjection>,
    /// Forwarded requests only.
    pub(super) mirrors: Vec<MirrorRule>,
    pub(super) cors: Option<pb::CorsPolicy>,
}

pub(super) enum Action {
    Forward(Vec<Target>),
    Redirect(pb::Redirect),
    Respond(pb::DirectResponse),
}

pub(super) struct Target {
    pub(super) host: String,
    pub(super) subset: String,
    pub(super) port: Option<u32>,
    pub(super) weight: u32,
    pub(super) request_headers: Option<pb::HeaderOperations>,
    pub(super) response_headers: Option<pb::HeaderOperations>,
}

/// One match block (blocks are OR-ed: one proxy route each).
pub(super) struct MatchRule {
    pub(super) name: String,
    /// `None`: no request condition.
    pub(super) conditions: Option<pb::RouteMatch>,
    /// Only on this service port.
    pub(super) port: Option<u32>,
    /// Only for calling proxies like this.
    pub(super) source: Option<Source>,
}

/// `sourceLabels` / `sourceNamespace`: which calling proxies get a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Source {
    labels: BTreeMap<String, String>,
    /// Empty: any namespace.
    namespace: String,
}

impl Source {
    /// `None` when the match block does not name its callers.
    pub(super) fn new(labels: &BTreeMap<String, String>, namespace: &str) -> Option<Self> {
        (!labels.is_empty() || !namespace.is_empty()).then(|| Self {
            labels: labels.clone(),
            namespace: namespace.to_string(),
        })
    }

    pub(super) fn admits(&self, namespace: &str, labels: &BTreeMap<String, String>) -> bool {
        (self.namespace.is_empty() || self.namespace == namespace)
            && labels_match(&self.labels, labels)
    }
}

/// `http` as a rule, or `None` (with a warning) when it cannot be expressed
/// or never applies to `audience`. `at` names the entry in warnings;
/// `vs_namespace` resolves the gateway names of its match blocks.
pub(super) fn rule(
    default_name: &str,
    at: &str,
    http: &HttpRoute,
    (audience, vs_namespace): (Audience<'_>, &str),
    warnings: &mut Vec<String>,
) -> Option<Rule> {
    match build(default_name, at, http, (audience, vs_namespace), warnings) {
        Ok(rule) => rule,
        Err(why) => {
            warnings.push(format!("{at} skipped: {why}"));
            None
        }
    }
}

/// `Ok(None)`: not for `audience`. `Err`: why the entry cannot be expressed.
fn build(
    default_name: &str,
    at: &str,
    http: &HttpRoute,
    (audience, vs_namespace): (Audience<'_>, &str),
    warnings: &mut Vec<String>,
) -> Result<Option<Rule>, String> {
    let mut matches = Vec::new();
    for (m_index, m) in http.matches.iter().enumerate() {
        // A block for other gateways never matches this audience's
        // traffic: dropping it narrows nothing. Without `gateways` it
        // inherits the VirtualService's, already checked.
        if !(m.gateways.is_empty() || audience.named_in(&m.gateways, vs_namespace)) {
            continue;
        }
        let rule = match_rule(m).and_then(|rule| {
            rule.conditions
                .as_ref()
                .map_or(Ok(()), checks::route_match)
                .map(|()| rule)
        });
        let rule = rule.map_err(|what| {
            format!("match[{m_index}] uses {what}, which the proxy cannot match on yet")
        })?;
        // As in Istio, only gateways validate a token before routing.
        if audience == Audience::Mesh
            && rule
                .conditions
                .as_ref()
                .is_some_and(|c| c.headers.iter().any(|h| !h.claim.is_empty()))
        {
            warnings.push(format!(
                "{at}.match[{m_index}]: @request.auth.claims matches work on gateways only; \
                 on sidecars this block never matches"
            ));
        }
        matches.push(rule);
    }
    if !http.matches.is_empty() && matches.is_empty() {
        return Ok(None);
    }
    let mut action = if let Some(redirect) = redirect_action(http) {
        let redirect = redirect.map_err(|what| format!("{what} is not supported yet"))?;
        checks::redirect(&redirect)?;
        Action::Redirect(redirect)
    } else if let Some(response) = direct_response(http) {
        Action::Respond(response?)
    } else if http.delegate.is_some() {
        // Roots are expanded first (see `delegate`); a delegate's own
        // delegate is refused there.
        return Err("unresolved delegate".into());
    } else if http.route.is_empty() {
        return Err("no route destinations".into());
    } else {
        Action::Forward(targets(http))
    };
    let forward = matches!(action, Action::Forward(_));
    let mut rewrite = rewrite_of(http);
    let (mut request_headers, response_headers) = header_operations!(http.headers);
    // Istio: setting the authority through headers rewrites the authority
    // (a request that is not forwarded has no upstream authority).
    if let Some(authority) = request_headers.as_mut().and_then(take_authority)
        && forward
    {
        rewrite.get_or_insert_with(Default::default).authority = authority;
    }
    if let Action::Forward(targets) = &mut action {
        let several = targets.len() > 1;
        for (index, target) in targets.iter_mut().enumerate() {
            if let Some(authority) = target.request_headers.as_mut().and_then(take_authority) {
                if several {
                    return Err(format!(
                        "route[{index}].headers sets the authority of one of several destinations, which the proxy cannot do yet"
                    ));
                }
                rewrite.get_or_insert_with(Default::default).authority = authority;
            }
            target.request_headers = non_empty_ops(target.request_headers.take());
            for ops in [&target.request_headers, &target.response_headers]
                .into_iter()
                .flatten()
            {
                checks::header_ops(ops).map_err(|e| format!("route[{index}].headers: {e}"))?;
            }
        }
    }
    for ops in [&request_headers, &response_headers].into_iter().flatten() {
        checks::header_ops(ops).map_err(|e| format!("headers: {e}"))?;
    }
    if let Some(r) = &rewrite
        && forward
    {
        checks::rewrite(r)?;
    }
    // The proxy applies CORS and mirrors on the way to an upstream only.
    let (mirrors, cors) = if forward {
        let cors = mirror_cors::cors(http).transpose()?;
        if mirror_cors::ignores_unmatched_preflights(http) {
            warnings.push(format!(
                "{at}: corsPolicy.unmatchedPreflights IGNORE is not supported yet; such preflights are forwarded"
            ));
        }
        (mirror_cors::mirrors(http), cors)
    } else {
        let unused: Vec<&str> = [
            ("mirror", http.mirror.is_some() || !http.mirrors.is_empty()),
            ("corsPolicy", http.cors_policy.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, set)| set.then_some(name))
        .collect();
        if !unused.is_empty() {
            warnings.push(format!(
                "{at}: {} only applies to forwarded requests; ignored",
                unused.join(", ")
            ));
        }
        (Vec::new(), None)
    };
    // Validation forbids it with redirect; with directResponse Istio ignores
    // it too.
    if rewrite.is_some() && !forward {
        warnings.push(format!(
            "{at}: rewrite only applies to forwarded requests; ignored"
        ));
    }
    // Retries and faults act around the upstream call; a redirect or direct
    // response never makes one.
    let (retries, fault) = if forward {
        (
            resilience::retry_policy(http, at, warnings),
            resilience::fault(http, at, warnings),
        )
    } else {
        if http.fault.is_some() {
            warnings.push(format!(
                "{at}: fault only applies to forwarded requests; ignored"
            ));
        }
        (None, None)
    };
    Ok(Some(Rule {
        retries,
        fault,
        mirrors,
        cors,
        name: if http.name.is_empty() {
            default_name.to_string()
        } else {
            http.name.clone()
        },
        matches,
        // Istio: 0s disables the timeout; it only bounds forwarded requests.
        timeout: weft_api::field::parse_duration(&http.timeout).filter(|t| !t.is_zero() && forward),
        action,
        rewrite: rewrite.filter(|_| forward),
        request_headers: non_empty_ops(request_headers),
        response_headers,
    }))
}

fn targets(http: &HttpRoute) -> Vec<Target> {
    let mut destinations: Vec<Target> = http
        .route
        .iter()
        .map(|r| {
            let (request_headers, response_headers) = header_operations!(r.headers);
            Target {
                host: r.destination.host.clone(),
                subset: r.destination.subset.clone(),
                port: r
                    .destination
                    .port
                    .as_ref()
                    .map(|p| p.number)
                    .filter(|n| *n > 0),
                weight: r.weight.unwrap_or(0).max(0) as u32,
                request_headers,
                response_headers,
            }
        })
        .collect();
    // Several destinations without weights: an even split, never a rule the
    // proxy would reject for weights adding up to 0.
    if destinations.len() > 1 && destinations.iter().all(|d| d.weight == 0) {
        destinations.iter_mut().for_each(|d| d.weight = 1);
    }
    destinations
}

/// Istio's JWT claim routing: `@request.auth.claims.a.b` (or
/// `@request.auth.claims[a][b]`) names the claim `b` inside `a` of the
/// validated token (weft-api, as for every header key, refuses upper
/// case). Empty: not a claim, or a
/// malformed one (then the header check refuses the name).
fn claim_path(name: &str) -> Vec<String> {
    let Some(rest) = name.strip_prefix(CLAIM_HEADER) else {
        return Vec::new();
    };
    let path: Vec<String> = if let Some(dotted) = rest.strip_prefix('.') {
        dotted.split('.').map(str::to_string).collect()
    } else {
        let mut path = Vec::new();
        let mut rest = rest;
        while let Some(inner) = rest.strip_prefix('[') {
            let Some((name, after)) = inner.split_once(']') else {
                return Vec::new();
            };
            path.push(name.to_string());
            rest = after;
        }
        if !rest.is_empty() {
            return Vec::new();
        }
        path
    };
    match path.iter().any(String::is_empty) {
        true => Vec::new(),
        false => path,
    }
}

const CLAIM_HEADER: &str = "@request.auth.claims";

/// The block as proxy conditions, or the first condition the proxy model
/// cannot express.
fn match_rule(m: &HttpMatchRequest) -> Result<MatchRule, String> {
    let path = m
        .uri
        .as_ref()
        .and_then(string_match)
        .map(|kind| match kind {
            pb::string_match::Kind::Exact(p) => pb::route_match::Path::PathExact(p),
            pb::string_match::Kind::Prefix(p) => pb::route_match::Path::PathPrefix(p),
            pb::string_match::Kind::Regex(p) => pb::route_match::Path::PathRegex(p),
        });
    // Istio applies ignoreUriCase to exact and prefix paths only.
    let ignore_uri_case = m.ignore_uri_case == Some(true)
        && matches!(
            path,
            Some(pb::route_match::Path::PathExact(_) | pb::route_match::Path::PathPrefix(_))
        );
    let headers = m
        .headers
        .iter()
        .map(|h| (h, false))
        .chain(m.without_headers.iter().map(|h| (h, true)))
        .map(|((name, value), invert)| pb::HeaderMatch {
            name: name.to_ascii_lowercase(),
            value: string_match(value).map(pb_string_match),
            invert,
            claim: claim_path(name),
        })
        .collect();
    let mut query_params = Vec::new();
    for (name, value) in &m.query_params {
        // Istio turns a prefix into "present", which would widen the match.
        if value.prefix.as_ref().is_some_and(|p| !p.is_empty()) {
            return Err("a queryParams prefix".into());
        }
        query_params.push(pb::QueryParamMatch {
            name: name.clone(),
            value: string_match(value).map(pb_string_match),
        });
    }
    let conditions = pb::RouteMatch {
        path,
        ignore_uri_case,
        headers,
        query_params,
        method: m
            .method
            .as_ref()
            .and_then(string_match)
            .map(pb_string_match),
        authority: m
            .authority
            .as_ref()
            .and_then(string_match)
            .map(pb_string_match),
        scheme: m
            .scheme
            .as_ref()
            .and_then(string_match)
            .map(pb_string_match),
    };
    let source = Source::new(&m.source_labels, &m.source_namespace);
    Ok(MatchRule {
        name: m.name.clone(),
        conditions: (conditions != pb::RouteMatch::default()).then_some(conditions),
        port: m.port.filter(|p| *p > 0),
        source,
    })
}

/// `None` for a match of anything: `{}` or an empty prefix ("present" for
/// headers and query parameters).
fn string_match(m: &StringMatch) -> Option<pb::string_match::Kind> {
    use pb::string_match::Kind;
    match (&m.exact, &m.prefix, &m.regex) {
        (Some(exact), _, _) => Some(Kind::Exact(exact.clone())),
        (None, Some(prefix), _) if !prefix.is_empty() => Some(Kind::Prefix(prefix.clone())),
        (None, _, Some(regex)) => Some(Kind::Regex(regex.clone())),
        _ => None,
    }
}

fn pb_string_match(kind: pb::string_match::Kind) -> pb::StringMatch {
    pb::StringMatch { kind: Some(kind) }
}

// weft-api does not export the types of `redirect`, `directResponse`,
// `rewrite` and `headers`: these read them through the route.

fn redirect_action(http: &HttpRoute) -> Option<Result<pb::Redirect, &'static str>> {
    let r = http.redirect.as_ref()?;
    if !r.prefix_rewrite.is_empty() {
        return Some(Err("redirect.prefixRewrite"));
    }
    Some(Ok(pb::Redirect {
        uri: r.uri.clone(),
        authority: r.authority.clone(),
        code: r.redirect_code.unwrap_or(DEFAULT_REDIRECT_CODE),
        scheme: r.scheme.clone(),
        port: r.port.unwrap_or(0),
        derive_port: match r.derive_port {
            None => pb::RedirectPort::Unspecified,
            Some(RedirectPortSelection::FromProtocolDefault) => {
                pb::RedirectPort::FromProtocolDefault
            }
            Some(RedirectPortSelection::FromRequestPort) => pb::RedirectPort::FromRequestPort,
        } as i32,
    }))
}

fn direct_response(http: &HttpRoute) -> Option<Result<pb::DirectResponse, &'static str>> {
    let r = http.direct_response.as_ref()?;
    let body = match r.body.as_ref().map(|b| (&b.string, &b.bytes)) {
        None | Some((None, None)) => String::new(),
        Some((Some(text), _)) => text.clone(),
        Some((None, Some(encoded))) => {
            match decode_base64(encoded).and_then(|bytes| String::from_utf8(bytes).ok()) {
                Some(text) => text,
                None => {
                    return Some(Err(
                        "directResponse.body.bytes is not base64 of UTF-8 text, which the proxy cannot send yet",
                    ));
                }
            }
        }
    };
    Some(Ok(pb::DirectResponse {
        status: r.status,
        body,
    }))
}

fn rewrite_of(http: &HttpRoute) -> Option<pb::Rewrite> {
    let r = http.rewrite.as_ref()?;
    let regex = r.uri_regex_rewrite.as_ref();
    let out = pb::Rewrite {
        uri: r.uri.clone(),
        authority: r.authority.clone(),
        uri_regex_pattern: regex.map(|r| r.pattern.clone()).unwrap_or_default(),
        uri_regex_substitution: regex.map(|r| r.rewrite.clone()).unwrap_or_default(),
    };
    (out != pb::Rewrite::default()).then_some(out)
}

/// Header names lower-cased; `None` for no change.
fn header_ops(
    set: &BTreeMap<String, String>,
    add: &BTreeMap<String, String>,
    remove: &[String],
) -> Option<pb::HeaderOperations> {
    let lower = |map: &BTreeMap<String, String>| {
        map.iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .collect()
    };
    let out = pb::HeaderOperations {
        set: lower(set),
        add: lower(add),
        remove: remove.iter().map(|h| h.to_ascii_lowercase()).collect(),
    };
    (out != pb::HeaderOperations::default()).then_some(out)
}

/// Removes a `set` of `host` / `:authority` and returns its value.
fn take_authority(ops: &mut pb::HeaderOperations) -> Option<String> {
    let host = ops.set.remove("host");
    let authority = ops.set.remove(":authority");
    authority.or(host)
}

/// `None` for operations left empty (by [`take_authority`]).
fn non_empty_ops(ops: Option<pb::HeaderOperations>) -> Option<pb::HeaderOperations> {
    ops.filter(|o| *o != pb::HeaderOperations::default())
}

/// Standard or URL-safe base64, padding optional; `None` if malformed.
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let digits: Vec<u8> = text
        .trim_end_matches('=')
        .bytes()
        .filter(|b| !b.is_ascii_whitespace())
        .map(|b| match b {
            b'A'..=b'Z' => Some(b - b'A'),
            b'a'..=b'z' => Some(b - b'a' + 26),
            b'0'..=b'9' => Some(b - b'0' + 52),
            b'+' | b'-' => Some(62),
            b'/' | b'_' => Some(63),
            _ => None,
        })
        .collect::<Option<_>>()?;
    if digits.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for chunk in digits.chunks(4) {
        let bits = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, d)| acc | u32::from(*d) << (18 - 6 * i));
        let bytes = bits.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::decode_base64;

    #[test]
    fn base64_decodes_with_and_without_padding() {
        assert_eq!(decode_base64("aGk=").as_deref(), Some(&b"hi"[..]));
        assert_eq!(decode_base64("aGk").as_deref(), Some(&b"hi"[..]));
        assert_eq!(decode_base64("b2sh").as_deref(), Some(&b"ok!"[..]));
        assert_eq!(decode_base64("").as_deref(), Some(&b""[..]));
        assert_eq!(decode_base64("a"), None);
        assert_eq!(decode_base64("a*b="), None);
    }
}
