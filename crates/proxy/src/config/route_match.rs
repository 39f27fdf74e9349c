//! Whether a request satisfies a route's `match`: path, headers, query
//! parameters, method, authority and scheme, all of which must hold.
//!
//! Everything that can fail is settled at config load: regexes are compiled
//! once (RE2 semantics through the `regex` crate, anchored to the whole
//! value), header names parsed, case folding decided. Matching then reads
//! the request in place; a route that only matches the path allocates
//! nothing.

use std::borrow::Cow;

use http::{HeaderMap, HeaderName, Method};
use regex::Regex;
use weft_proto::proxy::v1 as pb;

use crate::policy::jwt::Verified;

use super::snapshot::Problems;

/// The parts of a request that routes look at, borrowed from it.
pub struct RequestView<'a> {
    /// The path without the query.
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub method: &'a Method,
    /// `host[:port]` as the client sent it (`:authority` or `Host`).
    pub authority: Option<&'a str>,
    /// `http` until the proxy terminates TLS itself.
    pub scheme: &'a str,
    pub headers: &'a HeaderMap,
    /// The JWT a RequestAuthentication validated for this request, if any:
    /// what `@request.auth.claims.*` matches read (never a client's header).
    pub claims: Option<&'a Verified>,
}

/// A compiled `RouteMatch`; the default matches every request.
#[derive(Debug, Default)]
pub struct RouteMatch {
    pub path: PathMatch,
    headers: Vec<HeaderMatcher>,
    query_params: Vec<QueryMatcher>,
    method: Option<StringMatcher>,
    authority: Option<StringMatcher>,
    scheme: Option<StringMatcher>,
}

#[derive(Debug, Default)]
pub enum PathMatch {
    #[default]
    Any,
    Exact {
        value: String,
        ignore_case: bool,
    },
    Prefix {
        value: String,
        ignore_case: bool,
    },
    Regex(Regex),
}

/// A compiled `StringMatch`. Case-sensitive, as Istio's, except where the
/// compared value is itself case-insensitive (host names).
#[derive(Debug)]
pub struct StringMatcher {
    kind: StringKind,
    ignore_case: bool,
}

#[derive(Debug)]
enum StringKind {
    Exact(String),
    Prefix(String),
    Regex(Regex),
}

#[derive(Debug)]
struct HeaderMatcher {
    name: HeaderKey,
    /// `None`: presence is enough.
    value: Option<StringMatcher>,
    /// Istio's `withoutHeaders`: the header is absent or does not match.
    invert: bool,
}

/// HTTP/2 carries the authority, method, path and scheme as pseudo-headers
/// and HTTP/1 carries the authority as `Host`; a header match on any of
/// these names reads the request line, whatever the client's version.
#[derive(Debug)]
enum HeaderKey {
    Header(HeaderName),
    Authority,
    Method,
    Path,
    Scheme,
    /// A claim of the validated JWT, by path (outermost name first).
    Claim(Vec<String>),
}

#[derive(Debug)]
struct QueryMatcher {
    name: String,
    value: Option<StringMatcher>,
}

impl RouteMatch {
    pub(super) fn compile(m: &pb::RouteMatch, path: &str, problems: &mut Problems) -> Self {
        let path_match = match &m.path {
            None => PathMatch::Any,
            Some(pb::route_match::Path::PathExact(value)) => PathMatch::Exact {
                value: value.clone(),
                ignore_case: m.ignore_uri_case,
            },
            Some(pb::route_match::Path::PathPrefix(value)) => PathMatch::Prefix {
                value: value.clone(),
                ignore_case: m.ignore_uri_case,
            },
            Some(pb::route_match::Path::PathRegex(pattern)) => {
                match compile_regex(pattern, &format!("{path}.pathRegex"), problems) {
                    Some(regex) => PathMatch::Regex(regex),
                    // Reported; the route is dropped with the whole config.
                    None => PathMatch::Any,
                }
            }
        };
        let headers = m
            .headers
            .iter()
            .enumerate()
            .filter_map(|(index, header)| {
                HeaderMatcher::compile(header, &format!("{path}.headers[{index}]"), problems)
            })
            .collect();
        let mut query_params = Vec::new();
        for (index, param) in m.query_params.iter().enumerate() {
            let q_path = format!("{path}.queryParams[{index}]");
            if param.name.is_empty() {
                problems.push(format!("{q_path}.name"), "is required");
                continue;
            }
            query_params.push(QueryMatcher {
                name: param.name.clone(),
                value: StringMatcher::compile_opt(
                    param.value.as_ref(),
                    &format!("{q_path}.value"),
                    false,
                    problems,
                ),
            });
        }
        Self {
            path: path_match,
            headers,
            query_params,
            method: StringMatcher::compile_opt(
                m.method.as_ref(),
                &format!("{path}.method"),
                false,
                problems,
            ),
            authority: StringMatcher::compile_opt(
                m.authority.as_ref(),
                &format!("{path}.authority"),
                true,
                problems,
            ),
            scheme: StringMatcher::compile_opt(
                m.scheme.as_ref(),
                &format!("{path}.scheme"),
                false,
                problems,
            ),
        }
    }

