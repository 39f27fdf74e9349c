//! The first phase of every request, before anything reads it: the
//! request is made what the rest of the pipeline may believe.
//!
//! Contract, on every path (outbound, inbound, explicit, gateway):
//! - An absolute-form target (`GET http://a/ HTTP/1.1`) decides the
//!   authority: `Host` is replaced by it (RFC 9112 §3.2.2), so routing,
//!   policies and the app all see one host.
//! - Headers only the mesh may set are removed from a request that did not
//!   come from a mesh peer over mTLS ([`Trust::Client`]):
//!   `x-forwarded-client-cert`, `x-weft-client-protocol`,
//!   `x-envoy-original-path` and every other `x-envoy-*`. (Peer metadata,
//!   `x-weft-peer`/`x-weft-service`, is handled by telemetry: dropped from
//!   the app's requests, read and removed on the destination side.)
//! - The path is normalized ([`super::normalize`]) and the normalized path
//!   is the one routed, authorized and forwarded.
//! - A gateway appends its peer to `X-Forwarded-For` and names the client
//!   in `x-envoy-external-address`, picked `numTrustedProxies` entries from
//!   the end; that header is what a sidecar behind it (reached over mTLS)
//!   uses as `remote.ip`.
//! - `X-Forwarded-Proto` says the scheme of the connection the request came
//!   on (`https` for TLS this proxy ended), as Envoy sets it; a value already
//!   there is kept only from a mesh peer, or at a gateway behind trusted
//!   proxies (the first of them set it). Apps build redirects and `Secure`
//!   cookies from it, so a client may not choose it.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{PathAndQuery, Uri};
use http::{Request, StatusCode};

use super::HttpConn;
use super::normalize::{PathNormalization, normalize};
use super::route::Target;
use crate::config::Hardening;
use crate::flags::ResponseFlag;
use crate::reply::LocalReply;
use crate::tls::CLIENT_PROTOCOL_HEADER;

pub const XFCC: http::HeaderName = http::HeaderName::from_static("x-forwarded-client-cert");
pub const XFF: http::HeaderName = http::HeaderName::from_static("x-forwarded-for");
pub const XFP: http::HeaderName = http::HeaderName::from_static("x-forwarded-proto");
/// The client address the edge of the mesh decided on (Envoy's name).
pub const EXTERNAL_ADDRESS: http::HeaderName =
    http::HeaderName::from_static("x-envoy-external-address");

/// Whether a request's mesh-only headers can be believed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    /// An application, a plaintext caller or anyone outside the mesh.
    Client,
    /// A Weft proxy proven by mesh mTLS; `xfcc` tells the app who called.
    MeshPeer { xfcc: Option<HeaderValue> },
}

impl Trust {
    pub fn is_mesh_peer(&self) -> bool {
        matches!(self, Self::MeshPeer { .. })
    }
}

/// Applies the contract above to `request`; `Err` is the local reply for
/// a target that cannot be made safe.
///
/// From a mesh peer, `x-forwarded-client-cert` is replaced by the proven
/// caller and `x-weft-client-protocol` read and removed: `Ok(true)` when
/// the caller's app spoke HTTP/1.x (it gets HTTP/1.1 back whatever the hop
/// between proxies spoke).
pub fn prepare<B>(
    request: &mut Request<B>,
    trust: &Trust,
    normalization: PathNormalization,
) -> Result<bool, LocalReply> {
    absolute_form_sets_host(request);
    let mut app_http1 = false;
    let headers = request.headers_mut();
    match trust {
        Trust::Client => strip_mesh_only(headers),
        Trust::MeshPeer { xfcc } => {
            app_http1 = headers
                .remove(CLIENT_PROTOCOL_HEADER)
                .is_some_and(|v| v.as_bytes().starts_with(b"HTTP/1"));
            headers.remove(XFCC);
            if let Some(xfcc) = xfcc {
                headers.insert(XFCC, xfcc.clone());
            }
        }
    }
    normalize_target(request.uri_mut(), normalization)?;
    Ok(app_http1)
}

