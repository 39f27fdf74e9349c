//! Pooled HTTP connections to upstream endpoints, keyed by address.
//!
//! HTTP/1.1: idle keep-alive connections wait in a per-endpoint stack; one is
//! checked out per request and checked back in when the response body ends
//! (a response body dropped early takes its connection with it). HTTP/2: one
//! multiplexed connection per endpoint, shared by all requests.
//!
//! A pooled connection may have been closed by the upstream while idle. When
//! hyper hands the request back unsent, it is retried once on a new
//! connection; a request that was sent is never replayed here.
//!
//! Cluster limits: every connection holds a maxConnections slot of the
//! cluster that opened it until it closes; a request finding none free and
//! no idle connection waits as a pending request (or overflows, UO). An
//! HTTP/1 connection is not reused after maxRequestsPerConnection requests
//! nor after idling longer than idleTimeout (checked at checkout and
//! checkin; there is no timer sweep).
//!
//! maxConnectionDuration: an HTTP/1 connection older than it is not reused
//! (its request in flight finishes) and a timer closes it if it idles in the
//! pool; HTTP/2 under that or maxConcurrentStreams goes through
//! `h2_limited.rs`.
//!
//! TLS (`tls::upstream`): to an endpoint secured by mesh mTLS, requests go
//! over multiplexed HTTP/2 connections ([`MESH_H2_SHARDS`] per endpoint)
//! whatever HTTP version the app used (marked with `x-weft-client-protocol` so the far side gives the
//! app its own version back); only upgrades (WebSocket) use HTTP/1.1 over
//! TLS. A pooled connection is reused only while the endpoint's TLS
//! decision is unchanged, so a policy change never sends a request over a
//! connection secured the old way.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use super::connect::connect_secured;
use super::h2_limited::{self, H2Set};
use super::{Breaker, Keepalive, Resource, Slot, UpstreamError};
use crate::body::ProxyBody;
use crate::tls::CLIENT_PROTOCOL_HEADER;
use crate::tls::MeshTls;
use crate::tls::upstream::{Carries, UpstreamTls};

/// HTTP/2 connections per TLS-secured endpoint (Envoy keeps one per
/// worker; a sidecar has at most two workers).
const MESH_H2_SHARDS: usize = 2;

/// Most idle HTTP/1 connections kept per endpoint.
const MAX_IDLE_PER_ENDPOINT: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpVersion {
    Http1,
    Http2,
}

type H2Slot = Arc<tokio::sync::Mutex<Option<(http2::SendRequest<ProxyBody>, UpstreamTls)>>>;

/// A pooled HTTP/1 connection with what the cluster that opened it allows.
struct Http1Conn {
    sender: http1::SendRequest<ProxyBody>,
    /// Counts against the opening cluster's maxConnections until dropped
    /// (dropping the sender also ends the connection).
    slot: Slot,
    served: u32,
    idle_since: Instant,
    /// When it was opened, for maxConnectionDuration.
    born: Instant,
    /// How the connection was secured.
    tls: UpstreamTls,
}

impl Http1Conn {
    fn reusable(&self, now: Instant) -> bool {
        let limits = &self.slot.breaker().limits;
        !self.sender.is_closed()
            && (limits.max_requests_per_connection == 0
                || self.served < limits.max_requests_per_connection)
            && now.saturating_duration_since(self.idle_since) < limits.idle_timeout
            && limits
                .max_connection_duration
                .is_none_or(|age| now.saturating_duration_since(self.born) < age)
    }
}

pub struct Pool {
    /// This proxy's certificates, for mesh mTLS and TLS origination.
    tls: Arc<MeshTls>,
    idle_http1: Mutex<HashMap<SocketAddr, Vec<Http1Conn>>>,
    /// (endpoint, shard) → shared HTTP/2 connection.
    http2: Mutex<HashMap<(SocketAddr, usize), H2Slot>>,
    /// Spreads mesh HTTP/2 requests over [`MESH_H2_SHARDS`] connections.
    next_shard: std::sync::atomic::AtomicUsize,
    /// HTTP/2 connections of clusters with a stream limit or lifetime.
    h2_limited: Mutex<HashMap<SocketAddr, H2Set>>,
}

