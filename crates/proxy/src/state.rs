//! The proxy's shared state: the current config snapshot, the upstream pool,
//! metrics, drain, and applying new configs.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::{ArcSwap, Guard};
use tokio::runtime::Handle;
use weft_proto::proxy::v1::ProxyConfig;

use crate::config::{ConfigError, Snapshot};
use crate::listener::Listeners;
use crate::listener::drain::Drain;
use crate::telemetry::metrics::Metrics;
use crate::tls::MeshTls;
use crate::upstream::Pool;

/// What `/config_dump` reports besides the config itself.
#[derive(Debug, Clone, Default)]
pub struct ConfigStatus {
    pub source: String,
    /// The last config that was refused, and why; cleared by a good one.
    pub last_rejected: Option<String>,
}

pub struct ProxyState {
    snapshot: ArcSwap<Snapshot>,
    pub pool: Arc<Pool>,
    /// This proxy's workload certificate and TLS configs.
    pub tls: Arc<MeshTls>,
    pub metrics: Metrics,
    pub drain: Drain,
    ready: AtomicBool,
    status: Mutex<ConfigStatus>,
    listeners: Mutex<Listeners>,
    data_runtime: Handle,
}

impl ProxyState {
    /// A proxy with no config yet (not ready), securing connections with
    /// `tls`. Listeners run on `data_runtime`.
    pub fn new(data_runtime: Handle, tls: Arc<MeshTls>) -> Arc<Self> {
        let empty = Snapshot::compile(ProxyConfig::default(), "(none)")
            .unwrap_or_else(|err| unreachable!("the empty config is valid: {err}"));
        Arc::new(Self {
            snapshot: ArcSwap::from_pointee(empty),
            pool: Arc::new(Pool::new(tls.clone())),
            tls,
            metrics: Metrics::default(),
            drain: Drain::default(),
            ready: AtomicBool::new(false),
            status: Mutex::default(),
            listeners: Mutex::default(),
            data_runtime,
        })
    }

    /// The current snapshot, for synchronous use within one request.
    pub fn snapshot(&self) -> Guard<Arc<Snapshot>> {
        self.snapshot.load()
    }

    /// The current snapshot, to hold across awaits.
    pub fn snapshot_full(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Validates, binds new listeners, then swaps the snapshot in. On any
    /// error nothing changes: the running config keeps serving.
    pub fn apply(self: &Arc<Self>, config: ProxyConfig, source: &str) -> Result<(), ConfigError> {
        let result = self.try_apply(config, source);
        let mut status = self.status.lock().unwrap_or_else(|p| p.into_inner());
        status.source = source.to_string();
        match &result {
            Ok(()) => {
                status.last_rejected = None;
                self.metrics.record_reload(true);
            }
            Err(err) => {
                status.last_rejected = Some(err.to_string());
                self.metrics.record_reload(false);
            }
        }
        result
    }

    fn try_apply(self: &Arc<Self>, config: ProxyConfig, source: &str) -> Result<(), ConfigError> {
        let snapshot = Snapshot::compile_after(config, source, Some(&self.snapshot.load()))?;
        let mut listeners = self.listeners.lock().unwrap_or_else(|p| p.into_inner());
        let bound = listeners
            .bind_new(&snapshot.listeners)
            .map_err(|message| ConfigError::new(source, message))?;
        let snapshot = Arc::new(snapshot);
        self.snapshot.store(snapshot.clone());
        listeners.reconcile(bound, &snapshot.listeners, self, &self.data_runtime);
        self.ready.store(true, Ordering::Release);
        tracing::info!(version = snapshot.version(), "config applied from {source}");
        Ok(())
    }

    /// Records a config that could not even be read or parsed.
    pub fn reject(&self, err: &ConfigError) {
        let mut status = self.status.lock().unwrap_or_else(|p| p.into_inner());
        status.source.clone_from(&err.source_name);
        status.last_rejected = Some(err.to_string());
        self.metrics.record_reload(false);
    }

    pub fn status(&self) -> ConfigStatus {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Ready once a config is serving, until draining starts.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire) && !self.drain.is_draining()
    }
}
