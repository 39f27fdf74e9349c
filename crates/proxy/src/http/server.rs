//! The one downstream HTTP server, for one connection: HTTP/1.1 (with
//! upgrades) or HTTP/2 as detected, on every listener and inside mesh mTLS.
//! On drain the connection is shut down gracefully: in-flight requests
//! finish, keep-alive ends, HTTP/2 sends GOAWAY.
//!
//! A client must send its first request head within the request-header
//! timeout: hyper enforces it for every HTTP/1 head; an HTTP/2 connection
//! that opens no stream in that time is closed (so a preface followed by
//! silence holds nothing for long).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};

use super::coarse_timer::CoarseTimer;
use super::{HttpConn, pipeline};
use crate::state::ProxyState;
use crate::upstream::HttpVersion;

/// How long a connection closed for silence may take to say goodbye.
const GOAWAY_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// Runs a hyper server connection to completion; when the drain starts,
/// asks it to finish gracefully and keeps driving it until it has.
/// (A macro: hyper's HTTP/1-with-upgrades and HTTP/2 connections share no trait.)
/// `$quiet` resolves when the connection is to be dropped for silence.
macro_rules! drive {
    ($connection:expr, $drain:expr, $quiet:expr) => {{
        let mut connection = std::pin::pin!($connection);
        let result = tokio::select! {
            result = connection.as_mut() => result,
            _ = $drain.signaled() => {
                connection.as_mut().graceful_shutdown();
                connection.await
            }
            () = $quiet => {
                // GOAWAY first, so a real client reconnects cleanly; one
                // that does not even answer that is dropped shortly after.
                tracing::debug!("downstream HTTP/2 connection: no request within the header timeout; closing");
                connection.as_mut().graceful_shutdown();
                match tokio::time::timeout(GOAWAY_GRACE, connection.as_mut()).await {
                    Ok(result) => result,
                    Err(_) => Ok(()),
                }
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
    let asked = Arc::new(AtomicBool::new(false));
    let service = {
        let asked = asked.clone();
        service_fn(move |request| {
            asked.store(true, Ordering::Relaxed);
            pipeline::handle(state.clone(), conn.clone(), request)
        })
    };
    let io = TokioIo::new(io);
    match version {
        HttpVersion::Http1 => {
            let connection = http1::Builder::new()
                .timer(CoarseTimer::for_timeout(header_timeout))
                .header_read_timeout(header_timeout)
                .serve_connection(io, service)
                .with_upgrades();
            drive!(connection, drain, std::future::pending::<()>());
        }
        HttpVersion::Http2 => {
            let connection = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .adaptive_window(true)
                .serve_connection(io, service);
            let quiet = async {
                tokio::time::sleep(header_timeout).await;
                if asked.load(Ordering::Relaxed) {
                    std::future::pending::<()>().await;
                }
            };
            drive!(connection, drain, quiet);
        }
    }
}
