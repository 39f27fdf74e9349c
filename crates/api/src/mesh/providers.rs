//! MeshConfig `extensionProviders`: every kind Istio defines, parsed and
//! validated (a name, exactly one kind, `service` and `port` where the kind
//! needs them). Which kinds Weft acts on is said in [`super::Loaded`]'s
//! warnings, not here: this module is plain data.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::field::FieldErrors;

/// One `extensionProviders[]` entry: a name and one kind.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExtensionProvider {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envoy_ext_authz_http: Option<ExtAuthzHttp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envoy_ext_authz_grpc: Option<ExtAuthzGrpc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zipkin: Option<Zipkin>,
    /// Deprecated in Istio (1.15+: use `opentelemetry`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lightstep: Option<Lightstep>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datadog: Option<TracerService>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stackdriver: Option<Stackdriver>,
    /// Deprecated in Istio.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opencensus: Option<OpenCensus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skywalking: Option<SkyWalking>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opentelemetry: Option<OpenTelemetry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<Empty>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envoy_file_access_log: Option<FileAccessLog>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envoy_http_als: Option<HttpAls>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envoy_tcp_als: Option<TcpAls>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envoy_otel_als: Option<OtelAls>,
}

/// The kinds, as [`ExtensionProvider::kind`] names them (Istio's YAML keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    EnvoyExtAuthzHttp,
    EnvoyExtAuthzGrpc,
    Zipkin,
    Lightstep,
    Datadog,
    Stackdriver,
    OpenCensus,
    SkyWalking,
    OpenTelemetry,
    Prometheus,
    EnvoyFileAccessLog,
    EnvoyHttpAls,
    EnvoyTcpAls,
    EnvoyOtelAls,
}

impl Kind {
    /// The YAML key of this kind.
    pub fn key(self) -> &'static str {
        match self {
            Self::EnvoyExtAuthzHttp => "envoyExtAuthzHttp",
            Self::EnvoyExtAuthzGrpc => "envoyExtAuthzGrpc",
            Self::Zipkin => "zipkin",
            Self::Lightstep => "lightstep",
            Self::Datadog => "datadog",
            Self::Stackdriver => "stackdriver",
            Self::OpenCensus => "opencensus",
            Self::SkyWalking => "skywalking",
            Self::OpenTelemetry => "opentelemetry",
            Self::Prometheus => "prometheus",
            Self::EnvoyFileAccessLog => "envoyFileAccessLog",
            Self::EnvoyHttpAls => "envoyHttpAls",
            Self::EnvoyTcpAls => "envoyTcpAls",
            Self::EnvoyOtelAls => "envoyOtelAls",
        }
    }

    /// What a `defaultProviders` list or Telemetry may use it for.
    pub fn is_tracing(self) -> bool {
        matches!(
            self,
            Self::Zipkin
                | Self::Lightstep
                | Self::Datadog
                | Self::Stackdriver
                | Self::OpenCensus
                | Self::SkyWalking
                | Self::OpenTelemetry
        )
    }

    pub fn is_access_log(self) -> bool {
        matches!(
            self,
            Self::EnvoyFileAccessLog
                | Self::EnvoyHttpAls
                | Self::EnvoyTcpAls
                | Self::EnvoyOtelAls
                | Self::Stackdriver
        )
    }

    pub fn is_metrics(self) -> bool {
        matches!(self, Self::Prometheus | Self::Stackdriver)
    }
}

impl ExtensionProvider {
    /// The kinds set (a valid provider has exactly one) with their service
    /// and port where the kind has them.
    fn kinds(&self) -> Vec<(Kind, Option<(&str, u32)>)> {
        let mut kinds = Vec::new();
        let mut push = |kind, target| kinds.push((kind, target));
        if let Some(p) = &self.envoy_ext_authz_http {
            push(Kind::EnvoyExtAuthzHttp, Some((p.service.as_str(), p.port)));
        }
        if let Some(p) = &self.envoy_ext_authz_grpc {
            push(Kind::EnvoyExtAuthzGrpc, Some((p.service.as_str(), p.port)));
        }
        if let Some(p) = &self.zipkin {
            push(Kind::Zipkin, Some((p.service.as_str(), p.port)));
        }
        if let Some(p) = &self.lightstep {
            push(Kind::Lightstep, Some((p.service.as_str(), p.port)));
        }
        if let Some(p) = &self.datadog {
            push(Kind::Datadog, Some((p.service.as_str(), p.port)));
        }
        if self.stackdriver.is_some() {
            push(Kind::Stackdriver, None);
        }
        if let Some(p) = &self.opencensus {
            push(Kind::OpenCensus, Some((p.service.as_str(), p.port)));
        }
        if let Some(p) = &self.skywalking {
            push(Kind::SkyWalking, Some((p.service.as_str(), p.port)));
        }
        if let Some(p) = &self.opentelemetry {
            push(Kind::OpenTelemetry, Some((p.service.as_str(), p.port)));
        }
        if self.prometheus.is_some() {
            push(Kind::Prometheus, None);
        }
        if self.envoy_file_access_log.is_some() {
            push(Kind::EnvoyFileAccessLog, None);
        }
        if let Some(p) = &self.envoy_http_als {
            push(Kind::EnvoyHttpAls, Some((p.service.as_str(), p.port)));
        }
        if let Some(p) = &self.envoy_tcp_als {
            push(Kind::EnvoyTcpAls, Some((p.service.as_str(), p.port)));
        }
        if let Some(p) = &self.envoy_otel_als {
            push(Kind::EnvoyOtelAls, Some((p.service.as_str(), p.port)));
        }
        kinds
    }

