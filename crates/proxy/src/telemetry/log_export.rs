//! Access-log records as OpenTelemetry logs (Istio's `envoyOtelAls`
//! provider), off the data path.
//!
//! A finished request hands its record (body, attributes, start time) to
//! the SDK's `BatchLogProcessor`, which never waits: a full queue drops the
//! record. Its thread batches records (up to [`BATCH`] or every
//! [`FLUSH_INTERVAL`]) and calls `opentelemetry-otlp`'s log exporter
//! (OTLP/gRPC over tonic). The tonic client needs a Tokio runtime; each
//! exporter has a one-thread runtime of its own, as the span exporter does,
//! so that export work never runs on the proxy's request workers.
//!
//! Like Envoy's OpenTelemetry access logger, the resource carries the
//! built-in labels `log_name` and `node_name` beside `service.name`; the
//! record's timestamp is the request's start.

use std::fmt;
use std::time::{Duration, SystemTime};

use opentelemetry::logs::{AnyValue, LogRecord as _, Logger as _, LoggerProvider as _};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::logs::{
    BatchConfigBuilder, BatchLogProcessor, LogBatch, LogExporter, SdkLogger, SdkLoggerProvider,
};

use super::Local;

/// Records waiting for export at most.
const QUEUE: usize = 8192;
/// Records per export call at most.
const BATCH: usize = 512;
/// How long a partial batch waits for more records.
const FLUSH_INTERVAL: Duration = Duration::from_millis(200);
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// One running log exporter; dropping it flushes and stops it (on a thread
/// of its own: the flush may wait for the collector).
pub struct OtelLogs {
    /// `http://host:port`, for logs.
    pub url: String,
    pub log_name: String,
    logger: SdkLogger,
    provider: Option<SdkLoggerProvider>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl OtelLogs {
    /// Starts exporting to the OTLP/gRPC collector at `url` as the proxy
    /// `local`, under `log_name`.
    pub fn start(url: String, log_name: &str, local: &Local) -> Result<Self, String> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("weft-otel-logs")
            .enable_all()
            .build()
            .map_err(|err| format!("cannot start the log exporter's runtime: {err}"))?;
        let exporter = {
            // The client spawns its connection tasks on the current runtime.
            let _entered = runtime.enter();
            opentelemetry_otlp::LogExporter::builder()
                .with_tonic()
                .with_endpoint(url.clone())
                .with_timeout(EXPORT_TIMEOUT)
                .build()
                .map_err(|err| format!("OTLP logs {url}: {err}"))?
        };
        let config = BatchConfigBuilder::default()
            .with_max_queue_size(QUEUE)
            .with_max_export_batch_size(BATCH)
            .with_scheduled_delay(FLUSH_INTERVAL)
            .build();
        let processor = BatchLogProcessor::builder(OnRuntime {
            inner: exporter,
            runtime: runtime.handle().clone(),
            url: url.clone(),
        })
        .with_batch_config(config)
        .build();
        let resource = Resource::builder_empty()
            .with_attributes(
                super::export::resource_attributes(local)
                    .into_iter()
                    .chain([
                        KeyValue::new("log_name", log_name.to_string()),
                        KeyValue::new("node_name", local.node_id.clone()),
                    ]),
            )
            .build();
        let provider = SdkLoggerProvider::builder()
            .with_resource(resource)
            .with_log_processor(processor)
            .build();
        let logger = provider.logger_with_scope(
            InstrumentationScope::builder("weft-proxy")
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
        );
        Ok(Self {
            url,
            log_name: log_name.to_string(),
            logger,
            provider: Some(provider),
            runtime: Some(runtime),
        })
    }

    /// Queues one record; never waits.
    pub fn emit(
        &self,
        start: Option<SystemTime>,
        body: String,
        attributes: Vec<(String, AnyValue)>,
    ) {
        let mut record = self.logger.create_log_record();
        if let Some(start) = start {
            record.set_timestamp(start);
        }
        record.set_observed_timestamp(SystemTime::now());
        record.set_body(AnyValue::from(body));
        record.add_attributes(attributes);
        self.logger.emit(record);
    }
}

impl Drop for OtelLogs {
    fn drop(&mut self) {
        let (Some(provider), Some(runtime)) = (self.provider.take(), self.runtime.take()) else {
            return;
        };
        let url = self.url.clone();
        // A runtime may not be dropped on a runtime thread, and the flush
        // may take up to the export timeout.
        let spawned = std::thread::Builder::new()
            .name("weft-otel-logs-stop".into())
            .spawn(move || {
                if let Err(err) = provider.shutdown_with_timeout(EXPORT_TIMEOUT) {
                    tracing::debug!("log exporter {url} stopped: {err}");
                }
                runtime.shutdown_background();
            });
        if let Err(err) = spawned {
            tracing::warn!("cannot stop the log exporter: {err}");
        }
    }
}

/// Runs the exporter's calls on its runtime: the batch processor's thread
/// has none, and the tonic client needs one. The batch borrows the
/// processor's buffer, so the call blocks that thread (only that thread)
/// on the runtime rather than moving the batch to a task.
struct OnRuntime {
    inner: opentelemetry_otlp::LogExporter,
    runtime: tokio::runtime::Handle,
    url: String,
}

impl fmt::Debug for OnRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "log exporter to {}", self.url)
    }
}

impl LogExporter for OnRuntime {
    async fn export(&self, batch: LogBatch<'_>) -> OTelSdkResult {
        let count = batch.iter().count();
        let result = self.runtime.block_on(self.inner.export(batch));
        if let Err(err) = &result {
            tracing::warn!(
                "log export of {count} records to {} failed: {err}; is the collector running?",
                self.url
            );
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        let _entered = self.runtime.enter();
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}