    /// All conditions hold. Cheap conditions (path, method) are tried first.
    pub fn matches(&self, request: &RequestView<'_>) -> bool {
        self.path.matches(request.path)
            && self
                .method
                .as_ref()
                .is_none_or(|m| m.matches(request.method.as_str()))
            && self
                .authority
                .as_ref()
                .is_none_or(|m| request.authority.is_some_and(|a| m.matches(a)))
            && self
                .scheme
                .as_ref()
                .is_none_or(|m| m.matches(request.scheme))
            && self.headers.iter().all(|h| h.matches(request))
            && self.query_params.iter().all(|q| q.matches(request.query))
    }
}

impl PathMatch {
    pub fn matches(&self, path: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Exact { value, ignore_case } => eq(path, value, *ignore_case),
            Self::Prefix { value, ignore_case } => starts_with(path, value, *ignore_case),
            Self::Regex(regex) => regex.is_match(path),
        }
    }

    /// How many leading bytes of a matching `path` a `rewrite.uri` replaces:
    /// the prefix for prefix matches, the whole path for exact and regex
    /// matches, and `/` for a route without a path match (Istio compiles
    /// that to the prefix `/`).
    pub fn rewritten_len(&self, path: &str) -> usize {
        match self {
            Self::Any => usize::from(path.starts_with('/')),
            // ASCII case folding keeps lengths, so the prefix length is the
            // matched length even with ignore_case.
            Self::Prefix { value, .. } => value.len().min(path.len()),
            Self::Exact { .. } | Self::Regex(_) => path.len(),
        }
    }
}

impl StringMatcher {
    /// `None` for an absent `StringMatch` or one with no kind set: no
    /// condition (for headers and query parameters: presence only).
    fn compile_opt(
        m: Option<&pb::StringMatch>,
        path: &str,
        ignore_case: bool,
        problems: &mut Problems,
    ) -> Option<Self> {
        let kind = match m?.kind.as_ref()? {
            pb::string_match::Kind::Exact(value) => StringKind::Exact(value.clone()),
            pb::string_match::Kind::Prefix(value) => StringKind::Prefix(value.clone()),
            pb::string_match::Kind::Regex(pattern) => {
                StringKind::Regex(compile_regex(pattern, &format!("{path}.regex"), problems)?)
            }
        };
        Some(Self { kind, ignore_case })
    }

    pub fn matches(&self, value: &str) -> bool {
        match &self.kind {
            StringKind::Exact(exact) => eq(value, exact, self.ignore_case),
            StringKind::Prefix(prefix) => starts_with(value, prefix, self.ignore_case),
            StringKind::Regex(regex) => regex.is_match(value),
        }
    }
}

impl HeaderMatcher {
    fn compile(m: &pb::HeaderMatch, path: &str, problems: &mut Problems) -> Option<Self> {
        let name = match m.name.to_ascii_lowercase().as_str() {
            _ if !m.claim.is_empty() => HeaderKey::Claim(m.claim.clone()),
            "" => {
                problems.push(format!("{path}.name"), "is required");
                return None;
            }
            ":authority" | "host" => HeaderKey::Authority,
            ":method" => HeaderKey::Method,
            ":path" => HeaderKey::Path,
            ":scheme" => HeaderKey::Scheme,
            other => match HeaderName::try_from(other) {
                Ok(name) => HeaderKey::Header(name),
                Err(_) => {
                    problems.push(
                        format!("{path}.name"),
                        format!("{:?} is not a valid header name", m.name),
                    );
                    return None;
                }
            },
        };
        let ignore_case = matches!(name, HeaderKey::Authority);
        let value = StringMatcher::compile_opt(
            m.value.as_ref(),
            &format!("{path}.value"),
            ignore_case,
            problems,
        );
        Some(Self {
            name,
            value,
            invert: m.invert,
        })
    }

