//! DestinationRule `trafficPolicy` (and Sidecar's `connectionPool`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::types::{ClientTlsSettings, ONE_MS, PortSelector, check_percent};
use crate::field::FieldErrors;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrafficPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<LoadBalancerSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_pool: Option<ConnectionPoolSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ClientTlsSettings>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub port_level_settings: Vec<PortTrafficPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel: Option<TunnelSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_protocol: Option<ProxyProtocol>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_budget: Option<RetryBudget>,
}

impl TrafficPolicy {
    pub(crate) fn validate(&self, path: &str, errors: &mut FieldErrors) {
        if let Some(lb) = &self.load_balancer {
            lb.validate(&format!("{path}.loadBalancer"), errors);
        }
        if let Some(pool) = &self.connection_pool {
            pool.validate(&format!("{path}.connectionPool"), errors);
        }
        if let Some(outlier) = &self.outlier_detection {
            outlier.validate(&format!("{path}.outlierDetection"), errors);
        }
        if let Some(tls) = &self.tls {
            tls.validate(&format!("{path}.tls"), errors);
        }
        if self.port_level_settings.len() > 4096 {
            errors.push(
                format!("{path}.portLevelSettings"),
                "Too many: must have at most 4096 items",
            );
        }
        for (i, port) in self.port_level_settings.iter().enumerate() {
            port.validate(&format!("{path}.portLevelSettings[{i}]"), errors);
        }
        if let Some(tunnel) = &self.tunnel {
            let path = format!("{path}.tunnel");
            if !tunnel.protocol.is_empty()
                && tunnel.protocol != "CONNECT"
                && tunnel.protocol != "POST"
            {
                errors.push(
                    format!("{path}.protocol"),
                    "tunnel protocol must be CONNECT or POST",
                );
            }
            if tunnel.target_host.is_empty() {
                errors.push(format!("{path}.targetHost"), "Required value");
            }
            errors.check_port(format!("{path}.targetPort"), tunnel.target_port);
        }
        if let Some(budget) = &self.retry_budget {
            if let Some(percent) = budget.percent {
                check_percent(&format!("{path}.retryBudget.percent"), percent, errors);
            }
            if !budget.budget_interval.is_empty() {
                errors.check_duration(
                    format!("{path}.retryBudget.budgetInterval"),
                    &budget.budget_interval,
                    ONE_MS,
                );
            }
        }
    }
}

/// Per-port policy: no inheritance from the enclosing policy.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortTrafficPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<PortSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<LoadBalancerSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_pool: Option<ConnectionPoolSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ClientTlsSettings>,
}

