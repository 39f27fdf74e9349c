//! One opaque TCP connection's telemetry: `istio_tcp_*` metrics and an
//! access-log line when it closes (or is refused: UH, UO, UF).
//!
//! TCP carries no metadata exchange: the source side learns the
//! destination from the chosen endpoint's labels in its config; the
//! destination side knows only itself until mTLS names the caller.

use std::net::SocketAddr;
use std::time::{Instant, SystemTime};

use super::access_log::Entry;
use super::custom::Facts;
use super::labels::{Call, Labels};
use super::{Downstream, Recorder};
use crate::config::telemetry::Side;
use crate::config::{Cluster, Endpoint, Snapshot};
use crate::flags::{ResponseFlag, ResponseFlags};
use crate::telemetry::metrics::Reporter;

pub struct TcpRecord<'a> {
    state: &'a dyn Recorder,
    labels: Labels,
    cluster: String,
    downstream: Downstream,
    start: Instant,
    start_wall: SystemTime,
    upstream_host: Option<SocketAddr>,
    bytes: (u64, u64),
    /// This side has Telemetry overrides or an access-log filter.
    custom: bool,
}

impl<'a> TcpRecord<'a> {
    pub fn start(
        state: &'a dyn Recorder,
        reporter: Reporter,
        service: &str,
        cluster: &Cluster,
        downstream: &Downstream,
    ) -> Self {
        let telemetry = &state.metrics().telemetry;
        let local = telemetry.local().workload.clone();
        let principal = downstream.principal.clone();
        let (source, destination) = match reporter {
            Reporter::Source => (local, telemetry.unknown()),
            Reporter::Destination => (telemetry.unknown(), local),
        };
        let service = if service.is_empty() {
            &cluster.service
        } else {
            service
        };
        Self {
            state,
            labels: Labels {
                reporter,
                source,
                source_principal: principal
                    .clone()
                    .filter(|_| reporter == Reporter::Destination),
                destination,
                destination_principal: None,
                destination_service: service.into(),
                call: Call::Tcp,
                response_flags: ResponseFlags::default(),
                mutual_tls: principal.is_some(),
                custom: None,
            },
            cluster: cluster.name.clone(),
            downstream: downstream.clone(),
            start: Instant::now(),
            start_wall: SystemTime::now(),
            upstream_host: None,
            bytes: (0, 0),
            custom: state
                .snapshot()
                .custom_telemetry
                .side(reporter == Reporter::Source)
                .is_custom(),
        }
    }

    /// The connection is refused for `flag` (logged when the record ends).
    pub fn refused(&mut self, flag: ResponseFlag) {
        self.labels.response_flags = self.labels.response_flags.with(flag);
    }

    /// Connected to `endpoint`: counts the connection as opened.
    pub fn opened(&mut self, endpoint: &Endpoint) {
        self.upstream_host = Some(endpoint.address);
        if self.labels.reporter == Reporter::Source
            && let Some(workload) = &endpoint.workload
        {
            self.labels.destination = workload.clone();
        }
        if self.custom {
            let snapshot = self.state.snapshot();
            let side = self.side(&snapshot);
            self.state
                .metrics()
                .record_tcp_open_custom(&self.labels, side, &self.facts(&snapshot));
        } else {
            self.state.metrics().record_tcp_open(&self.labels);
        }
    }

    /// Bytes sent to and received from the downstream, at close.
    pub fn closed(&mut self, sent: u64, received: u64) {
        self.bytes = (sent, received);
        if self.custom {
            let snapshot = self.state.snapshot();
            let side = self.side(&snapshot);
            self.state.metrics().record_tcp_close_custom(
                &self.labels,
                (sent, received),
                side,
                &self.facts(&snapshot),
            );
        } else {
            self.state
                .metrics()
                .record_tcp_close(&self.labels, sent, received);
        }
    }

    fn side<'s>(&self, snapshot: &'s Snapshot) -> &'s Side {
        snapshot
            .custom_telemetry
            .side(self.labels.reporter == Reporter::Source)
    }

    /// What expressions read about this connection.
    fn facts<'f>(&'f self, snapshot: &'f Snapshot) -> Facts<'f> {
        let env = &snapshot.custom_telemetry.env;
        let (sent, received) = self.bytes;
        Facts {
            env,
            wanted: self.side(snapshot).wanted,
            request: None,
            labels: &self.labels,
            duration_ms: self.start.elapsed().as_millis() as u64,
            bytes_received: received,
            bytes_sent: sent,
            downstream_local: self.downstream.local,
            downstream_remote: self.downstream.remote,
            upstream_host: self.upstream_host,
            route_name: None,
            cluster_name: Some(&self.cluster),
            context: Default::default(),
        }
    }
}

impl Drop for TcpRecord<'_> {
    fn drop(&mut self) {
        let telemetry = &self.state.metrics().telemetry;
        let snapshot = self.state.snapshot();
        let client = self.labels.reporter == Reporter::Source;
        let Some(sink) = telemetry.access_log(&snapshot, client) else {
            return;
        };
        if self.custom && !self.facts(&snapshot).logs(self.side(&snapshot)) {
            return;
        }
        let (sent, received) = self.bytes;
        sink.log(&Entry {
            start: Some(self.start_wall),
            response_flags: self.labels.response_flags,
            bytes_received: received,
            bytes_sent: sent,
            duration_ms: self.start.elapsed().as_millis() as u64,
            upstream_host: self.upstream_host,
            upstream_cluster: Some(&self.cluster),
            downstream_local: self.downstream.local,
            downstream_remote: self.downstream.remote,
            ..Entry::default()
        });
    }
}
