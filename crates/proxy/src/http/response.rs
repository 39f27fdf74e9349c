//! Phase 9, the response on its way back to the client: an accepted
//! upgrade becomes a copied connection, hop-by-hop headers go, then the
//! route's response header operations, the CORS headers, the hash cookie
//! the proxy generated, and the client's own HTTP version (whatever the
//! upstream spoke).

use http::header::{self, HeaderValue};
use http::{Response, StatusCode, Version};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use super::cors::Allowed;
use super::head::strip_hop_by_hop;
use super::rewrite;
use super::route::Matched;
use crate::body::ProxyBody;
use crate::state::ProxyState;

/// What the earlier phases left for the response.
pub(super) struct Finish<'a> {
    pub matched: Option<&'a Matched>,
    pub cors: Option<Allowed<'a>>,
    /// A consistent-hash cookie the proxy made up for this client.
    pub set_cookie: Option<String>,
    pub downstream_version: Version,
    /// The client's side of an upgrade it asked for.
    pub downstream_upgrade: Option<OnUpgrade>,
}

impl Finish<'_> {
    pub(super) fn apply(
        self,
        state: &ProxyState,
        mut response: Response<ProxyBody>,
    ) -> Response<ProxyBody> {
        if response.status() == StatusCode::SWITCHING_PROTOCOLS
            && let Some(downstream_upgrade) = self.downstream_upgrade
        {
            let upstream_upgrade = hyper::upgrade::on(&mut response);
            // Counted by the drain like a connection: it is one now.
            state.drain.spawn_connection(async move {
                let (Ok(downstream), Ok(upstream)) =
                    tokio::join!(downstream_upgrade, upstream_upgrade)
                else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(
                    &mut TokioIo::new(downstream),
                    &mut TokioIo::new(upstream),
                )
                .await;
            });
        } else {
            strip_hop_by_hop(response.headers_mut(), false);
        }
        if let Some(matched) = self.matched {
            rewrite::edit_response(matched, response.headers_mut());
        }
        if let Some(cors) = self.cors {
            cors.decorate(response.headers_mut());
        }
        // The hash cookie the proxy generated, so the client sticks from now on.
        if let Some(value) = self.set_cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
        *response.version_mut() = self.downstream_version;
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::MeshTls;

    #[test]
    fn the_client_gets_its_version_the_cookie_and_no_hop_by_hop_headers() {
        let state = ProxyState::new(
            MeshTls::new(None),
            std::sync::Arc::new(crate::upstream::Dns::new(&[])),
        );
        let mut upstream =
            Response::new(crate::reply::answer(StatusCode::OK, "hi".into()).into_body());
        *upstream.version_mut() = Version::HTTP_2;
        let headers = upstream.headers_mut();
        headers.insert(header::CONNECTION, HeaderValue::from_static("x-hop"));
        headers.insert("x-hop", HeaderValue::from_static("1"));
        headers.insert("x-app", HeaderValue::from_static("kept"));
        let finish = Finish {
            matched: None,
            cors: None,
            set_cookie: Some("user=abc; Path=/".into()),
            downstream_version: Version::HTTP_11,
            downstream_upgrade: None,
        };
        let response = finish.apply(&state, upstream);
        assert_eq!(response.version(), Version::HTTP_11);
        assert!(response.headers().get("x-hop").is_none());
        assert!(response.headers().get(header::CONNECTION).is_none());
        assert_eq!(response.headers()["x-app"], "kept");
        assert_eq!(response.headers()[header::SET_COOKIE], "user=abc; Path=/");
    }
}