/// `Host` follows the absolute-form target's authority.
fn absolute_form_sets_host<B>(request: &mut Request<B>) {
    let Some(authority) = request.uri().authority() else {
        return;
    };
    if let Ok(value) = HeaderValue::from_str(authority.as_str()) {
        let headers = request.headers_mut();
        if headers.get(header::HOST) != Some(&value) {
            headers.insert(header::HOST, value);
        }
    }
}

/// Removes the headers only the mesh sets.
pub fn strip_mesh_only(headers: &mut HeaderMap) {
    if headers.is_empty() {
        return;
    }
    headers.remove(XFCC);
    headers.remove(CLIENT_PROTOCOL_HEADER);
    // Collected first: a HeaderMap cannot be edited while it is iterated.
    let internal: Vec<HeaderName> = headers
        .keys()
        .filter(|name| name.as_str().starts_with("x-envoy-"))
        .cloned()
        .collect();
    for name in internal {
        headers.remove(name);
    }
}

/// Replaces the URI's path by its normalized form, keeping the query.
fn normalize_target(uri: &mut Uri, mode: PathNormalization) -> Result<(), LocalReply> {
    let normalized = match normalize(uri.path(), mode) {
        std::borrow::Cow::Borrowed(_) => return Ok(()),
        std::borrow::Cow::Owned(path) => path,
    };
    let rebuilt = match uri.query() {
        Some(query) => format!("{normalized}?{query}"),
        None => normalized,
    };
    let mut parts = uri.clone().into_parts();
    let rebuilt = PathAndQuery::try_from(rebuilt)
        .ok()
        .and_then(|path| {
            parts.path_and_query = Some(path);
            Uri::from_parts(parts).ok()
        })
        .ok_or_else(|| bad_path(uri.path()))?;
    *uri = rebuilt;
    Ok(())
}

fn bad_path(path: &str) -> LocalReply {
    LocalReply::new(
        StatusCode::BAD_REQUEST,
        ResponseFlag::DownstreamProtocolError,
        format!("the request path {path:?} cannot be normalized"),
    )
}

/// The whole phase for one request on `conn`: [`prepare`], then on a
/// gateway [`forwarded_for`]. `Ok(true)`: the calling app spoke HTTP/1.x.
pub fn enter<B>(
    request: &mut Request<B>,
    conn: &HttpConn,
    hardening: &Hardening,
) -> Result<bool, LocalReply> {
    let app_http1 = prepare(request, &conn.trust, hardening.path_normalization)?;
    let gateway = matches!(conn.target, Target::Gateway { .. });
    if gateway {
        forwarded_for(
            request.headers_mut(),
            conn.peer,
            hardening.num_trusted_proxies,
        );
    }
    let believed = match gateway {
        true => hardening.num_trusted_proxies > 0,
        false => conn.trust.is_mesh_peer(),
    };
    forwarded_proto(request.headers_mut(), conn.tls, believed);
    Ok(app_http1)
}

/// Sets `X-Forwarded-Proto` to the connection's scheme unless the value
/// already there is `believed` (see the module doc).
pub fn forwarded_proto(headers: &mut HeaderMap, tls: bool, believed: bool) {
    if believed && headers.contains_key(XFP) {
        return;
    }
    let scheme = HeaderValue::from_static(if tls { "https" } else { "http" });
    headers.insert(XFP, scheme);
}

