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

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwapOption;
use weft_proto::proxy::v1::tracing_provider::Protocol;

use super::Local;
use super::export::{Exporter, Target};
use crate::config::Snapshot;

/// What picks the exporter under one snapshot: read per sampled span
/// without allocating; the target URL is formatted only when it changes.
#[derive(Clone, Copy, PartialEq)]
enum Source<'a> {
    /// No provider pushed: `--otlp`.
    Flag,
    /// A provider that cannot be used (kind Weft does not export to, or no
    /// endpoint): no spans.
    Nowhere,
    Provider(Protocol, SocketAddr, &'a str),
}

/// [`Source`], owned.
#[derive(PartialEq)]
enum Key {
    Flag,
    Nowhere,
    Provider(Protocol, SocketAddr, String),
}

impl Key {
    fn of(source: Source<'_>) -> Self {
        match source {
            Source::Flag => Self::Flag,
            Source::Nowhere => Self::Nowhere,
            Source::Provider(protocol, address, path) => {
                Self::Provider(protocol, address, path.to_string())
            }
        }
    }

    fn is(&self, source: Source<'_>) -> bool {
        match (self, source) {
            (Self::Flag, Source::Flag) | (Self::Nowhere, Source::Nowhere) => true,
            (Self::Provider(p, a, path), Source::Provider(q, b, other)) => {
                p == &q && a == &b && path == other
            }
            _ => false,
        }
    }
}

/// The exporter in use and what it was started for.
struct Current {
    key: Key,
    /// `None`: spans go nowhere (no provider, it cannot be used, or
    /// starting its exporter failed: already logged).
    exporter: Option<Arc<Exporter>>,
}

#[derive(Default)]
pub struct Tracers {
    /// `--otlp` as a target, made once.
    flag: Option<Target>,
    current: ArcSwapOption<Current>,
    /// Held while an exporter is started, so two requests do not both start one.
    switching: Mutex<()>,
}

impl Tracers {
    /// `flag`: `--otlp`, host:port or a full `http://` URL.
    pub fn new(flag: Option<String>) -> Self {
        Self {
            flag: flag.map(|flag| {
                Target::OtlpGrpc(if flag.contains("://") {
                    flag
                } else {
                    format!("http://{flag}")
                })
            }),
            ..Self::default()
        }
    }

    /// The exporter for `snapshot`'s provider, started or switched to if
    /// needed; `None`: no spans.
    pub fn exporter(&self, snapshot: &Snapshot, local: &Local) -> Option<Arc<Exporter>> {
        let source = source(snapshot);
        if let Some(current) = &*self.current.load()
            && current.key.is(source)
        {
            return current.exporter.clone();
        }
        let _switching = self.switching.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(current) = &*self.current.load()
            && current.key.is(source)
        {
            return current.exporter.clone();
        }
        let target = self.target(source);
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
            key: Key::of(source),
            exporter: exporter.clone(),
        })));
        exporter
    }

    /// Where spans go from `source`.
    fn target(&self, source: Source<'_>) -> Option<Target> {
        match source {
            Source::Flag => self.flag.clone(),
            Source::Nowhere => None,
            Source::Provider(protocol, address, path) => Some(match protocol {
                Protocol::OtlpHttp => Target::OtlpHttp(format!("http://{address}{path}")),
                Protocol::Zipkin => Target::Zipkin(format!("http://{address}{path}")),
                _ => Target::OtlpGrpc(format!("http://{address}")),
            }),
        }
    }
}

/// What `snapshot` says of the tracing provider.
fn source(snapshot: &Snapshot) -> Source<'_> {
    let pushed = snapshot
        .config
        .telemetry
        .as_ref()
        .and_then(|t| t.tracing_provider.as_ref());
    let Some(provider) = pushed else {
        return Source::Flag;
    };
    let protocol = Protocol::try_from(provider.protocol).unwrap_or(Protocol::Unsupported);
    if protocol == Protocol::Unsupported {
        return Source::Nowhere;
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
        return Source::Nowhere;
    };
    Source::Provider(protocol, address, &provider.path)
}