impl Pool {
    pub fn new(tls: Arc<MeshTls>) -> Self {
        Self {
            tls,
            idle_http1: Mutex::default(),
            http2: Mutex::default(),
            next_shard: Default::default(),
            h2_limited: Mutex::default(),
        }
    }

    /// Sends `request` to `addr`, reusing a pooled connection when one is
    /// free, within `breaker`'s connection limits. The response body returns
    /// the connection to the pool when done.
    pub async fn send(
        self: &Arc<Self>,
        addr: SocketAddr,
        version: HttpVersion,
        breaker: &Arc<Breaker>,
        connect_timeout: Duration,
        decided: UpstreamTls,
        mut request: Request<ProxyBody>,
    ) -> Result<Response<ProxyBody>, UpstreamError> {
        let tls = self.tls.effective(decided);
        let upgrade = request.headers().contains_key(http::header::UPGRADE);
        let version = match (&tls, version) {
            (UpstreamTls::Mesh { .. }, HttpVersion::Http1) if !upgrade => {
                request.headers_mut().insert(
                    CLIENT_PROTOCOL_HEADER,
                    http::HeaderValue::from_static("HTTP/1.1"),
                );
                into_http2_shape(&mut request);
                HttpVersion::Http2
            }
            _ => version,
        };
        match version {
            HttpVersion::Http1 => {
                self.send_http1(addr, breaker, connect_timeout, request, tls)
                    .await
            }
            HttpVersion::Http2 => {
                self.send_http2(addr, breaker, connect_timeout, request, tls)
                    .await
            }
        }
    }

