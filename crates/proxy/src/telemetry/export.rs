//! Span export through the OpenTelemetry SDK, off the data path.
//!
//! Requests hand finished spans (`SpanData`, built in `span.rs`) to the
//! SDK's `BatchSpanProcessor`, which never waits: a full queue drops the
//! span. Its thread batches them (up to [`BATCH`] spans or every
//! [`FLUSH_INTERVAL`]) and calls the exporter: `opentelemetry-otlp`
//! (OTLP/gRPC over tonic, or OTLP/HTTP protobuf) or `opentelemetry-zipkin`
//! (Zipkin v2 JSON). Both clients need a Tokio runtime; each exporter gets a
//! one-thread runtime of its own so that export work never runs on the
//! proxy's request workers.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_http::hyper::HyperClient;
use opentelemetry_otlp::SpanExporter;
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, SpanData, SpanProcessor};

use super::Local;

/// Spans waiting for export at most.
const QUEUE: usize = 8192;
/// Spans per export call at most.
const BATCH: usize = 512;
/// How long a partial batch waits for more spans.
const FLUSH_INTERVAL: Duration = Duration::from_millis(200);
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where and how spans go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// OTLP/gRPC, `http://host:port`.
    OtlpGrpc(String),
    /// OTLP/HTTP protobuf, the full URL (`http://host:port/v1/traces`).
    OtlpHttp(String),
    /// Zipkin v2 JSON, the full URL (`http://host:port/api/v2/spans`).
    Zipkin(String),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::OtlpGrpc(url) => write!(f, "OTLP/gRPC {url}"),
            Self::OtlpHttp(url) => write!(f, "OTLP/HTTP {url}"),
            Self::Zipkin(url) => write!(f, "Zipkin {url}"),
        }
    }
}

/// One running exporter; dropping it flushes and stops it (on a thread of
/// its own: the flush may wait for the collector).
pub struct Exporter {
    pub target: Target,
    scope: InstrumentationScope,
    processor: Option<BatchSpanProcessor>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Exporter {
    /// Starts exporting to `target` as the proxy `local`.
    // `opentelemetry-zipkin` is deprecated upstream in favour of sending
    // OTLP to Zipkin, but Istio's `zipkin` provider means Zipkin v2 JSON,
    // and it is the OpenTelemetry project's own exporter for it (released
    // in step with the other 0.33 crates).
    #[allow(deprecated)]
    pub fn start(target: Target, local: &Local) -> Result<Self, String> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("weft-trace")
            .enable_all()
            .build()
            .map_err(|err| format!("cannot start the span exporter's runtime: {err}"))?;
        let resource = resource(local);
        let handle = runtime.handle().clone();
        // The clients spawn their connection tasks on the current runtime.
        let _entered = runtime.enter();
        let failed = |err: opentelemetry_otlp::ExporterBuildError| format!("{target}: {err}");
        let processor = match &target {
            Target::OtlpGrpc(url) => {
                let builder = SpanExporter::builder().with_tonic();
                let exporter = otlp(builder, url).build().map_err(failed)?;
                batch(exporter, &resource, handle, &target)
            }
            Target::OtlpHttp(url) => {
                let builder = SpanExporter::builder()
                    .with_http()
                    .with_http_client(HyperClient::with_default_connector(EXPORT_TIMEOUT, None));
                let exporter = otlp(builder, url).build().map_err(failed)?;
                batch(exporter, &resource, handle, &target)
            }
            Target::Zipkin(url) => batch(
                opentelemetry_zipkin::ZipkinExporter::builder()
                    .with_http_client(HyperClient::with_default_connector(EXPORT_TIMEOUT, None))
                    .with_collector_endpoint(url.clone())
                    .build()
                    .map_err(|err| format!("{target}: {err}"))?,
                &resource,
                handle,
                &target,
            ),
        };
        drop(_entered);
        Ok(Self {
            target,
            scope: InstrumentationScope::builder("weft-proxy")
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
            processor: Some(processor),
            runtime: Some(runtime),
        })
    }

    /// The scope spans are reported under.
    pub fn scope(&self) -> &InstrumentationScope {
        &self.scope
    }

    /// Queues one finished span; never waits.
    pub fn export(&self, span: SpanData) {
        if let Some(processor) = &self.processor {
            processor.on_end(span);
        }
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        let (Some(processor), Some(runtime)) = (self.processor.take(), self.runtime.take()) else {
            return;
        };
        let target = self.target.to_string();
        // A runtime may not be dropped on a runtime thread, and the flush
        // may take up to the export timeout.
        let spawned = std::thread::Builder::new()
            .name("weft-trace-stop".into())
            .spawn(move || {
                if let Err(err) = processor.shutdown_with_timeout(EXPORT_TIMEOUT) {
                    tracing::debug!("span exporter {target} stopped: {err}");
                }
                runtime.shutdown_background();
            });
        if let Err(err) = spawned {
            tracing::warn!("cannot stop the span exporter: {err}");
        }
    }
}

/// The settings both OTLP transports share: where, and how long to wait.
fn otlp<B: WithExportConfig>(builder: B, url: &str) -> B {
    builder
        .with_endpoint(url.to_string())
        .with_timeout(EXPORT_TIMEOUT)
}

fn batch<E: opentelemetry_sdk::trace::SpanExporter + 'static>(
    mut exporter: E,
    resource: &Resource,
    runtime: tokio::runtime::Handle,
    target: &Target,
) -> BatchSpanProcessor {
    exporter.set_resource(resource);
    let config = BatchConfigBuilder::default()
        .with_max_queue_size(QUEUE)
        .with_max_export_batch_size(BATCH)
        .with_scheduled_delay(FLUSH_INTERVAL)
        .build();
    BatchSpanProcessor::builder(OnRuntime {
        inner: Arc::new(exporter),
        runtime,
        target: target.to_string(),
    })
    .with_batch_config(config)
    .build()
}

/// Runs an exporter's calls on its runtime: the batch processor's thread
/// has none, and the tonic and hyper clients need one.
struct OnRuntime<E> {
    inner: Arc<E>,
    runtime: tokio::runtime::Handle,
    target: String,
}

impl<E> fmt::Debug for OnRuntime<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "span exporter to {}", self.target)
    }
}

impl<E: opentelemetry_sdk::trace::SpanExporter + 'static> opentelemetry_sdk::trace::SpanExporter
    for OnRuntime<E>
{
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let inner = self.inner.clone();
        let count = batch.len();
        let result = self
            .runtime
            .spawn(async move { inner.export(batch).await })
            .await
            .unwrap_or_else(|err| Err(OTelSdkError::InternalFailure(err.to_string())));
        if let Err(err) = &result {
            tracing::warn!(
                "span export of {count} spans to {} failed: {err}; is the collector running?",
                self.target
            );
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        let _entered = self.runtime.enter();
        self.inner.shutdown_with_timeout(timeout)
    }
}

/// Istio names a proxy's service `<canonical service>.<namespace>`.
fn resource(local: &Local) -> Resource {
    Resource::builder_empty()
        .with_attributes(resource_attributes(local))
        .build()
}

/// `service.name` and `node_id`, for spans and access-log records alike.
pub(super) fn resource_attributes(local: &Local) -> Vec<KeyValue> {
    let workload = &local.workload;
    let service = match (&workload.canonical_service, &workload.namespace) {
        (Some(service), Some(namespace)) => format!("{service}.{namespace}"),
        (Some(service), None) => service.clone(),
        _ => "weft-proxy".to_string(),
    };
    vec![
        KeyValue::new("service.name", service),
        KeyValue::new("node_id", local.node_id.clone()),
    ]
}
