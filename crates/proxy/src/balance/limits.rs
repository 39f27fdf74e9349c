//! Per-cluster circuit breakers (Istio's `connectionPool`, Envoy's
//! `circuit_breakers`): counters shared by all of a cluster's endpoints.
//!
//! Every count is held by a [`Slot`] that gives it back when dropped, so a
//! request that fails, is cancelled or finishes releases what it took on
//! every path. Overflow is refused at once (response flag UO); only a
//! request waiting for a connection (pending) waits, for a connection to be
//! checked in or closed.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use tokio::sync::Notify;

use crate::config::Limits;

/// What a [`Slot`] counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    /// An open upstream TCP connection (HTTP/1, HTTP/2 or opaque TCP).
    Connection,
    /// A request waiting for a connection.
    Pending,
    /// A request in flight.
    Request,
    /// A retry in flight.
    Retry,
}

impl Resource {
    fn index(self) -> usize {
        match self {
            Self::Connection => 0,
            Self::Pending => 1,
            Self::Request => 2,
            Self::Retry => 3,
        }
    }

    /// The count as a phrase and the Istio field that limits it.
    fn describe(self, count: u32) -> (String, &'static str) {
        let plural = if count == 1 { "" } else { "s" };
        match self {
            Self::Connection => (format!("{count} connection{plural} open"), "maxConnections"),
            Self::Pending => (
                format!("{count} request{plural} waiting for a connection"),
                "http1MaxPendingRequests",
            ),
            Self::Request => (
                format!("{count} request{plural} in flight"),
                "http2MaxRequests",
            ),
            Self::Retry => (
                format!(
                    "{count} retr{} in flight",
                    if count == 1 { "y" } else { "ies" }
                ),
                "maxRetries",
            ),
        }
    }
}

/// A limit was reached; the message names the cluster, count and limit.
#[derive(Debug, Clone)]
pub struct Overflow(pub String);

impl fmt::Display for Overflow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

pub struct Breaker {
    pub cluster: String,
    pub limits: Limits,
    counts: [AtomicU32; 4],
    /// Woken when a connection is checked in or closed, for pending requests.
    freed: Notify,
}

impl Breaker {
    pub fn new(cluster: String, limits: Limits) -> Self {
        Self {
            cluster,
            limits,
            counts: Default::default(),
            freed: Notify::new(),
        }
    }

    fn max(&self, resource: Resource) -> u32 {
        match resource {
            Resource::Connection => self.limits.max_connections,
            Resource::Pending => self.limits.max_pending_requests,
            Resource::Request => self.limits.max_requests,
            Resource::Retry => self.limits.max_retries,
        }
    }

    /// Takes one of `resource`, or says which limit stops it.
    pub fn acquire(self: &Arc<Self>, resource: Resource) -> Result<Slot, Overflow> {
        let max = self.max(resource);
        let counter = &self.counts[resource.index()];
        counter
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |current| {
                (max == 0 || current < max).then(|| current.saturating_add(1))
            })
            .map_err(|current| {
                let (count, field) = resource.describe(current);
                Overflow(format!(
                    "cluster {:?}: {count}, limit {field}={max}",
                    self.cluster
                ))
            })?;
        Ok(Slot {
            breaker: self.clone(),
            resource,
        })
    }

    /// How many of `resource` are held now.
    pub fn count(&self, resource: Resource) -> u32 {
        self.counts[resource.index()].load(Ordering::Acquire)
    }

    /// A future that completes on the next [`Breaker::notify_freed`]; create
    /// it before checking, so a release in between is not missed.
    pub fn freed(&self) -> tokio::sync::futures::Notified<'_> {
        self.freed.notified()
    }

    pub fn notify_freed(&self) {
        self.freed.notify_waiters();
    }
}

/// One unit of a cluster resource, given back on drop.
pub struct Slot {
    breaker: Arc<Breaker>,
    resource: Resource,
}

impl Slot {
    pub fn breaker(&self) -> &Arc<Breaker> {
        &self.breaker
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.breaker.counts[self.resource.index()].fetch_sub(1, Ordering::AcqRel);
        if self.resource == Resource::Connection {
            self.breaker.notify_freed();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_count_and_release() {
        let breaker = Arc::new(Breaker::new(
            "c".into(),
            Limits {
                max_requests: 1,
                ..Limits::default()
            },
        ));
        let held = breaker.acquire(Resource::Request).expect("first");
        let err = breaker.acquire(Resource::Request).err().expect("overflow");
        assert_eq!(
            err.to_string(),
            "cluster \"c\": 1 request in flight, limit http2MaxRequests=1"
        );
        drop(held);
        assert_eq!(breaker.count(Resource::Request), 0);
        assert!(breaker.acquire(Resource::Request).is_ok());
        // 0 is no limit.
        let many: Vec<_> = (0..10)
            .map(|_| breaker.acquire(Resource::Connection))
            .collect();
        assert!(many.iter().all(Result::is_ok));
        assert_eq!(breaker.count(Resource::Connection), 10);
    }
}
