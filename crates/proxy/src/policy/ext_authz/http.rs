//! The HTTP provider: the check is the original request's method to
//! `pathPrefix` + its path (query included), with no body unless
//! `includeRequestBodyInCheck` asks for it; a 200 allows, any other status
//! denies with that status.

use bytes::Bytes;
use http::request::Parts;
use http::response::Parts as ResponseParts;
use http::{HeaderName, HeaderValue, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};

use super::body::PARTIAL_HEADER;
use super::{Allowed, Buffered, Edit, Headers, Outcome, Provider, named, reply};
use crate::body::ProxyBody;

/// Sent whatever `includeRequestHeadersInCheck` says (Envoy's list; Host,
/// method and path travel in the request line).
const ALWAYS: [HeaderName; 1] = [header::AUTHORIZATION];

/// Never copied from the authorizer's answer: they describe its own
/// message, not the one the client or upstream gets.
fn framing(name: &HeaderName) -> bool {
    [
        header::CONTENT_LENGTH,
        header::TRANSFER_ENCODING,
        header::CONNECTION,
        header::HOST,
    ]
    .contains(name)
}

pub fn check_request(
    provider: &Provider,
    parts: &Parts,
    body: Option<&Buffered>,
) -> Request<ProxyBody> {
    let shown = body.map_or_else(Bytes::new, |b| b.shown().clone());
    let length = HeaderValue::from(shown.len());
    let mut request = Request::new(
        Full::new(shown)
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *request.method_mut() = parts.method.clone();
    let original = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path(), |p| p.as_str());
    let path = format!("{}{original}", provider.path_prefix);
    // A prefix that makes the path unusable leaves the original path (the
    // prefix was checked when the config loaded).
    *request.uri_mut() = path.parse().unwrap_or_else(|_| parts.uri.clone());
    let headers = request.headers_mut();
    let host = parts
        .uri
        .authority()
        .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        .or_else(|| parts.headers.get(header::HOST).cloned());
    if let Some(host) = host {
        headers.insert(header::HOST, host);
    }
    for (name, value) in &parts.headers {
        if ALWAYS.contains(name) || super::named(&provider.include_headers, name) {
            if framing(name) {
                continue;
            }
            headers.append(name.clone(), value.clone());
        }
    }
    for (name, value) in &provider.additional_headers {
        headers.insert(name.clone(), value.clone());
    }
    if let Some(body) = body {
        headers.insert(
            HeaderName::from_static(PARTIAL_HEADER),
            body.partial_value(),
        );
    }
    headers.insert(header::CONTENT_LENGTH, length);
    request
}

pub fn outcome(provider: &Provider, head: ResponseParts, body: Bytes) -> Outcome {
    let pick = |patterns: &[_], all_when_empty: bool| -> Headers {
        head.headers
            .iter()
            .filter(|(name, _)| !framing(name))
            .filter(|(name, _)| (all_when_empty && patterns.is_empty()) || named(patterns, name))
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect()
    };
    let with = |headers: Headers, edit: Edit| {
        headers
            .into_iter()
            .map(|(name, value)| (name, value, edit))
            .collect()
    };
    if head.status == StatusCode::OK {
        return Outcome::Allow(Allowed {
            upstream: with(pick(&provider.upstream_on_allow, false), Edit::Set),
            remove: Vec::new(),
            downstream: with(pick(&provider.downstream_on_allow, false), Edit::Append),
        });
    }
    Outcome::Deny(reply(
        head.status,
        body,
        pick(&provider.downstream_on_deny, true),
    ))
}
