//! The upstream side: connecting to endpoints, pooling HTTP connections, and
//! each cluster's circuit breakers (connection-pool limits and outlier
//! detection).

mod connect;
mod dns;
mod h2_limited;
mod pool;

pub use crate::balance::limits::{Breaker, Overflow, Resource, Slot};
pub use crate::balance::outlier::{Eligible, Outlier, TryResult};
pub use crate::config::{Keepalive, Limits, OutlierPolicy};
pub use connect::connect;
pub use dns::Dns;
pub use pool::{HttpVersion, Pool};

use std::net::SocketAddr;
use std::time::Duration;

use http::StatusCode;

use crate::flags::ResponseFlag;
use crate::reply::LocalReply;

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

    /// The response flag this failure is recorded with: UO (a limit of this
    /// proxy), UF (never reached the upstream), UC (reset after).
    pub fn flag(&self) -> ResponseFlag {
        match self {
            Self::Overflow(_) => ResponseFlag::UpstreamOverflow,
            err if err.is_connect_failure() => ResponseFlag::UpstreamConnectFailure,
            _ => ResponseFlag::UpstreamConnectionTermination,
        }
    }

    /// The data-path error this becomes for a request to `cluster`: the
    /// flag above, with the source and retry safety it implies, and the
    /// cause in words.
    pub fn into_reply(self, cluster: &str) -> LocalReply {
        let flag = self.flag();
        let message = match (&self, flag) {
            (Self::Overflow(full), _) => full.to_string(),
            (_, ResponseFlag::UpstreamConnectFailure) => {
                format!("upstream connect error in cluster {cluster:?}: {self}")
            }
            _ => format!("upstream reset in cluster {cluster:?}: {self}"),
        };
        LocalReply::new(StatusCode::SERVICE_UNAVAILABLE, flag, message)
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
