//! Prometheus metrics with Istio's standard names and labels, so existing
//! dashboards and alerts keep working. (The full label set arrives with
//! telemetry; labels not known yet are left out rather than faked.)

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::flags::ResponseFlags;

/// Which side of the call this proxy is: `source` for outbound traffic,
/// `destination` for inbound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reporter {
    Source,
    Destination,
}

impl Reporter {
    fn as_str(self) -> &'static str {
        match self {
            Self::Source => "source",
            Self::Destination => "destination",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    reporter: &'static str,
    destination_service: String,
    request_protocol: &'static str,
    response_code: String,
    response_flags: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TcpLabels {
    reporter: &'static str,
    destination_service: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    result: &'static str,
}

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    tcp_opened: Family<TcpLabels, Counter>,
    tcp_closed: Family<TcpLabels, Counter>,
    tcp_sent: Family<TcpLabels, Counter>,
    tcp_received: Family<TcpLabels, Counter>,
    config_reloads: Family<ReloadLabels, Counter>,
    downstream_active: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let requests = Family::default();
        registry.register(
            "istio_requests",
            "Requests, by response code and flags",
            requests.clone(),
        );
        let tcp_opened = Family::default();
        registry.register(
            "istio_tcp_connections_opened",
            "TCP connections opened",
            tcp_opened.clone(),
        );
        let tcp_closed = Family::default();
        registry.register(
            "istio_tcp_connections_closed",
            "TCP connections closed",
            tcp_closed.clone(),
        );
        let tcp_sent = Family::default();
        registry.register(
            "istio_tcp_sent_bytes",
            "Bytes sent to the downstream on TCP connections",
            tcp_sent.clone(),
        );
        let tcp_received = Family::default();
        registry.register(
            "istio_tcp_received_bytes",
            "Bytes received from the downstream on TCP connections",
            tcp_received.clone(),
        );
        let config_reloads = Family::default();
        registry.register(
            "weft_config_reloads",
            "Config files applied or rejected",
            config_reloads.clone(),
        );
        let downstream_active = Gauge::default();
        registry.register(
            "weft_downstream_connections_active",
            "Open downstream connections",
            downstream_active.clone(),
        );
        Self {
            registry,
            requests,
            tcp_opened,
            tcp_closed,
            tcp_sent,
            tcp_received,
            config_reloads,
            downstream_active,
        }
    }
}

impl Metrics {
    pub fn record_request(
        &self,
        reporter: Reporter,
        destination_service: &str,
        grpc: bool,
        status: u16,
        flags: impl Into<ResponseFlags>,
    ) {
        let labels = RequestLabels {
            reporter: reporter.as_str(),
            destination_service: service_label(destination_service),
            request_protocol: if grpc { "grpc" } else { "http" },
            response_code: status.to_string(),
            response_flags: flags.into().codes(),
        };
        self.requests.get_or_create(&labels).inc();
    }

    pub fn record_tcp_open(&self, reporter: Reporter, destination_service: &str) {
        self.tcp_opened
            .get_or_create(&tcp_labels(reporter, destination_service))
            .inc();
    }

    pub fn record_tcp_close(
        &self,
        reporter: Reporter,
        destination_service: &str,
        sent: u64,
        received: u64,
    ) {
        let labels = tcp_labels(reporter, destination_service);
        self.tcp_closed.get_or_create(&labels).inc();
        self.tcp_sent.get_or_create(&labels).inc_by(sent);
        self.tcp_received.get_or_create(&labels).inc_by(received);
    }

    pub fn record_reload(&self, applied: bool) {
        let result = if applied { "applied" } else { "rejected" };
        self.config_reloads
            .get_or_create(&ReloadLabels { result })
            .inc();
    }

    pub fn downstream_opened(&self) -> DownstreamGuard<'_> {
        self.downstream_active.inc();
        DownstreamGuard(&self.downstream_active)
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// Decrements the active-connection gauge when the connection ends.
pub struct DownstreamGuard<'a>(&'a Gauge);

impl Drop for DownstreamGuard<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

fn tcp_labels(reporter: Reporter, destination_service: &str) -> TcpLabels {
    TcpLabels {
        reporter: reporter.as_str(),
        destination_service: service_label(destination_service),
    }
}

fn service_label(name: &str) -> String {
    if name.is_empty() {
        "unknown".to_string()
    } else {
        name.to_string()
    }
}
