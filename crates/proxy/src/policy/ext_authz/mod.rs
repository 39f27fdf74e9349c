//! External authorization: what a CUSTOM AuthorizationPolicy's provider
//! (Istio's envoyExtAuthzGrpc / envoyExtAuthzHttp) is asked, and what its
//! answer does to the request. Pure: the call itself is a [`Transport`]'s
//! (`http::ext_authz` sends it through the proxy's upstream pool).
//!
//! As Envoy's ext_authz filter, which Istio configures for CUSTOM:
//! - gRPC: `envoy.service.auth.v3.Authorization/Check` with the request's
//!   method, path, host, scheme, protocol and every header, and the
//!   source and destination addresses and principals ([`grpc`]).
//! - HTTP: the original method to `pathPrefix` + the original path, with
//!   Host, Authorization and the headers `includeRequestHeadersInCheck`
//!   names ([`http`]); no body unless asked for.
//! - `includeRequestBodyInCheck`: the body, read up to `maxRequestBytes`
//!   ([`body`]), goes in the check (gRPC: `body`, or `raw_body` with
//!   `packAsBytes`; HTTP: the check's own body) with
//!   `x-envoy-auth-partial-body`; a longer body is cut with
//!   `allowPartialMessage`, else answered 413 before asking (whatever
//!   `failOpen` says, as Envoy). The upstream gets the whole body.
//! - Allowed: the authorizer's headers go upstream (gRPC: OkHttpResponse;
//!   HTTP: those `headersToUpstreamOnAllow` names) and to the client's
//!   response (gRPC: `response_headers_to_add`; HTTP:
//!   `headersToDownstreamOnAllow`). gRPC headers follow their
//!   `append`/`append_action` ([`Edit`]).
//! - Denied: the authorizer's status, headers and body go to the client,
//!   flagged `UAEX`.
//! - No answer (connect failure, timeout, gRPC error, bad frame): the
//!   request goes on with `failOpen`, else `statusOnError` (403) with
//!   `UAEX`.

pub mod body;
pub mod grpc;
pub mod http;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use ::http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use bytes::Bytes;
use weft_proto::envoy::service::auth::v3::{CheckRequest, CheckResponse};

use crate::body::ProxyBody;
use crate::flags::{ResponseFlag, ResponseFlags};
use crate::policy::authz::Pattern;

pub use self::body::{BodyLimit, Buffered};

/// Headers to set or append, in order.
pub type Headers = Vec<(HeaderName, HeaderValue)>;

/// What an authorizer's header does to a message that may have it
/// (Envoy's HeaderValueOption actions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edit {
    /// Replace any value, or add.
    Set,
    /// Another value besides any there.
    Append,
    /// Only when the message has no such header.
    AddIfAbsent,
    /// Only when the message has the header.
    OverwriteIfExists,
}

/// Header edits, applied in order.
pub type Edits = Vec<(HeaderName, HeaderValue, Edit)>;

/// Applies `edits` to `headers` in order.
pub fn apply_edits(edits: &Edits, headers: &mut HeaderMap) {
    for (name, value, edit) in edits {
        match edit {
            Edit::Set => {
                headers.insert(name.clone(), value.clone());
            }
            Edit::Append => {
                headers.append(name.clone(), value.clone());
            }
            Edit::AddIfAbsent if !headers.contains_key(name) => {
                headers.insert(name.clone(), value.clone());
            }
            Edit::OverwriteIfExists if headers.contains_key(name) => {
                headers.insert(name.clone(), value.clone());
            }
            Edit::AddIfAbsent | Edit::OverwriteIfExists => {}
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Grpc,
    Http,
}

/// One provider, compiled from the proxy config (`config::ext_authz`).
pub struct Provider {
    pub name: Arc<str>,
    pub protocol: Protocol,
    /// A cluster of the same snapshot (checked when it was compiled);
    /// named, not held, so that policy does not depend on config.
    pub cluster: Arc<str>,
    /// gRPC: the `:authority` of check calls (the provider's host, as
    /// Istio sets it); empty: the endpoint's address.
    pub authority: String,
    pub timeout: Duration,
    pub fail_open: bool,
    pub status_on_error: StatusCode,
    /// HTTP: headers sent besides the ones always sent.
    pub include_headers: Vec<Pattern>,
    /// Added to every check request.
    pub additional_headers: Headers,
    pub upstream_on_allow: Vec<Pattern>,
    /// Empty: every header of the authorizer's answer.
    pub downstream_on_deny: Vec<Pattern>,
    pub downstream_on_allow: Vec<Pattern>,
    pub path_prefix: String,
    /// `includeRequestBodyInCheck`: None sends no body.
    pub body: Option<BodyLimit>,
}

impl PartialEq for Provider {
    /// The same compiled provider (for comparing decisions).
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self, other)
    }
}

impl Eq for Provider {}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Provider({})", self.name)
    }
}

/// A check request, ready for the wire.
pub enum Call {
    Grpc(CheckRequest),
    /// HTTP/1 shape: method, origin-form path, the original Host.
    Http(Request<ProxyBody>),
}

/// The authorizer's answer.
pub enum Answer {
    Grpc(CheckResponse),
    Http(::http::response::Parts, Bytes),
}

