//! The bodies a request's tries need (phase 8, `retry.rs`):
//!
//! - [`Replay`]: the downstream request body, readable once per try; it
//!   keeps what it forwarded up to [`REPLAY_CAP`] so a failed try can be
//!   repeated. A body not read at all (a connect failure) or read whole
//!   within the cap may be replayed; a larger or still-streaming one never.
//! - [`hold`]: a response body that keeps the request's maxRequests slot
//!   until it ends or is dropped.
//! - [`WithinRouteTimeout`]: a response body cut once the route timeout
//!   passes, as Envoy's route timeout does after headers were sent.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Response};
use http_body::{Body, Frame, SizeHint};

use crate::body::{BoxError, ProxyBody};

/// Most request body bytes kept for a retry.
pub const REPLAY_CAP: usize = 64 * 1024;

/// Keeps `guard` (the request's maxRequests slot, an endpoint's load
/// count) until the body ends or is dropped.
pub(super) fn hold<G: Unpin + Send + 'static>(
    response: Response<ProxyBody>,
    guard: G,
) -> Response<ProxyBody> {
    response.map(|inner| {
        ProxyBody::new(Held {
            inner,
            _guard: guard,
        })
    })
}

/// A response body that keeps `_guard` (a count) until it ends or is dropped.
struct Held<G> {
    inner: ProxyBody,
    _guard: G,
}

impl<G: Unpin> Body for Held<G> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body cut with an error once the route timeout passes: the
/// downstream sees the response reset (HTTP/1 connection closed, HTTP/2
/// stream reset), as Envoy's route timeout does after headers were sent.
pub(super) struct WithinRouteTimeout {
    pub(super) inner: ProxyBody,
    pub(super) expiry: Pin<Box<tokio::time::Sleep>>,
    pub(super) timeout: Duration,
}

impl Body for WithinRouteTimeout {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        match self.expiry.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(format!(
                "the response body did not end within {:?} (the route timeout)",
                self.timeout
            )
            .into()))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The downstream request body, readable once per try. Tries run one after
/// another; a new try's body makes the previous try's body fail, so a try
/// still held by its connection can never steal the source from the next.
pub(super) struct Replay {
    shared: Arc<Mutex<Shared>>,
}

struct Shared {
    /// `None` once it ended (or failed).
    source: Option<ProxyBody>,
    /// Everything read so far, unless more than the cap was read.
    chunks: Vec<Bytes>,
    buffered: usize,
    trailers: Option<HeaderMap>,
    /// Something was read from the source.
    consumed: bool,
    /// The source ended and everything it gave is in `chunks`/`trailers`.
    complete: bool,
    /// More than the cap was read (or reading failed): no replay.
    overflowed: bool,
    /// The try whose body may read; older ones fail.
    generation: u64,
}

impl Replay {
    pub(super) fn new(source: ProxyBody) -> Self {
        Self {
            shared: Arc::new(Mutex::new(Shared {
                source: Some(source),
                chunks: Vec::new(),
                buffered: 0,
                trailers: None,
                consumed: false,
                complete: false,
                overflowed: false,
                generation: 0,
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a new try could send the whole body again.
    pub(super) fn can_replay(&self) -> bool {
        let shared = self.lock();
        !shared.overflowed && (!shared.consumed || shared.complete)
    }

    /// The body for a new try.
    pub(super) fn body(&self) -> ProxyBody {
        let generation = {
            let mut shared = self.lock();
            shared.generation += 1;
            shared.generation
        };
        ProxyBody::new(ReplayBody {
            shared: self.shared.clone(),
            generation,
            position: 0,
            trailers_sent: false,
        })
    }
}

struct ReplayBody {
    shared: Arc<Mutex<Shared>>,
    generation: u64,
    /// Chunks of `Shared::chunks` already sent by this try.
    position: usize,
    trailers_sent: bool,
}

impl Body for ReplayBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let mut shared = this.shared.lock().unwrap_or_else(|p| p.into_inner());
        if shared.generation != this.generation {
            return Poll::Ready(Some(Err("request body superseded by a retry".into())));
        }
        loop {
            if !shared.overflowed && this.position < shared.chunks.len() {
                let chunk = shared.chunks[this.position].clone();
                this.position += 1;
                return Poll::Ready(Some(Ok(Frame::data(chunk))));
            }
            if shared.complete {
                if !this.trailers_sent
                    && let Some(trailers) = shared.trailers.clone()
                {
                    this.trailers_sent = true;
                    return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                }
                return Poll::Ready(None);
            }
            let Some(source) = shared.source.as_mut() else {
                return Poll::Ready(None);
            };
            let frame = match Pin::new(source).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    shared.source = None;
                    shared.complete = true;
                    continue;
                }
                Poll::Ready(Some(Err(err))) => {
                    shared.source = None;
                    shared.overflowed = true;
                    return Poll::Ready(Some(Err(err)));
                }
                Poll::Ready(Some(Ok(frame))) => frame,
            };
            shared.consumed = true;
            // A sender that knows the length stops polling after the last
            // byte, so the end is noticed here rather than from `None`.
            if shared.source.as_ref().is_some_and(Body::is_end_stream) {
                shared.source = None;
                shared.complete = true;
            }
            let frame = match frame.into_data() {
                Ok(data) => {
                    if !shared.overflowed {
                        if shared.buffered + data.len() > REPLAY_CAP {
                            shared.overflowed = true;
                            shared.chunks = Vec::new();
                        } else {
                            shared.buffered += data.len();
                            shared.chunks.push(data.clone());
                            this.position += 1;
                        }
                    }
                    Frame::data(data)
                }
                Err(frame) => match frame.into_trailers() {
                    Ok(trailers) => {
                        shared.trailers = Some(trailers.clone());
                        shared.source = None;
                        shared.complete = true;
                        this.trailers_sent = true;
                        Frame::trailers(trailers)
                    }
                    // Unknown frame kinds are not forwarded.
                    Err(_) => continue,
                },
            };
            return Poll::Ready(Some(Ok(frame)));
        }
    }

    fn is_end_stream(&self) -> bool {
        let shared = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        match &shared.source {
            _ if shared.generation != self.generation => false,
            Some(source) if !shared.consumed => source.is_end_stream(),
            _ => {
                shared.complete
                    && this_position_done(self.position, &shared)
                    && (shared.trailers.is_none() || self.trailers_sent)
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        let shared = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        let unread: u64 = if shared.overflowed {
            0
        } else {
            shared
                .chunks
                .iter()
                .skip(self.position)
                .map(|c| c.len() as u64)
                .sum()
        };
        match &shared.source {
            Some(source) => {
                let inner = source.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(inner.lower() + unread);
                if let Some(upper) = inner.upper() {
                    hint.set_upper(upper + unread);
                }
                hint
            }
            None => SizeHint::with_exact(unread),
        }
    }
}

fn this_position_done(position: usize, shared: &Shared) -> bool {
    shared.overflowed || position >= shared.chunks.len()
}