/// The gateway's part: appends `peer` to `X-Forwarded-For` and writes the
/// client address (`trusted` entries before the end) to
/// [`EXTERNAL_ADDRESS`]. Returns that address.
pub fn forwarded_for(
    headers: &mut HeaderMap,
    peer: Option<IpAddr>,
    trusted: usize,
) -> Option<IpAddr> {
    let mut entries: Vec<String> = headers
        .get_all(XFF)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|e| e.trim().to_string())
        .filter(|e| !e.is_empty())
        .collect();
    if let Some(peer) = peer {
        entries.push(peer.to_string());
    }
    // With more trusted hops than entries the first entry is the client
    // (Envoy falls back to the connection; the first entry is the closest
    // thing to it that is not a proxy we trust).
    let client = entries
        .len()
        .checked_sub(1 + trusted)
        .map_or_else(|| entries.first(), |index| entries.get(index))
        .and_then(|entry| entry.parse::<IpAddr>().ok());
    if let Ok(value) = HeaderValue::from_str(&entries.join(", ")) {
        headers.insert(XFF, value);
    }
    headers.remove(EXTERNAL_ADDRESS);
    if let Some(client) = client
        && let Ok(value) = HeaderValue::from_str(&client.to_string())
    {
        headers.insert(EXTERNAL_ADDRESS, value);
    }
    client
}

/// The client address a gateway's entry wrote (see [`forwarded_for`]).
pub fn external_address(headers: &HeaderMap) -> Option<IpAddr> {
    headers
        .get(EXTERNAL_ADDRESS)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// `remote.ip` for authorization on the inbound side: what the gateway in
/// front decided when the request came from a mesh peer, else the peer.
pub fn remote_address(headers: &HeaderMap, peer: Option<IpAddr>, trust: &Trust) -> Option<IpAddr> {
    let decided = trust
        .is_mesh_peer()
        .then(|| external_address(headers))
        .flatten();
    decided.or(peer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_for_picks_by_trusted_hops() {
        let peer: IpAddr = "10.0.0.9".parse().expect("ip");
        let mut headers = HeaderMap::new();
        headers.insert(XFF, HeaderValue::from_static("1.2.3.4, 5.6.7.8"));
        assert_eq!(
            forwarded_for(&mut headers.clone(), Some(peer), 0),
            Some(peer)
        );
        assert_eq!(
            forwarded_for(&mut headers.clone(), Some(peer), 1),
            "5.6.7.8".parse().ok()
        );
        assert_eq!(
            forwarded_for(&mut headers.clone(), Some(peer), 9),
            "1.2.3.4".parse().ok()
        );
        forwarded_for(&mut headers, Some(peer), 0);
        assert_eq!(headers[XFF], "1.2.3.4, 5.6.7.8, 10.0.0.9");
        assert_eq!(headers[EXTERNAL_ADDRESS], "10.0.0.9");
    }

    #[test]
    fn forwarded_proto_is_the_connections_unless_believed() {
        let mut headers = HeaderMap::new();
        headers.insert(XFP, HeaderValue::from_static("https"));
        forwarded_proto(&mut headers, false, false);
        assert_eq!(headers[XFP], "http", "a client's claim is replaced");
        headers.insert(XFP, HeaderValue::from_static("https"));
        forwarded_proto(&mut headers, false, true);
        assert_eq!(headers[XFP], "https", "a believed hop's value is kept");
        let mut fresh = HeaderMap::new();
        forwarded_proto(&mut fresh, true, true);
        assert_eq!(fresh[XFP], "https", "absent: the connection's scheme");
    }

    #[test]
    fn clients_cannot_claim_mesh_headers() {
        let mut request = Request::builder()
            .uri("http://other.internal/x")
            .header("host", "admin.internal")
            .header(XFCC, "URI=spiffe://evil")
            .header("x-envoy-original-path", "/fake")
            .header("x-envoy-external-address", "1.1.1.1")
            .header("x-kept", "1")
            .body(())
            .expect("request");
        prepare(&mut request, &Trust::Client, PathNormalization::Base).expect("prepared");
        let headers = request.headers();
        assert_eq!(headers["host"], "other.internal");
        assert!(headers.get(XFCC).is_none());
        assert!(headers.get("x-envoy-original-path").is_none());
        assert!(headers.get(EXTERNAL_ADDRESS).is_none());
        assert_eq!(headers["x-kept"], "1");
        assert_eq!(
            remote_address(headers, "9.9.9.9".parse().ok(), &Trust::Client),
            "9.9.9.9".parse().ok()
        );
    }
}