/// Sends one check to a provider within its timeout. `Err`: no usable
/// answer, naming why.
pub trait Transport: Sync {
    fn call(
        &self,
        provider: &Provider,
        call: Call,
    ) -> impl Future<Output = Result<Answer, String>> + Send;
}

/// What the request gets.
pub enum Outcome {
    Allow(Allowed),
    /// The reply to give, flagged UAEX.
    Deny(Response<ProxyBody>),
}

/// An allowed request's changes.
#[derive(Default, Debug)]
pub struct Allowed {
    /// On the upstream request (by default replacing a client's own).
    pub upstream: Edits,
    pub remove: Vec<HeaderName>,
    /// On the client's response (by default appended).
    pub downstream: Edits,
}

impl Allowed {
    pub fn apply(&self, headers: &mut HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        apply_edits(&self.upstream, headers);
    }
}

/// What an allowed request still owes the later phases.
#[derive(Default, Debug)]
pub struct Granted {
    /// The authorizer's edits to the client's response.
    pub response: Edits,
    /// The body read for the check, to forward before the rest.
    pub body: Option<Buffered>,
}

/// Asks `provider` about the request `parts` describe, and decides.
pub async fn check<T: Transport>(
    transport: &T,
    provider: &Provider,
    parts: &::http::request::Parts,
    body: Option<&Buffered>,
    peer: &Peers<'_>,
) -> Result<Allowed, (Response<ProxyBody>, ResponseFlags)> {
    let call = match provider.protocol {
        Protocol::Grpc => Call::Grpc(grpc::check_request(provider, parts, body, peer)),
        Protocol::Http => Call::Http(http::check_request(provider, parts, body)),
    };
    let outcome = match transport.call(provider, call).await {
        Ok(Answer::Grpc(answer)) => grpc::outcome(answer),
        Ok(Answer::Http(head, body)) => http::outcome(provider, head, body),
        Err(err) if provider.fail_open => {
            tracing::info!(
                provider = %provider.name,
                "external authorizer failed, request allowed (failOpen): {err}"
            );
            return Ok(Allowed::default());
        }
        Err(err) => {
            tracing::info!(
                provider = %provider.name,
                "external authorizer failed, request refused: {err}"
            );
            let reply = crate::reply::answer(provider.status_on_error, Bytes::new());
            return Err((reply, ResponseFlag::UnauthorizedExternalService.into()));
        }
    };
    match outcome {
        Outcome::Allow(allowed) => Ok(allowed),
        Outcome::Deny(reply) => {
            tracing::info!(
                provider = %provider.name,
                status = reply.status().as_u16(),
                "request denied by the external authorizer"
            );
            Err((reply, ResponseFlag::UnauthorizedExternalService.into()))
        }
    }
}

/// Asks `provider` about one opaque TCP connection, as Envoy's network
/// ext_authz filter does: allowed, it goes on; denied, or no answer
/// without `failOpen`, it is closed with `UAEX`. Only gRPC providers can
/// check a connection (an HTTP provider is never asked: Istio leaves a
/// CUSTOM policy with one off TCP ports, see `authz::Policies`).
pub async fn check_connection<T: Transport>(
    transport: &T,
    provider: &Provider,
    peers: &Peers<'_>,
) -> Result<(), ResponseFlag> {
    if provider.protocol != Protocol::Grpc {
        return Ok(());
    }
    let call = Call::Grpc(grpc::connection_request(peers));
    match transport.call(provider, call).await {
        Ok(Answer::Grpc(answer)) if grpc::connection_allowed(&answer) => Ok(()),
        Ok(_) => {
            tracing::info!(
                provider = %provider.name,
                "TCP connection denied by the external authorizer"
            );
            Err(ResponseFlag::UnauthorizedExternalService)
        }
        Err(err) if provider.fail_open => {
            tracing::info!(
                provider = %provider.name,
                "external authorizer failed, TCP connection allowed (failOpen): {err}"
            );
            Ok(())
        }
        Err(err) => {
            tracing::info!(
                provider = %provider.name,
                "external authorizer failed, TCP connection refused: {err}"
            );
            Err(ResponseFlag::UnauthorizedExternalService)
        }
    }
}

/// Source and destination, as the gRPC check reports them.
pub struct Peers<'a> {
    pub source: Option<std::net::SocketAddr>,
    /// mTLS identity without `spiffe://`.
    pub source_principal: Option<&'a str>,
    pub destination: std::net::SocketAddr,
    /// This proxy's own identity without `spiffe://`, when the connection
    /// is mesh mTLS (Envoy reports the local certificate's URI SAN).
    pub destination_principal: Option<&'a str>,
}

/// Whether any of `patterns` matches the lower-case `name`.
fn named(patterns: &[Pattern], name: &HeaderName) -> bool {
    patterns.iter().any(|p| p.matches(name.as_str()))
}

/// A reply with `status` and `body`, and `headers` appended.
fn reply(status: StatusCode, body: Bytes, headers: Headers) -> Response<ProxyBody> {
    let mut response = crate::reply::answer(status, body);
    let target = response.headers_mut();
    for (name, value) in headers {
        // The authorizer's own type replaces the plain-text default.
        if name == ::http::header::CONTENT_TYPE {
            target.insert(name, value);
        } else {
            target.append(name, value);
        }
    }
    response
}

#[cfg(test)]
mod tests;
