//! Prometheus metrics with Istio's standard names and labels, so existing
//! dashboards and alerts keep working, plus the proxy's own health.
//!
//! Hot path: one request is one label set (shared workload metadata, see
//! [`Labels`]) looked up once when it ends, in [`Metrics::request_series`]:
//! its series in the four request families are resolved the first time the
//! label set is seen and kept together (a family lookup SipHashes the label
//! set each time; four of them cost more than the rest of the telemetry). Gauges that
//! describe the config (version, open upstream connections, ejected
//! endpoints) are read from the snapshot when Prometheus scrapes, never
//! kept up to date per request.
//!
//! [`Metrics`] also carries the rest of the proxy's telemetry (access log,
//! tracing, its own workload's identity) in [`Metrics::telemetry`].

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::balance::Clusters;
use weft_proto::proxy::v1::StandardMetric as M;

use crate::config::Snapshot;
use crate::config::telemetry::{MetricRule, Side};
use crate::telemetry::Telemetry;
use crate::telemetry::custom::Facts;
pub use crate::telemetry::labels::{Call, Labels};

/// Istio's buckets for `istio_request_duration_milliseconds`.
const DURATION_BUCKETS_MS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];

/// Which side of the call this proxy is: `source` for outbound traffic,
/// `destination` for inbound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reporter {
    Source,
    Destination,
}

impl Reporter {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Source => "source",
            Self::Destination => "destination",
        }
    }
}

