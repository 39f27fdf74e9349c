//! An OTLP/gRPC log collector for tests: a real `LogsService` server
//! (tonic, with the OpenTelemetry protocol's own types) that keeps every
//! record it receives with its resource attributes, so a test can check
//! what a proxy's OpenTelemetry access log really sent.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};

/// One record as received, with its resource's attributes.
#[derive(Debug, Clone)]
pub struct ReceivedLog {
    pub resource: Vec<KeyValue>,
    pub record: LogRecord,
}

impl ReceivedLog {
    /// The body, when it is a string.
    pub fn body(&self) -> Option<String> {
        match self.record.body.as_ref()?.value.as_ref()? {
            any_value::Value::StringValue(s) => Some(s.clone()),
            _ => None,
        }
    }

    /// An attribute of the record, as text (`i:` before integers).
    pub fn attribute(&self, key: &str) -> Option<String> {
        shown(&self.record.attributes, key)
    }

    /// An attribute of the resource, as text.
    pub fn resource_attribute(&self, key: &str) -> Option<String> {
        shown(&self.resource, key)
    }
}

fn shown(attributes: &[KeyValue], key: &str) -> Option<String> {
    let value: &AnyValue = attributes.iter().find(|kv| kv.key == key)?.value.as_ref()?;
    Some(match value.value.as_ref()? {
        any_value::Value::StringValue(s) => s.clone(),
        any_value::Value::IntValue(i) => format!("i:{i}"),
        other => format!("{other:?}"),
    })
}

#[derive(Default)]
struct Receiver {
    logs: Mutex<Vec<ReceivedLog>>,
}

struct Service(Arc<Receiver>);

#[tonic::async_trait]
impl LogsService for Service {
    async fn export(
        &self,
        request: Request<ExportLogsServiceRequest>,
    ) -> Result<Response<ExportLogsServiceResponse>, Status> {
        let mut kept = self.0.logs.lock().unwrap_or_else(|p| p.into_inner());
        for resource_logs in request.into_inner().resource_logs {
            let resource = resource_logs
                .resource
                .map(|r| r.attributes)
                .unwrap_or_default();
            for scope in resource_logs.scope_logs {
                for record in scope.log_records {
                    kept.push(ReceivedLog {
                        resource: resource.clone(),
                        record,
                    });
                }
            }
        }
        Ok(Response::new(ExportLogsServiceResponse::default()))
    }
}

/// A running collector. Stops when dropped.
pub struct LogCollector {
    pub addr: SocketAddr,
    receiver: Arc<Receiver>,
    task: tokio::task::JoinHandle<()>,
}

impl LogCollector {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind(crate::free_addr())
            .await
            .unwrap_or_else(|err| panic!("OTLP log collector cannot bind: {err}"));
        let addr = listener.local_addr().unwrap_or_else(|err| panic!("{err}"));
        let receiver = Arc::new(Receiver::default());
        let service = LogsServiceServer::new(Service(receiver.clone()));
        let task = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(TcpListenerStream::new(listener))
                .await;
        });
        Self {
            addr,
            receiver,
            task,
        }
    }

    pub fn logs(&self) -> Vec<ReceivedLog> {
        self.receiver
            .logs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Waits until at least `count` records arrived (or `timeout` passed)
    /// and returns all received.
    pub async fn wait_for(&self, count: usize, timeout: Duration) -> Vec<ReceivedLog> {
        let deadline = Instant::now() + timeout;
        loop {
            let logs = self.logs();
            if logs.len() >= count || Instant::now() > deadline {
                return logs;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for LogCollector {
    fn drop(&mut self) {
        self.task.abort();
    }
}
