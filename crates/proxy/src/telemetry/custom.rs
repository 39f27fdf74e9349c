//! Evaluation of the Telemetry customisation compiled with the snapshot
//! (`config/telemetry.rs`).
//!
//! Per request, nothing here runs unless the side of the proxy the request
//! is on has an override or a filter (`Side::needs_facts`): only then are
//! the request's attributes captured ([`RequestFacts`]) and, at its end,
//! turned into a CEL activation with Envoy's attribute names
//! (`request.host`, `request.headers['x']`, `response.code`,
//! `source.address`, `connection.mtls`, `upstream_peer.app`, ...).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use std::cell::OnceCell;

use cel::{Context, Env, Value};
use http::HeaderMap;

use super::labels::{Call, Labels};
use crate::config::telemetry::{MetricRule, Side, Wanted};
use crate::workload::Workload;

/// What a label gets when its expression fails (Istio's behaviour).
const UNKNOWN: &str = "unknown";

/// A request's attributes, kept from its start only when a side needs
/// them.
#[derive(Debug, Default)]
pub struct RequestFacts {
    pub method: String,
    /// Path and query as received.
    pub path: String,
    pub host: String,
    pub scheme: String,
    pub protocol: &'static str,
    /// Shared with the access-log record when its format reads headers.
    pub headers: std::sync::Arc<HeaderMap>,
}

/// Everything an expression may read about one finished request or TCP
/// connection.
pub struct Facts<'a> {
    /// The snapshot's CEL environment (`Custom::env`).
    pub env: &'a Arc<Env>,
    /// The attribute roots the side's expressions read; only those are built.
    pub wanted: Wanted,
    pub request: Option<&'a RequestFacts>,
    pub labels: &'a Labels,
    pub duration_ms: u64,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub downstream_local: Option<SocketAddr>,
    pub downstream_remote: Option<SocketAddr>,
    pub upstream_host: Option<SocketAddr>,
    pub route_name: Option<&'a str>,
    pub cluster_name: Option<&'a str>,
    /// Built on first use, then shared by every expression of the request.
    pub context: OnceCell<Context<'static, 'static>>,
}

fn string(value: &str) -> Value {
    Value::String(Arc::new(value.to_string()))
}

fn map(entries: Vec<(&str, Value)>) -> Value {
    let map: HashMap<String, Value> = entries
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    map.into()
}

fn address(addr: Option<SocketAddr>) -> Value {
    match addr {
        Some(addr) => map(vec![
            ("address", string(&addr.to_string())),
            ("port", Value::Int(i64::from(addr.port()))),
        ]),
        None => map(Vec::new()),
    }
}

fn peer(workload: &Workload) -> Value {
    let mut entries = Vec::new();
    let fields = [
        ("workload", &workload.name),
        ("name", &workload.name),
        ("namespace", &workload.namespace),
        ("app", &workload.app),
        ("version", &workload.version),
        ("service", &workload.canonical_service),
        ("revision", &workload.canonical_revision),
        ("cluster", &workload.cluster),
    ];
    for (key, value) in fields {
        if let Some(value) = value {
            entries.push((key, string(value)));
        }
    }
    map(entries)
}

