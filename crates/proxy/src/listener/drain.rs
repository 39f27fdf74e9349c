//! Graceful drain: one signal tells listeners to stop accepting and open
//! connections to finish; a task tracker says when the last one is done.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};
use tokio_util::task::TaskTracker;

#[derive(Clone, Default)]
pub struct Drain {
    signal: CancellationToken,
    connections: TaskTracker,
}

impl Drain {
    /// Starts draining; idempotent.
    pub fn start(&self) {
        self.signal.cancel();
    }

    pub fn is_draining(&self) -> bool {
        self.signal.is_cancelled()
    }

    /// Resolves once draining has started.
    pub fn signaled(&self) -> WaitForCancellationFuture<'_> {
        self.signal.cancelled()
    }

    /// Runs a connection task on the current runtime, counted for the drain.
    pub fn spawn_connection<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.connections.spawn(task);
    }

    pub fn open_connections(&self) -> usize {
        self.connections.len()
    }

    /// Waits until every connection has finished or `deadline` passes;
    /// true if they all finished.
    pub async fn wait_connections(&self, deadline: Duration) -> bool {
        self.connections.close();
        tokio::time::timeout(deadline, self.connections.wait())
            .await
            .is_ok()
    }
}
