//! Traffic mirroring (Istio's `mirror`/`mirrors`, Envoy's request mirror
//! policies): a copy of a forwarded request goes to each mirror cluster,
//! fire-and-forget.
//!
//! - The copy is sent from its own task, so it never delays or fails the
//!   main request; its response is read and dropped, its failures only
//!   logged (at debug), and it is not counted in `istio_requests_total`.
//!   Copies count against the mirror cluster's connection limits, as
//!   Envoy's shadow requests do.
//! - Its authority gets Envoy's `-shadow` suffix on the host
//!   (`reviews:9080` → `reviews-shadow:9080`), so the mirror's logs tell
//!   copies from real traffic.
//! - Bodies: the main request body is streamed upstream, not buffered, and
//!   the retry layer reads it straight from the connection, so there is no
//!   copy to give a mirror. Only requests without a body (GET, HEAD, or an
//!   empty body) are mirrored; others are skipped (logged at debug).
//!   Mirroring small bodies (up to the 64 KiB replay cap) needs
//!   `retry::send` to accept a teeing body rather than `Incoming`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::request::Parts;
use http::uri::Authority;
use http::{Request, Version};
use http_body_util::{BodyExt, Full};
use weft_proto::proxy::v1 as pb;

use super::cors::Problem;
use super::fault;
use super::forward::UpstreamHead;
use crate::config::{Cluster, UpstreamProtocol};
use crate::state::ProxyState;
use crate::upstream::HttpVersion;

/// How long a copy may take, connect to last response byte: a slow mirror
/// must not pin pooled connections and tasks for long.
const MIRROR_DEADLINE: Duration = Duration::from_secs(5);

/// Envoy's suffix on the host of a mirrored request.
const SHADOW_SUFFIX: &str = "-shadow";

/// One compiled mirror policy.
pub struct Mirror {
    pub cluster: Arc<Cluster>,
    /// Share of requests copied, 0..=1.
    pub fraction: f64,
}

impl Mirror {
    /// Compiles a route's mirrors; every mirror cluster must exist.
    pub fn compile_all(
        mirrors: &[pb::Mirror],
        clusters: &HashMap<String, Arc<Cluster>>,
    ) -> Result<Vec<Self>, Vec<Problem>> {
        let mut compiled = Vec::new();
        let mut problems = Vec::new();
        for (index, mirror) in mirrors.iter().enumerate() {
            let path = format!("mirrors[{index}]");
            let percentage = if mirror.has_percentage {
                mirror.percentage
            } else {
                100.0
            };
            if !(0.0..=100.0).contains(&percentage) {
                problems.push((
                    format!("{path}.percentage"),
                    format!("must be 0..100, got {percentage}"),
                ));
            }
            match clusters.get(&mirror.cluster) {
                Some(cluster) => compiled.push(Self {
                    cluster: cluster.clone(),
                    fraction: percentage / 100.0,
                }),
                None => problems.push((
                    format!("{path}.cluster"),
                    format!("no cluster named {:?}", mirror.cluster),
                )),
            }
        }
        if problems.is_empty() {
            Ok(compiled)
        } else {
            Err(problems)
        }
    }

    fn sampled(&self) -> bool {
        self.fraction >= 1.0 || (self.fraction > 0.0 && fault::random_fraction() < self.fraction)
    }
}

/// The request as it goes upstream (after the route's rewrites and header
/// edits), for the mirrors to copy.
pub(super) struct Original<'a> {
    pub parts: &'a Parts,
    pub authority: Option<&'a Authority>,
    pub downstream: HttpVersion,
    /// The route timeout; bounds a copy too when shorter than the deadline.
    pub timeout: Option<Duration>,
}