impl Facts<'_> {
    /// The CEL activation: Envoy's attribute names.
    fn context(&self) -> &Context<'static, 'static> {
        self.context.get_or_init(|| self.build_context())
    }

    fn build_context(&self) -> Context<'static, 'static> {
        let mut context = Context::with_env(self.env.clone());
        let wants = |root| self.wanted.wants(root);
        if let Some(request) = self.request.filter(|_| wants("request")) {
            let headers: HashMap<String, Value> = request
                .headers
                .iter()
                .filter_map(|(name, value)| {
                    Some((name.as_str().to_string(), string(value.to_str().ok()?)))
                })
                .collect();
            let (url_path, query) = request
                .path
                .split_once('?')
                .unwrap_or((request.path.as_str(), ""));
            let header = |name: &str| {
                request
                    .headers
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(string)
            };
            let mut entries = vec![
                ("method", string(&request.method)),
                ("path", string(&request.path)),
                ("url_path", string(url_path)),
                ("query", string(query)),
                ("host", string(&request.host)),
                ("scheme", string(&request.scheme)),
                ("protocol", string(request.protocol)),
                ("headers", headers.into()),
                ("size", Value::Int(self.bytes_received as i64)),
                ("total_size", Value::Int(self.bytes_received as i64)),
                ("duration_ms", Value::Int(self.duration_ms as i64)),
            ];
            for (key, name) in [
                ("useragent", "user-agent"),
                ("id", "x-request-id"),
                ("referer", "referer"),
            ] {
                if let Some(value) = header(name) {
                    entries.push((key, value));
                }
            }
            context.add_variable_from_value("request", map(entries));
        }
        let labels = self.labels;
        if let Call::Http {
            response_code,
            grpc_status,
            ..
        } = labels.call
            && wants("response")
        {
            let mut entries = vec![
                ("code", Value::Int(i64::from(response_code))),
                (
                    "code_details",
                    string(if self.upstream_host.is_some() {
                        "via_upstream"
                    } else {
                        "local_reply"
                    }),
                ),
                ("flags", string(&labels.response_flags.codes())),
                ("size", Value::Int(self.bytes_sent as i64)),
                ("total_size", Value::Int(self.bytes_sent as i64)),
            ];
            if let Some(status) = grpc_status {
                entries.push(("grpc_status", Value::Int(i64::from(status))));
            }
            context.add_variable_from_value("response", map(entries));
        }
        for (root, addr) in [
            ("source", self.downstream_remote),
            ("destination", self.downstream_local),
            ("upstream", self.upstream_host),
        ] {
            if wants(root) {
                context.add_variable_from_value(root, address(addr));
            }
        }
        if wants("connection") {
            let mut connection = vec![("mtls", Value::Bool(labels.mutual_tls))];
            if let Some(principal) = &labels.source_principal {
                connection.push(("uri_san_peer_certificate", string(principal)));
            }
            context.add_variable_from_value("connection", map(connection));
        }
        // The caller and the callee as the labels know them (Istio's peer
        // metadata views).
        if wants("downstream_peer") {
            context.add_variable_from_value("downstream_peer", peer(&labels.source));
        }
        if wants("upstream_peer") {
            context.add_variable_from_value("upstream_peer", peer(&labels.destination));
        }
        if let Some(route) = self.route_name.filter(|_| wants("route_name")) {
            context.add_variable_from_value("route_name", string(route));
        }
        if let Some(cluster) = self.cluster_name.filter(|_| wants("cluster_name")) {
            context.add_variable_from_value("cluster_name", string(cluster));
        }
        context
    }

    /// Whether a finished request (connection) is logged on this side.
    pub fn logs(&self, side: &Side) -> bool {
        if side.log_disabled {
            return false;
        }
        match &side.log_filter {
            None => true,
            // An error counts as false, as Envoy's CEL filter does.
            Some(expr) => matches!(expr.value(self.context()), Some(Value::Bool(true))),
        }
    }

    /// The label values of `rule`'s upserts for this request, in order;
    /// `unknown` where an expression fails or gives no printable value.
    pub fn tag_values(&self, rule: &MetricRule) -> Vec<(String, Option<String>)> {
        let context = self.context();
        rule.tags
            .iter()
            .map(|(name, expr)| {
                let value = expr.as_ref().map(|expr| match expr.value(context) {
                    Some(Value::String(s)) => s.to_string(),
                    Some(Value::Int(i)) => i.to_string(),
                    Some(Value::UInt(u)) => u.to_string(),
                    Some(Value::Float(f)) => f.to_string(),
                    Some(Value::Bool(b)) => b.to_string(),
                    _ => UNKNOWN.to_string(),
                });
                (name.clone(), value)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use weft_proto::proxy::v1 as pb;

    use super::*;
    use crate::config::telemetry::Custom;
    use crate::flags::ResponseFlags;
    use crate::telemetry::metrics::Reporter;

    fn labels(code: u16) -> Labels {
        let mut web = Workload::unknown();
        web.name = Some("web-v1".into());
        web.app = Some("web".into());
        let web = Arc::new(web.sealed());
        Labels {
            reporter: Reporter::Source,
            source: web,
            source_principal: None,
            destination: Arc::new(Workload::unknown()),
            destination_principal: None,
            destination_service: "reviews.shop.svc.cluster.local".into(),
            call: Call::Http {
                grpc: false,
                response_code: code,
                grpc_status: None,
            },
            response_flags: ResponseFlags::default(),
            mutual_tls: false,
            custom: None,
        }
    }

    fn request() -> RequestFacts {
        let mut headers = HeaderMap::new();
        headers.insert("x-user-tier", "gold".parse().expect("value"));
        headers.insert("debug", "1".parse().expect("value"));
        RequestFacts {
            method: "POST".into(),
            path: "/cart/items?id=7".into(),
            host: "reviews:9080".into(),
            scheme: "http".into(),
            protocol: "HTTP/1.1",
            headers: headers.into(),
        }
    }

    fn facts<'a>(request: &'a RequestFacts, labels: &'a Labels, wanted: Wanted) -> Facts<'a> {
        // Leaked: a test's few bytes, for a `'a` environment.
        let env: &'a Arc<Env> = Box::leak(Box::new(Arc::new(Env::stdlib())));
        Facts {
            env,
            wanted,
            request: Some(request),
            labels,
            duration_ms: 3,
            bytes_received: 10,
            bytes_sent: 20,
            downstream_local: Some("127.0.0.1:15006".parse().expect("addr")),
            downstream_remote: Some("127.0.0.2:40000".parse().expect("addr")),
            upstream_host: None,
            route_name: Some("default"),
            cluster_name: None,
            context: OnceCell::new(),
        }
    }

    fn side(tags: &[(&str, &str)], filter: &str) -> Custom {
        let metrics = pb::MetricOverrides {
            metrics: vec![pb::MetricOverride {
                metric: pb::StandardMetric::RequestCount as i32,
                disabled: false,
                tags: tags
                    .iter()
                    .map(|(name, value)| pb::TagOverride {
                        name: name.to_string(),
                        remove: value.is_empty(),
                        value: value.to_string(),
                    })
                    .collect(),
            }],
        };
        Custom::compile(Some(&pb::Telemetry {
            client_metrics: Some(metrics),
            client_access_log: Some(pb::AccessLogSide {
                disabled: false,
                filter: filter.to_string(),
            }),
            ..Default::default()
        }))
        .expect("compiles")
    }

    /// The expression forms of Istio's docs, over Envoy's attribute names.
    #[test]
    fn expressions_read_envoy_attributes_and_fail_to_unknown() {
        let custom = side(
            &[
                ("tier", "request.headers['x-user-tier']"),
                ("port", "string(destination.port)"),
                ("path", "request.url_path"),
                ("method", "request.method"),
                ("code", "response.code"),
                ("debug", "has(request.headers.debug)"),
                ("literal", "'fixed'"),
                ("caller", "downstream_peer.app"),
                ("missing", "request.headers['x-none']"),
                ("wrong_type", "request.method + 1"),
                ("removed", ""),
            ],
            "response.code >= 400",
        );
        let rule = custom
            .client
            .rule(pb::StandardMetric::RequestCount)
            .expect("rule");
        let request = request();
        let labels = labels(503);
        let values = facts(&request, &labels, custom.client.wanted).tag_values(rule);
        let expected = [
            ("tier", Some("gold")),
            ("port", Some("15006")),
            ("path", Some("/cart/items")),
            ("method", Some("POST")),
            ("code", Some("503")),
            ("debug", Some("true")),
            ("literal", Some("fixed")),
            ("caller", Some("web")),
            ("missing", Some("unknown")),
            ("wrong_type", Some("unknown")),
            ("removed", None),
        ];
        let values: Vec<(&str, Option<&str>)> = values
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_deref()))
            .collect();
        assert_eq!(values, expected);
    }

    #[test]
    fn filters_keep_matching_requests_and_drop_on_errors() {
        let request = request();
        let errors = side(&[], "response.code >= 400");
        let (failed, fine) = (labels(503), labels(200));
        assert!(facts(&request, &failed, errors.client.wanted).logs(&errors.client));
        assert!(!facts(&request, &fine, errors.client.wanted).logs(&errors.client));
        assert!(
            facts(&request, &fine, errors.server.wanted).logs(&errors.server),
            "the server side has no filter"
        );
        // Envoy: an expression that errors does not log.
        let broken = side(&[], "request.headers['x-none'] == 'a'");
        assert!(!facts(&request, &fine, broken.client.wanted).logs(&broken.client));
        // A bad expression rejects the config.
        let bad = Custom::compile(Some(&pb::Telemetry {
            server_access_log: Some(pb::AccessLogSide {
                disabled: false,
                filter: "response.code >=".into(),
            }),
            ..Default::default()
        }));
        assert!(
            bad.is_err_and(|e| e.contains("telemetry.server: access-log filter")),
            "bad filter accepted"
        );
    }
}
