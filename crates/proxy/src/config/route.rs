//! A compiled HTTP route: what it matches ([`RouteMatch`]) and what it does
//! (forward to weighted clusters, redirect, or answer directly), with the
//! rewrites and header operations around it. Validation reports every
//! problem with its field path; the data path never re-checks.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderName, HeaderValue, StatusCode, header};
use regex::Regex;
use weft_proto::proxy::v1 as pb;

use super::cors::{Cors, Problem};
use super::mirror::Mirror;
use super::resilience::{Fault, RetryPolicy, compile_fault, compile_retries};
use super::route_match::{RouteMatch, regex_problem};
use super::snapshot::{Cluster, Problems, duration};

pub struct Route {
    pub name: String,
    pub matcher: RouteMatch,
    pub action: RouteAction,
    /// Applied before the picked destination's.
    pub request_headers: HeaderOps,
    pub response_headers: HeaderOps,
    /// `None`: CORS requests pass through untouched.
    pub cors: Option<Box<Cors>>,
}

pub enum RouteAction {
    Forward(Forward),
    Redirect(Redirect),
    Direct(DirectResponse),
}

pub struct Forward {
    pub destinations: Vec<Destination>,
    /// Connect plus response headers; `None` waits for ever (Istio's default).
    pub timeout: Option<Duration>,
    pub rewrite: Rewrite,
    /// `None`: one try only.
    pub retries: Option<Box<RetryPolicy>>,
    pub fault: Option<Box<Fault>>,
    /// Fire-and-forget copies of each request.
    pub mirrors: Vec<Mirror>,
    total_weight: u32,
    next: AtomicUsize,
}

pub struct Destination {
    pub cluster: Arc<Cluster>,
    pub weight: u32,
    pub request_headers: HeaderOps,
    pub response_headers: HeaderOps,
}

pub struct Redirect {
    pub code: StatusCode,
    /// Replaces the path; keeps the request's query unless it has its own.
    pub uri: Option<String>,
    pub authority: Option<String>,
    pub scheme: Option<String>,
    pub port: RedirectPort,
}

/// The port of a redirect's Location.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedirectPort {
    /// Whatever port the authority used for the Location carries.
    Authority,
    Fixed(u16),
    /// None: the scheme's default.
    ProtocolDefault,
    /// The port the request was sent to.
    Request,
}

pub struct DirectResponse {
    pub status: StatusCode,
    pub body: Bytes,
}

#[derive(Default)]
pub struct Rewrite {
    /// Replaces the matched part of the path (see `PathMatch::rewritten_len`).
    pub uri: Option<String>,
    pub authority: Option<Authority>,
    /// Every match of the regex is replaced; the substitution is already in
    /// the regex crate's syntax (`${1}`), converted from RE2's (`\1`).
    pub uri_regex: Option<(Regex, String)>,
}

/// Header edits, applied in Envoy's order: remove, then set, then add.
#[derive(Default)]
pub struct HeaderOps {
    pub set: Vec<(HeaderName, HeaderValue)>,
    pub add: Vec<(HeaderName, HeaderValue)>,
    pub remove: Vec<HeaderName>,
}

impl Route {
    /// The route of a port without routes: everything to its cluster.
    pub fn to_cluster(cluster: Arc<Cluster>) -> Self {
        Self {
            name: "default".to_string(),
            matcher: RouteMatch::default(),
            action: RouteAction::Forward(Forward {
                destinations: vec![Destination {
                    cluster,
                    weight: 1,
                    request_headers: HeaderOps::default(),
                    response_headers: HeaderOps::default(),
                }],
                timeout: None,
                rewrite: Rewrite::default(),
                // A config without weftd asks for no retries; weftd sends
                // explicit default routes with Istio's retry policy.
                retries: None,
                fault: None,
                mirrors: Vec::new(),
                total_weight: 1,
                next: AtomicUsize::new(0),
            }),
            request_headers: HeaderOps::default(),
            response_headers: HeaderOps::default(),
            cors: None,
        }
    }

    pub fn forward(&self) -> Option<&Forward> {
        match &self.action {
            RouteAction::Forward(forward) => Some(forward),
            _ => None,
        }
    }
}

impl Forward {
    /// Picks a destination index in proportion to the weights
    /// (deterministic rotation, so small samples already follow the split).
    pub fn pick(&self) -> usize {
        let mut slot =
            (self.next.fetch_add(1, Ordering::Relaxed) % self.total_weight as usize) as u32;
        for (index, destination) in self.destinations.iter().enumerate() {
            if slot < destination.weight {
                return index;
            }
            slot -= destination.weight;
        }
        0
    }
}