/// What one finished HTTP request measured.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestSample {
    pub duration_ms: f64,
    pub request_bytes: u64,
    pub response_bytes: u64,
    /// gRPC messages each way (counted only for gRPC).
    pub request_messages: u64,
    pub response_messages: u64,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DnsLabels {
    host: String,
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClusterLabels {
    cluster_name: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReporterLabels {
    reporter: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabels {
    version: String,
}

type HistogramFamily = Family<Labels, Histogram, fn() -> Histogram>;

/// One HTTP label set's series in the four request families (shared
/// handles: incrementing these is incrementing the families' series).
struct RequestSeries {
    requests: Counter,
    duration: Histogram,
    request_bytes: Histogram,
    response_bytes: Histogram,
}

type SeriesByLabels = HashMap<Labels, Arc<RequestSeries>, foldhash::fast::RandomState>;

pub struct Metrics {
    registry: Registry,
    requests: Family<Labels, Counter>,
    duration: HistogramFamily,
    request_bytes: HistogramFamily,
    response_bytes: HistogramFamily,
    /// The four families' series by label set (see the module doc).
    request_series: RwLock<SeriesByLabels>,
    request_messages: Family<Labels, Counter>,
    response_messages: Family<Labels, Counter>,
    tcp_opened: Family<Labels, Counter>,
    tcp_closed: Family<Labels, Counter>,
    tcp_sent: Family<Labels, Counter>,
    tcp_received: Family<Labels, Counter>,
    config_reloads: Family<ReloadLabels, Counter>,
    dns_lookups: Family<DnsLabels, Counter>,
    /// DNS proxying (Istio's agent names, so its dashboards work): every
    /// query, those forwarded, and those no upstream answered.
    dns_requests: Counter,
    dns_upstream_requests: Counter,
    dns_upstream_failures: Counter,
    downstream_active: Gauge,
    outlier_ejections: Family<ClusterLabels, Counter>,
    loops_refused: Family<ReporterLabels, Counter>,
    // Filled from the snapshot at scrape time.
    config_info: Family<VersionLabels, Gauge>,
    upstream_connections: Family<ClusterLabels, Gauge>,
    ejected_endpoints: Family<ClusterLabels, Gauge>,
    certificate_expiry: Gauge,
    /// Access log, tracing and this proxy's identity.
    pub telemetry: Telemetry,
}

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS_MS)
}

/// Istio's size buckets: 1 B to 1 GB by powers of ten.
fn size_histogram() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        1.0, 10.0, 10,
    ))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        macro_rules! register {
            ($name:literal, $help:literal, $metric:expr) => {{
                let metric = $metric;
                registry.register($name, $help, metric.clone());
                metric
            }};
        }
        let sized = || HistogramFamily::new_with_constructor(size_histogram as fn() -> Histogram);
        Self {
            requests: register!("istio_requests", "Requests", Family::default()),
            duration: register!(
                "istio_request_duration_milliseconds",
                "Request duration, from the request's arrival to the end of the response",
                HistogramFamily::new_with_constructor(duration_histogram)
            ),
            request_bytes: register!("istio_request_bytes", "Request body sizes", sized()),
            response_bytes: register!("istio_response_bytes", "Response body sizes", sized()),
            request_series: RwLock::default(),
            request_messages: register!(
                "istio_request_messages",
                "gRPC messages sent by the client",
                Family::default()
            ),
            response_messages: register!(
                "istio_response_messages",
                "gRPC messages sent by the server",
                Family::default()
            ),
            tcp_opened: register!(
                "istio_tcp_connections_opened",
                "TCP connections opened",
                Family::default()
            ),
            tcp_closed: register!(
                "istio_tcp_connections_closed",
                "TCP connections closed",
                Family::default()
            ),
            tcp_sent: register!(
                "istio_tcp_sent_bytes",
                "Bytes sent to the downstream on TCP connections",
                Family::default()
            ),
            tcp_received: register!(
                "istio_tcp_received_bytes",
                "Bytes received from the downstream on TCP connections",
                Family::default()
            ),
            config_reloads: register!(
                "weft_config_reloads",
                "Config files applied or rejected",
                Family::default()
            ),
            dns_lookups: register!(
                "weft_dns_lookups",
                "Lookups of DNS endpoint hosts, by host and result (ok, failed)",
                Family::default()
            ),
            dns_requests: register!(
                "istio_agent_dns_requests",
                "DNS queries the app sent to the proxy (DNS capture)",
                Counter::default()
            ),
            dns_upstream_requests: register!(
                "istio_agent_dns_upstream_requests",
                "DNS queries forwarded to the upstream resolvers",
                Counter::default()
            ),
            dns_upstream_failures: register!(
                "istio_agent_dns_upstream_failures",
                "Forwarded DNS queries no upstream resolver answered (SERVFAIL to the app)",
                Counter::default()
            ),
            downstream_active: register!(
                "weft_downstream_connections_active",
                "Open downstream connections",
                Gauge::default()
            ),
            outlier_ejections: register!(
                "weft_outlier_ejections",
                "Endpoints ejected by outlier detection, by cluster",
                Family::default()
            ),
            loops_refused: register!(
                "weft_loop_connections_refused",
                "Connections refused because their original destination was one of the proxy's own ports",
                Family::default()
            ),
            config_info: register!(
                "weft_config_info",
                "The config version serving (always 1)",
                Family::default()
            ),
            upstream_connections: register!(
                "weft_upstream_connections_active",
                "Open upstream connections, by cluster (connection-pool usage)",
                Family::default()
            ),
            ejected_endpoints: register!(
                "weft_outlier_ejected_endpoints",
                "Endpoints ejected now, by cluster",
                Family::default()
            ),
            certificate_expiry: register!(
                "weft_certificate_expiry_timestamp_seconds",
                "When the workload certificate expires (Unix time); 0 without one",
                Gauge::default()
            ),
            telemetry: Telemetry::default(),
            registry,
        }
    }
}

impl Metrics {
    /// One finished HTTP request.
    pub fn record_request(&self, labels: &Labels, sample: &RequestSample) {
        let series = self.request_series(labels);
        series.requests.inc();
        series.duration.observe(sample.duration_ms);
        series.request_bytes.observe(sample.request_bytes as f64);
        series.response_bytes.observe(sample.response_bytes as f64);
        if matches!(labels.call, Call::Http { grpc: true, .. }) {
            self.request_messages
                .get_or_create(labels)
                .inc_by(sample.request_messages);
            self.response_messages
                .get_or_create(labels)
                .inc_by(sample.response_messages);
        }
    }

