//! The downstream HTTP server for one connection, HTTP/1.1 (with upgrades)
//! or HTTP/2 as detected. On drain the connection is shut down gracefully:
//! in-flight requests finish, keep-alive ends, HTTP/2 sends GOAWAY.

use std::sync::Arc;

use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};

use super::forward::{self, HttpConn};
use crate::state::ProxyState;
use crate::upstream::HttpVersion;

/// Runs a hyper server connection to completion; when the drain starts,
/// asks it to finish gracefully and keeps driving it until it has.
/// (A macro: hyper's HTTP/1-with-upgrades and HTTP/2 connections share no trait.)
macro_rules! drive {
    ($connection:expr, $drain:expr) => {{
        let mut connection = std::pin::pin!($connection);
        let result = tokio::select! {
            result = connection.as_mut() => result,
            _ = $drain.signaled() => {
                connection.as_mut().graceful_shutdown();
                connection.await
            }
        };
        if let Err(err) = result {
            tracing::debug!("downstream HTTP connection ended: {err}");
        }
    }};
}

pub async fn serve<I>(io: I, conn: HttpConn, state: Arc<ProxyState>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let drain = state.drain.clone();
    let header_timeout = state.snapshot().hardening.request_header_timeout;
    let version = conn.version;
    let conn = Arc::new(conn);
    let service = service_fn(move |request| forward::handle(state.clone(), conn.clone(), request));
    let io = TokioIo::new(io);
    match version {
        HttpVersion::Http1 => {
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .serve_connection(io, service)
                .with_upgrades();
            drive!(connection, drain);
        }
        HttpVersion::Http2 => {
            let connection = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .adaptive_window(true)
                .serve_connection(io, service);
            drive!(connection, drain);
        }
    }
}
