//! The upstream side: connecting to endpoints, pooling HTTP connections, and
//! each cluster's circuit breakers (connection-pool limits and outlier
//! detection).

mod connect;
pub mod limits;
pub mod outlier;
mod pool;

pub use connect::connect;
pub use limits::{Breaker, Keepalive, Limits, Overflow, Resource, Slot};
pub use outlier::{Eligible, Outlier, OutlierPolicy, TryResult};
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
    /// A connection-pool limit refused the request (response flag UO); the
    /// upstream was never contacted.
    #[error("{0}")]
    Overflow(Overflow),
}

impl UpstreamError {
    /// Whether the request never reached the upstream (response flag UF)
    /// rather than failing on an established connection (UC).
    pub fn is_connect_failure(&self) -> bool {
        !matches!(self, Self::Reset { .. } | Self::Overflow(_))
    }

    /// What outlier detection counts this as; `None` for an overflow, which
    /// says nothing about the endpoint.
    pub fn try_result(&self) -> Option<TryResult> {
        match self {
            Self::Overflow(_) => None,
            Self::Reset { .. } => Some(TryResult::Reset),
            _ => Some(TryResult::ConnectFailure),
        }
    }
}
