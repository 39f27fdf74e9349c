//! One pooled HTTP/1 connection to an upstream, driven by the task that is
//! using it instead of a task of its own.
//!
//! hyper's client splits a connection into a `SendRequest` handle and a
//! `Connection` future that does the I/O. Spawning that future (the usual
//! way) puts a channel and a second task on every exchange: the request
//! crosses the channel, wakes the connection's task, and that task wakes
//! the requester back when the response head and each body chunk arrive.
//! Here the future stays beside its handle and is polled by whoever holds
//! the connection: the request's own future while it waits for the head,
//! then the response body (polled by the downstream connection's task)
//! while it streams. hyper's codec is unchanged; only who polls it moves.
//!
//! An idle pooled connection is polled by nobody. A close by the upstream
//! while idle is read when the connection is next checked out ([`Self::ready`]
//! polls it first); one that races the request makes hyper hand the
//! request back unsent, and the pool retries it on a new connection.
//!
//! Upgrades (WebSocket) need hyper's upgrade hand-off, which only a running
//! connection future makes: for those the future is spawned with upgrades,
//! as before, and the connection does not go back to the pool.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::{TrySendError, http1};
use hyper_util::rt::TokioIo;

use super::connect::connect_secured;
use super::{Keepalive, Slot, UpstreamError};
use crate::http::ProxyBody;
use crate::tls::MeshTls;
use crate::tls::upstream::{Carries, UpstreamIo, UpstreamTls};

/// Boxed: the connection's state is large, and an [`Http1Conn`] moves
/// (into and out of the idle stack, into each response body) with every
/// request; a pointer moves cheaply.
type Driver = Box<http1::Connection<TokioIo<UpstreamIo>, ProxyBody>>;

/// A pooled HTTP/1 connection with what the cluster that opened it allows.
pub(super) struct Http1Conn {
    sender: http1::SendRequest<ProxyBody>,
    /// The connection's I/O; `None` once it has ended (or was handed to its
    /// own task for an upgrade), after which the connection is not reused.
    driver: Option<Driver>,
    /// Counts against the opening cluster's maxConnections until dropped
    /// (dropping the connection also closes it).
    pub slot: Slot,
    pub served: u32,
    pub idle_since: Instant,
    /// How the connection was secured.
    pub tls: UpstreamTls,
}

