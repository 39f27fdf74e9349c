//! Telemetry beyond the metric families: who this proxy is, the access log,
//! and tracing. What each side knows, and from where:
//!
//! | fact | source proxy (outbound) | destination proxy (inbound) |
//! |---|---|---|
//! | its own workload, namespace, `app`, `version`, canonical service/revision, cluster | its node flags | its node flags |
//! | the peer's workload (HTTP) | `x-weft-peer` on the response, else the endpoint's labels from config | `x-weft-peer` on the request |
//! | the peer's workload (TCP) | the endpoint's labels from config (`app`, `version`, canonical labels) | not known (`unknown`) until mTLS names the peer |
//! | `destination_service` | the routed service | the request's authority host |
//! | principals, `connection_security_policy` | `unknown` until mTLS ([`Downstream::principal`] is the hook) | same |
//!
//! Switches: access logs follow `POST /logging?access=on|off|default` on the
//! admin port first, then the `telemetry` settings weftd pushes (Istio's
//! Telemetry `accessLogging`), then `--access-log`. Trace sampling follows
//! the pushed `randomSamplingPercentage`, else `--trace-sampling`.

pub mod access_log;
pub mod body;
pub mod custom;
pub mod export;
pub mod labels;
pub mod log_export;
pub mod log_format;
pub mod log_targets;
pub mod metrics;
pub mod peer;
pub mod request;
pub mod span;
pub mod tcp;
pub mod trace;
pub mod tracer;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};

use http::HeaderValue;
use weft_proto::proxy::v1::telemetry::AccessLog as AccessLogSwitch;
use weft_proto::proxy::v1::telemetry::AccessLogEncoding;

use self::access_log::{AccessLogSink, AccessLogger, Format};
use self::export::Exporter;
use self::metrics::Reporter;
use self::peer::PeerCache;
use self::tracer::Tracers;
use crate::config::Snapshot;
use crate::workload::Workload;

/// What a request or connection record reads while it runs and when it
/// ends: the proxy's metrics and the snapshot serving now. The proxy's
/// state implements it (`state.rs`); telemetry needs nothing else of it.
pub trait Recorder: Send + Sync {
    fn metrics(&self) -> &metrics::Metrics;
    /// The current snapshot (the one a reload may have swapped in since the
    /// record started: access log and tracing settings follow it).
    fn snapshot(&self) -> arc_swap::Guard<Arc<Snapshot>>;
}

/// What `main` decides at start-up.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    pub node_id: String,
    pub workload: Workload,
    /// `--access-log`: where lines go (`-` = stdout); `None`: off unless
    /// switched on (then stdout).
    pub access_log: Option<String>,
    pub access_log_format: Format,
    /// `--trace-sampling`, percent.
    pub trace_sampling: f64,
    /// `--otlp`: the OTLP/gRPC collector address, used when weftd pushes
    /// no tracing provider.
    pub otlp: Option<String>,
}

/// This proxy's identity as sent to peers.
pub struct Local {
    pub node_id: String,
    pub workload: Arc<Workload>,
    pub header: HeaderValue,
}

/// The admin override of access logging.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Override {
    /// Follow the pushed config, then the flag.
    Default = 0,
    On = 1,
    Off = 2,
}

#[derive(Default)]
pub struct Telemetry {
    local: OnceLock<Local>,
    /// Decoded `x-weft-peer` values.
    pub peers: PeerCache,
    flag_access_log: OnceLock<bool>,
    access_log: OnceLock<AccessLogSink>,
    admin_override: AtomicU8,
    trace_sampling: OnceLock<f64>,
    tracers: OnceLock<Tracers>,
    unknown: OnceLock<Arc<Workload>>,
    /// The open destinations of the providers serving now.
    log_targets: log_targets::Targets,
}

impl Telemetry {
    /// Applies the start-up settings; only the first call counts.
    pub fn configure(&self, settings: Settings) -> std::io::Result<()> {
        let header = HeaderValue::from_str(&settings.workload.encode())
            .unwrap_or_else(|_| HeaderValue::from_static(""));
        let _ = self.local.set(Local {
            node_id: settings.node_id,
            workload: Arc::new(settings.workload),
            header,
        });
        let _ = self.flag_access_log.set(settings.access_log.is_some());
        let sink = AccessLogSink::open(
            settings.access_log.as_deref().unwrap_or("-"),
            settings.access_log_format,
        )?;
        let _ = self.access_log.set(sink);
        let _ = self
            .trace_sampling
            .set(settings.trace_sampling.clamp(0.0, 100.0));
        let _ = self.tracers.set(Tracers::new(settings.otlp));
        Ok(())
    }

