//! The open destinations of access-log records under the snapshot serving
//! now: the proxy's own sink, provider files, OpenTelemetry log exporters.
//!
//! A request asks once per record; under the same snapshot the answer is
//! one pointer comparison. A new snapshot resolves its providers again,
//! keeping every file and exporter whose path (or collector address and
//! log name) is unchanged, and opening or starting only the new ones; the
//! old ones stop when the last record holding them is written.

use std::sync::{Arc, Mutex};

use arc_swap::ArcSwapOption;

use super::Local;
use super::access_log::{AccessLogSink, Format};
use super::log_export::OtelLogs;
use crate::config::Snapshot;
use crate::config::access_logs::{AccessLogs, LogKind};

/// Where one provider's records go.
pub enum Sink {
    /// The proxy's `--access-log` sink.
    Own,
    File(String, Arc<AccessLogSink>),
    Otel(Arc<OtelLogs>),
    /// Cannot be written to (a file that cannot be opened, a collector
    /// without endpoints): already logged.
    Nowhere,
}

/// A snapshot's providers with their open destinations, index by index.
pub struct Resolved {
    pub logs: Arc<AccessLogs>,
    pub sinks: Vec<Sink>,
}

#[derive(Default)]
pub struct Targets {
    current: ArcSwapOption<Resolved>,
    /// Held while destinations are opened, so two requests do not both open.
    switching: Mutex<()>,
}

impl Targets {
    /// The destinations of `snapshot`'s providers, opened if needed.
    pub fn resolve(&self, snapshot: &Snapshot, local: &Local) -> Arc<Resolved> {
        let logs = &snapshot.custom_telemetry.access_logs;
        if let Some(current) = self.current.load_full()
            && Arc::ptr_eq(&current.logs, logs)
        {
            return current;
        }
        let _switching = self.switching.lock().unwrap_or_else(|e| e.into_inner());
        let previous = self.current.load_full();
        if let Some(current) = &previous
            && Arc::ptr_eq(&current.logs, logs)
        {
            return current.clone();
        }
        let old: &[Sink] = previous.as_deref().map_or(&[], |p| p.sinks.as_slice());
        let sinks = logs
            .providers
            .iter()
            .map(|provider| match &provider.kind {
                LogKind::File { path, .. } if path.is_empty() => Sink::Own,
                LogKind::File { path, .. } => file(path, old),
                LogKind::Otel {
                    cluster, log_name, ..
                } => otel(snapshot, &provider.name, cluster, log_name, old, local),
            })
            .collect();
        let resolved = Arc::new(Resolved {
            logs: logs.clone(),
            sinks,
        });
        self.current.store(Some(resolved.clone()));
        resolved
    }
}

fn file(path: &str, old: &[Sink]) -> Sink {
    let kept = old.iter().find_map(|sink| match sink {
        Sink::File(p, sink) if p == path => Some(sink.clone()),
        _ => None,
    });
    if let Some(sink) = kept {
        return Sink::File(path.to_string(), sink);
    }
    let open = if path == "/dev/stdout" { "-" } else { path };
    match AccessLogSink::open(open, Format::Text) {
        Ok(sink) => Sink::File(path.to_string(), Arc::new(sink)),
        Err(err) => {
            tracing::warn!(%err, "access log provider path unusable; its lines are dropped");
            Sink::Nowhere
        }
    }
}

fn otel(
    snapshot: &Snapshot,
    name: &str,
    cluster: &str,
    log_name: &str,
    old: &[Sink],
    local: &Local,
) -> Sink {
    // The collector's service, as the config knows its endpoints.
    let Some(address) = snapshot
        .cluster(cluster)
        .and_then(|c| c.endpoints.first())
        .map(|e| e.address)
    else {
        tracing::warn!("access log provider {name:?}: cluster {cluster:?} has no endpoint");
        return Sink::Nowhere;
    };
    let url = format!("http://{address}");
    let kept = old.iter().find_map(|sink| match sink {
        Sink::Otel(logs) if logs.url == url && logs.log_name == log_name => Some(logs.clone()),
        _ => None,
    });
    if let Some(logs) = kept {
        return Sink::Otel(logs);
    }
    match OtelLogs::start(url.clone(), log_name, local) {
        Ok(logs) => {
            tracing::info!("access log provider {name:?}: records are exported to OTLP/gRPC {url}");
            Sink::Otel(Arc::new(logs))
        }
        Err(err) => {
            tracing::error!("access log provider {name:?}: {err}; its records are dropped");
            Sink::Nowhere
        }
    }
}