impl Rewrite {
    pub fn rewrites_path(&self) -> bool {
        self.uri.is_some() || self.uri_regex.is_some()
    }
}

impl HeaderOps {
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }
}

pub(super) fn compile_route(
    route: &pb::Route,
    path: &str,
    clusters: &HashMap<String, Arc<Cluster>>,
    problems: &mut Problems,
) -> Option<Route> {
    let before = problems.0.len();
    let matcher = match &route.r#match {
        Some(m) => RouteMatch::compile(m, &format!("{path}.match"), problems),
        None => RouteMatch::default(),
    };
    let request_headers = compile_header_ops(
        route.request_headers.as_ref(),
        &format!("{path}.requestHeaders"),
        problems,
    );
    let response_headers = compile_header_ops(
        route.response_headers.as_ref(),
        &format!("{path}.responseHeaders"),
        problems,
    );
    let action = match (
        route.clusters.is_empty(),
        &route.redirect,
        &route.direct_response,
    ) {
        (false, None, None) => compile_forward(route, path, clusters, problems),
        (true, Some(redirect), None) => {
            compile_redirect(redirect, &format!("{path}.redirect"), problems)
        }
        (true, None, Some(direct)) => {
            compile_direct(direct, &format!("{path}.directResponse"), problems)
        }
        (true, None, None) => {
            problems.push(
                format!("{path}.clusters"),
                "needs at least one cluster (or a redirect or directResponse)",
            );
            None
        }
        _ => {
            problems.push(
                path,
                "exactly one of clusters, redirect and directResponse may be set",
            );
            None
        }
    };
    if route.rewrite.is_some() && route.clusters.is_empty() {
        problems.push(
            format!("{path}.rewrite"),
            "only applies to routes that forward to clusters",
        );
    }
    if !route.mirrors.is_empty() && route.clusters.is_empty() {
        problems.push(
            format!("{path}.mirrors"),
            "only applies to routes that forward to clusters",
        );
    }
    let cors = route
        .cors
        .as_ref()
        .and_then(|c| report(Cors::compile(c), &format!("{path}.cors"), problems));
    // Any problem fails the whole config; compile the rest only to report it.
    if problems.0.len() > before {
        return None;
    }
    Some(Route {
        name: route.name.clone(),
        matcher,
        action: action?,
        request_headers,
        response_headers,
        cors: cors.map(Box::new),
    })
}

/// Files the problems of a part compiled outside this module under `path`.
fn report<T>(result: Result<T, Vec<Problem>>, path: &str, problems: &mut Problems) -> Option<T> {
    match result {
        Ok(value) => Some(value),
        Err(found) => {
            for (field, message) in found {
                problems.push(format!("{path}.{field}"), message);
            }
            None
        }
    }
}

fn compile_forward(
    route: &pb::Route,
    path: &str,
    clusters: &HashMap<String, Arc<Cluster>>,
    problems: &mut Problems,
) -> Option<RouteAction> {
    let single = route.clusters.len() == 1;
    let mut destinations = Vec::new();
    for (c_index, target) in route.clusters.iter().enumerate() {
        let c_path = format!("{path}.clusters[{c_index}]");
        let request_headers = compile_header_ops(
            target.request_headers.as_ref(),
            &format!("{c_path}.requestHeaders"),
            problems,
        );
        let response_headers = compile_header_ops(
            target.response_headers.as_ref(),
            &format!("{c_path}.responseHeaders"),
            problems,
        );
        let Some(cluster) = clusters.get(&target.cluster) else {
            problems.push(
                format!("{c_path}.cluster"),
                format!("no cluster named {:?}", target.cluster),
            );
            continue;
        };
        // A lone destination needs no weight; among several, 0 means none.
        let weight = if single {
            target.weight.max(1)
        } else {
            target.weight
        };
        if weight > 0 {
            destinations.push(Destination {
                cluster: cluster.clone(),
                weight,
                request_headers,
                response_headers,
            });
        }
    }
    let total_weight: u32 = destinations.iter().map(|d| d.weight).sum();
    if total_weight == 0
        && route
            .clusters
            .iter()
            .all(|c| clusters.contains_key(&c.cluster))
    {
        problems.push(format!("{path}.clusters"), "weights add up to 0");
    }
    let rewrite = compile_rewrite(route.rewrite.as_ref(), &format!("{path}.rewrite"), problems);
    let timeout = duration(route.timeout.as_ref(), &format!("{path}.timeout"), problems);
    let retries =
        compile_retries(route.retries.as_ref(), &format!("{path}.retries"), problems).map(Box::new);
    let fault =
        compile_fault(route.fault.as_ref(), &format!("{path}.fault"), problems).map(Box::new);
    let mirrors = report(
        Mirror::compile_all(&route.mirrors, clusters),
        path,
        problems,
    )
    .unwrap_or_default();
    Some(RouteAction::Forward(Forward {
        destinations,
        timeout,
        rewrite,
        retries,
        fault,
        mirrors,
        total_weight,
        next: AtomicUsize::new(0),
    }))
}

