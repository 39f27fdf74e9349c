//! Span export over OTLP/gRPC, off the data path.
//!
//! Requests hand finished spans to a bounded queue (never waiting: a full
//! queue drops the span and counts it); a thread of its own batches them
//! (up to [`BATCH`] spans, or whatever arrived within [`FLUSH_INTERVAL`])
//! and sends `TraceService/Export` calls to the collector over one lazily
//! (re)connected channel. A failed export is logged and its batch dropped,
//! as the OpenTelemetry SDK's batch processor does.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use tokio::sync::mpsc;

use super::Local;

/// Spans waiting for export at most.
const QUEUE: usize = 8192;
/// Spans per export call at most.
const BATCH: usize = 512;
/// How long a partial batch waits for more spans.
const FLUSH_INTERVAL: Duration = Duration::from_millis(200);
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

pub struct Exporter {
    queue: mpsc::Sender<Span>,
    dropped: AtomicU64,
}

impl Exporter {
    /// Starts the export thread for the collector at `address` (host:port,
    /// or a full `http://` URL).
    pub fn start(address: String, local: &Local) -> Self {
        let (queue, spans) = mpsc::channel(QUEUE);
        let resource = resource(local);
        let spawned = std::thread::Builder::new()
            .name("weft-otlp".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(err) => {
                        tracing::error!("OTLP exporter cannot start: {err}");
                        return;
                    }
                };
                runtime.block_on(export_loop(address, resource, spans));
            });
        if let Err(err) = spawned {
            tracing::error!("OTLP exporter cannot start: {err}");
        }
        Self {
            queue,
            dropped: AtomicU64::new(0),
        }
    }

    /// Queues one finished span; never waits.
    pub fn export(&self, span: Span) {
        if self.queue.try_send(span).is_err() {
            let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if dropped.is_power_of_two() {
                tracing::warn!(dropped, "OTLP exporter is behind; spans dropped");
            }
        }
    }
}

async fn export_loop(address: String, resource: Resource, mut spans: mpsc::Receiver<Span>) {
    let url = if address.contains("://") {
        address.clone()
    } else {
        format!("http://{address}")
    };
    let channel = match tonic::transport::Endpoint::from_shared(url) {
        Ok(endpoint) => endpoint.timeout(EXPORT_TIMEOUT).connect_lazy(),
        Err(err) => {
            tracing::error!("--otlp {address:?} is not a valid address: {err}");
            return;
        }
    };
    let mut client = TraceServiceClient::new(channel);
    while let Some(first) = spans.recv().await {
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + FLUSH_INTERVAL;
        while batch.len() < BATCH {
            match tokio::time::timeout_at(deadline, spans.recv()).await {
                Ok(Some(span)) => batch.push(span),
                Ok(None) | Err(_) => break,
            }
        }
        let count = batch.len();
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(resource.clone()),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "weft-proxy".into(),
                        version: env!("CARGO_PKG_VERSION").into(),
                        ..InstrumentationScope::default()
                    }),
                    spans: batch,
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        };
        if let Err(status) = client.export(request).await {
            tracing::warn!(
                "OTLP export of {count} spans to {address} failed ({}): {}; is the collector running?",
                status.code(),
                status.message()
            );
        }
    }
}

/// Istio names a proxy's service `<canonical service>.<namespace>`.
fn resource(local: &Local) -> Resource {
    let workload = &local.workload;
    let service = match (&workload.canonical_service, &workload.namespace) {
        (Some(service), Some(namespace)) => format!("{service}.{namespace}"),
        (Some(service), None) => service.clone(),
        _ => "weft-proxy".to_string(),
    };
    Resource {
        attributes: vec![
            attribute("service.name", service),
            attribute("node_id", local.node_id.clone()),
        ],
        ..Resource::default()
    }
}

pub fn attribute(key: &str, value: impl Into<String>) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..KeyValue::default()
    }
}

pub fn int_attribute(key: &str, value: i64) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::IntValue(value)),
        }),
        ..KeyValue::default()
    }
}
