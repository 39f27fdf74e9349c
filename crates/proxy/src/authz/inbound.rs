//! The two enforcement points on the inbound side: one HTTP request
//! (JWT first, then policies) and one opaque TCP connection (policies).

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;
use http::uri::PathAndQuery;
use http::{HeaderValue, Request, Response, StatusCode, Uri, header};

use super::{Attributes, HttpAttributes, InboundGuard, denied_response, normalize_path};
use crate::http::ProxyBody;
use crate::jwt::JwtError;

/// Who is calling and what they reached.
pub struct Caller<'a> {
    pub peer: Option<IpAddr>,
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
        let path = normalize_path(parts.uri.path());
        let attrs = Attributes {
            peer_ip: caller.peer,
            principal: caller.principal,
            destination: Some(caller.destination),
            sni: None,
            http: Some(HttpAttributes {
                method: parts.method.as_str(),
                path: &path,
                authority: authority.as_deref(),
                headers: &parts.headers,
                auth: verified.as_ref(),
            }),
        };
        if !guard.policies.evaluate(&attrs).is_allow() {
            return Err(denied_response());
        }
        // The workload gets the path the policies judged.
        if let Cow::Owned(normalized) = path {
            set_path(&mut parts.uri, &normalized);
        }
    }
    Ok(Request::from_parts(parts, body))
}

/// Replaces the path of `uri`, keeping its query.
fn set_path(uri: &mut Uri, path: &str) {
    let path_and_query = match uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path.to_string(),
    };
    let mut parts = uri.clone().into_parts();
    match PathAndQuery::try_from(path_and_query) {
        Ok(value) => parts.path_and_query = Some(value),
        Err(_) => return,
    }
    if let Ok(rebuilt) = Uri::from_parts(parts) {
        *uri = rebuilt;
    }
}

/// Whether an opaque connection may go on; a denial is logged.
pub fn authorize_connection(guard: &InboundGuard, caller: &Caller<'_>, sni: Option<&str>) -> bool {
    if guard.policies.is_empty() {
        return true;
    }
    let attrs = Attributes {
        peer_ip: caller.peer,
        principal: caller.principal,
        destination: Some(caller.destination),
        sni,
        http: None,
    };
    guard.policies.evaluate(&attrs).is_allow()
}

/// 401 with the reason, and the `WWW-Authenticate` challenge RFC 6750 asks for.
fn unauthenticated(err: &JwtError) -> Response<ProxyBody> {
    let mut response =
        crate::http::reply::answer(StatusCode::UNAUTHORIZED, Bytes::from(err.to_string()));
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"weft\", error=\"invalid_token\""),
    );
    response
}