impl PortTrafficPolicy {
    fn validate(&self, path: &str, errors: &mut FieldErrors) {
        match &self.port {
            Some(port) => errors.check_port(format!("{path}.port.number"), port.number),
            None => errors.push(format!("{path}.port"), "Required value"),
        }
        if let Some(lb) = &self.load_balancer {
            lb.validate(&format!("{path}.loadBalancer"), errors);
        }
        if let Some(pool) = &self.connection_pool {
            pool.validate(&format!("{path}.connectionPool"), errors);
        }
        if let Some(outlier) = &self.outlier_detection {
            outlier.validate(&format!("{path}.outlierDetection"), errors);
        }
        if let Some(tls) = &self.tls {
            tls.validate(&format!("{path}.tls"), errors);
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TunnelSettings {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub protocol: String,
    #[serde(default)]
    pub target_host: String,
    #[serde(default)]
    pub target_port: u32,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProxyProtocolVersion {
    #[default]
    V1,
    V2,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProxyProtocol {
    #[serde(default)]
    pub version: ProxyProtocolVersion,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryBudget {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_retry_concurrency: Option<u32>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub budget_interval: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SimpleLb {
    #[default]
    Unspecified,
    LeastConn,
    Random,
    Passthrough,
    RoundRobin,
    LeastRequest,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoadBalancerSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub simple: Option<SimpleLb>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistent_hash: Option<ConsistentHash>,
    /// Modelled loosely: an Envoy-side feature Weft does not act on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_utilization: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locality_lb_setting: Option<LocalityLbSetting>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone_aware_lb_setting: Option<serde_json::Map<String, serde_json::Value>>,
    /// Deprecated in favour of `warmup`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub warmup_duration_secs: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup: Option<Warmup>,
}

impl LoadBalancerSettings {
    fn validate(&self, path: &str, errors: &mut FieldErrors) {
        let kinds = [
            self.simple.is_some(),
            self.consistent_hash.is_some(),
            self.backend_utilization.is_some(),
        ];
        if kinds.iter().filter(|k| **k).count() > 1 {
            errors.push(
                path,
                "only one of simple, consistentHash or backendUtilization may be set",
            );
        }
        if let Some(hash) = &self.consistent_hash {
            hash.validate(&format!("{path}.consistentHash"), errors);
        }
        if let Some(locality) = &self.locality_lb_setting {
            locality.validate(&format!("{path}.localityLbSetting"), errors);
        }
        if !self.warmup_duration_secs.is_empty() {
            errors.check_duration(
                format!("{path}.warmupDurationSecs"),
                &self.warmup_duration_secs,
                ONE_MS,
            );
        }
        if let Some(warmup) = &self.warmup {
            let path = format!("{path}.warmup");
            if warmup.duration.is_empty() {
                errors.push(format!("{path}.duration"), "Required value");
            } else {
                errors.check_duration(format!("{path}.duration"), &warmup.duration, ONE_MS);
            }
            if warmup
                .minimum_percent
                .is_some_and(|p| !(0.0..=100.0).contains(&p))
            {
                errors.push(
                    format!("{path}.minimumPercent"),
                    "Invalid value: must be between 0 and 100",
                );
            }
            if warmup.aggression.is_some_and(|a| a < 0.0) {
                errors.push(
                    format!("{path}.aggression"),
                    "Invalid value: must be at least 0",
                );
            }
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Warmup {
    #[serde(default)]
    pub duration: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum_percent: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggression: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConsistentHash {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_header_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_cookie: Option<HttpCookie>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_source_ip: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_query_parameter_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ring_hash: Option<RingHash>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maglev: Option<Maglev>,
    /// Deprecated spelling of `ringHash.minimumRingSize`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum_ring_size: Option<u64>,
}

impl ConsistentHash {
    fn validate(&self, path: &str, errors: &mut FieldErrors) {
        let keys = [
            self.http_header_name.is_some(),
            self.http_cookie.is_some(),
            self.use_source_ip.is_some(),
            self.http_query_parameter_name.is_some(),
        ];
        if keys.iter().filter(|k| **k).count() > 1 {
            errors.push(
                path,
                "only one of httpHeaderName, httpCookie, useSourceIp or httpQueryParameterName may be set",
            );
        }
        if self.ring_hash.is_some() && self.maglev.is_some() {
            errors.push(path, "only one of ringHash or maglev may be set");
        }
        if let Some(cookie) = &self.http_cookie {
            if cookie.name.is_empty() {
                errors.push(format!("{path}.httpCookie.name"), "Required value");
            }
            if !cookie.ttl.is_empty() {
                errors.check_duration(format!("{path}.httpCookie.ttl"), &cookie.ttl, None);
            }
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpCookie {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub path: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ttl: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attributes: Vec<CookieAttribute>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CookieAttribute {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub value: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RingHash {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum_ring_size: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Maglev {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table_size: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalityLbSetting {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub distribute: Vec<LocalityDistribute>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failover: Vec<LocalityFailover>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failover_priority: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

impl LocalityLbSetting {
    pub fn validate(&self, path: &str, errors: &mut FieldErrors) {
        if !self.distribute.is_empty() && !self.failover.is_empty() {
            errors.push(
                path,
                "can not simultaneously set 'distribute' and 'failover'",
            );
        }
        for (i, rule) in self.distribute.iter().enumerate() {
            let total: u64 = rule.to.values().map(|w| u64::from(*w)).sum();
            if total != 100 {
                errors.push(
                    format!("{path}.distribute[{i}].to"),
                    "total load balancing weight should be 100",
                );
            }
        }
        for (i, rule) in self.failover.iter().enumerate() {
            if rule.from == rule.to {
                errors.push(
                    format!("{path}.failover[{i}]"),
                    "locality lb failover settings must specify different regions",
                );
            }
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalityDistribute {
    #[serde(default)]
    pub from: String,
    #[serde(default)]
    pub to: BTreeMap<String, u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalityFailover {
    #[serde(default)]
    pub from: String,
    #[serde(default)]
    pub to: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConnectionPoolSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpSettings>,
}

impl ConnectionPoolSettings {
    pub(crate) fn validate(&self, path: &str, errors: &mut FieldErrors) {
        if let Some(tcp) = &self.tcp {
            let path = format!("{path}.tcp");
            non_negative(
                &format!("{path}.maxConnections"),
                tcp.max_connections,
                errors,
            );
            for (name, value) in [
                ("connectTimeout", &tcp.connect_timeout),
                ("maxConnectionDuration", &tcp.max_connection_duration),
            ] {
                if !value.is_empty() {
                    errors.check_duration(format!("{path}.{name}"), value, ONE_MS);
                }
            }
            if !tcp.idle_timeout.is_empty() {
                errors.check_duration(format!("{path}.idleTimeout"), &tcp.idle_timeout, None);
            }
            if let Some(keepalive) = &tcp.tcp_keepalive {
                for (name, value) in [("time", &keepalive.time), ("interval", &keepalive.interval)]
                {
                    if !value.is_empty() {
                        errors.check_duration(format!("{path}.tcpKeepalive.{name}"), value, ONE_MS);
                    }
                }
            }
        }
        if let Some(http) = &self.http {
            let path = format!("{path}.http");
            for (name, value) in [
                ("http1MaxPendingRequests", http.http1_max_pending_requests),
                ("http2MaxRequests", http.http2_max_requests),
                ("maxRequestsPerConnection", http.max_requests_per_connection),
                ("maxRetries", http.max_retries),
                ("maxConcurrentStreams", http.max_concurrent_streams),
            ] {
                non_negative(&format!("{path}.{name}"), value, errors);
            }
            if !http.idle_timeout.is_empty() {
                errors.check_duration(format!("{path}.idleTimeout"), &http.idle_timeout, ONE_MS);
            }
            if let Some(keepalive) = &http.http2_keep_alive {
                for (name, value) in [
                    ("interval", &keepalive.interval),
                    ("timeout", &keepalive.timeout),
                ] {
                    if !value.is_empty() {
                        errors.check_duration(
                            format!("{path}.http2KeepAlive.{name}"),
                            value,
                            ONE_MS,
                        );
                    }
                }
            }
        }
    }
}

fn non_negative(path: &str, value: Option<i32>, errors: &mut FieldErrors) {
    if value.is_some_and(|v| v < 0) {
        errors.push(path, "must be non-negative");
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<i32>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub connect_timeout: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_keepalive: Option<TcpKeepalive>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub max_connection_duration: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub idle_timeout: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpKeepalive {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probes: Option<u32>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub time: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub interval: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum H2UpgradePolicy {
    #[default]
    Default,
    DoNotUpgrade,
    Upgrade,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http1_max_pending_requests: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http2_max_requests: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_requests_per_connection: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<i32>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub idle_timeout: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub h2_upgrade_policy: Option<H2UpgradePolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_client_protocol: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent_streams: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http2_keep_alive: Option<Http2KeepAlive>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Http2KeepAlive {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub interval: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub timeout: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutlierDetection {
    /// Deprecated; kept so old objects still load.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_errors: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split_external_local_origin_errors: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_local_origin_failures: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_gateway_errors: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_5xx_errors: Option<u32>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub interval: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub base_ejection_time: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ejection_percent: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_health_percent: Option<i32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outlier_detection_http_error_codes: Vec<u32>,
}

impl OutlierDetection {
    fn validate(&self, path: &str, errors: &mut FieldErrors) {
        non_negative(
            &format!("{path}.consecutiveErrors"),
            self.consecutive_errors,
            errors,
        );
        for (name, value) in [
            ("interval", &self.interval),
            ("baseEjectionTime", &self.base_ejection_time),
        ] {
            if !value.is_empty() {
                errors.check_duration(format!("{path}.{name}"), value, ONE_MS);
            }
        }
        for (name, value) in [
            ("maxEjectionPercent", self.max_ejection_percent),
            ("minHealthPercent", self.min_health_percent),
        ] {
            if value.is_some_and(|v| !(0..=100).contains(&v)) {
                errors.push(
                    format!("{path}.{name}"),
                    "percentage must be in range 0..100",
                );
            }
        }
        for (i, code) in self.outlier_detection_http_error_codes.iter().enumerate() {
            if !(100..=599).contains(code) {
                errors.push(
                    format!("{path}.outlierDetectionHttpErrorCodes[{i}]"),
                    "must be in range 100..599",
                );
            }
        }
    }
}