    /// This proxy's workload (all unknown before [`Self::configure`]).
    pub fn local(&self) -> &Local {
        self.local.get_or_init(|| Local {
            node_id: String::new(),
            workload: Arc::new(Workload::unknown()),
            header: HeaderValue::from_static(""),
        })
    }

    /// A workload nothing is known about.
    pub fn unknown(&self) -> Arc<Workload> {
        self.unknown
            .get_or_init(|| Arc::new(Workload::unknown()))
            .clone()
    }

    pub fn set_access_override(&self, value: Override) {
        self.admin_override.store(value as u8, Ordering::Relaxed);
    }

    pub fn access_override(&self) -> Override {
        match self.admin_override.load(Ordering::Relaxed) {
            1 => Override::On,
            2 => Override::Off,
            _ => Override::Default,
        }
    }

    /// Where this record's access-log line goes, if it is logged: the
    /// snapshot's providers covering its side (`client`: outbound), each
    /// in its format (Istio's default line in the pushed encoding, else
    /// the flag's).
    pub fn access_log(&self, snapshot: &Snapshot, client: bool) -> Option<AccessLogger<'_>> {
        let on = match self.access_override() {
            Override::On => true,
            Override::Off => false,
            Override::Default => match pushed(snapshot).map(|t| t.access_log()) {
                Some(AccessLogSwitch::Enabled) => true,
                Some(AccessLogSwitch::Disabled) => false,
                _ => self.flag_access_log.get().copied().unwrap_or(false),
            },
        };
        if !on {
            return None;
        }
        let encoding = match pushed(snapshot).map(|t| t.access_log_encoding()) {
            Some(AccessLogEncoding::Text) => Some(Format::Text),
            Some(AccessLogEncoding::Json) => Some(Format::Json),
            _ => None,
        };
        let sink = self.access_log.get()?;
        let targets = self.log_targets.resolve(snapshot, self.local());
        let logger = AccessLogger::new(sink, encoding, targets, client);
        logger.writes().then_some(logger)
    }

    /// Percent of new traces sampled.
    pub fn sampling(&self, snapshot: &Snapshot) -> f64 {
        match pushed(snapshot) {
            Some(t) if t.has_random_sampling_percentage => {
                t.random_sampling_percentage.clamp(0.0, 100.0)
            }
            _ => self.trace_sampling.get().copied().unwrap_or(1.0),
        }
    }

    /// The span exporter for requests `reporter` records, unless none is
    /// configured or the pushed settings turn span reporting off (or leave
    /// this side out: `match.mode`).
    pub fn exporter(&self, snapshot: &Snapshot, reporter: Reporter) -> Option<Arc<Exporter>> {
        if let Some(t) = pushed(snapshot)
            && (t.disable_span_reporting || !span::reports(t.trace_mode, reporter))
        {
            return None;
        }
        self.tracers.get()?.exporter(snapshot, self.local())
    }
}

fn pushed(snapshot: &Snapshot) -> Option<&weft_proto::proxy::v1::Telemetry> {
    snapshot.config.telemetry.as_ref()
}

/// The downstream connection's addresses and proven identity.
#[derive(Debug, Clone, Default)]
pub struct Downstream {
    pub local: Option<SocketAddr>,
    pub remote: Option<SocketAddr>,
    /// The peer's SPIFFE identity when the connection is mutual TLS. Hook
    /// for the mTLS work: set it where the TLS handshake completes, and
    /// `source_principal` and `connection_security_policy` follow.
    pub principal: Option<Arc<str>>,
}

impl Downstream {
    /// The caller's mesh identity as policies write it (without
    /// `spiffe://`); None for plaintext callers.
    pub fn mesh_principal(&self) -> Option<&str> {
        let principal = self.principal.as_deref()?;
        Some(principal.strip_prefix("spiffe://").unwrap_or(principal))
    }

    pub fn of(stream: &tokio::net::TcpStream) -> Self {
        Self {
            local: stream.local_addr().ok(),
            remote: stream.peer_addr().ok(),
            principal: None,
        }
    }
}