    async fn send_http1(
        self: &Arc<Self>,
        addr: SocketAddr,
        breaker: &Arc<Breaker>,
        connect_timeout: Duration,
        mut request: Request<ProxyBody>,
        tls: UpstreamTls,
    ) -> Result<Response<ProxyBody>, UpstreamError> {
        loop {
            let (mut conn, reused) = self
                .checkout_http1(addr, breaker, connect_timeout, &tls)
                .await?;
            if let (false, Some(age)) = (reused, breaker.limits.max_connection_duration) {
                self.expire_http1_after(addr, age);
            }
            if conn.sender.ready().await.is_err() {
                if reused {
                    continue;
                }
                return Err(UpstreamError::Connect {
                    addr,
                    source: std::io::Error::other("connection closed before the request was sent"),
                });
            }
            conn.served = conn.served.saturating_add(1);
            match conn.sender.try_send_request(request).await {
                Ok(response) => {
                    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
                        // The connection now belongs to the upgraded stream,
                        // which is no longer counted against the cluster.
                        return Ok(response.map(|body| ProxyBody::new(body.map_err(Into::into))));
                    }
                    let checkin = Checkin {
                        pool: self.clone(),
                        addr,
                        conn,
                    };
                    return Ok(response.map(|body| ProxyBody::new(PooledBody::new(body, checkin))));
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
    }

    /// An idle connection to `addr`, else a new one when maxConnections
    /// allows, else waits (as one of at most maxPendingRequests) for one to
    /// be checked in or closed. `true` when reused.
    async fn checkout_http1(
        &self,
        addr: SocketAddr,
        breaker: &Arc<Breaker>,
        connect_timeout: Duration,
        tls: &UpstreamTls,
    ) -> Result<(Http1Conn, bool), UpstreamError> {
        // Held while waiting; dropped (released) on return or cancellation.
        let mut pending: Option<Slot> = None;
        loop {
            let freed = breaker.freed();
            tokio::pin!(freed);
            // Registered before checking, so a release in between wakes us.
            freed.as_mut().enable();
            if let Some(conn) = self.take_idle_http1(addr, tls) {
                return Ok((conn, true));
            }
            match breaker.acquire(Resource::Connection) {
                Ok(slot) => {
                    let keepalive = breaker.limits.tcp_keepalive.as_ref();
                    let sender =
                        connect_http1(addr, connect_timeout, keepalive, tls, &self.tls).await?;
                    let conn = Http1Conn {
                        sender,
                        slot,
                        served: 0,
                        idle_since: Instant::now(),
                        born: Instant::now(),
                        tls: tls.clone(),
                    };
                    return Ok((conn, false));
                }
                Err(full) => {
                    // An idle connection of this cluster to another endpoint
                    // would otherwise hold the slot forever.
                    if self.evict_idle_http1(breaker) {
                        continue;
                    }
                    if pending.is_none() {
                        let slot = breaker.acquire(Resource::Pending).map_err(|waiting| {
                            UpstreamError::Overflow(super::Overflow(format!("{waiting} ({full})")))
                        })?;
                        pending = Some(slot);
                    }
                    freed.await;
                }
            }
        }
    }

    async fn send_http2(
        &self,
        addr: SocketAddr,
        breaker: &Arc<Breaker>,
        connect_timeout: Duration,
        mut request: Request<ProxyBody>,
        tls: UpstreamTls,
    ) -> Result<Response<ProxyBody>, UpstreamError> {
        let limits = &breaker.limits;
        if limits.max_concurrent_streams > 0 || limits.max_connection_duration.is_some() {
            let set = self
                .h2_limited
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .entry(addr)
                .or_default()
                .clone();
            return h2_limited::send(
                &set,
                addr,
                breaker,
                connect_timeout,
                request,
                tls,
                &self.tls,
            )
            .await;
        }
        // TLS records are sealed and opened by the task driving the
        // connection: more than one connection per endpoint lets that work
        // use more than one core.
        let shard = match tls {
            UpstreamTls::Plain => 0,
            _ => {
                self.next_shard
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                    % MESH_H2_SHARDS
            }
        };
        let slot = self
            .http2
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .entry((addr, shard))
            .or_default()
            .clone();
        for attempt in 0..2 {
            let (mut sender, reused) = {
                let mut shared = slot.lock().await;
                match shared.as_ref() {
                    Some((sender, held)) if !sender.is_closed() && attempt == 0 && *held == tls => {
                        (sender.clone(), true)
                    }
                    _ => {
                        // The shared connection counts as one; a new one is
                        // refused at once when the cluster has no room.
                        let counted = breaker
                            .acquire(Resource::Connection)
                            .map_err(UpstreamError::Overflow)?;
                        let sender =
                            connect_http2(addr, connect_timeout, counted, &tls, &self.tls).await?;
                        *shared = Some((sender.clone(), tls.clone()));
                        (sender, false)
                    }
                }
            };
            if sender.ready().await.is_err() && reused {
                continue;
            }
            match sender.try_send_request(request).await {
                Ok(response) => {
                    return Ok(response.map(|body| ProxyBody::new(body.map_err(Into::into))));
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

    /// A reusable idle connection to `addr`; stale ones met on the way
    /// (closed, idle too long) are dropped, which closes them.
    fn take_idle_http1(&self, addr: SocketAddr, tls: &UpstreamTls) -> Option<Http1Conn> {
        let now = Instant::now();
        let mut idle = self.idle_http1.lock().unwrap_or_else(|p| p.into_inner());
        let stack = idle.get_mut(&addr)?;
        // Secured the old way: closed rather than reused.
        stack.retain(|conn| conn.reusable(now) && conn.tls == *tls);
        stack.pop()
    }

    /// Closes one idle connection counted against `breaker`, to any
    /// endpoint; `false` when there is none.
    fn evict_idle_http1(&self, breaker: &Arc<Breaker>) -> bool {
        let evicted = {
            let mut idle = self.idle_http1.lock().unwrap_or_else(|p| p.into_inner());
            idle.values_mut().find_map(|stack| {
                let position = stack
                    .iter()
                    .position(|c| Arc::ptr_eq(c.slot.breaker(), breaker))?;
                Some(stack.swap_remove(position))
            })
        };
        evicted.is_some()
    }

    /// Closes the connections to `addr` that idle in the pool past
    /// maxConnectionDuration once `age` has passed (one opened now is then
    /// due); those in use close at checkin.
    fn expire_http1_after(self: &Arc<Self>, addr: SocketAddr, age: Duration) {
        let pool = Arc::downgrade(self);
        tokio::spawn(async move {
            tokio::time::sleep(age).await;
            if let Some(pool) = pool.upgrade() {
                let now = Instant::now();
                let mut idle = pool.idle_http1.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(stack) = idle.get_mut(&addr) {
                    stack.retain(|conn| conn.reusable(now));
                }
            }
        });
    }

    fn return_http1(&self, addr: SocketAddr, mut conn: Http1Conn) {
        let now = Instant::now();
        conn.idle_since = now;
        if !conn.reusable(now) {
            // Dropping `conn` closes it and frees its slot (which notifies).
            return;
        }
        let breaker = conn.slot.breaker().clone();
        let mut idle = self.idle_http1.lock().unwrap_or_else(|p| p.into_inner());
        let stack = idle.entry(addr).or_default();
        // The sweep: expired neighbours go as this one arrives.
        stack.retain(|c| c.reusable(now));
        if stack.len() < MAX_IDLE_PER_ENDPOINT {
            stack.push(conn);
        }
        drop(idle);
        // A pending request of the cluster may take it now.
        breaker.notify_freed();
    }

    /// Idle HTTP/1 connections per endpoint, for `/clusters`.
    pub fn idle_http1(&self, addr: SocketAddr) -> usize {
        let idle = self.idle_http1.lock().unwrap_or_else(|p| p.into_inner());
        idle.get(&addr).map_or(0, |stack| {
            stack.iter().filter(|c| !c.sender.is_closed()).count()
        })
    }
}

async fn connect_http1(
    addr: SocketAddr,
    timeout: Duration,
    keepalive: Option<&Keepalive>,
    tls: &UpstreamTls,
    mesh: &MeshTls,
) -> Result<http1::SendRequest<ProxyBody>, UpstreamError> {
    let stream = connect_secured(addr, timeout, keepalive, tls, Carries::Http1, mesh).await?;
    let (sender, connection) = http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|source| UpstreamError::Handshake { addr, source })?;
    tokio::spawn(async move {
        if let Err(err) = connection.with_upgrades().await {
            tracing::debug!(%addr, "upstream HTTP/1 connection ended: {err}");
        }
    });
    Ok(sender)
}

pub(super) async fn connect_http2(
    addr: SocketAddr,
    timeout: Duration,
    counted: Slot,
    tls: &UpstreamTls,
    mesh: &MeshTls,
) -> Result<http2::SendRequest<ProxyBody>, UpstreamError> {
    let keepalive = counted.breaker().limits.tcp_keepalive.clone();
    let stream =
        connect_secured(addr, timeout, keepalive.as_ref(), tls, Carries::Http2, mesh).await?;
    let (sender, connection) = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .adaptive_window(true)
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|source| UpstreamError::Handshake { addr, source })?;
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            tracing::debug!(%addr, "upstream HTTP/2 connection ended: {err}");
        }
        // The connection is closed: it no longer counts.
        drop(counted);
    });
    Ok(sender)
}

/// An HTTP/1-shaped request (origin-form URI, `Host`) as HTTP/2 wants it:
/// the authority moves into the URI.
fn into_http2_shape(request: &mut Request<ProxyBody>) {
    let authority = request
        .headers_mut()
        .remove(http::header::HOST)
        .and_then(|host| host.to_str().ok()?.parse::<http::uri::Authority>().ok());
    if let Some(authority) = authority {
        let path = request
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
        if let Ok(uri) = http::Uri::builder()
            .scheme("http")
            .authority(authority)
            .path_and_query(path)
            .build()
        {
            *request.uri_mut() = uri;
        }
    }
    *request.version_mut() = http::Version::HTTP_2;
}

struct Checkin {
    pool: Arc<Pool>,
    addr: SocketAddr,
    conn: Http1Conn,
}

/// A response body that returns its HTTP/1 connection to the pool once the
/// last byte has been read.
struct PooledBody {
    inner: Incoming,
    checkin: Option<Checkin>,
}

impl PooledBody {
    fn new(inner: Incoming, checkin: Checkin) -> Self {
        let mut body = Self {
            inner,
            checkin: Some(checkin),
        };
        if body.inner.is_end_stream() {
            body.check_in();
        }
        body
    }

    fn check_in(&mut self) {
        if let Some(Checkin { pool, addr, conn }) = self.checkin.take() {
            pool.return_http1(addr, conn);
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.check_in(),
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => self.check_in(),
            Poll::Ready(Some(Err(_))) => self.checkin = None,
            _ => {}
        }
        polled.map_err(Into::into)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
#[path = "pool_tests.rs"]
mod tests;
