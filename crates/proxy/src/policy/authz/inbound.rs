//! The two enforcement points on the inbound side: one HTTP request
//! (JWT first, then policies) and one opaque TCP connection (policies).

use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;
use http::request::Parts;
use http::{HeaderValue, Request, Response, StatusCode, header};

use super::{Attributes, Decision, HttpAttributes, InboundGuard, denied_response};
use crate::body::{BoxError, ProxyBody};
use crate::flags::ResponseFlags;
use crate::policy::ext_authz::{self, Granted, Peers, Transport};
use crate::policy::jwt::{JwtError, Verified};

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

/// A refused request's reply and the flags to record.
pub type Refusal = (Response<ProxyBody>, ResponseFlags);

/// Authenticates and authorizes one request. `Ok`: the request to forward
/// (token removed, JWT output and external-authorizer headers added) and
/// what the authorizer left for later (its response headers, the body it
/// was shown, which must be forwarded before the rest of `body`); `Err`:
/// the answer to give instead (401 for a bad token, 403 for a denial, 413
/// for a body over an authorizer's limit, the authorizer's reply).
pub async fn authorize_request<B, T: Transport>(
    guard: &InboundGuard,
    caller: &Caller<'_>,
    request: Request<B>,
    transport: &T,
) -> Result<(Request<B>, Granted), Refusal>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    let (mut parts, mut body) = request.into_parts();
    if let Some(authenticator) = &guard.jwt {
        // Only a verified token may fill these: a client's own are dropped.
        authenticator.strip_outputs(&mut parts.headers);
    }
    let verified = match &guard.jwt {
        Some(authenticator) => match authenticator.authenticate(&mut parts).await {
            Ok(verified) => verified,
            Err(err) => {
                tracing::info!(path = parts.uri.path(), "request refused: {err}");
                return Err((unauthenticated(&err), ResponseFlags::default()));
            }
        },
        None => None,
    };
    let mut granted = Granted::default();
    if !guard.policies.is_empty() {
        let mut asked = false;
        loop {
            let decision = decide(guard, caller, &parts, verified.as_ref(), asked);
            match decision {
                Decision::Allow => break,
                Decision::Deny { .. } => return Err((denied_response(), ResponseFlags::default())),
                // Asked once at most: after an approval, CUSTOM no longer
                // decides (`evaluate`'s `custom_asked`).
                Decision::Ask { provider, .. } if !asked => {
                    let peers = Peers {
                        // The connection's peer, as Envoy reports it (the
                        // client's address is in x-forwarded-for).
                        source: caller.peer.map(|ip| SocketAddr::new(ip, 0)),
                        source_principal: caller.principal,
                        destination: caller.destination,
                        destination_principal: None,
                    };
                    if let Some(limit) = provider.body {
                        let read = ext_authz::body::buffer(&parts.headers, &mut body, limit)
                            .await
                            .map_err(|err| {
                                tracing::info!(provider = %provider.name, "request refused: {err}");
                                let reply = crate::reply::answer(err.status(), Bytes::new());
                                (reply, ResponseFlags::default())
                            })?;
                        granted.body = Some(read);
                    }
                    let allowed = ext_authz::check(
                        transport,
                        &provider,
                        &parts,
                        granted.body.as_ref(),
                        &peers,
                    )
                    .await?;
                    // Before DENY and ALLOW, which see the headers the
                    // authorizer set (as Envoy's filter order has it).
                    allowed.apply(&mut parts.headers);
                    granted.response = allowed.downstream;
                    asked = true;
                }
                Decision::Ask { .. } => return Err((denied_response(), ResponseFlags::default())),
            }
        }
    }
    if let Some(verified) = verified {
        // For routing on claims (a gateway's `@request.auth.claims.*`):
        // an extension, which no client can send.
        parts.extensions.insert(std::sync::Arc::new(verified));
    }
    Ok((Request::from_parts(parts, body), granted))
}

/// The policies' decision on one request.
fn decide(
    guard: &InboundGuard,
    caller: &Caller<'_>,
    parts: &Parts,
    verified: Option<&Verified>,
    custom_asked: bool,
) -> Decision {
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
            auth: verified,
        }),
    };
    guard.policies.evaluate(&attrs, custom_asked)
}

/// What an opaque connection shows besides its [`Caller`].
#[derive(Default)]
pub struct Connection<'a> {
    /// The peer's address and port (the external authorizer's `source`).
    pub source: Option<SocketAddr>,
    /// The SNI of a TLS connection carried as bytes.
    pub sni: Option<&'a str>,
    /// This proxy's identity without `spiffe://`, when the connection is
    /// mesh mTLS (the authorizer's `destination.principal`).
    pub local_principal: Option<&'a str>,
}

/// Whether an opaque connection may go on: policies, with the CUSTOM
/// phase asking a gRPC authorizer once (Envoy's network ext_authz filter)
/// before DENY and ALLOW. `Err`: close it, recording these flags (`UAEX`
/// for the authorizer's denial or failure; none for a policy's, as Envoy's
/// RBAC filter sets none). A denial is logged.
pub async fn authorize_connection<T: Transport>(
    guard: &InboundGuard,
    caller: &Caller<'_>,
    conn: &Connection<'_>,
    transport: &T,
) -> Result<(), ResponseFlags> {
    if guard.policies.is_empty() {
        return Ok(());
    }
    let attrs = Attributes {
        peer_ip: caller.peer,
        remote_ip: caller.remote,
        principal: caller.principal,
        destination: Some(caller.destination),
        sni: conn.sni,
        http: None,
    };
    let mut asked = false;
    loop {
        match guard.policies.evaluate(&attrs, asked) {
            Decision::Allow => return Ok(()),
            Decision::Deny { .. } => return Err(ResponseFlags::default()),
            Decision::Ask { provider, .. } if !asked => {
                let peers = Peers {
                    source: conn
                        .source
                        .or_else(|| caller.peer.map(|ip| SocketAddr::new(ip, 0))),
                    source_principal: caller.principal,
                    destination: caller.destination,
                    destination_principal: conn.local_principal,
                };
                ext_authz::check_connection(transport, &provider, &peers).await?;
                asked = true;
            }
            // Asked once at most (`evaluate`'s `custom_asked`).
            Decision::Ask { .. } => return Err(ResponseFlags::default()),
        }
    }
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
