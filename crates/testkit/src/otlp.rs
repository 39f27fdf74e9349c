//! An OTLP/gRPC collector for tests: real `TraceService` and `LogsService`
//! servers on one port (tonic, with the OpenTelemetry protocol's own
//! types) that decode every export they receive and keep the spans and log
//! records, so a test can check what a proxy really sent.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::LogsServiceServer;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value;
use opentelemetry_proto::tonic::trace::v1::Span;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};

use crate::otlp_logs::{self, ReceivedLog};

/// One span as received, with the `service.name` of its resource.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    pub service: String,
    pub span: Span,
}

impl ReceivedSpan {
    pub fn trace_id(&self) -> String {
        hex(&self.span.trace_id)
    }

    pub fn span_id(&self) -> String {
        hex(&self.span.span_id)
    }

    pub fn parent_span_id(&self) -> String {
        hex(&self.span.parent_span_id)
    }

    /// A string attribute's value.
    pub fn attribute(&self, key: &str) -> Option<String> {
        let value = self
            .span
            .attributes
            .iter()
            .find(|kv| kv.key == key)?
            .value
            .as_ref()?
            .value
            .as_ref()?;
        Some(match value {
            any_value::Value::StringValue(s) => s.clone(),
            any_value::Value::IntValue(i) => i.to_string(),
            other => format!("{other:?}"),
        })
    }
}

#[derive(Default)]
struct Receiver {
    spans: Mutex<Vec<ReceivedSpan>>,
    logs: Arc<Mutex<Vec<ReceivedLog>>>,
}

/// The gRPC service, sharing the received spans with the [`Collector`].
struct Service(Arc<Receiver>);

#[tonic::async_trait]
impl TraceService for Service {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let mut kept = self.0.spans.lock().unwrap_or_else(|p| p.into_inner());
        for resource_spans in request.into_inner().resource_spans {
            let service = resource_spans
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                    any_value::Value::StringValue(s) => Some(s.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            for scope in resource_spans.scope_spans {
                for span in scope.spans {
                    if span.trace_id.len() != 16 || span.span_id.len() != 8 {
                        return Err(Status::invalid_argument(
                            "trace ids are 16 bytes, span ids 8",
                        ));
                    }
                    kept.push(ReceivedSpan {
                        service: service.clone(),
                        span,
                    });
                }
            }
        }
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

/// A running collector. Stops when dropped.
pub struct Collector {
    pub addr: SocketAddr,
    receiver: Arc<Receiver>,
    task: tokio::task::JoinHandle<()>,
}

impl Collector {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind(crate::free_addr())
            .await
            .unwrap_or_else(|err| panic!("OTLP collector cannot bind: {err}"));
        let addr = listener.local_addr().unwrap_or_else(|err| panic!("{err}"));
        let receiver = Arc::new(Receiver::default());
        let traces = TraceServiceServer::new(Service(receiver.clone()));
        let logs = LogsServiceServer::new(otlp_logs::Service(receiver.logs.clone()));
        let task = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(traces)
                .add_service(logs)
                .serve_with_incoming(TcpListenerStream::new(listener))
                .await;
        });
        Self {
            addr,
            receiver,
            task,
        }
    }

    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.receiver
            .spans
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The log records received so far, in order.
    pub fn logs(&self) -> Vec<ReceivedLog> {
        self.receiver
            .logs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Waits until at least `count` spans arrived (or `timeout` passed) and
    /// returns all received.
    pub async fn wait_for(&self, count: usize, timeout: Duration) -> Vec<ReceivedSpan> {
        let deadline = Instant::now() + timeout;
        loop {
            let spans = self.spans();
            if spans.len() >= count || Instant::now() > deadline {
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
