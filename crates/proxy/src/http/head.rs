//! The request head for the upstream hop (phases 7 and 8 build their
//! requests from it): which HTTP version goes upstream, whether the request
//! is an upgrade, its authority, and the head itself with hop-by-hop
//! headers removed, rewritten once so each try (and each mirror copy) can
//! be built from it cheaply.

use http::header::{self, HeaderMap, HeaderName};
use http::uri::{Authority, PathAndQuery, Uri};
use http::{Request, Version};

use crate::body::ProxyBody;
use crate::config::UpstreamProtocol;
use crate::upstream::HttpVersion;

/// The version to speak upstream: the cluster's `upstreamProtocol`, by
/// default the calling app's.
pub(super) fn upstream_version(protocol: UpstreamProtocol, downstream: HttpVersion) -> HttpVersion {
    match protocol {
        UpstreamProtocol::Http1 => HttpVersion::Http1,
        UpstreamProtocol::Http2 => HttpVersion::Http2,
        UpstreamProtocol::ClientProtocol => downstream,
    }
}

/// The request's authority: the URI's (HTTP/2, absolute-form) or `Host`.
pub(super) fn request_authority<B>(request: &Request<B>) -> Option<Authority> {
    if let Some(authority) = request.uri().authority() {
        return Some(authority.clone());
    }
    let host = request.headers().get(header::HOST)?.to_str().ok()?;
    host.parse().ok()
}

/// `Upgrade` with `Connection: upgrade` (WebSocket and the like).
pub(super) fn is_upgrade_request(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|token| token.trim().eq_ignore_ascii_case("upgrade"))
}

/// A downstream request's head rewritten for the upstream hop, once, so
/// each try can be built from it: hop-by-hop headers removed, origin-form
/// URI and `Host` for HTTP/1, absolute URI carrying the original authority
/// for HTTP/2.
pub(super) struct UpstreamHead {
    parts: http::request::Parts,
    authority: Option<Authority>,
    version: HttpVersion,
}

impl UpstreamHead {
    pub(super) fn new(
        mut parts: http::request::Parts,
        version: HttpVersion,
        authority: Option<Authority>,
        upgrade: bool,
    ) -> Self {
        strip_hop_by_hop(&mut parts.headers, upgrade);
        let path = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        match version {
            HttpVersion::Http1 => {
                parts.version = Version::HTTP_11;
                parts.uri = Uri::from(path);
                if !parts.headers.contains_key(header::HOST)
                    && let Some(authority) = &authority
                    && let Ok(value) = authority.as_str().parse()
                {
                    parts.headers.insert(header::HOST, value);
                }
            }
            HttpVersion::Http2 => {
                parts.version = Version::HTTP_2;
                parts.uri = Uri::from(path);
                parts.headers.remove(header::HOST);
            }
        }
        Self {
            parts,
            authority,
            version,
        }
    }

    /// The request of one try to `addr`.
    pub(super) fn request(
        &self,
        addr: std::net::SocketAddr,
        body: ProxyBody,
    ) -> Request<ProxyBody> {
        let mut request = Request::new(body);
        *request.method_mut() = self.parts.method.clone();
        *request.version_mut() = self.parts.version;
        *request.headers_mut() = self.parts.headers.clone();
        *request.uri_mut() = self.parts.uri.clone();
        if self.version == HttpVersion::Http2 {
            let authority = self
                .authority
                .clone()
                .or_else(|| addr.to_string().parse().ok())
                .unwrap_or_else(|| Authority::from_static("localhost"));
            let path = self
                .parts
                .uri
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/"));
            if let Ok(uri) = Uri::builder()
                .scheme("http")
                .authority(authority)
                .path_and_query(path)
                .build()
            {
                *request.uri_mut() = uri;
            }
        }
        request
    }
}

