//! Which exporter a sampled span goes to: the tracing provider weftd
//! pushed (MeshConfig `extensionProviders`, selected by
//! `defaultProviders.tracing` or a Telemetry's `tracing[].providers`), else
//! the `--otlp` flag. A push that names another provider (or moves its
//! endpoints) starts a new exporter and stops the old one after its queue
//! is flushed; requests see the switch on their next span.
//!
//! A pushed provider Weft cannot export to (skywalking, datadog, ...)
//! means no spans: sending them to `--otlp` instead would put them where
//! the mesh's owner did not ask.

use std::sync::{Arc, Mutex};

use arc_swap::ArcSwapOption;
use weft_proto::proxy::v1::tracing_provider::Protocol;

use super::Local;
use super::export::{Exporter, Target};
use crate::config::Snapshot;

/// The exporter in use and what it was started for.
struct Current {
    /// `None`: spans go nowhere (no provider, or it cannot be used).
    target: Option<Target>,
    /// `None` with a target: starting it failed (already logged).
    exporter: Option<Arc<Exporter>>,
}

#[derive(Default)]
pub struct Tracers {
    /// `--otlp`: host:port or a full `http://` URL.
    flag: Option<String>,
    current: ArcSwapOption<Current>,
    /// Held while an exporter is started, so two requests do not both start one.
    switching: Mutex<()>,
}

impl Tracers {
    pub fn new(flag: Option<String>) -> Self {
        Self {
            flag,
            ..Self::default()
        }
    }

    /// The exporter for `snapshot`'s provider, started or switched to if
    /// needed; `None`: no spans.
    pub fn exporter(&self, snapshot: &Snapshot, local: &Local) -> Option<Arc<Exporter>> {
        let target = self.target(snapshot);
        if let Some(current) = &*self.current.load()
            && current.target == target
        {
            return current.exporter.clone();
        }
        let _switching = self.switching.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(current) = &*self.current.load()
            && current.target == target
        {
            return current.exporter.clone();
        }
        let exporter = target.clone().and_then(|target| {
            let shown = target.to_string();
            match Exporter::start(target, local) {
                Ok(exporter) => {
                    tracing::info!("spans are exported to {shown}");
                    Some(Arc::new(exporter))
                }
                Err(err) => {
                    tracing::error!("span exporter cannot start: {err}; no spans are exported");
                    None
                }
            }
        });
        if target.is_none() {
            tracing::info!("no tracing provider: spans are not exported");
        }
        self.current.store(Some(Arc::new(Current {
            target,
            exporter: exporter.clone(),
        })));
        exporter
    }

    /// Where spans go under `snapshot`.
    fn target(&self, snapshot: &Snapshot) -> Option<Target> {
        let pushed = snapshot
            .config
            .telemetry
            .as_ref()
            .and_then(|t| t.tracing_provider.as_ref());
        let Some(provider) = pushed else {
            return self.flag.as_deref().map(|flag| {
                Target::OtlpGrpc(if flag.contains("://") {
                    flag.to_string()
                } else {
                    format!("http://{flag}")
                })
            });
        };
        let protocol = Protocol::try_from(provider.protocol).unwrap_or(Protocol::Unsupported);
        if protocol == Protocol::Unsupported {
            return None;
        }
        // The provider's service, as the config knows its endpoints.
        let Some(address) = snapshot
            .cluster(&provider.cluster)
            .and_then(|c| c.endpoints.first())
            .map(|e| e.address)
        else {
            tracing::debug!(
                "tracing provider {:?}: cluster {:?} has no endpoint",
                provider.name,
                provider.cluster
            );
            return None;
        };
        let path = &provider.path;
        Some(match protocol {
            Protocol::OtlpHttp => Target::OtlpHttp(format!("http://{address}{path}")),
            Protocol::Zipkin => Target::Zipkin(format!("http://{address}{path}")),
            _ => Target::OtlpGrpc(format!("http://{address}")),
        })
    }
}