    fn request_series(&self, labels: &Labels) -> Arc<RequestSeries> {
        // A poisoned lock only means a panic elsewhere mid-insert; the map
        // itself is still whole.
        let known = self
            .request_series
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(labels)
            .cloned();
        if let Some(series) = known {
            return series;
        }
        let mut all = self
            .request_series
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        all.entry(labels.clone())
            .or_insert_with(|| {
                Arc::new(RequestSeries {
                    requests: self.requests.get_or_create(labels).clone(),
                    duration: self.duration.get_or_create(labels).clone(),
                    request_bytes: self.request_bytes.get_or_create(labels).clone(),
                    response_bytes: self.response_bytes.get_or_create(labels).clone(),
                })
            })
            .clone()
    }

    /// One finished HTTP request on a side whose metrics a Telemetry
    /// override changes: each family gets its own label set, or nothing
    /// when disabled. Slower than [`Self::record_request`] (label sets are
    /// built per request), and only used where an override exists.
    pub fn record_request_custom(
        &self,
        labels: &Labels,
        sample: &RequestSample,
        side: &Side,
        facts: &Facts<'_>,
    ) {
        let series = |metric| custom_labels(labels, side.rule(metric), facts);
        if let Some(l) = series(M::RequestCount) {
            self.requests.get_or_create(&l).inc();
        }
        if let Some(l) = series(M::RequestDuration) {
            self.duration.get_or_create(&l).observe(sample.duration_ms);
        }
        if let Some(l) = series(M::RequestSize) {
            self.request_bytes
                .get_or_create(&l)
                .observe(sample.request_bytes as f64);
        }
        if let Some(l) = series(M::ResponseSize) {
            self.response_bytes
                .get_or_create(&l)
                .observe(sample.response_bytes as f64);
        }
        if matches!(labels.call, Call::Http { grpc: true, .. }) {
            if let Some(l) = series(M::GrpcRequestMessages) {
                self.request_messages
                    .get_or_create(&l)
                    .inc_by(sample.request_messages);
            }
            if let Some(l) = series(M::GrpcResponseMessages) {
                self.response_messages
                    .get_or_create(&l)
                    .inc_by(sample.response_messages);
            }
        }
    }

    /// [`Self::record_tcp_open`] on a side with overrides.
    pub fn record_tcp_open_custom(&self, labels: &Labels, side: &Side, facts: &Facts<'_>) {
        if let Some(l) = custom_labels(labels, side.rule(M::TcpOpenedConnections), facts) {
            self.tcp_opened.get_or_create(&l).inc();
        }
    }

    /// [`Self::record_tcp_close`] on a side with overrides.
    pub fn record_tcp_close_custom(
        &self,
        labels: &Labels,
        (sent, received): (u64, u64),
        side: &Side,
        facts: &Facts<'_>,
    ) {
        if let Some(l) = custom_labels(labels, side.rule(M::TcpClosedConnections), facts) {
            self.tcp_closed.get_or_create(&l).inc();
        }
        if let Some(l) = custom_labels(labels, side.rule(M::TcpSentBytes), facts) {
            self.tcp_sent.get_or_create(&l).inc_by(sent);
        }
        if let Some(l) = custom_labels(labels, side.rule(M::TcpReceivedBytes), facts) {
            self.tcp_received.get_or_create(&l).inc_by(received);
        }
    }

    /// Forgets every series of the standard families: called when a push
    /// changes their label sets, so that one family never mixes the old
    /// label set with the new (counters restart from zero, which
    /// Prometheus' `rate()` reads as a counter reset).
    pub fn reset_standard(&self) {
        self.request_series
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clear();
        self.requests.clear();
        self.duration.clear();
        self.request_bytes.clear();
        self.response_bytes.clear();
        self.request_messages.clear();
        self.response_messages.clear();
        self.tcp_opened.clear();
        self.tcp_closed.clear();
        self.tcp_sent.clear();
        self.tcp_received.clear();
    }

    pub fn record_tcp_open(&self, labels: &Labels) {
        self.tcp_opened.get_or_create(labels).inc();
    }

    pub fn record_tcp_close(&self, labels: &Labels, sent: u64, received: u64) {
        self.tcp_closed.get_or_create(labels).inc();
        self.tcp_sent.get_or_create(labels).inc_by(sent);
        self.tcp_received.get_or_create(labels).inc_by(received);
    }

