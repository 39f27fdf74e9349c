//! The proxy's shared state, as data: the current config snapshot, the
//! upstream pool, the mesh TLS material, metrics, drain, and the outcome of
//! the last config change. It owns no tasks and no listeners: the listeners
//! (`listener/`) are given it, and applying a config (compile, bind, swap)
//! is `proxy.rs`'s job.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::{ArcSwap, Guard};
use weft_proto::proxy::v1::ProxyConfig;

use crate::balance::Clusters;
use crate::config::{ConfigError, Snapshot};
use crate::listener::drain::Drain;
use crate::ratelimit::Buckets;
use crate::telemetry::Recorder;
use crate::telemetry::metrics::Metrics;
use crate::tls::MeshTls;
use crate::upstream::{Dns, Pool};

/// What `/config_dump` reports besides the config itself.
#[derive(Debug, Clone, Default)]
pub struct ConfigStatus {
    pub source: String,
    /// The last config that was refused, and why; cleared by a good one.
    pub last_rejected: Option<String>,
}

pub struct ProxyState {
    snapshot: ArcSwap<Snapshot>,
    /// The runtime of the snapshot's clusters (counters, ejections,
    /// balancers), built beside it.
    clusters: ArcSwap<Clusters>,
    pub pool: Arc<Pool>,
    /// The resolver and answers of DNS endpoints.
    pub dns: Arc<Dns>,
    /// This proxy's workload certificate and TLS configs.
    pub tls: Arc<MeshTls>,
    pub metrics: Metrics,
    pub drain: Drain,
    /// Local rate limits' token buckets, kept across config changes.
    pub rate_limit_buckets: Buckets,
    ready: AtomicBool,
    status: Mutex<ConfigStatus>,
}

impl ProxyState {
    /// A proxy with no config yet (not ready), securing connections with
    /// `tls`.
    pub fn new(tls: Arc<MeshTls>, dns: Arc<Dns>) -> Arc<Self> {
        let empty = Snapshot::compile(ProxyConfig::default(), "(none)")
            .unwrap_or_else(|err| unreachable!("the empty config is valid: {err}"));
        Arc::new(Self {
            snapshot: ArcSwap::from_pointee(empty),
            clusters: ArcSwap::from_pointee(Clusters::default()),
            pool: Arc::new(Pool::new(tls.clone())),
            dns,
            tls,
            metrics: Metrics::default(),
            drain: Drain::default(),
            rate_limit_buckets: Buckets::default(),
            ready: AtomicBool::new(false),
            status: Mutex::default(),
        })
    }

    /// The current snapshot, for synchronous use within one request.
    pub fn snapshot(&self) -> Guard<Arc<Snapshot>> {
        self.snapshot.load()
    }

    /// The runtime of the current snapshot's clusters.
    pub fn clusters(&self) -> Guard<Arc<Clusters>> {
        self.clusters.load()
    }

    /// The current snapshot, to hold across awaits.
    pub fn snapshot_full(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Swaps in a snapshot whose listeners are bound, with its clusters'
    /// runtime: new connections and requests read it from now on, in-flight
    /// ones keep theirs.
    pub fn install(&self, snapshot: Arc<Snapshot>, clusters: Clusters) {
        // Runtime first: a request that finds the new snapshot finds its
        // clusters' runtime too.
        self.clusters.store(Arc::new(clusters));
        let relabelled = !crate::config::telemetry::Custom::same_metrics(
            self.snapshot.load().config.telemetry.as_ref(),
            snapshot.config.telemetry.as_ref(),
        );
        self.snapshot.store(snapshot);
        // Telemetry overrides changed the families' label sets: start them
        // afresh rather than mix old and new label sets in one family.
        if relabelled {
            self.metrics.reset_standard();
        }
        self.ready.store(true, Ordering::Release);
    }

    /// Records how applying a config from `source` ended, for
    /// `/config_dump` and `weft_config_reloads_total`.
    pub fn record_outcome(&self, source: &str, result: &Result<(), ConfigError>) {
        let mut status = self.status.lock().unwrap_or_else(|p| p.into_inner());
        status.source = source.to_string();
        match result {
            Ok(()) => {
                status.last_rejected = None;
                self.metrics.record_reload(true);
            }
            Err(err) => {
                status.last_rejected = Some(err.to_string());
                self.metrics.record_reload(false);
            }
        }
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

    /// Ready once a config is serving and, for a workload with a mesh
    /// identity, its certificate is held (Envoy is not ready before its
    /// secrets warm either), until draining starts.
    pub fn is_ready(&self) -> bool {
        let certificate_held = self.tls.identity.is_none() || self.tls.ready_identity().is_some();
        self.ready.load(Ordering::Acquire) && certificate_held && !self.drain.is_draining()
    }
}

impl Recorder for ProxyState {
    fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    fn snapshot(&self) -> Guard<Arc<Snapshot>> {
        ProxyState::snapshot(self)
    }
}
