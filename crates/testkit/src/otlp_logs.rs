//! The logs half of the test OTLP collector ([`crate::otlp::Collector`]
//! serves it beside traces, as a real collector does): a `LogsService`
//! that keeps every record it receives with its resource attributes, so a
//! test can check what a proxy's OpenTelemetry access log really sent.

use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::LogsService;
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
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

/// The gRPC service, sharing the received records with the collector.
pub(crate) struct Service(pub(crate) Arc<Mutex<Vec<ReceivedLog>>>);

#[tonic::async_trait]
impl LogsService for Service {
    async fn export(
        &self,
        request: Request<ExportLogsServiceRequest>,
    ) -> Result<Response<ExportLogsServiceResponse>, Status> {
        let mut kept = self.0.lock().unwrap_or_else(|p| p.into_inner());
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