fn compile_redirect(
    redirect: &pb::Redirect,
    path: &str,
    problems: &mut Problems,
) -> Option<RouteAction> {
    let code = match redirect.code {
        0 => StatusCode::MOVED_PERMANENTLY,
        code @ (301 | 302 | 303 | 307 | 308) => StatusCode::from_u16(code as u16).ok()?,
        other => {
            problems.push(
                format!("{path}.code"),
                format!("must be 301, 302, 303, 307 or 308, got {other}"),
            );
            return None;
        }
    };
    let uri = non_empty(&redirect.uri);
    if let Some(uri) = uri
        && !valid_path(uri)
    {
        problems.push(
            format!("{path}.uri"),
            format!("{uri:?} is not a path starting with '/'"),
        );
    }
    let authority = non_empty(&redirect.authority);
    if let Some(authority) = authority
        && Authority::try_from(authority).is_err()
    {
        problems.push(
            format!("{path}.authority"),
            format!("{authority:?} is not a valid authority"),
        );
    }
    let scheme = non_empty(&redirect.scheme);
    if let Some(scheme) = scheme
        && Scheme::try_from(scheme).is_err()
    {
        problems.push(
            format!("{path}.scheme"),
            format!("{scheme:?} is not a valid scheme"),
        );
    }
    let port = match redirect.port {
        0 => match pb::RedirectPort::try_from(redirect.derive_port).unwrap_or_default() {
            pb::RedirectPort::Unspecified => RedirectPort::Authority,
            pb::RedirectPort::FromProtocolDefault => RedirectPort::ProtocolDefault,
            pb::RedirectPort::FromRequestPort => RedirectPort::Request,
        },
        port => match u16::try_from(port) {
            Ok(port) => RedirectPort::Fixed(port),
            Err(_) => {
                problems.push(
                    format!("{path}.port"),
                    format!("must be 1..65535, got {port}"),
                );
                RedirectPort::Authority
            }
        },
    };
    Some(RouteAction::Redirect(Redirect {
        code,
        uri: uri.map(str::to_string),
        authority: authority.map(str::to_ascii_lowercase),
        scheme: scheme.map(str::to_ascii_lowercase),
        port,
    }))
}

fn compile_direct(
    direct: &pb::DirectResponse,
    path: &str,
    problems: &mut Problems,
) -> Option<RouteAction> {
    match u16::try_from(direct.status)
        .ok()
        .filter(|s| (200..=599).contains(s))
    {
        Some(status) => Some(RouteAction::Direct(DirectResponse {
            status: StatusCode::from_u16(status).ok()?,
            body: Bytes::from(direct.body.clone()),
        })),
        None => {
            problems.push(
                format!("{path}.status"),
                format!("must be 200..599, got {}", direct.status),
            );
            None
        }
    }
}

fn compile_rewrite(rewrite: Option<&pb::Rewrite>, path: &str, problems: &mut Problems) -> Rewrite {
    let Some(rewrite) = rewrite else {
        return Rewrite::default();
    };
    let mut compiled = Rewrite::default();
    if let Some(uri) = non_empty(&rewrite.uri) {
        if valid_path(uri) && !uri.contains('?') {
            compiled.uri = Some(uri.to_string());
        } else {
            problems.push(
                format!("{path}.uri"),
                format!("{uri:?} is not a path starting with '/' (without a query)"),
            );
        }
    }
    if let Some(authority) = non_empty(&rewrite.authority) {
        match Authority::try_from(authority) {
            Ok(authority) => compiled.authority = Some(authority),
            Err(_) => problems.push(
                format!("{path}.authority"),
                format!("{authority:?} is not a valid authority"),
            ),
        }
    }
    match (
        non_empty(&rewrite.uri_regex_pattern),
        rewrite.uri_regex_substitution.as_str(),
    ) {
        (None, "") => {}
        (None, _) => problems.push(
            format!("{path}.uriRegexPattern"),
            "is required with uriRegexSubstitution",
        ),
        (Some(_), _) if compiled.uri.is_some() => {
            problems.push(path, "uri and uriRegexPattern are exclusive: set one")
        }
        // Not anchored: every match in the path is replaced, as in Envoy.
        (Some(pattern), substitution) => match Regex::new(pattern) {
            Ok(regex) => {
                // Group references (`\1`) minus their backslash are plain
                // path characters, so this checks the literal part.
                if valid_path_chars(&substitution.replace('\\', "")) {
                    compiled.uri_regex = Some((regex, re2_substitution(substitution)));
                } else {
                    problems.push(
                        format!("{path}.uriRegexSubstitution"),
                        format!(
                            "{:?} has characters not allowed in a path",
                            rewrite.uri_regex_substitution
                        ),
                    );
                }
            }
            Err(err) => problems.push(
                format!("{path}.uriRegexPattern"),
                regex_problem(pattern, &err),
            ),
        },
    }
    compiled
}

