//! TCP connections to upstream endpoints.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;

use super::UpstreamError;

/// Connects with a deadline and Nagle off: proxied requests are written
/// whole, and delaying small writes would only add latency.
pub async fn connect(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, UpstreamError> {
    let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| UpstreamError::ConnectTimeout { addr, timeout })?
        .map_err(|source| UpstreamError::Connect { addr, source })?;
    // Best effort: a failure only costs latency.
    let _ = stream.set_nodelay(true);
    Ok(stream)
}
