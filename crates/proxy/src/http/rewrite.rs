//! What a matched route changes: the request on its way upstream (path and
//! authority rewrites, header operations), the response on its way back
//! (header operations), and the responses a route makes itself (redirects,
//! direct responses).
//!
//! Order, as in Envoy and Istio: the route's header operations, then the
//! picked destination's; within one set, remove, then set, then add.

use bytes::Bytes;
use http::uri::{Authority, PathAndQuery, Uri};
use http::{HeaderMap, HeaderValue, Request, Response, header};

use super::route::Matched;
use crate::body::ProxyBody;
use crate::config::{
    DirectResponse, HeaderOps, PathMatch, Redirect, RedirectPort, RequestView, Rewrite, Route,
};
use crate::reply;

/// The path before a rewrite, for the upstream's benefit (Envoy's name).
pub const ORIGINAL_PATH_HEADER: http::HeaderName =
    http::HeaderName::from_static("x-envoy-original-path");

/// Applies the route's request edits. `authority` is what the upstream
/// request will carry as `:authority` (HTTP/2) or `Host` (HTTP/1).
pub fn edit_request<B>(
    matched: &Matched,
    request: &mut Request<B>,
    authority: &mut Option<Authority>,
) {
    let route = &matched.route;
    apply_header_ops(&route.request_headers, request.headers_mut());
    if let Some(destination) = matched.destination() {
        apply_header_ops(&destination.request_headers, request.headers_mut());
    }
    let Some(forward) = route.forward() else {
        return;
    };
    let rewrite = &forward.rewrite;
    if rewrite.rewrites_path() {
        rewrite_uri(&route.matcher.path, rewrite, request);
    }
    if let Some(new) = &rewrite.authority {
        if let Ok(value) = HeaderValue::from_str(new.as_str()) {
            request.headers_mut().insert(header::HOST, value);
        }
        *authority = Some(new.clone());
    }
}

/// Applies the route's, then the destination's, response header edits.
pub fn edit_response(matched: &Matched, headers: &mut HeaderMap) {
    apply_header_ops(&matched.route.response_headers, headers);
    if let Some(destination) = matched.destination() {
        apply_header_ops(&destination.response_headers, headers);
    }
}

pub fn apply_header_ops(ops: &HeaderOps, headers: &mut HeaderMap) {
    for name in &ops.remove {
        headers.remove(name);
    }
    for (name, value) in &ops.set {
        headers.insert(name.clone(), value.clone());
    }
    for (name, value) in &ops.add {
        headers.append(name.clone(), value.clone());
    }
}

/// The route's redirect: a 3xx with `location` built from the request.
pub fn redirect(
    route: &Route,
    redirect: &Redirect,
    request: &RequestView<'_>,
) -> Response<ProxyBody> {
    let location = redirect_location(redirect, request);
    let mut response = reply::answer(redirect.code, Bytes::new());
    match HeaderValue::try_from(location) {
        Ok(value) => {
            response.headers_mut().insert(header::LOCATION, value);
        }
        // Every part is validated at load or came from a parsed request.
        Err(err) => tracing::warn!(
            "route {:?}: redirect location is not a header value: {err}",
            route.name
        ),
    }
    apply_header_ops(&route.response_headers, response.headers_mut());
    response
}

/// The route's direct response: its status and body.
pub fn direct(route: &Route, direct: &DirectResponse) -> Response<ProxyBody> {
    let mut response = reply::answer(direct.status, direct.body.clone());
    apply_header_ops(&route.response_headers, response.headers_mut());
    response
}

fn rewrite_uri<B>(path_match: &PathMatch, rewrite: &Rewrite, request: &mut Request<B>) {
    let uri = request.uri();
    let Some(path) = rewritten_path(path_match, rewrite, uri.path()) else {
        return;
    };
    let original = uri
        .path_and_query()
        .map_or_else(|| uri.path().to_string(), |pq| pq.as_str().to_string());
    let path_and_query = match uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path,
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = match PathAndQuery::try_from(path_and_query) {
        Ok(pq) => Some(pq),
        Err(err) => {
            // Rewrites are validated at load; keep the request as it came.
            tracing::warn!("path rewrite of {original:?} gave an invalid path: {err}");
            return;
        }
    };
    let Ok(new_uri) = Uri::from_parts(parts) else {
        return;
    };
    *request.uri_mut() = new_uri;
    if let Ok(value) = HeaderValue::from_str(&original) {
        request.headers_mut().insert(ORIGINAL_PATH_HEADER, value);
    }
}

