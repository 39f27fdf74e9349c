//! Connections to upstream endpoints: TCP, then TLS when the config says
//! so for the endpoint (mesh mTLS or TLS origination, see `tls::upstream`).

use std::net::SocketAddr;
use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};
use tokio::net::TcpStream;

use super::{Keepalive, UpstreamError};
use crate::tls::MeshTls;
use crate::tls::upstream::{Carries, UpstreamIo, UpstreamTls, secure};

/// A connection for opaque TCP to `addr`, secured as `decided` (mesh mTLS
/// carries it as TLS-wrapped TCP).
pub async fn connect(
    addr: SocketAddr,
    timeout: Duration,
    keepalive: Option<&Keepalive>,
    decided: UpstreamTls,
    mesh: &MeshTls,
) -> Result<UpstreamIo, UpstreamError> {
    let tls = mesh.effective(decided);
    connect_secured(addr, timeout, keepalive, &tls, Carries::Tcp, mesh).await
}

/// A connection to `addr` secured by `tls`, offering what it `carries`.
pub async fn connect_secured(
    addr: SocketAddr,
    timeout: Duration,
    keepalive: Option<&Keepalive>,
    tls: &UpstreamTls,
    carries: Carries,
    mesh: &MeshTls,
) -> Result<UpstreamIo, UpstreamError> {
    let stream = connect_tcp(addr, timeout, keepalive).await?;
    secure(stream, addr, tls, carries, timeout, mesh)
        .await
        .map_err(|source| UpstreamError::Connect { addr, source })
}

/// Connects with a deadline and Nagle off: proxied requests are written
/// whole, and delaying small writes would only add latency. `keepalive`
/// (the cluster's `tcpKeepalive`) turns on SO_KEEPALIVE with its settings.
async fn connect_tcp(
    addr: SocketAddr,
    timeout: Duration,
    keepalive: Option<&Keepalive>,
) -> Result<TcpStream, UpstreamError> {
    let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| UpstreamError::ConnectTimeout { addr, timeout })?
        .map_err(|source| UpstreamError::Connect { addr, source })?;
    // Best effort: a failure only costs latency.
    let _ = stream.set_nodelay(true);
    if let Some(keepalive) = keepalive {
        let mut settings = TcpKeepalive::new();
        if let Some(time) = keepalive.time {
            settings = settings.with_time(time);
        }
        if let Some(interval) = keepalive.interval {
            settings = settings.with_interval(interval);
        }
        if let Some(probes) = keepalive.probes {
            settings = settings.with_retries(probes);
        }
        // Best effort too: without it a dead peer is noticed later.
        if let Err(err) = SockRef::from(&stream).set_tcp_keepalive(&settings) {
            tracing::debug!(%addr, "could not set TCP keepalive: {err}");
        }
    }
    Ok(stream)
}