    fn matches(&self, request: &RequestView<'_>) -> bool {
        let check = |value: &str| self.value.as_ref().is_none_or(|m| m.matches(value));
        let found = match &self.name {
            HeaderKey::Authority => request.authority.is_some_and(check),
            HeaderKey::Method => check(request.method.as_str()),
            HeaderKey::Scheme => check(request.scheme),
            HeaderKey::Path => match request.query {
                None => check(request.path),
                Some(query) => check(&format!("{}?{query}", request.path)),
            },
            HeaderKey::Claim(path) => match (request.claims, &self.value) {
                (None, _) => false,
                (Some(token), None) => token.claim(path).is_some(),
                // A list claim matches when one of its items does.
                (Some(token), Some(matcher)) => {
                    token.claim_strings(path).iter().any(|v| matcher.matches(v))
                }
            },
            HeaderKey::Header(name) => {
                let mut values = request.headers.get_all(name).iter();
                match (values.next(), values.next()) {
                    (None, _) => false,
                    // A value that is not UTF-8 is present but matches no value condition.
                    (Some(only), None) => match std::str::from_utf8(only.as_bytes()) {
                        Ok(value) => check(value),
                        Err(_) => self.value.is_none(),
                    },
                    // Repeated headers are matched joined with commas, as Envoy does.
                    (Some(_), Some(_)) => {
                        let joined = request
                            .headers
                            .get_all(name)
                            .iter()
                            .map(|v| String::from_utf8_lossy(v.as_bytes()))
                            .collect::<Vec<_>>()
                            .join(",");
                        check(&joined)
                    }
                }
            }
        };
        found != self.invert
    }
}

impl QueryMatcher {
    fn matches(&self, query: Option<&str>) -> bool {
        let Some(value) = query.and_then(|q| query_param(q, &self.name)) else {
            return false;
        };
        self.value.as_ref().is_none_or(|m| m.matches(&value))
    }
}

/// The first value of parameter `name`, names and values percent-decoded
/// (as Envoy does for route matching; `+` is left as is).
fn query_param<'a>(query: &'a str, name: &str) -> Option<Cow<'a, str>> {
    query
        .split('&')
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
        .find(|(key, _)| percent_decode(key) == name)
        .map(|(_, value)| percent_decode(value))
}

