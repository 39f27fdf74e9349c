//! Telemetry customisation pushed by weftd (Istio's Telemetry `metrics`
//! overrides and access-log `filter.expression`), compiled with the
//! snapshot: CEL programs parsed (a bad one rejects the config), metric
//! rules indexed by metric. Evaluation is `telemetry/custom.rs`.

use std::sync::Arc;

use cel::{Context, Env, Program, Value};
use weft_proto::proxy::v1 as pb;

/// One parsed CEL expression.
pub struct Expr {
    program: Program,
}

impl std::fmt::Debug for Expr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Expr")
    }
}

impl Expr {
    pub fn parse(source: &str) -> Result<Self, String> {
        Program::compile(source)
            .map(|program| Self { program })
            .map_err(|errors| errors.to_string().trim().replace('\n', "; "))
    }

    /// The top-level variables the expression reads.
    fn variables(&self) -> Vec<String> {
        self.program
            .references()
            .variables()
            .into_iter()
            .map(str::to_string)
            .collect()
    }

    pub fn value(&self, context: &Context) -> Option<Value> {
        self.program.execute(context).ok()
    }
}

/// One standard metric's changes on one side.
#[derive(Debug, Default)]
pub struct MetricRule {
    pub disabled: bool,
    /// In order: `None` removes the label, `Some` sets it.
    pub tags: Vec<(String, Option<Expr>)>,
}

/// The standard metrics, in `pb::StandardMetric` order (index = number - 1).
pub const METRICS: usize = 10;

/// The attribute roots an expression may read, as a bit set, so that an
/// evaluation builds only those its side's expressions name.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Wanted(u16);

impl Wanted {
    pub const ROOTS: [&'static str; 10] = [
        "request",
        "response",
        "source",
        "destination",
        "upstream",
        "connection",
        "downstream_peer",
        "upstream_peer",
        "route_name",
        "cluster_name",
    ];

    fn add(&mut self, expr: &Expr) {
        for variable in expr.variables() {
            if let Some(bit) = Self::ROOTS.iter().position(|root| *root == variable) {
                self.0 |= 1 << bit;
            }
        }
    }

    pub fn wants(self, root: &str) -> bool {
        Self::ROOTS
            .iter()
            .position(|r| *r == root)
            .is_some_and(|bit| self.0 & (1 << bit) != 0)
    }
}

#[derive(Debug, Default)]
pub struct Side {
    /// What this side's expressions read.
    pub wanted: Wanted,
    /// `None` for a metric nothing changes.
    pub metrics: [Option<MetricRule>; METRICS],
    pub log_disabled: bool,
    pub log_filter: Option<Expr>,
}

impl Side {
    /// Whether a request on this side needs its attributes (headers,
    /// method, path) kept from its start.
    pub fn needs_facts(&self) -> bool {
        self.wanted.wants("request")
    }

    /// Whether requests on this side take the customised path at all.
    pub fn is_custom(&self) -> bool {
        self.changes_metrics() || self.log_disabled || self.log_filter.is_some()
    }

    /// Whether any metric of this side is changed.
    pub fn changes_metrics(&self) -> bool {
        self.metrics.iter().any(Option::is_some)
    }

    pub fn rule(&self, metric: pb::StandardMetric) -> Option<&MetricRule> {
        let index = (metric as usize).checked_sub(1)?;
        self.metrics.get(index)?.as_ref()
    }

    fn compile(
        metrics: Option<&pb::MetricOverrides>,
        log: Option<&pb::AccessLogSide>,
    ) -> Result<Self, String> {
        let mut side = Side::default();
        for metric in metrics.map(|m| m.metrics.as_slice()).unwrap_or_default() {
            let Some(slot) = (metric.metric as usize)
                .checked_sub(1)
                .and_then(|i| side.metrics.get_mut(i))
            else {
                return Err(format!("unknown standard metric {}", metric.metric));
            };
            let mut tags = Vec::with_capacity(metric.tags.len());
            for tag in &metric.tags {
                let value = if tag.remove {
                    None
                } else {
                    Some(
                        Expr::parse(&tag.value)
                            .map_err(|e| format!("tag {} value {:?}: {e}", tag.name, tag.value))?,
                    )
                };
                tags.push((tag.name.clone(), value));
            }
            for expr in tags.iter().filter_map(|(_, e)| e.as_ref()) {
                side.wanted.add(expr);
            }
            *slot = Some(MetricRule {
                disabled: metric.disabled,
                tags,
            });
        }
        if let Some(log) = log {
            side.log_disabled = log.disabled;
            if !log.filter.is_empty() {
                let expr = Expr::parse(&log.filter)
                    .map_err(|e| format!("access-log filter {:?}: {e}", log.filter))?;
                side.wanted.add(&expr);
                side.log_filter = Some(expr);
            }
        }
        Ok(side)
    }
}

/// Both sides; the default changes nothing.
#[derive(Default)]
pub struct Custom {
    pub client: Side,
    pub server: Side,
    /// CEL's standard library, built once: making it per evaluation cost
    /// more than the rest of the request.
    pub env: Arc<Env>,
    /// Where access-log records go, formats parsed (shared: the proxy keeps
    /// the destinations it opened for it while a snapshot uses them).
    pub access_logs: Arc<super::access_logs::AccessLogs>,
}

impl std::fmt::Debug for Custom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Custom")
            .field("client", &self.client)
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

impl Custom {
    /// Compiles the pushed settings; a bad expression rejects the config.
    pub fn compile(telemetry: Option<&pb::Telemetry>) -> Result<Self, String> {
        let Some(t) = telemetry else {
            return Ok(Self::default());
        };
        Ok(Self {
            access_logs: Arc::new(super::access_logs::AccessLogs::compile(Some(t))?),
            env: Arc::new(Env::stdlib()),
            client: Side::compile(t.client_metrics.as_ref(), t.client_access_log.as_ref())
                .map_err(|e| format!("telemetry.client: {e}"))?,
            server: Side::compile(t.server_metrics.as_ref(), t.server_access_log.as_ref())
                .map_err(|e| format!("telemetry.server: {e}"))?,
        })
    }

    /// The outbound (CLIENT) side when `client`, else the inbound one.
    pub fn side(&self, client: bool) -> &Side {
        if client { &self.client } else { &self.server }
    }

    /// Whether two pushed settings give the metric families the same label
    /// sets (else the families are reset, see `Metrics::reset_standard`).
    pub fn same_metrics(a: Option<&pb::Telemetry>, b: Option<&pb::Telemetry>) -> bool {
        let metrics = |t: Option<&pb::Telemetry>| {
            t.map(|t| (t.client_metrics.clone(), t.server_metrics.clone()))
        };
        metrics(a).unwrap_or_default() == metrics(b).unwrap_or_default()
    }
}