/// The path after `rewrite`, `None` when it rewrites no path.
fn rewritten_path(path_match: &PathMatch, rewrite: &Rewrite, path: &str) -> Option<String> {
    if let Some(uri) = &rewrite.uri {
        let rest = path.get(path_match.rewritten_len(path)..).unwrap_or("");
        // Istio rewrites prefix `/foo` to `/` as `/foo/bar` → `/bar`, not
        // `//bar`, so swallow the separator the prefix left behind.
        let rest = match path_match {
            PathMatch::Prefix { value, .. } if uri == "/" && !value.ends_with('/') => {
                rest.strip_prefix('/').unwrap_or(rest)
            }
            _ => rest,
        };
        return Some(format!("{uri}{rest}"));
    }
    let (regex, substitution) = rewrite.uri_regex.as_ref()?;
    Some(regex.replace_all(path, substitution.as_str()).into_owned())
}

/// `scheme://authority/path?query`, each part replaced as the redirect
/// says. The path keeps the request's query unless `uri` has its own (as
/// Envoy's `path_redirect`); `authority` replaces host and port; `port`
/// then replaces the port; a port that is the scheme's default is dropped.
fn redirect_location(redirect: &Redirect, request: &RequestView<'_>) -> String {
    let scheme = redirect.scheme.as_deref().unwrap_or(request.scheme);
    let path_and_query = match (&redirect.uri, request.query) {
        (Some(uri), _) if uri.contains('?') => uri.clone(),
        (Some(uri), Some(query)) => format!("{uri}?{query}"),
        (Some(uri), None) => uri.clone(),
        (None, Some(query)) => format!("{}?{query}", request.path),
        (None, None) => request.path.to_string(),
    };
    let Some(authority) = redirect.authority.as_deref().or(request.authority) else {
        // No host to name: a relative reference is still a valid Location.
        return path_and_query;
    };
    let (host, authority_port) = split_host_port(authority);
    let port = match redirect.port {
        RedirectPort::Fixed(port) => Some(port.to_string()),
        RedirectPort::Authority => authority_port.map(str::to_string),
        RedirectPort::ProtocolDefault => None,
        RedirectPort::Request => request
            .authority
            .and_then(|a| split_host_port(a).1)
            .map(str::to_string),
    };
    let default_port = match scheme {
        "http" => Some("80"),
        "https" => Some("443"),
        _ => None,
    };
    match port {
        Some(port) if Some(port.as_str()) != default_port => {
            format!("{scheme}://{host}:{port}{path_and_query}")
        }
        _ => format!("{scheme}://{host}{path_and_query}"),
    }
}

/// `host[:port]` → (host, port); IPv6 literals keep their brackets.
fn split_host_port(authority: &str) -> (&str, Option<&str>) {
    let host_end = if authority.starts_with('[') {
        authority.find(']').map_or(authority.len(), |i| i + 1)
    } else {
        authority.rfind(':').unwrap_or(authority.len())
    };
    let (host, rest) = authority.split_at(host_end);
    (host, rest.strip_prefix(':').filter(|p| !p.is_empty()))
}

#[cfg(test)]
mod tests {
    use http::Method;

    use super::*;
    use crate::config::{Snapshot, parse_config};

    /// Compiles one route of service `s` (clusters `a` and `b` exist).
    fn route(yaml: &str) -> std::sync::Arc<Route> {
        let config = format!(
            "services: [{{name: s, ports: [{{port: 80, routes: [{yaml}]}}]}}]\n\
             clusters: [{{name: a}}, {{name: b}}]\n"
        );
        let snapshot = Snapshot::compile(parse_config(&config, "t").expect("parse"), "t")
            .unwrap_or_else(|err| panic!("{err}"));
        snapshot.service_by_host("s").expect("service").ports[0].routes[0].clone()
    }