/// Sends a copy of a bodiless request to each sampled mirror, each from its
/// own task.
pub(super) fn launch(state: &Arc<ProxyState>, mirrors: &[Mirror], original: &Original<'_>) {
    for mirror in mirrors.iter().filter(|m| m.sampled()) {
        let version = match mirror.cluster.upstream_protocol {
            UpstreamProtocol::Http1 => HttpVersion::Http1,
            UpstreamProtocol::Http2 => HttpVersion::Http2,
            UpstreamProtocol::ClientProtocol => original.downstream,
        };
        let authority = original.authority.and_then(shadow_authority);
        let head = UpstreamHead::new(
            copy_head(original.parts, authority.as_ref()),
            version,
            authority,
            false,
        );
        let deadline = original
            .timeout
            .map_or(MIRROR_DEADLINE, |t| t.min(MIRROR_DEADLINE));
        let state = state.clone();
        let cluster = mirror.cluster.clone();
        tokio::spawn(async move {
            let Some(addr) = cluster.pick_endpoint().map(|e| e.address) else {
                tracing::debug!("mirror cluster {:?} has no endpoints", cluster.name);
                return;
            };
            let body = Full::new(Bytes::new())
                .map_err(|never| match never {})
                .boxed_unsync();
            let request = head.request(addr, body);
            let exchange = async {
                let response = state
                    .pool
                    .send(
                        addr,
                        version,
                        &cluster.breaker,
                        cluster.connect_timeout,
                        request,
                    )
                    .await?;
                // Read to the end so the connection can go back to the pool.
                let _ = response.into_body().collect().await;
                Ok::<_, crate::upstream::UpstreamError>(())
            };
            match tokio::time::timeout(deadline, exchange).await {
                Ok(Ok(())) => {}
                Ok(Err(err)) => {
                    tracing::debug!(%addr, "mirror to cluster {:?} failed: {err}", cluster.name)
                }
                Err(_) => tracing::debug!(
                    %addr,
                    "mirror to cluster {:?} took longer than {deadline:?}",
                    cluster.name
                ),
            }
        });
    }
}

/// A copy of the request head without body or extensions, its `Host`
/// naming the shadow authority.
fn copy_head(parts: &Parts, authority: Option<&Authority>) -> Parts {
    let mut copy = Request::new(());
    *copy.method_mut() = parts.method.clone();
    *copy.uri_mut() = parts.uri.clone();
    *copy.version_mut() = Version::HTTP_11;
    *copy.headers_mut() = parts.headers.clone();
    let headers = copy.headers_mut();
    headers.remove(header::CONTENT_LENGTH);
    match authority.map(|a| HeaderValue::from_str(a.as_str())) {
        Some(Ok(value)) => {
            headers.insert(header::HOST, value);
        }
        // No authority to shadow: one is made up from the endpoint.
        _ => {
            headers.remove(header::HOST);
        }
    }
    copy.into_parts().0
}

/// `reviews:9080` → `reviews-shadow:9080`, as Envoy names mirrored hosts.
fn shadow_authority(authority: &Authority) -> Option<Authority> {
    let shadow = match authority.port() {
        Some(port) => format!("{}{SHADOW_SUFFIX}:{port}", authority.host()),
        None => format!("{}{SHADOW_SUFFIX}", authority.host()),
    };
    shadow.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shadow_hosts_keep_the_port() {
        let shadow =
            |a: &str| shadow_authority(&a.parse().expect("authority")).map(|a| a.to_string());
        assert_eq!(
            shadow("reviews:9080").as_deref(),
            Some("reviews-shadow:9080")
        );
        assert_eq!(shadow("reviews").as_deref(), Some("reviews-shadow"));
        assert_eq!(shadow("10.0.0.1:80").as_deref(), Some("10.0.0.1-shadow:80"));
    }

    #[test]
    fn percentages_sample_requests() {
        let mirror = |fraction| Mirror {
            cluster: Arc::new(Cluster::black_hole()),
            fraction,
        };
        assert!((0..100).all(|_| mirror(1.0).sampled()));
        assert!((0..100).all(|_| !mirror(0.0).sampled()));
        let half = mirror(0.5);
        let hits = (0..2000).filter(|_| half.sampled()).count();
        assert!((700..1300).contains(&hits), "{hits}");
    }
}
