//! Istio's standard metric labels, in Istio's order, `unknown` where a
//! value is not known.
//!
//! The label set holds shared workload metadata (`Arc`s) rather than two
//! dozen strings, so building one per request costs a few reference counts;
//! the strings are written only when Prometheus scrapes.

use std::fmt::Write as _;
use std::sync::Arc;

use prometheus_client::encoding::{EncodeLabelSet, LabelSetEncoder};

use crate::flags::ResponseFlags;
use crate::telemetry::metrics::Reporter;
use crate::workload::Workload;

const UNKNOWN: &str = "unknown";

/// What a request or TCP connection is, for `request_protocol` and the
/// labels only HTTP has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Call {
    Http {
        grpc: bool,
        /// 0 when no response was sent (the client left first).
        response_code: u16,
        /// From `grpc-status` (headers or trailers); `None`: not gRPC or absent.
        grpc_status: Option<u16>,
    },
    Tcp,
}

/// Both ends of a call and how it went.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Labels {
    pub reporter: Reporter,
    pub source: Arc<Workload>,
    /// The SPIFFE identity proven by mTLS; `None` until the connection is
    /// mutual TLS (the security work fills it, see `Downstream::principal`).
    pub source_principal: Option<Arc<str>>,
    pub destination: Arc<Workload>,
    pub destination_principal: Option<Arc<str>>,
    /// The destination service's host (FQDN); empty when not known.
    pub destination_service: Arc<str>,
    pub call: Call,
    pub response_flags: ResponseFlags,
    pub mutual_tls: bool,
    /// The whole label set when a Telemetry `tagOverrides` changed it for
    /// one metric family (see `custom.rs`); `None` on the standard path.
    pub custom: Option<Arc<[(String, String)]>>,
}

impl Labels {
    /// `destination_service_name` and `_namespace`: from a Kubernetes-style
    /// FQDN (`name.namespace.svc.…`); other hosts name themselves, with no
    /// namespace known.
    fn service_parts(&self) -> (&str, &str) {
        let host = &*self.destination_service;
        if host.is_empty() {
            return (UNKNOWN, UNKNOWN);
        }
        let mut parts = host.splitn(4, '.');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(name), Some(namespace), Some("svc")) => (name, namespace),
            _ => (host, UNKNOWN),
        }
    }
}

fn or_unknown(value: &Option<String>) -> &str {
    value
        .as_deref()
        .filter(|v| !v.is_empty())
        .unwrap_or(UNKNOWN)
}

fn principal(value: &Option<Arc<str>>) -> &str {
    value.as_deref().unwrap_or(UNKNOWN)
}

fn put(encoder: &mut LabelSetEncoder, key: &str, value: &str) -> std::fmt::Result {
    (key, value).encode(encoder.encode_label())
}

use prometheus_client::encoding::EncodeLabel as _;

impl Labels {
    /// Each standard label in Istio's order (what [`EncodeLabelSet`]
    /// writes, and what Telemetry overrides start from).
    pub fn visit(&self, put: &mut dyn FnMut(&str, &str) -> std::fmt::Result) -> std::fmt::Result {
        let (src, dst) = (&*self.source, &*self.destination);
        let (service_name, service_namespace) = self.service_parts();
        put("reporter", self.reporter.as_str())?;
        put("source_workload", or_unknown(&src.name))?;
        put(
            "source_canonical_service",
            or_unknown(&src.canonical_service),
        )?;
        put(
            "source_canonical_revision",
            or_unknown(&src.canonical_revision),
        )?;
        put("source_workload_namespace", or_unknown(&src.namespace))?;
        put("source_principal", principal(&self.source_principal))?;
        put("source_app", or_unknown(&src.app))?;
        put("source_version", or_unknown(&src.version))?;
        put("source_cluster", or_unknown(&src.cluster))?;
        put("destination_workload", or_unknown(&dst.name))?;
        put("destination_workload_namespace", or_unknown(&dst.namespace))?;
        put(
            "destination_principal",
            principal(&self.destination_principal),
        )?;
        put("destination_app", or_unknown(&dst.app))?;
        put("destination_version", or_unknown(&dst.version))?;
        let service = match &*self.destination_service {
            "" => UNKNOWN,
            host => host,
        };
        put("destination_service", service)?;
        put(
            "destination_canonical_service",
            or_unknown(&dst.canonical_service),
        )?;
        put(
            "destination_canonical_revision",
            or_unknown(&dst.canonical_revision),
        )?;
        put("destination_service_name", service_name)?;
        put("destination_service_namespace", service_namespace)?;
        put("destination_cluster", or_unknown(&dst.cluster))?;
        let mut number = String::new();
        match self.call {
            Call::Http {
                grpc,
                response_code,
                grpc_status,
            } => {
                put("request_protocol", if grpc { "grpc" } else { "http" })?;
                let _ = write!(number, "{response_code}");
                put("response_code", &number)?;
                number.clear();
                let grpc_status = match grpc_status {
                    Some(code) => {
                        let _ = write!(number, "{code}");
                        number.as_str()
                    }
                    None => "",
                };
                put("grpc_response_status", grpc_status)?;
            }
            // Istio's TCP metrics carry no response code or gRPC status.
            Call::Tcp => put("request_protocol", "tcp")?,
        }
        put("response_flags", &self.response_flags.codes())?;
        let security = if self.mutual_tls {
            "mutual_tls"
        } else {
            UNKNOWN
        };
        put("connection_security_policy", security)
    }
}

impl EncodeLabelSet for Labels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> std::fmt::Result {
        match &self.custom {
            // A Telemetry override made this series' label set.
            Some(custom) => custom
                .iter()
                .try_for_each(|(key, value)| put(encoder, key, value)),
            None => self.visit(&mut |key, value| put(encoder, key, value)),
        }
    }
}
