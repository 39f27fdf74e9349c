//! The gRPC provider: `Authorization/Check` requests and answers
//! (envoy.service.auth.v3, the subset in weft-proto).

use std::collections::BTreeMap;
use std::net::SocketAddr;

use bytes::Bytes;
use http::request::Parts;
use http::{HeaderName, HeaderValue, StatusCode, Version, header};
use weft_proto::envoy::config::core::v3::header_value_option::HeaderAppendAction;
use weft_proto::envoy::config::core::v3::{Address, HeaderValueOption, SocketAddress};
use weft_proto::envoy::service::auth::v3::attribute_context::{HttpRequest, Peer, Request};
use weft_proto::envoy::service::auth::v3::check_response::HttpResponse;
use weft_proto::envoy::service::auth::v3::{AttributeContext, CheckRequest, CheckResponse};

use super::body::PARTIAL_HEADER;
use super::{Allowed, Buffered, Edit, Edits, Outcome, Peers, Provider, reply};

/// The method's path: package, service and method are Envoy's.
pub const CHECK: &str = "/envoy.service.auth.v3.Authorization/Check";

/// The check for the request `parts` describe (and `body`, what was read
/// of its body when the provider asks for it).
pub fn check_request(
    provider: &Provider,
    parts: &Parts,
    body: Option<&Buffered>,
    peers: &Peers<'_>,
) -> CheckRequest {
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in &parts.headers {
        let value = String::from_utf8_lossy(value.as_bytes());
        headers
            .entry(name.as_str().to_string())
            // Repeated headers are joined, as Envoy does.
            .and_modify(|v| {
                v.push(',');
                v.push_str(&value);
            })
            .or_insert_with(|| value.into_owned());
    }
    for (name, value) in &provider.additional_headers {
        headers.insert(
            name.as_str().to_string(),
            String::from_utf8_lossy(value.as_bytes()).into_owned(),
        );
    }
    let host = parts
        .uri
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| headers.get(header::HOST.as_str()).cloned())
        .unwrap_or_default();
    let path = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path().to_string(), |p| p.as_str().to_string());
    // Envoy's map carries the pseudo-headers too; authorizers read them.
    headers.insert(":method".into(), parts.method.as_str().to_string());
    headers.insert(":path".into(), path.clone());
    headers.insert(":authority".into(), host.clone());
    let (mut text, mut raw_body) = (String::new(), Vec::new());
    if let Some(body) = body {
        headers.insert(
            PARTIAL_HEADER.into(),
            if body.partial() { "true" } else { "false" }.into(),
        );
        match provider.body.is_some_and(|b| b.pack_as_bytes) {
            true => raw_body = body.shown().to_vec(),
            // A proto string must be UTF-8: invalid bytes are replaced
            // (packAsBytes carries them as they are).
            false => text = String::from_utf8_lossy(body.shown()).into_owned(),
        }
    }
    let http = HttpRequest {
        id: headers.get("x-request-id").cloned().unwrap_or_default(),
        method: parts.method.as_str().to_string(),
        headers,
        path,
        host,
        scheme: parts.uri.scheme_str().unwrap_or("http").to_string(),
        size: -1,
        protocol: match parts.version {
            Version::HTTP_10 => "HTTP/1.0",
            Version::HTTP_2 => "HTTP/2",
            _ => "HTTP/1.1",
        }
        .to_string(),
        body: text,
        raw_body,
    };
    CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(peer(peers.source, peers.source_principal)),
            destination: Some(peer(Some(peers.destination), peers.destination_principal)),
            request: Some(Request { http: Some(http) }),
        }),
    }
}

/// The check for one opaque connection (Envoy's network ext_authz
/// filter): source and destination only, no request.
pub fn connection_request(peers: &Peers<'_>) -> CheckRequest {
    CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(peer(peers.source, peers.source_principal)),
            destination: Some(peer(Some(peers.destination), peers.destination_principal)),
            request: None,
        }),
    }
}

/// A connection goes on when the status is OK (0); the denial's HTTP
/// parts have no one to go to.
pub fn connection_allowed(answer: &CheckResponse) -> bool {
    answer.status.as_ref().map_or(0, |s| s.code) == 0
}

fn peer(addr: Option<SocketAddr>, principal: Option<&str>) -> Peer {
    Peer {
        address: addr.map(|a| Address {
            socket_address: Some(SocketAddress {
                address: a.ip().to_string(),
                port_value: u32::from(a.port()),
            }),
        }),
        principal: principal.map_or_else(String::new, |p| format!("spiffe://{p}")),
    }
}

/// Status 0 allows; anything else denies, with DeniedHttpResponse's
/// status (403 when unset), headers and body.
pub fn outcome(answer: CheckResponse) -> Outcome {
    let code = answer.status.as_ref().map_or(0, |s| s.code);
    if code == 0 {
        let mut allowed = Allowed::default();
        if let Some(HttpResponse::OkResponse(ok)) = answer.http_response {
            allowed.upstream = edits(&ok.headers, Side::Upstream);
            allowed.downstream = edits(&ok.response_headers_to_add, Side::Response);
            allowed.remove = ok
                .headers_to_remove
                .iter()
                .filter_map(|h| HeaderName::from_bytes(h.as_bytes()).ok())
                // An authorizer may not strip what routing needs.
                .filter(|h| *h != header::HOST)
                .collect();
        }
        return Outcome::Allow(allowed);
    }
    let (status, extra, body) = match answer.http_response {
        Some(HttpResponse::DeniedResponse(denied)) => (
            denied
                .status
                .and_then(|s| u16::try_from(s.code).ok())
                .and_then(|c| StatusCode::from_u16(c).ok())
                .unwrap_or(StatusCode::FORBIDDEN),
            edits(&denied.headers, Side::Response)
                .into_iter()
                .map(|(name, value, _)| (name, value))
                .collect(),
            Bytes::from(denied.body),
        ),
        _ => (StatusCode::FORBIDDEN, Vec::new(), Bytes::new()),
    };
    Outcome::Deny(reply(status, body, extra))
}

/// Which message a header goes to: the defaults differ.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Upstream,
    Response,
}

fn edits(list: &[HeaderValueOption], side: Side) -> Edits {
    list.iter()
        .filter_map(|option| {
            let h = option.header.as_ref()?;
            let value = if h.raw_value.is_empty() {
                h.value.as_bytes()
            } else {
                &h.raw_value
            };
            Some((
                HeaderName::from_bytes(h.key.as_bytes()).ok()?,
                HeaderValue::from_bytes(value).ok()?,
                edit(option, side),
            ))
        })
        .collect()
}

/// Envoy's reading of `append` and `append_action`: `append` wins when
/// set; unset, the default action is the one OkHttpResponse documents
/// (upstream headers replace the request's, response headers are added).
fn edit(option: &HeaderValueOption, side: Side) -> Edit {
    // On a response, Envoy "adds" where it appends on a request: the same
    // for a header map that keeps every value.
    if let Some(append) = option.append.as_ref().map(|b| b.value) {
        return if append { Edit::Append } else { Edit::Set };
    }
    match HeaderAppendAction::try_from(option.append_action) {
        Ok(HeaderAppendAction::AddIfAbsent) => Edit::AddIfAbsent,
        Ok(HeaderAppendAction::OverwriteIfExists) => Edit::OverwriteIfExists,
        Ok(HeaderAppendAction::OverwriteIfExistsOrAdd) => Edit::Set,
        // The default (or a value this proto does not know).
        _ => match side {
            Side::Upstream => Edit::Set,
            Side::Response => Edit::Append,
        },
    }
}
