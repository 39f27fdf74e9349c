//! The data runtime: where listeners, connections and upstream exchanges
//! run. One worker (`--workers 1`, the single-core sidecar) is a
//! current-thread runtime driven by its own `weft-data` thread; more are a
//! multi-thread runtime.
//!
//! Why not a multi-thread runtime of one worker: when its one worker parks
//! in the I/O driver, every task the driver wakes is scheduled as if from
//! another thread (the worker's run queue is parked with it), which writes
//! the driver's eventfd to unpark the worker it is already running on:
//! about one extra `write` and epoll round per request batch. A
//! current-thread runtime keeps those wake-ups in its local queue.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::runtime::{Builder, EnterGuard, Handle, Runtime};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub struct DataRuntime {
    runtime: Arc<Runtime>,
    /// Current-thread only: stops the thread that drives it.
    driver: Option<(oneshot::Sender<()>, std::thread::JoinHandle<()>)>,
}

impl DataRuntime {
    /// A runtime of `workers` threads (0 counts as 1).
    pub fn build(workers: usize) -> std::io::Result<Self> {
        if workers > 1 {
            let runtime = Builder::new_multi_thread()
                .worker_threads(workers)
                .thread_name("weft-data")
                .enable_all()
                .build()?;
            return Ok(Self {
                runtime: Arc::new(runtime),
                driver: None,
            });
        }
        let runtime = Arc::new(Builder::new_current_thread().enable_all().build()?);
        let (stop, stopped) = oneshot::channel::<()>();
        let driven = runtime.clone();
        let thread = std::thread::Builder::new()
            .name("weft-data".into())
            .spawn(move || {
                // Runs every task spawned on the handle until told to stop.
                driven.block_on(async move {
                    let _ = stopped.await;
                });
            })?;
        Ok(Self {
            runtime,
            driver: Some((stop, thread)),
        })
    }

    pub fn handle(&self) -> &Handle {
        self.runtime.handle()
    }

    pub fn enter(&self) -> EnterGuard<'_> {
        self.runtime.enter()
    }

    /// Runs `future` to completion on this thread (start-up work; with one
    /// worker the `weft-data` thread drives its I/O meanwhile).
    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }

    pub fn spawn<F>(&self, future: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.runtime.spawn(future)
    }

    /// Stops the runtime, waiting up to `timeout` for its tasks.
    pub fn shutdown_timeout(mut self, timeout: Duration) {
        if let Some((stop, thread)) = self.driver.take() {
            let _ = stop.send(());
            // The thread only returns from `block_on`; a panic there was
            // already reported by the panic hook.
            let _ = thread.join();
        }
        match Arc::try_unwrap(self.runtime) {
            Ok(runtime) => runtime.shutdown_timeout(timeout),
            // Unreachable once the driver thread is joined; dropping shuts
            // it down all the same.
            Err(runtime) => drop(runtime),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_worker_runs_spawned_tasks_on_its_own_thread_and_stops() {
        let data = DataRuntime::build(1).expect("runtime");
        let (tx, rx) = std::sync::mpsc::channel();
        data.spawn(async move {
            // A timer needs the driver: only the weft-data thread drives it.
            tokio::time::sleep(Duration::from_millis(5)).await;
            let name = std::thread::current().name().map(str::to_string);
            let _ = tx.send(name);
        });
        let name = rx.recv_timeout(Duration::from_secs(5)).expect("task ran");
        assert_eq!(name.as_deref(), Some("weft-data"));
        data.shutdown_timeout(Duration::from_millis(100));
    }

    #[test]
    fn several_workers_are_a_multi_thread_runtime() {
        let data = DataRuntime::build(2).expect("runtime");
        assert_eq!(
            data.handle().runtime_flavor(),
            tokio::runtime::RuntimeFlavor::MultiThread
        );
        let answer = data.block_on(async { data.spawn(async { 7 }).await });
        assert_eq!(answer.expect("joined"), 7);
        data.shutdown_timeout(Duration::from_millis(100));
    }
}
