//! The upstream side: connecting to endpoints and pooling HTTP connections.

mod connect;
mod pool;

pub use connect::connect;
pub use pool::{HttpVersion, Pool};

use std::net::SocketAddr;
use std::time::Duration;

/// Why an upstream could not be reached or did not answer.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("connection to {addr} failed: {source}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("connection to {addr} timed out after {timeout:?}")]
    ConnectTimeout { addr: SocketAddr, timeout: Duration },
    #[error("HTTP handshake with {addr} failed: {source}")]
    Handshake {
        addr: SocketAddr,
        source: hyper::Error,
    },
    #[error("{addr} closed the connection before answering: {source}")]
    Reset {
        addr: SocketAddr,
        source: hyper::Error,
    },
}

impl UpstreamError {
    /// Whether the request never reached the upstream (response flag UF)
    /// rather than failing on an established connection (UC).
    pub fn is_connect_failure(&self) -> bool {
        !matches!(self, Self::Reset { .. })
    }
}
