//! The two enforcement points on the inbound side: one HTTP request
//! (JWT first, then policies) and one opaque TCP connection (policies).

use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};

use super::{Attributes, HttpAttributes, InboundGuard, denied_response};
use crate::body::ProxyBody;
use crate::policy::jwt::JwtError;

/// Who is calling and what they reached.
pub struct Caller<'a> {
    pub peer: Option<IpAddr>,
    /// The original client (`remote.ip`): the peer, or the address the
    /// gateway in front decided on (see `http::entry`).
    pub remote: Option<IpAddr>,
    /// mTLS identity without `spiffe://`.
    pub principal: Option<&'a str>,
    pub destination: SocketAddr,
}

/// Authenticates and authorizes one request. `Ok`: the request to forward
/// (token removed or output headers added as the JWT rules say); `Err`: the
/// answer to give instead (401 for a bad token, 403 for a denial).
pub async fn authorize_request<B>(
    guard: &InboundGuard,
    caller: &Caller<'_>,
    request: Request<B>,
) -> Result<Request<B>, Response<ProxyBody>> {
    let (mut parts, body) = request.into_parts();
    if let Some(authenticator) = &guard.jwt {
        // Only a verified token may fill these: a client's own are dropped.
        authenticator.strip_outputs(&mut parts.headers);
    }
    let verified = match &guard.jwt {
        Some(authenticator) => match authenticator.authenticate(&mut parts).await {
            Ok(verified) => verified,
            Err(err) => {
                tracing::info!(path = parts.uri.path(), "request refused: {err}");
                return Err(unauthenticated(&err));
            }
        },
        None => None,
    };
    if !guard.policies.is_empty() {
        let authority = parts
            .uri
            .authority()
            .map(|a| a.as_str())
            .or_else(|| parts.headers.get(header::HOST)?.to_str().ok())
            .map(str::to_ascii_lowercase);
        let attrs = Attributes {
            peer_ip: caller.peer,
            remote_ip: caller.remote,
            principal: caller.principal,
            destination: Some(caller.destination),
            sni: None,
            http: Some(HttpAttributes {
                method: parts.method.as_str(),
                // Normalized when the request entered the proxy.
                path: parts.uri.path(),
                authority: authority.as_deref(),
                headers: &parts.headers,
                auth: verified.as_ref(),
            }),
        };
        if !guard.policies.evaluate(&attrs).is_allow() {
            return Err(denied_response());
        }
    }
    if let Some(verified) = verified {
        // For routing on claims (a gateway's `@request.auth.claims.*`):
        // an extension, which no client can send.
        parts.extensions.insert(std::sync::Arc::new(verified));
    }
    Ok(Request::from_parts(parts, body))
}

/// Whether an opaque connection may go on; a denial is logged.
pub fn authorize_connection(guard: &InboundGuard, caller: &Caller<'_>, sni: Option<&str>) -> bool {
    if guard.policies.is_empty() {
        return true;
    }
    let attrs = Attributes {
        peer_ip: caller.peer,
        remote_ip: caller.remote,
        principal: caller.principal,
        destination: Some(caller.destination),
        sni,
        http: None,
    };
    guard.policies.evaluate(&attrs).is_allow()
}

/// 401 with the reason, and the `WWW-Authenticate` challenge RFC 6750 asks for.
fn unauthenticated(err: &JwtError) -> Response<ProxyBody> {
    let mut response = crate::reply::answer(StatusCode::UNAUTHORIZED, Bytes::from(err.to_string()));
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"weft\", error=\"invalid_token\""),
    );
    response
}
