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

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use super::{UpstreamError, connect};
use crate::http::ProxyBody;

/// Most idle HTTP/1 connections kept per endpoint.
const MAX_IDLE_PER_ENDPOINT: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpVersion {
    Http1,
    Http2,
}

type H2Slot = Arc<tokio::sync::Mutex<Option<http2::SendRequest<ProxyBody>>>>;

#[derive(Default)]
pub struct Pool {
    idle_http1: Mutex<HashMap<SocketAddr, Vec<http1::SendRequest<ProxyBody>>>>,
    http2: Mutex<HashMap<SocketAddr, H2Slot>>,
}

impl Pool {
    /// Sends `request` to `addr`, reusing a pooled connection when one is
    /// free. The response body returns the connection to the pool when done.
    pub async fn send(
        self: &Arc<Self>,
        addr: SocketAddr,
        version: HttpVersion,
        connect_timeout: Duration,
        request: Request<ProxyBody>,
    ) -> Result<Response<ProxyBody>, UpstreamError> {
        match version {
            HttpVersion::Http1 => self.send_http1(addr, connect_timeout, request).await,
            HttpVersion::Http2 => self.send_http2(addr, connect_timeout, request).await,
        }
    }

    async fn send_http1(
        self: &Arc<Self>,
        addr: SocketAddr,
        connect_timeout: Duration,
        mut request: Request<ProxyBody>,
    ) -> Result<Response<ProxyBody>, UpstreamError> {
        loop {
            let (mut sender, reused) = match self.take_idle_http1(addr) {
                Some(sender) => (sender, true),
                None => (connect_http1(addr, connect_timeout).await?, false),
            };
            if sender.ready().await.is_err() {
                if reused {
                    continue;
                }
                return Err(UpstreamError::Connect {
                    addr,
                    source: std::io::Error::other("connection closed before the request was sent"),
                });
            }
            match sender.try_send_request(request).await {
                Ok(response) => {
                    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
                        // The connection now belongs to the upgraded stream.
                        return Ok(response.map(|body| ProxyBody::new(body.map_err(Into::into))));
                    }
                    let checkin = Checkin {
                        pool: self.clone(),
                        addr,
                        sender,
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

    async fn send_http2(
        &self,
        addr: SocketAddr,
        connect_timeout: Duration,
        mut request: Request<ProxyBody>,
    ) -> Result<Response<ProxyBody>, UpstreamError> {
        let slot = self
            .http2
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .entry(addr)
            .or_default()
            .clone();
        for attempt in 0..2 {
            let (mut sender, reused) = {
                let mut shared = slot.lock().await;
                match shared.as_ref() {
                    Some(sender) if !sender.is_closed() && attempt == 0 => (sender.clone(), true),
                    _ => {
                        let sender = connect_http2(addr, connect_timeout).await?;
                        *shared = Some(sender.clone());
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

    fn take_idle_http1(&self, addr: SocketAddr) -> Option<http1::SendRequest<ProxyBody>> {
        let mut idle = self.idle_http1.lock().unwrap_or_else(|p| p.into_inner());
        let stack = idle.get_mut(&addr)?;
        while let Some(sender) = stack.pop() {
            if !sender.is_closed() {
                return Some(sender);
            }
        }
        None
    }

    fn return_http1(&self, addr: SocketAddr, sender: http1::SendRequest<ProxyBody>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle_http1.lock().unwrap_or_else(|p| p.into_inner());
        let stack = idle.entry(addr).or_default();
        if stack.len() < MAX_IDLE_PER_ENDPOINT {
            stack.push(sender);
        }
    }

    /// Idle HTTP/1 connections per endpoint, for `/clusters`.
    pub fn idle_http1(&self, addr: SocketAddr) -> usize {
        let idle = self.idle_http1.lock().unwrap_or_else(|p| p.into_inner());
        idle.get(&addr)
            .map_or(0, |stack| stack.iter().filter(|s| !s.is_closed()).count())
    }
}

async fn connect_http1(
    addr: SocketAddr,
    timeout: Duration,
) -> Result<http1::SendRequest<ProxyBody>, UpstreamError> {
    let stream = connect(addr, timeout).await?;
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

async fn connect_http2(
    addr: SocketAddr,
    timeout: Duration,
) -> Result<http2::SendRequest<ProxyBody>, UpstreamError> {
    let stream = connect(addr, timeout).await?;
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
    });
    Ok(sender)
}

struct Checkin {
    pool: Arc<Pool>,
    addr: SocketAddr,
    sender: http1::SendRequest<ProxyBody>,
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
        if let Some(Checkin { pool, addr, sender }) = self.checkin.take() {
            pool.return_http1(addr, sender);
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