impl Http1Conn {
    /// Connects to `addr` (secured as `tls`) and does the HTTP/1 handshake.
    pub async fn open(
        addr: SocketAddr,
        timeout: Duration,
        keepalive: Option<&Keepalive>,
        tls: &UpstreamTls,
        mesh: &MeshTls,
        slot: Slot,
    ) -> Result<Self, UpstreamError> {
        let stream = connect_secured(addr, timeout, keepalive, tls, Carries::Http1, mesh).await?;
        let (sender, driver) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|source| UpstreamError::Handshake { addr, source })?;
        Ok(Self {
            sender,
            driver: Some(Box::new(driver)),
            slot,
            served: 0,
            idle_since: Instant::now(),
            tls: tls.clone(),
        })
    }

    /// Whether the cluster's limits and the connection's state allow
    /// another request on it.
    pub fn reusable(&self, now: Instant) -> bool {
        let limits = &self.slot.breaker().limits;
        self.is_open()
            && (limits.max_requests_per_connection == 0
                || self.served < limits.max_requests_per_connection)
            && now.saturating_duration_since(self.idle_since) < limits.idle_timeout
    }

    /// Not known to be closed (an idle connection's close is only read
    /// when it is next polled).
    pub fn is_open(&self) -> bool {
        self.driver.is_some() && !self.sender.is_closed()
    }

    /// Polls the connection's I/O: writes what is queued, reads what has
    /// arrived, and registers `cx` for the socket's next event.
    fn drive(&mut self, cx: &mut Context<'_>) {
        let Some(driver) = self.driver.as_mut() else {
            return;
        };
        if let Poll::Ready(ended) = Pin::new(&mut **driver).poll(cx) {
            if let Err(err) = ended {
                tracing::debug!("upstream HTTP/1 connection ended: {err}");
            }
            self.driver = None;
        }
    }

    /// Waits until the connection takes a request; an error when it has
    /// closed. A pooled connection usually wants one already (it settled
    /// when its last response ended) and is not polled here: a close by the
    /// upstream meanwhile is read when the request is sent, and hyper hands
    /// the request back unsent.
    pub async fn ready(&mut self) -> Result<(), ()> {
        std::future::poll_fn(|cx| {
            if let Poll::Ready(Ok(())) = self.sender.poll_ready(cx) {
                return Poll::Ready(Ok(()));
            }
            self.drive(cx);
            match self.sender.poll_ready(cx) {
                Poll::Ready(Ok(())) => Poll::Ready(Ok(())),
                Poll::Ready(Err(_)) => Poll::Ready(Err(())),
                // Nobody would ever make it ready.
                Poll::Pending if self.driver.is_none() => Poll::Ready(Err(())),
                Poll::Pending => Poll::Pending,
            }
        })
        .await
    }

    /// Sends `request` and waits for the response head, driving the
    /// connection meanwhile. An upgrade request's connection gets its own
    /// task (hyper completes the upgrade there).
    pub async fn send(
        &mut self,
        request: Request<ProxyBody>,
    ) -> Result<Response<Incoming>, TrySendError<Request<ProxyBody>>> {
        if request.headers().contains_key(http::header::UPGRADE)
            && let Some(driver) = self.driver.take()
        {
            tokio::spawn(async move {
                if let Err(err) = (*driver).with_upgrades().await {
                    tracing::debug!("upstream HTTP/1 connection ended: {err}");
                }
            });
            return self.sender.try_send_request(request).await;
        }
        let mut response = pin!(self.sender.try_send_request(request));
        std::future::poll_fn(|cx| {
            // I/O first: it is what completes the response.
            self.drive(cx);
            response.as_mut().poll(cx)
        })
        .await
    }

    /// After the response ended: whether the connection has finished the
    /// exchange and waits for the next request. It usually has (the poll
    /// that read the last bytes went on to wait); otherwise it is polled
    /// once more.
    fn settle(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.sender.is_ready() {
            self.drive(cx);
        }
        self.is_open() && self.sender.is_ready()
    }
}

/// Where a finished response body returns its connection.
pub(super) trait Return: Send + Sync {
    fn return_http1(&self, addr: SocketAddr, conn: Http1Conn);
}

pub(super) struct Checkin<P: Return> {
    pub pool: std::sync::Arc<P>,
    pub addr: SocketAddr,
    pub conn: Http1Conn,
}

/// A response body that drives its HTTP/1 connection while it streams and
/// returns it to the pool once the last byte has been read (a body dropped
/// early takes its connection with it).
pub(super) struct PooledBody<P: Return> {
    inner: Incoming,
    checkin: Option<Checkin<P>>,
}

impl<P: Return> PooledBody<P> {
    pub fn new(inner: Incoming, checkin: Checkin<P>) -> Self {
        let mut body = Self {
            inner,
            checkin: Some(checkin),
        };
        if body.inner.is_end_stream() {
            // No task is polling yet: a no-op waker only lets the connection
            // settle (readiness is not lost; the next poll sees it).
            body.check_in(&mut Context::from_waker(Waker::noop()));
        }
        body
    }

    fn check_in(&mut self, cx: &mut Context<'_>) {
        if let Some(Checkin {
            pool,
            addr,
            mut conn,
        }) = self.checkin.take()
            && conn.settle(cx)
        {
            pool.return_http1(addr, conn);
        }
        // Otherwise dropped: closed, and its slot freed.
    }
}

impl<P: Return> Body for PooledBody<P> {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        // The next chunk is usually read already (hyper reads ahead one);
        // the connection is driven only when it is not.
        let mut polled = Pin::new(&mut this.inner).poll_frame(cx);
        if polled.is_pending()
            && let Some(checkin) = this.checkin.as_mut()
        {
            checkin.conn.drive(cx);
            polled = Pin::new(&mut this.inner).poll_frame(cx);
        }
        match &polled {
            Poll::Ready(None) => this.check_in(cx),
            Poll::Ready(Some(Ok(_))) if this.inner.is_end_stream() => this.check_in(cx),
            Poll::Ready(Some(Err(_))) => this.checkin = None,
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