    fn view<'a>(path: &'a str, query: Option<&'a str>, headers: &'a HeaderMap) -> RequestView<'a> {
        RequestView {
            path,
            query,
            method: &Method::GET,
            authority: Some("web:8080"),
            scheme: "http",
            headers,
            claims: None,
        }
    }

    fn rewrite_of(route: &Route) -> (&PathMatch, &Rewrite) {
        let forward = route.forward().expect("forwarding route");
        (&route.matcher.path, &forward.rewrite)
    }

    #[test]
    fn uri_rewrite_replaces_the_matched_part() {
        let r =
            route("{match: {pathPrefix: /api/v1/}, rewrite: {uri: /}, clusters: [{cluster: a}]}");
        let (m, rw) = rewrite_of(&r);
        assert_eq!(rewritten_path(m, rw, "/api/v1/x").as_deref(), Some("/x"));
        let r =
            route("{match: {pathPrefix: /api/v1}, rewrite: {uri: /}, clusters: [{cluster: a}]}");
        let (m, rw) = rewrite_of(&r);
        assert_eq!(
            rewritten_path(m, rw, "/api/v1/x").as_deref(),
            Some("/x"),
            "no //"
        );
        assert_eq!(rewritten_path(m, rw, "/api/v1").as_deref(), Some("/"));
        let r = route(
            "{match: {pathPrefix: /ratings}, rewrite: {uri: /v1/bookRatings}, clusters: [{cluster: a}]}",
        );
        let (m, rw) = rewrite_of(&r);
        assert_eq!(
            rewritten_path(m, rw, "/ratings/2").as_deref(),
            Some("/v1/bookRatings/2")
        );
        let r = route("{match: {pathExact: /old}, rewrite: {uri: /new}, clusters: [{cluster: a}]}");
        let (m, rw) = rewrite_of(&r);
        assert_eq!(rewritten_path(m, rw, "/old").as_deref(), Some("/new"));
        let r = route(
            r#"{rewrite: {uriRegexPattern: "/v([0-9])/", uriRegexSubstitution: '/version-\1/'}, clusters: [{cluster: a}]}"#,
        );
        let (m, rw) = rewrite_of(&r);
        assert_eq!(
            rewritten_path(m, rw, "/v1/a/v2/b").as_deref(),
            Some("/version-1/a/version-2/b"),
            "every match is replaced"
        );
    }

    #[test]
    fn request_edits_rewrite_path_authority_and_headers() {
        let r = route(
            "{match: {pathPrefix: /api}, rewrite: {uri: /v2, authority: backend.internal}, \
             requestHeaders: {set: {x-route: r}, add: {x-multi: '1'}, remove: [x-secret]}, \
             clusters: [{cluster: a, requestHeaders: {set: {x-route: dest}, add: {x-multi: '2'}}}]}",
        );
        let matched = Matched::new(r, 0);
        let mut request = Request::get("/api/items?q=1")
            .header("host", "web")
            .header("x-secret", "s")
            .header("x-multi", "0")
            .body(())
            .expect("request");
        let mut authority = Some(Authority::from_static("web"));
        edit_request(&matched, &mut request, &mut authority);
        assert_eq!(request.uri(), "/v2/items?q=1");
        assert_eq!(request.headers()[ORIGINAL_PATH_HEADER], "/api/items?q=1");
        assert_eq!(request.headers()[header::HOST], "backend.internal");
        assert_eq!(
            authority.as_ref().map(Authority::as_str),
            Some("backend.internal")
        );
        assert_eq!(
            request.headers()["x-route"],
            "dest",
            "destination after route"
        );
        let multi: Vec<_> = request.headers().get_all("x-multi").iter().collect();
        assert_eq!(multi, ["0", "1", "2"]);
        assert!(!request.headers().contains_key("x-secret"));
    }

    #[test]
    fn redirect_locations_replace_what_is_given() {
        let headers = HeaderMap::new();
        let location = |yaml: &str, path, query| {
            let r = route(yaml);
            let crate::config::RouteAction::Redirect(redirect) = &r.action else {
                panic!("not a redirect");
            };
            redirect_location(redirect, &view(path, query, &headers))
        };
        assert_eq!(
            location("{redirect: {uri: /new}}", "/old", Some("a=1")),
            "http://web:8080/new?a=1"
        );
        assert_eq!(
            location(
                "{redirect: {authority: example.com, scheme: https}}",
                "/p",
                None
            ),
            "https://example.com/p"
        );
        assert_eq!(
            location("{redirect: {scheme: https, port: 443}}", "/p", None),
            "https://web/p",
            "default port dropped"
        );
        assert_eq!(
            location("{redirect: {port: 9090, uri: '/x?b=2'}}", "/p", Some("a=1")),
            "http://web:9090/x?b=2"
        );
        // derivePort: the request's port survives a new authority, or the
        // scheme's default replaces whatever port there was.
        assert_eq!(
            location(
                "{redirect: {authority: b.example, derivePort: FROM_REQUEST_PORT}}",
                "/p",
                None
            ),
            "http://b.example:8080/p"
        );
        assert_eq!(
            location(
                "{redirect: {scheme: https, derivePort: FROM_PROTOCOL_DEFAULT}}",
                "/p",
                None
            ),
            "https://web/p"
        );
        assert_eq!(split_host_port("[::1]:80"), ("[::1]", Some("80")));
        assert_eq!(split_host_port("[::1]"), ("[::1]", None));
    }

    #[test]
    fn route_response_headers_apply_to_direct_responses() {
        let r = route(
            "{directResponse: {status: 418, body: teapot}, responseHeaders: {set: {x-why: tea}}}",
        );
        let crate::config::RouteAction::Direct(d) = &r.action else {
            panic!("not a direct response");
        };
        let response = direct(&r, d);
        assert_eq!(response.status(), 418);
        assert_eq!(response.headers()["x-why"], "tea");
        assert_eq!(response.headers()[header::CONTENT_TYPE], "text/plain");
    }
}