/// RE2 (and so Envoy and Istio) substitutions name groups `\1`; the regex
/// crate uses `${1}` and treats a bare `$` as a group reference.
fn re2_substitution(substitution: &str) -> String {
    let mut out = String::with_capacity(substitution.len());
    let mut chars = substitution.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.peek().copied() {
                Some(d) if d.is_ascii_digit() => {
                    chars.next();
                    out.push_str("${");
                    out.push(d);
                    out.push('}');
                }
                Some('\\') => {
                    chars.next();
                    out.push('\\');
                }
                _ => out.push('\\'),
            },
            '$' => out.push_str("$$"),
            c => out.push(c),
        }
    }
    out
}

fn compile_header_ops(
    ops: Option<&pb::HeaderOperations>,
    path: &str,
    problems: &mut Problems,
) -> HeaderOps {
    let Some(ops) = ops else {
        return HeaderOps::default();
    };
    let mut compiled = HeaderOps::default();
    for (field, map, out) in [
        ("set", &ops.set, &mut compiled.set),
        ("add", &ops.add, &mut compiled.add),
    ] {
        // Maps arrive in any order; sorted, repeated loads behave the same.
        let mut entries: Vec<_> = map.iter().collect();
        entries.sort();
        for (name, value) in entries {
            let e_path = format!("{path}.{field}[{name:?}]");
            let Some(name) = editable_header(name, &e_path, problems) else {
                continue;
            };
            match HeaderValue::try_from(value.as_str()) {
                Ok(value) => out.push((name, value)),
                Err(_) => problems.push(e_path, format!("{value:?} is not a valid header value")),
            }
        }
    }
    for (index, name) in ops.remove.iter().enumerate() {
        if let Some(name) = editable_header(name, &format!("{path}.remove[{index}]"), problems) {
            compiled.remove.push(name);
        }
    }
    compiled
}

/// Envoy refuses to edit pseudo-headers and `Host` this way; the authority
/// has `rewrite.authority`.
fn editable_header(name: &str, path: &str, problems: &mut Problems) -> Option<HeaderName> {
    match HeaderName::try_from(name) {
        Ok(parsed) if parsed == header::HOST => {
            problems.push(path, "Host cannot be edited: use rewrite.authority");
            None
        }
        Ok(parsed) => Some(parsed),
        Err(_) => {
            problems.push(path, format!("{name:?} is not a valid header name"));
            None
        }
    }
}

fn non_empty(value: &str) -> Option<&str> {
    (!value.is_empty()).then_some(value)
}

fn valid_path(uri: &str) -> bool {
    uri.starts_with('/') && PathAndQuery::try_from(uri).is_ok()
}