/// Connection-level headers that must not cross a proxy (RFC 9110 §7.6.1),
/// plus any the `Connection` header names. An upgrade keeps `Connection` and
/// `Upgrade`; gRPC's `te: trailers` is kept.
///
/// One pass over the message's (few) names finds what to drop: a removal
/// hashes its name even when absent, and most messages carry at most
/// `Connection` and one header it names.
pub(super) fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    let mut doomed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|token| HeaderName::try_from(token.trim()).ok())
        .filter(|name| !(upgrade && name == header::UPGRADE))
        .collect();
    for name in headers.keys() {
        let drop = if name == header::CONNECTION || name == header::UPGRADE {
            !upgrade
        } else if name == header::TE {
            headers
                .get(header::TE)
                .is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"trailers"))
        } else {
            matches!(
                name.as_str(),
                "transfer-encoding"
                    | "proxy-authenticate"
                    | "proxy-authorization"
                    | "trailer"
                    | "keep-alive"
                    | "proxy-connection"
            )
        };
        if drop {
            doomed.push(name.clone());
        }
    }
    for name in doomed {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_do_not_cross() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            "keep-alive, x-private".parse().expect("value"),
        );
        headers.insert("x-private", "1".parse().expect("value"));
        headers.insert("keep-alive", "timeout=5".parse().expect("value"));
        headers.insert(header::TE, "trailers".parse().expect("value"));
        headers.insert("x-app", "kept".parse().expect("value"));
        headers.insert("proxy-connection", "keep-alive".parse().expect("value"));
        headers.insert(
            header::PROXY_AUTHORIZATION,
            "Basic eA==".parse().expect("value"),
        );
        headers.insert(header::TRANSFER_ENCODING, "chunked".parse().expect("value"));
        strip_hop_by_hop(&mut headers, false);
        for gone in [
            "proxy-connection",
            "proxy-authorization",
            "transfer-encoding",
        ] {
            assert!(headers.get(gone).is_none(), "{gone}");
        }
        assert!(headers.get("x-private").is_none());
        assert!(headers.get(header::CONNECTION).is_none());
        assert!(headers.get("keep-alive").is_none());
        // gRPC needs `te: trailers`; the application's own headers stay.
        assert_eq!(headers[header::TE], "trailers");
        assert_eq!(headers["x-app"], "kept");
    }

    #[test]
    fn an_upgrade_keeps_its_connection_headers() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONNECTION, "Upgrade".parse().expect("value"));
        headers.insert(header::UPGRADE, "websocket".parse().expect("value"));
        assert!(is_upgrade_request(&headers));
        strip_hop_by_hop(&mut headers, true);
        assert_eq!(headers[header::UPGRADE], "websocket");
        assert!(headers.contains_key(header::CONNECTION));
        headers.remove(header::CONNECTION);
        assert!(!is_upgrade_request(&headers));
    }

    #[test]
    fn te_other_than_trailers_does_not_cross() {
        let mut headers = HeaderMap::new();
        headers.insert(header::TE, "gzip".parse().expect("value"));
        strip_hop_by_hop(&mut headers, false);
        assert!(headers.get(header::TE).is_none());
    }

    #[test]
    fn http2_upstream_carries_the_original_authority() {
        let request = Request::builder()
            .uri("/a?b=1")
            .header(header::HOST, "reviews:9080")
            .body(())
            .expect("request");
        let authority = request_authority(&request);
        let (parts, ()) = request.into_parts();
        let head = UpstreamHead::new(parts, HttpVersion::Http2, authority, false);
        let upstream = head.request(
            "10.0.0.1:9080".parse().expect("addr"),
            crate::reply::answer(http::StatusCode::OK, bytes::Bytes::new()).into_body(),
        );
        assert_eq!(upstream.uri().to_string(), "http://reviews:9080/a?b=1");
        assert!(upstream.headers().get(header::HOST).is_none());
        assert_eq!(
            upstream_version(UpstreamProtocol::ClientProtocol, HttpVersion::Http1),
            HttpVersion::Http1
        );
        assert_eq!(
            upstream_version(UpstreamProtocol::Http2, HttpVersion::Http1),
            HttpVersion::Http2
        );
    }
}