fn percent_decode(text: &str) -> Cow<'_, str> {
    if !text.contains('%') {
        return Cow::Borrowed(text);
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&hi), Some(&lo)) if hex(hi).is_some() && hex(lo).is_some() => {
                let digit = |b| hex(b).unwrap_or(0) as u8;
                out.push(digit(hi) << 4 | digit(lo));
                i += 3;
            }
            (byte, _, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

fn eq(value: &str, expected: &str, ignore_case: bool) -> bool {
    if ignore_case {
        value.eq_ignore_ascii_case(expected)
    } else {
        value == expected
    }
}

fn starts_with(value: &str, prefix: &str, ignore_case: bool) -> bool {
    if ignore_case {
        value
            .as_bytes()
            .get(..prefix.len())
            .is_some_and(|head| head.eq_ignore_ascii_case(prefix.as_bytes()))
    } else {
        value.starts_with(prefix)
    }
}

/// Compiles an RE2-syntax pattern that must match the whole value.
pub(super) fn compile_regex(pattern: &str, path: &str, problems: &mut Problems) -> Option<Regex> {
    // Checked alone first: wrapped, a stray `)` could balance the wrapper's
    // group and slip through as a different pattern.
    if let Err(err) = Regex::new(pattern) {
        problems.push(path, regex_problem(pattern, &err));
        return None;
    }
    match Regex::new(&format!("^(?:{pattern})$")) {
        Ok(regex) => Some(regex),
        Err(err) => {
            problems.push(path, regex_problem(pattern, &err));
            None
        }
    }
}

/// The regex crate's message spans lines (pattern, caret, error); the
/// config error is one line per problem, so keep the `error:` line.
pub(super) fn regex_problem(pattern: &str, err: &regex::Error) -> String {
    let text = err.to_string();
    let reason = text
        .lines()
        .rev()
        .find_map(|line| line.strip_prefix("error: "))
        .unwrap_or(text.lines().next().unwrap_or("invalid"));
    format!("{pattern:?} is not a valid RE2 regex: {reason}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile(yaml: &str) -> Result<RouteMatch, String> {
        let m: pb::RouteMatch = serde_saphyr::from_str(yaml).map_err(|e| e.to_string())?;
        let mut problems = Problems::default();
        let compiled = RouteMatch::compile(&m, "match", &mut problems);
        if problems.0.is_empty() {
            Ok(compiled)
        } else {
            Err(problems.0.join("\n"))
        }
    }

    struct Req {
        method: Method,
        path: &'static str,
        query: Option<&'static str>,
        authority: Option<&'static str>,
        headers: HeaderMap,
    }

    fn req(path_and_query: &'static str) -> Req {
        let (path, query) = match path_and_query.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (path_and_query, None),
        };
        Req {
            method: Method::GET,
            path,
            query,
            authority: Some("reviews:9080"),
            headers: HeaderMap::new(),
        }
    }

    impl Req {
        fn header(mut self, name: &'static str, value: &'static str) -> Self {
            self.headers
                .append(name, http::HeaderValue::from_static(value));
            self
        }

        fn matched_by(&self, m: &RouteMatch) -> bool {
            self.matched_with(m, None)
        }

        fn matched_with(&self, m: &RouteMatch, claims: Option<&Verified>) -> bool {
            m.matches(&RequestView {
                path: self.path,
                query: self.query,
                method: &self.method,
                authority: self.authority,
                scheme: "http",
                headers: &self.headers,
                claims,
            })
        }
    }

    #[test]
    fn paths_exact_prefix_regex_and_ignore_case() {
        let exact = compile("pathExact: /a/b").expect("valid");
        assert!(req("/a/b?x=1").matched_by(&exact));
        assert!(!req("/a/b/").matched_by(&exact));
        assert!(!req("/A/b").matched_by(&exact));
        let folded = compile("{pathExact: /a/B, ignoreUriCase: true}").expect("valid");
        assert!(req("/A/b").matched_by(&folded));
        let prefix = compile("{pathPrefix: /Api, ignoreUriCase: true}").expect("valid");
        assert!(req("/api/x").matched_by(&prefix));
        assert!(!req("/ap").matched_by(&prefix));
        let regex = compile(r#"pathRegex: "/item/[0-9]+""#).expect("valid");
        assert!(req("/item/42").matched_by(&regex));
        assert!(
            !req("/item/42/more").matched_by(&regex),
            "anchored to the whole path"
        );
        assert!(!req("/x/item/42").matched_by(&regex));
    }

    #[test]
    fn headers_match_by_value_presence_and_absence() {
        let jason = compile("headers: [{name: end-user, value: {exact: jason}}]").expect("valid");
        assert!(req("/").header("end-user", "jason").matched_by(&jason));
        assert!(!req("/").header("end-user", "jasonx").matched_by(&jason));
        assert!(!req("/").matched_by(&jason));

        let present = compile("headers: [{name: X-Canary}]").expect("valid");
        assert!(req("/").header("x-canary", "").matched_by(&present));
        assert!(!req("/").matched_by(&present));

        let without = compile("headers: [{name: x-debug, value: {prefix: on}, invert: true}]")
            .expect("valid");
        assert!(req("/").matched_by(&without), "absent");
        assert!(req("/").header("x-debug", "off").matched_by(&without));
        assert!(!req("/").header("x-debug", "only").matched_by(&without));

        let repeated = compile("headers: [{name: x-a, value: {exact: '1,2'}}]").expect("valid");
        assert!(
            req("/")
                .header("x-a", "1")
                .header("x-a", "2")
                .matched_by(&repeated)
        );

        let host =
            compile("headers: [{name: ':authority', value: {prefix: REVIEWS}}]").expect("valid");
        assert!(req("/").matched_by(&host));
    }

    #[test]
    fn claims_match_the_validated_token_never_a_header() {
        let beta = compile(
            "headers: [{name: '@request.auth.claims.org.team', claim: [org, team], \
             value: {exact: beta}}]",
        )
        .expect("valid");
        let token = |claims| Verified::for_test(claims);
        let nested = token(serde_json::json!({"org": {"team": "beta"}}));
        let listed = token(serde_json::json!({"org": {"team": ["alpha", "beta"]}}));
        let other = token(serde_json::json!({"org": {"team": "alpha"}, "team": "beta"}));
        let request = req("/");
        assert!(request.matched_with(&beta, Some(&nested)));
        assert!(request.matched_with(&beta, Some(&listed)));
        assert!(!request.matched_with(&beta, Some(&other)));
        assert!(!request.matched_with(&beta, None));
        // A header of any similar name is not the claim.
        let spoof = req("/")
            .header("org.team", "beta")
            .header("team", "beta")
            .header("request.auth.claims.org.team", "beta");
        assert!(!spoof.matched_with(&beta, None));
        // Presence and withoutHeaders on a claim.
        let present =
            compile("headers: [{name: '@request.auth.claims.org', claim: [org]}]").expect("valid");
        assert!(request.matched_with(&present, Some(&nested)));
        assert!(!request.matched_with(&present, None));
        let without = compile(
            "headers: [{name: '@request.auth.claims.org.team', claim: [org, team], \
             value: {exact: beta}, invert: true}]",
        )
        .expect("valid");
        assert!(request.matched_with(&without, None));
        assert!(!request.matched_with(&without, Some(&nested)));
    }

    #[test]
    fn query_method_authority_and_scheme() {
        let query = compile("queryParams: [{name: v, value: {regex: '[0-9]+'}}, {name: debug}]")
            .expect("valid");
        assert!(req("/?debug&v=12").matched_by(&query));
        assert!(
            req("/?%64ebug=1&v=%31").matched_by(&query),
            "percent-decoded"
        );
        assert!(!req("/?v=12").matched_by(&query));
        assert!(!req("/?debug=1&v=1a").matched_by(&query));
        assert!(!req("/").matched_by(&query));

        let mut post = req("/");
        post.method = Method::POST;
        let method = compile("method: {exact: POST}").expect("valid");
        assert!(post.matched_by(&method));
        assert!(!req("/").matched_by(&method));

        let authority = compile("authority: {exact: Reviews:9080}").expect("valid");
        assert!(
            req("/").matched_by(&authority),
            "hosts compare without case"
        );
        let mut no_host = req("/");
        no_host.authority = None;
        assert!(!no_host.matched_by(&authority));

        assert!(req("/").matched_by(&compile("scheme: {exact: http}").expect("valid")));
        assert!(!req("/").matched_by(&compile("scheme: {exact: https}").expect("valid")));
    }

    #[test]
    fn invalid_regexes_are_reported_with_their_field_paths() {
        let err = compile(
            "{pathRegex: '(', headers: [{name: a, value: {regex: '[z-a]'}}], \
             queryParams: [{name: q, value: {regex: 'a)(b'}}], method: {regex: '*'}}",
        )
        .expect_err("invalid");
        assert!(
            err.contains("match.pathRegex: \"(\" is not a valid RE2 regex"),
            "{err}"
        );
        assert!(err.contains("match.headers[0].value.regex: "), "{err}");
        assert!(err.contains("match.queryParams[0].value.regex: "), "{err}");
        assert!(err.contains("match.method.regex: "), "{err}");
        assert_eq!(err.lines().count(), 4, "{err}");
    }

    #[test]
    fn rewritten_length_follows_the_match_kind() {
        let prefix = compile("pathPrefix: /api/v1").expect("valid").path;
        assert_eq!(prefix.rewritten_len("/api/v1/x"), 7);
        let exact = compile("pathExact: /a").expect("valid").path;
        assert_eq!(exact.rewritten_len("/a"), 2);
        assert_eq!(PathMatch::Any.rewritten_len("/x"), 1);
    }
}
