//! HTTP/2 upstream connections under a stream limit or a lifetime
//! (DestinationRule `connectionPool.http.maxConcurrentStreams` and
//! `connectionPool.tcp.maxConnectionDuration`, Envoy's
//! `max_concurrent_streams` and `max_connection_duration`).
//!
//! Contract, per endpoint:
//! - A request goes over the first connection with fewer than
//!   `max_concurrent_streams` streams open; when every connection is full,
//!   another is opened (counted against maxConnections; refused with UO
//!   when the cluster has no room, as the shared connection is).
//! - A connection older than `max_connection_duration` takes no new
//!   streams: it leaves the set, its streams in flight finish, and hyper
//!   closes it after the last one (every `SendRequest` is gone). A timer
//!   takes it out even when no request comes by, so a quiet connection is
//!   closed on time too.
//!
//! Without either limit the pool keeps its one shared connection per
//! endpoint (`pool.rs`); this path is taken only when a cluster asks.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http2;
use tokio::sync::Mutex;

use super::{Breaker, Resource, UpstreamError};
use crate::body::ProxyBody;
use crate::tls::MeshTls;
use crate::tls::upstream::UpstreamTls;

/// The connections to one endpoint under limits.
pub(super) type H2Set = Arc<Mutex<Vec<H2Conn>>>;

pub(super) struct H2Conn {
    sender: http2::SendRequest<ProxyBody>,
    tls: UpstreamTls,
    born: Instant,
    /// Streams open on it; each response body holds one until it ends.
    streams: Arc<AtomicU32>,
}

impl H2Conn {
    fn usable(&self, tls: &UpstreamTls, max_age: Option<Duration>, now: Instant) -> bool {
        !self.sender.is_closed()
            && self.tls == *tls
            && max_age.is_none_or(|age| now.saturating_duration_since(self.born) < age)
    }

    fn has_room(&self, max_streams: u32) -> bool {
        max_streams == 0 || self.streams.load(Ordering::Acquire) < max_streams
    }
}

/// Sends `request` over a connection of `set` with room for one more
/// stream, opening one when none has.
pub(super) async fn send(
    set: &H2Set,
    addr: SocketAddr,
    breaker: &Arc<Breaker>,
    connect_timeout: Duration,
    mut request: Request<ProxyBody>,
    tls: UpstreamTls,
    mesh: &MeshTls,
) -> Result<Response<ProxyBody>, UpstreamError> {
    let max_streams = breaker.limits.max_concurrent_streams;
    let max_age = breaker.limits.max_connection_duration;
    for attempt in 0..2 {
        let (mut sender, stream, reused) = {
            let mut conns = set.lock().await;
            let now = Instant::now();
            // Aged or closed connections leave: dropping their senders lets
            // hyper close them once their last stream ends.
            conns.retain(|conn| conn.usable(&tls, max_age, now));
            let open = conns
                .iter()
                .filter(|_| attempt == 0)
                .find(|conn| conn.has_room(max_streams));
            match open {
                Some(conn) => (conn.sender.clone(), StreamCount::take(&conn.streams), true),
                None => {
                    let counted = breaker
                        .acquire(Resource::Connection)
                        .map_err(UpstreamError::Overflow)?;
                    let sender =
                        super::pool::connect_http2(addr, connect_timeout, counted, &tls, mesh)
                            .await?;
                    let conn = H2Conn {
                        sender: sender.clone(),
                        tls: tls.clone(),
                        born: now,
                        streams: Arc::default(),
                    };
                    let stream = StreamCount::take(&conn.streams);
                    if let Some(age) = max_age {
                        expire_after(Arc::downgrade(set), age);
                    }
                    conns.push(conn);
                    (sender, stream, false)
                }
            }
        };
        if sender.ready().await.is_err() && reused {
            continue;
        }
        match sender.try_send_request(request).await {
            Ok(response) => {
                return Ok(response.map(|body| {
                    ProxyBody::new(Counted {
                        body,
                        stream: Some(stream),
                    })
                }));
            }
            Err(mut err) => match err.take_message() {
                Some(unsent) if reused => request = unsent,
                _ => {
                    return Err(UpstreamError::Reset {
                        addr,
                        source: err.into_error(),
                    });
                }
            },
        }
    }
    Err(UpstreamError::Connect {
        addr,
        source: std::io::Error::other("HTTP/2 connection closed before the request was sent"),
    })
}

/// Takes aged connections out of `set` when `age` has passed, so a
/// connection nobody uses is closed on time rather than at the next request.
fn expire_after(set: Weak<Mutex<Vec<H2Conn>>>, age: Duration) {
    tokio::spawn(async move {
        tokio::time::sleep(age).await;
        if let Some(set) = set.upgrade() {
            let now = Instant::now();
            set.lock()
                .await
                .retain(|conn| now.saturating_duration_since(conn.born) < age);
        }
    });
}

/// One open stream of a connection, given back when dropped.
struct StreamCount(Arc<AtomicU32>);

impl StreamCount {
    fn take(streams: &Arc<AtomicU32>) -> Self {
        streams.fetch_add(1, Ordering::AcqRel);
        Self(streams.clone())
    }
}

impl Drop for StreamCount {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that holds its stream's count until its last frame
/// arrives or it is dropped.
struct Counted {
    body: Incoming,
    stream: Option<StreamCount>,
}

impl Body for Counted {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if matches!(polled, Poll::Ready(None) | Poll::Ready(Some(Err(_))))
            || self.body.is_end_stream()
        {
            self.stream = None;
        }
        polled.map_err(Into::into)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
