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
//! - The copy's response is drained frame by frame and dropped, never
//!   buffered.
//! - Bodies: the main request body is streamed upstream, never held back
//!   or buffered whole first. When a copy is wanted, the body is read
//!   through [`Tee`], which forwards each frame as it comes and keeps a
//!   reference to its bytes (`Bytes` clones, no copying) up to
//!   [`MIRROR_BODY_CAP`] (the retry layer's 64 KiB replay cap). When the body
//!   ends within the cap, the kept bytes go to the copies, which are sent
//!   only then (Envoy also sends a shadow once the body is complete). A body
//!   over the cap, one that fails, or one the primary never finishes reading
//!   is not mirrored (logged at debug). Request trailers are not copied.
//!   The retry layer's replay buffer is not reused: it exists only for
//!   routes with retries, drops its bytes on overflow and tells nobody when
//!   the body ends.

use std::sync::Arc;
use std::time::Duration;

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderValue};
use http::request::Parts;
use http::uri::Authority;
use http::{Request, Version};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Full};
use tokio::sync::oneshot;

use super::fault;
use super::head::UpstreamHead;
use super::retry_body::REPLAY_CAP;
use crate::body::{BoxError, ProxyBody};
use crate::config::{Cluster, UpstreamProtocol};
use crate::state::ProxyState;
use crate::upstream::HttpVersion;

/// How long a copy may take, connect to last response byte: a slow mirror
/// must not pin pooled connections and tasks for long.
const MIRROR_DEADLINE: Duration = Duration::from_secs(5);

/// Largest request body mirrored: the retry layer's replay cap, so a
/// request keeps at most that much per purpose.
pub const MIRROR_BODY_CAP: usize = REPLAY_CAP;

/// Envoy's suffix on the host of a mirrored request.
const SHADOW_SUFFIX: &str = "-shadow";

pub use crate::config::mirror::Mirror;

impl Mirror {
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

/// Starts a copy of the request for each sampled mirror and returns the
/// body to forward upstream: `body` itself, or a [`Tee`] over it when a
/// copy of a non-empty body is wanted.
pub(super) fn launch(
    state: &Arc<ProxyState>,
    mirrors: &[Mirror],
    original: &Original<'_>,
    body: ProxyBody,
) -> ProxyBody {
    let shadows: Vec<Shadow> = mirrors
        .iter()
        .filter(|m| m.sampled())
        .map(|mirror| Shadow::new(mirror, original))
        .collect();
    if shadows.is_empty() {
        return body;
    }
    if body.is_end_stream() {
        // Nothing to wait for: the copies go out now.
        for shadow in shadows {
            shadow.spawn(state.clone(), Bytes::new());
        }
        return body;
    }
    let (done, copied) = oneshot::channel();
    let state = state.clone();
    tokio::spawn(async move {
        // An error means the tee was dropped without a complete copy; it
        // logged why (or the primary stopped reading the body).
        let Ok(chunks) = copied.await else {
            tracing::debug!("request body not copied whole, not mirrored");
            return;
        };
        let body = concat(chunks);
        for shadow in shadows {
            shadow.spawn(state.clone(), body.clone());
        }
    });
    ProxyBody::new(Tee {
        inner: body,
        copy: Some(Kept {
            chunks: Vec::new(),
            len: 0,
            done,
        }),
    })
}

/// One copy to send, everything but its body.
struct Shadow {
    cluster: Arc<Cluster>,
    version: HttpVersion,
    head: UpstreamHead,
    deadline: Duration,
}

impl Shadow {
    fn new(mirror: &Mirror, original: &Original<'_>) -> Self {
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
        Self {
            cluster: mirror.cluster.clone(),
            version,
            head,
            deadline,
        }
    }

    /// Sends the copy from its own task: it never delays the main request.
    fn spawn(self, state: Arc<ProxyState>, body: Bytes) {
        let Self {
            cluster,
            version,
            head,
            deadline,
        } = self;
        tokio::spawn(async move {
            let live = state.clusters().live(&cluster);
            let Some(addr) = live.pick_endpoint(&cluster).map(|e| e.address) else {
                tracing::debug!("mirror cluster {:?} has no endpoints", cluster.name);
                return;
            };
            // A full body has an exact size: hyper sends its content-length.
            let body = Full::new(body)
                .map_err(|never| match never {})
                .boxed_unsync();
            let mut request = head.request(addr, body);
            if !cluster.is_mesh_endpoint(addr) {
                crate::telemetry::peer::strip(request.headers_mut());
            }
            let exchange = async {
                let response = state
                    .pool
                    .send(
                        addr,
                        version,
                        &live.breaker,
                        cluster.connect_timeout,
                        state.snapshot().upstream_tls(&cluster.name, addr),
                        request,
                    )
                    .await?;
                // Read to the end so the connection can go back to the
                // pool, one frame at a time: nothing is kept, so a large
                // mirror response costs no memory.
                let mut body = response.into_body();
                while let Some(frame) = body.frame().await {
                    if frame.is_err() {
                        break;
                    }
                }
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

/// The copied chunks as one buffer (done on the mirror task, not on the
/// main request's path).
fn concat(chunks: Vec<Bytes>) -> Bytes {
    if chunks.len() == 1 {
        return chunks.into_iter().next().unwrap_or_default();
    }
    let mut whole = BytesMut::with_capacity(chunks.iter().map(Bytes::len).sum());
    for chunk in chunks {
        whole.extend_from_slice(&chunk);
    }
    whole.freeze()
}

/// The main request body, forwarded frame by frame as it arrives, keeping
/// its data for the mirrors until it ends or grows past the cap.
struct Tee {
    inner: ProxyBody,
    /// `None` once handed to the mirrors or given up.
    copy: Option<Kept>,
}

struct Kept {
    chunks: Vec<Bytes>,
    len: usize,
    /// Dropping it unsent tells the mirrors there is no copy.
    done: oneshot::Sender<Vec<Bytes>>,
}

impl Tee {
    fn keep(&mut self, data: &Bytes) {
        let Some(copy) = self.copy.as_mut() else {
            return;
        };
        if copy.len + data.len() > MIRROR_BODY_CAP {
            tracing::debug!("request body over {MIRROR_BODY_CAP} bytes, not mirrored");
            self.copy = None;
            return;
        }
        copy.len += data.len();
        copy.chunks.push(data.clone());
    }

    fn finish(&mut self) {
        if let Some(copy) = self.copy.take() {
            // The mirrors' task only goes away with the runtime.
            let _ = copy.done.send(copy.chunks);
        }
    }
}

impl Body for Tee {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Pending => {}
            Poll::Ready(None) => this.finish(),
            Poll::Ready(Some(Err(err))) => {
                if this.copy.take().is_some() {
                    tracing::debug!("request body failed, not mirrored: {err}");
                }
            }
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.keep(data);
                }
                // A sender that knows the length stops polling after the
                // last byte, so the end is noticed here rather than from
                // `None`.
                if this.inner.is_end_stream() {
                    this.finish();
                }
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
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