    /// The one kind of a valid provider.
    pub fn kind(&self) -> Option<Kind> {
        match self.kinds().as_slice() {
            [(kind, _)] => Some(*kind),
            _ => None,
        }
    }

    pub(super) fn validate(&self, path: &str, errors: &mut FieldErrors) {
        if self.name.is_empty() {
            errors.push(format!("{path}.name"), "required");
        } else if !is_dns1123_label(&self.name) {
            errors.push(
                format!("{path}.name"),
                format!(
                    "{:?} must be a DNS-1123 label (lower-case letters, digits and '-', at most 63)",
                    self.name
                ),
            );
        }
        if let Some(format) = self
            .envoy_file_access_log
            .as_ref()
            .and_then(|f| f.log_format.as_ref())
        {
            let path = format!("{path}.envoyFileAccessLog.logFormat");
            if let Some(text) = &format.text {
                super::log_format::check_text(&format!("{path}.text"), text, errors);
            }
            if let Some(labels) = &format.labels {
                super::log_format::check_labels(&format!("{path}.labels"), labels, errors);
            }
        }
        if let Some(format) = self
            .envoy_otel_als
            .as_ref()
            .and_then(|f| f.log_format.as_ref())
        {
            let path = format!("{path}.envoyOtelAls.logFormat");
            if let Some(text) = &format.text {
                super::log_format::check_text(&format!("{path}.text"), text, errors);
            }
            if let Some(labels) = &format.labels {
                super::log_format::check_labels(&format!("{path}.labels"), labels, errors);
            }
        }
        let kinds = self.kinds();
        match kinds.as_slice() {
            [] => errors.push(
                path,
                "no provider kind (envoyExtAuthzHttp, envoyExtAuthzGrpc, zipkin, opentelemetry, \
                 prometheus, envoyFileAccessLog, envoyOtelAls, ...)",
            ),
            [_] => {}
            many => errors.push(
                path,
                format!(
                    "exactly one provider kind allowed, found {}",
                    many.iter()
                        .map(|(k, _)| k.key())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ),
        }
        for (kind, target) in &kinds {
            let Some((service, port)) = target else {
                continue;
            };
            let at = format!("{path}.{}", kind.key());
            if service.is_empty() {
                errors.push(
                    format!("{at}.service"),
                    "required ([<namespace>/]<hostname>)",
                );
            } else if service.split('/').count() > 2 || service.ends_with('/') {
                errors.push(
                    format!("{at}.service"),
                    format!("{service:?} is not [<namespace>/]<hostname>"),
                );
            }
            if *port == 0 {
                errors.push(format!("{at}.port"), "required");
            } else {
                errors.check_port(format!("{at}.port"), *port);
            }
        }
        if let Some(http) = &self.envoy_ext_authz_http {
            let at = format!("{path}.envoyExtAuthzHttp");
            check_timeout(&at, http.timeout.as_deref(), errors);
            check_status(&at, &http.status_on_error, errors);
            if !http.path_prefix.is_empty() && !http.path_prefix.starts_with('/') {
                errors.push(format!("{at}.pathPrefix"), "must start with '/'");
            }
            if let Some(body) = &http.include_request_body_in_check
                && body.pack_as_bytes
            {
                errors.push(
                    format!("{at}.includeRequestBodyInCheck.packAsBytes"),
                    "only applies to envoyExtAuthzGrpc",
                );
            }
        }
        if let Some(grpc) = &self.envoy_ext_authz_grpc {
            let at = format!("{path}.envoyExtAuthzGrpc");
            check_timeout(&at, grpc.timeout.as_deref(), errors);
            check_status(&at, &grpc.status_on_error, errors);
        }
        // Envoy refuses a body limit of 0, so Istio's config would not load.
        let bodies = [
            (
                "envoyExtAuthzHttp",
                self.envoy_ext_authz_http
                    .as_ref()
                    .and_then(|h| h.include_request_body_in_check.as_ref()),
            ),
            (
                "envoyExtAuthzGrpc",
                self.envoy_ext_authz_grpc
                    .as_ref()
                    .and_then(|g| g.include_request_body_in_check.as_ref()),
            ),
        ];
        for (kind, body) in bodies {
            if body.is_some_and(|b| b.max_request_bytes == 0) {
                errors.push(
                    format!("{path}.{kind}.includeRequestBodyInCheck.maxRequestBytes"),
                    "must be greater than 0",
                );
            }
        }
        if let Some(otel) = &self.opentelemetry
            && let Some(http) = &otel.http
        {
            let at = format!("{path}.opentelemetry.http");
            if http.path.is_empty() {
                errors.push(format!("{at}.path"), "required");
            }
            check_timeout(&at, http.timeout.as_deref(), errors);
        }
    }
}

fn check_timeout(at: &str, timeout: Option<&str>, errors: &mut FieldErrors) {
    if let Some(timeout) = timeout {
        errors.check_duration(
            format!("{at}.timeout"),
            timeout,
            Some(std::time::Duration::from_millis(1)),
        );
    }
}

fn check_status(at: &str, status: &str, errors: &mut FieldErrors) {
    if status.is_empty() {
        return;
    }
    if !status
        .parse::<u16>()
        .is_ok_and(|code| (100..=599).contains(&code))
    {
        errors.push(
            format!("{at}.statusOnError"),
            format!("{status:?} is not an HTTP status code (100..599)"),
        );
    }
}

/// Kubernetes' DNS-1123 label: what Istio requires of provider names.
fn is_dns1123_label(name: &str) -> bool {
    name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequestBody {
    #[serde(default)]
    pub max_request_bytes: u32,
    #[serde(default)]
    pub allow_partial_message: bool,
    #[serde(default)]
    pub pack_as_bytes: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExtAuthzHttp {
    #[serde(default)]
    pub service: String,
    #[serde(default)]
    pub port: u32,
    /// Default 600s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub path_prefix: String,
    #[serde(default)]
    pub fail_open: bool,
    /// Default "403".
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub status_on_error: String,
    /// Deprecated: `includeRequestHeadersInCheck`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include_headers_in_check: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include_request_headers_in_check: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub include_additional_headers_in_check: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_request_body_in_check: Option<RequestBody>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers_to_upstream_on_allow: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers_to_downstream_on_deny: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers_to_downstream_on_allow: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExtAuthzGrpc {
    #[serde(default)]
    pub service: String,
    #[serde(default)]
    pub port: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    #[serde(default)]
    pub fail_open: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub status_on_error: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_request_body_in_check: Option<RequestBody>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Zipkin {
    #[serde(default)]
    pub service: String,
    #[serde(default)]
    pub port: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tag_length: Option<u32>,
    #[serde(default, rename = "enable64bitTraceId")]
    pub enable_64bit_trace_id: bool,
    /// Newer Istio: `/api/v2/spans` by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Newer Istio: `USE_B3` or `USE_B3_WITH_W3C_PROPAGATION`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_context_option: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Lightstep {
    #[serde(default)]
    pub service: String,
    #[serde(default)]
    pub port: u32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub access_token: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tag_length: Option<u32>,
}

/// Datadog: a service, a port and a tag length.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TracerService {
    #[serde(default)]
    pub service: String,
    #[serde(default)]
    pub port: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tag_length: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Stackdriver {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub debug: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_number_of_attributes: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_number_of_annotations: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_number_of_message_events: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tag_length: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logging: Option<Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OpenCensus {
    #[serde(default)]
    pub service: String,
    #[serde(default)]
    pub port: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub context: Vec<TraceContext>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tag_length: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TraceContext {
    Unspecified,
    W3cTraceContext,
    GrpcBin,
    CloudTraceContext,
    B3,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SkyWalking {
    #[serde(default)]
    pub service: String,
    #[serde(default)]
    pub port: u32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub access_token: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OpenTelemetry {
    #[serde(default)]
    pub service: String,
    #[serde(default)]
    pub port: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tag_length: Option<u32>,
    /// Export over OTLP/HTTP instead of gRPC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpService>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_detectors: Option<Value>,
    /// Newer Istio: a dynatrace/other sampler.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dynatrace_sampler: Option<Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpService {
    #[serde(default)]
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HttpHeader>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpHeader {
    pub name: String,
    pub value: String,
}

/// `prometheus: {}`: no settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileAccessLog {
    /// Default `/dev/stdout`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_format: Option<LogFormat>,
}

/// `text` or `labels` (JSON), one of them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LogFormat {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpAls {
    #[serde(default)]
    pub service: String,
    #[serde(default)]
    pub port: u32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub log_name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filter_state_objects_to_log: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub additional_request_headers_to_log: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub additional_response_headers_to_log: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub additional_response_trailers_to_log: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpAls {
    #[serde(default)]
    pub service: String,
    #[serde(default)]
    pub port: u32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub log_name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filter_state_objects_to_log: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OtelAls {
    #[serde(default)]
    pub service: String,
    #[serde(default)]
    pub port: u32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub log_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_format: Option<LogFormat>,
}