fn valid_path_chars(text: &str) -> bool {
    text.is_empty() || PathAndQuery::try_from(format!("/{text}")).is_ok_and(|p| p.query().is_none())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Snapshot, parse_config};

    fn problems(routes: &str) -> String {
        let config = format!(
            "services: [{{name: s, ports: [{{port: 80, routes: {routes}}}]}}]\nclusters: [{{name: a}}]\n"
        );
        match Snapshot::compile(parse_config(&config, "t.yaml").expect("parse"), "t.yaml") {
            Ok(_) => String::new(),
            Err(err) => err.to_string(),
        }
    }

    #[test]
    fn actions_are_validated_with_their_paths() {
        let err = problems(
            "[{redirect: {code: 200}}, {directResponse: {status: 600}}, \
             {redirect: {uri: no-slash, authority: 'a b'}, rewrite: {uri: /x}}, {}, \
             {clusters: [{cluster: a}], redirect: {}}, \
             {clusters: [{cluster: a}], rewrite: {uri: /a, uriRegexPattern: x}}, \
             {clusters: [{cluster: a}], rewrite: {uriRegexPattern: '(', uriRegexSubstitution: x}}, \
             {clusters: [{cluster: a}], rewrite: {uriRegexSubstitution: x}}]",
        );
        let p = "services[0].ports[0].routes";
        for expected in [
            format!("{p}[0].redirect.code: must be 301, 302, 303, 307 or 308, got 200"),
            format!("{p}[1].directResponse.status: must be 200..599, got 600"),
            format!("{p}[2].redirect.uri: \"no-slash\" is not a path"),
            format!("{p}[2].redirect.authority: "),
            format!("{p}[2].rewrite: only applies to routes that forward"),
            format!("{p}[3].clusters: needs at least one cluster"),
            format!("{p}[4]: exactly one of clusters, redirect and directResponse"),
            format!("{p}[5].rewrite: uri and uriRegexPattern are exclusive"),
            format!("{p}[6].rewrite.uriRegexPattern: \"(\" is not a valid RE2 regex"),
            format!("{p}[7].rewrite.uriRegexPattern: is required"),
        ] {
            assert!(err.contains(&expected), "{expected:?} missing from\n{err}");
        }
        assert!(problems("[{redirect: {}}, {directResponse: {status: 204}}]").is_empty());
    }

    #[test]
    fn mirrors_and_cors_are_validated_with_their_paths() {
        let err = problems(
            "[{clusters: [{cluster: a}], mirrors: [{cluster: nope}, {cluster: a, percentage: 101, hasPercentage: true}], \
             cors: {allowOrigins: [{regex: '('}], maxAge: -1s}}, \
             {directResponse: {status: 200}, mirrors: [{cluster: a}]}]",
        );
        let p = "services[0].ports[0].routes";
        for expected in [
            format!("{p}[0].mirrors[0].cluster: no cluster named \"nope\""),
            format!("{p}[0].mirrors[1].percentage: must be 0..100, got 101"),
            format!("{p}[0].cors.allowOrigins[0].regex: \"(\" is not a valid RE2 regex"),
            format!("{p}[0].cors.maxAge: must not be negative"),
            format!("{p}[1].mirrors: only applies to routes that forward"),
        ] {
            assert!(err.contains(&expected), "{expected:?} missing from\n{err}");
        }
        assert!(
            problems(
                "[{clusters: [{cluster: a}], mirrors: [{cluster: a}], cors: {allowOrigins: [{exact: x}]}}]"
            )
            .is_empty()
        );
    }

    #[test]
    fn a_zero_redirect_code_means_301() {
        let config =
            "services: [{name: s, ports: [{port: 80, routes: [{redirect: {uri: /x}}]}]}]\n";
        let snapshot =
            Snapshot::compile(parse_config(config, "t").expect("parse"), "t").expect("valid");
        let route = &snapshot.service_by_host("s").expect("service").ports[0].routes[0];
        let RouteAction::Redirect(redirect) = &route.action else {
            panic!("not a redirect");
        };
        assert_eq!(redirect.code, StatusCode::MOVED_PERMANENTLY);
    }

    #[test]
    fn re2_group_references_become_regex_crate_syntax() {
        assert_eq!(re2_substitution(r"/v2/\1/\2"), "/v2/${1}/${2}");
        assert_eq!(re2_substitution(r"/a$b"), "/a$$b");
        assert_eq!(re2_substitution(r"/a\\1"), r"/a\1");
        let regex = Regex::new("^/api/([a-z]+)/(.*)$").expect("regex");
        assert_eq!(
            regex.replace_all("/api/users/7", re2_substitution(r"/\1-v2/\2").as_str()),
            "/users-v2/7"
        );
    }

    #[test]
    fn header_ops_are_sorted_and_host_is_refused() {
        let ops: pb::HeaderOperations =
            serde_saphyr::from_str("{set: {x-b: '2', x-a: '1'}, remove: [host, 'bad name']}")
                .expect("yaml");
        let mut problems = Problems::default();
        let compiled = compile_header_ops(Some(&ops), "h", &mut problems);
        let names: Vec<&str> = compiled.set.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["x-a", "x-b"]);
        assert_eq!(problems.0.len(), 2, "{:?}", problems.0);
        assert!(
            problems.0[0].starts_with("h.remove[0]: Host"),
            "{:?}",
            problems.0
        );
    }
}