    pub fn record_reload(&self, applied: bool) {
        let result = if applied { "applied" } else { "rejected" };
        self.config_reloads
            .get_or_create(&ReloadLabels { result })
            .inc();
    }

    /// One lookup of a DNS endpoint's host.
    pub fn record_dns_lookup(&self, host: &str, ok: bool) {
        let result = if ok { "ok" } else { "failed" };
        self.dns_lookups
            .get_or_create(&DnsLabels {
                host: host.to_string(),
                result,
            })
            .inc();
    }

    /// One query to the DNS proxy; `forwarded`: it went upstream, `failed`:
    /// no upstream answered it.
    pub fn record_dns_query(&self, forwarded: bool, failed: bool) {
        self.dns_requests.inc();
        if forwarded {
            self.dns_upstream_requests.inc();
        }
        if failed {
            self.dns_upstream_failures.inc();
        }
    }

    /// A connection to one of the proxy's own ports, closed at once.
    pub fn record_loop_refused(&self, side: Reporter) {
        self.loops_refused
            .get_or_create(&ReporterLabels {
                reporter: side.as_str(),
            })
            .inc();
    }

    pub fn record_ejection(&self, cluster: &str) {
        self.outlier_ejections
            .get_or_create(&ClusterLabels {
                cluster_name: cluster.to_string(),
            })
            .inc();
    }

    /// Hook for the workload certificate: its expiry as Unix seconds (the
    /// mTLS work calls this on every issue or rotation).
    pub fn set_certificate_expiry(&self, unix_seconds: i64) {
        self.certificate_expiry.set(unix_seconds);
    }

    pub fn downstream_opened(&self) -> DownstreamGuard<'_> {
        self.downstream_active.inc();
        DownstreamGuard(&self.downstream_active)
    }

    /// The Prometheus text exposition, with the config gauges read from
    /// `snapshot` now.
    pub fn encode(&self, snapshot: &Snapshot, clusters: &Clusters) -> String {
        self.config_info.clear();
        self.config_info
            .get_or_create(&VersionLabels {
                version: snapshot.version().to_string(),
            })
            .set(1);
        self.upstream_connections.clear();
        self.ejected_endpoints.clear();
        for cluster in snapshot.clusters() {
            let Some(live) = clusters.named(&cluster.name) else {
                continue;
            };
            let labels = ClusterLabels {
                cluster_name: cluster.name.clone(),
            };
            let open = live
                .breaker
                .count(crate::balance::limits::Resource::Connection);
            self.upstream_connections
                .get_or_create(&labels)
                .set(i64::from(open));
            if live.outlier.is_some() {
                self.ejected_endpoints
                    .get_or_create(&labels)
                    .set(live.ejected() as i64);
            }
        }
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// `labels` as `rule` changes them for one family; `None`: the family is
/// disabled on this side.
fn custom_labels<'a>(
    labels: &'a Labels,
    rule: Option<&MetricRule>,
    facts: &Facts<'_>,
) -> Option<Cow<'a, Labels>> {
    let Some(rule) = rule else {
        return Some(Cow::Borrowed(labels));
    };
    if rule.disabled {
        return None;
    }
    if rule.tags.is_empty() {
        return Some(Cow::Borrowed(labels));
    }
    let mut pairs: Vec<(String, String)> = Vec::with_capacity(26);
    let _ = labels.visit(&mut |key, value| {
        pairs.push((key.to_string(), value.to_string()));
        Ok(())
    });
    for (name, value) in facts.tag_values(rule) {
        match value {
            None => pairs.retain(|(key, _)| *key != name),
            Some(value) => match pairs.iter_mut().find(|(key, _)| *key == name) {
                Some(pair) => pair.1 = value,
                None => pairs.push((name, value)),
            },
        }
    }
    let mut custom = labels.clone();
    custom.custom = Some(pairs.into());
    Some(Cow::Owned(custom))
}

/// Decrements the active-connection gauge when the connection ends.
pub struct DownstreamGuard<'a>(&'a Gauge);

impl Drop for DownstreamGuard<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}
