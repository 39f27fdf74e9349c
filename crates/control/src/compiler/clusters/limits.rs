//! DestinationRule `connectionPool` and `outlierDetection` → the proxy's
//! [`pb::ConnectionPool`] and [`pb::OutlierDetection`], with Istio's
//! defaults and precedence.
//!
//! Precedence, as Istio merges policies: for each block, the subset's policy
//! wins over the rule's; within one policy, a `portLevelSettings` entry for
//! the cluster's port wins over the top level and replaces the block whole
//! (a port-level block does not inherit: its omitted fields take defaults).

use std::time::Duration;

use weft_api::field::parse_duration;
use weft_api::networking::{
    ConnectionPoolSettings, H2UpgradePolicy, OutlierDetection, TrafficPolicy,
};
use weft_proto::proxy::v1 as pb;

use crate::registry::PortProtocol;

/// Istio's `consecutive5xxErrors` default, when an outlierDetection block is
/// present at all.
const DEFAULT_CONSECUTIVE_5XX: u32 = 5;
const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
const DEFAULT_BASE_EJECTION_TIME: Duration = Duration::from_secs(30);
const DEFAULT_MAX_EJECTION_PERCENT: u32 = 10;
/// Envoy's `consecutive_local_origin_failure` default.
const DEFAULT_CONSECUTIVE_LOCAL_ORIGIN: u32 = 5;

/// The most specific `$field` block: subset before rule, port-level before
/// top level. (A macro, since the port-level type is not exported.)
macro_rules! most_specific {
    ($policies:expr, $port:expr, $field:ident) => {
        $policies.iter().flatten().find_map(|policy| {
            policy
                .port_level_settings
                .iter()
                .filter(|p| p.port.as_ref().is_some_and(|s| s.number == $port))
                .find_map(|p| p.$field.as_ref())
                .or(policy.$field.as_ref())
        })
    };
}

pub(super) use most_specific;

/// A count Istio validated as non-negative; 0 (and unset) is no limit.
fn count(value: Option<i32>) -> u32 {
    value.map_or(0, |v| u32::try_from(v).unwrap_or(0))
}

fn positive(value: &str) -> Option<Duration> {
    parse_duration(value).filter(|d| !d.is_zero())
}

/// The upstream protocol of an HTTP-family port under the connection pool
/// Istio picks for it: `useClientProtocol` keeps the client's HTTP version
/// (it wins over the upgrade policy, as in Istio), `h2UpgradePolicy:
/// UPGRADE` speaks HTTP/2 to HTTP/1.1 ports' endpoints. Istio's mesh-wide
/// default is not to upgrade. Other ports keep `by_port`.
pub(super) fn upstream_protocol(
    policies: &[Option<&TrafficPolicy>],
    port: u32,
    protocol: PortProtocol,
    by_port: pb::UpstreamProtocol,
) -> pb::UpstreamProtocol {
    let http = most_specific!(policies, port, connection_pool).and_then(|p| p.http.as_ref());
    let Some(http) = http else {
        return by_port;
    };
    let http_port = matches!(
        protocol,
        PortProtocol::Http | PortProtocol::Http2 | PortProtocol::Grpc | PortProtocol::GrpcWeb
    );
    if !http_port {
        return by_port;
    }
    if http.use_client_protocol == Some(true) {
        return pb::UpstreamProtocol::UseClientProtocol;
    }
    let upgradable = matches!(protocol, PortProtocol::Http | PortProtocol::GrpcWeb);
    match http.h2_upgrade_policy {
        Some(H2UpgradePolicy::Upgrade) if upgradable => pb::UpstreamProtocol::Http2PriorKnowledge,
        _ => by_port,
    }
}

pub(super) fn connection_pool(
    policies: &[Option<&TrafficPolicy>],
    port: u32,
) -> Option<pb::ConnectionPool> {
    let settings: &ConnectionPoolSettings = most_specific!(policies, port, connection_pool)?;
    Some(pool_of(settings))
}

/// One `connectionPool` block as the proxy's limits (also a Sidecar's
/// `inboundConnectionPool` and `ingress[].connectionPool`).
pub(in crate::compiler) fn pool_of(settings: &ConnectionPoolSettings) -> pb::ConnectionPool {
    let tcp = settings.tcp.as_ref();
    let http = settings.http.as_ref();
    // One idle timeout for pooled upstream connections: the HTTP one, else
    // the TCP one.
    let idle_timeout = http
        .and_then(|h| positive(&h.idle_timeout))
        .or_else(|| tcp.and_then(|t| positive(&t.idle_timeout)))
        .map(Into::into);
    let tcp_keepalive = tcp
        .and_then(|t| t.tcp_keepalive.as_ref())
        .map(|k| pb::TcpKeepalive {
            probes: k.probes.unwrap_or(0),
            time: positive(&k.time).map(Into::into),
            interval: positive(&k.interval).map(Into::into),
        });
    pb::ConnectionPool {
        max_connections: count(tcp.and_then(|t| t.max_connections)),
        max_pending_requests: count(http.and_then(|h| h.http1_max_pending_requests)),
        max_requests: count(http.and_then(|h| h.http2_max_requests)),
        max_requests_per_connection: count(http.and_then(|h| h.max_requests_per_connection)),
        max_retries: count(http.and_then(|h| h.max_retries)),
        idle_timeout,
        tcp_keepalive,
        max_connection_duration: tcp
            .and_then(|t| positive(&t.max_connection_duration))
            .map(Into::into),
        max_concurrent_streams: count(http.and_then(|h| h.max_concurrent_streams)),
    }
}

pub(super) fn outlier_detection(
    policies: &[Option<&TrafficPolicy>],
    port: u32,
) -> Option<pb::OutlierDetection> {
    let outlier: &OutlierDetection = most_specific!(policies, port, outlier_detection)?;
    // Istio maps the deprecated `consecutiveErrors` to gateway errors and
    // then turns the 5xx detector off; the explicit fields win over it.
    let legacy = count(outlier.consecutive_errors);
    let consecutive_5xx_errors = outlier.consecutive_5xx_errors.unwrap_or(if legacy > 0 {
        0
    } else {
        DEFAULT_CONSECUTIVE_5XX
    });
    let consecutive_gateway_errors = outlier.consecutive_gateway_errors.unwrap_or(legacy);
    let split = outlier.split_external_local_origin_errors == Some(true);
    let percent = |value: Option<i32>, default: u32| {
        value.map_or(default, |v| u32::try_from(v.clamp(0, 100)).unwrap_or(0))
    };
    Some(pb::OutlierDetection {
        consecutive_5xx_errors,
        consecutive_gateway_errors,
        interval: Some(
            parse_duration(&outlier.interval)
                .unwrap_or(DEFAULT_INTERVAL)
                .into(),
        ),
        base_ejection_time: Some(
            parse_duration(&outlier.base_ejection_time)
                .unwrap_or(DEFAULT_BASE_EJECTION_TIME)
                .into(),
        ),
        max_ejection_percent: percent(outlier.max_ejection_percent, DEFAULT_MAX_EJECTION_PERCENT),
        min_health_percent: percent(outlier.min_health_percent, 0),
        // Envoy's counter is on (5) whenever the split is; Istio only
        // overrides the count.
        split_external_local_origin_errors: split,
        consecutive_local_origin_failures: if split {
            outlier
                .consecutive_local_origin_failures
                .filter(|n| *n > 0)
                .unwrap_or(DEFAULT_CONSECUTIVE_LOCAL_ORIGIN)
        } else {
            0
        },
    })
}

#[cfg(test)]
mod tests {
    use weft_proto::proxy::v1::{self as pb, ProxyConfig};

    use crate::compiler::tests::{REVIEWS, mesh, workload};

    const HOST: &str = "reviews.shop.svc.cluster.local";

    fn clusters(rule: &str) -> std::collections::BTreeMap<String, pb::Cluster> {
        let yaml = format!(
            "{REVIEWS}---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: reviews, namespace: shop}}
spec:
  host: reviews
{rule}"
        );
        let v2 = workload(
            "reviews-v2",
            "shop",
            "10.0.0.2",
            &[("app", "reviews"), ("version", "v2")],
        );
        let index = mesh(&yaml, &[v2]);
        for cluster in index.clusters.values() {
            let config = ProxyConfig {
                clusters: vec![(**cluster).clone()],
                ..Default::default()
            };
            if let Err(err) = weft_proxy::config::Snapshot::compile(config, "x") {
                panic!("proxy rejects {}: {}", cluster.name, err.message);
            }
        }
        index
            .clusters
            .iter()
            .map(|(name, cluster)| (name.clone(), (**cluster).clone()))
            .collect()
    }

    #[test]
    fn connection_pool_maps_with_subset_and_port_precedence() {
        let clusters = clusters(
            "  trafficPolicy:
    connectionPool:
      tcp: {maxConnections: 7, tcpKeepalive: {probes: 3, time: 60s}, idleTimeout: 20s}
      http: {http1MaxPendingRequests: 2, http2MaxRequests: 9, maxRequestsPerConnection: 1, maxRetries: 4, idleTimeout: 5s}
  subsets:
  - name: v2
    labels: {version: v2}
    trafficPolicy:
      connectionPool: {http: {http2MaxRequests: 1}}
      portLevelSettings:
      - port: {number: 9080}
        connectionPool: {tcp: {maxConnections: 3}}
",
        );
        let all = clusters[&format!("outbound|9080||{HOST}")]
            .connection_pool
            .expect("pool");
        assert_eq!(
            (
                all.max_connections,
                all.max_pending_requests,
                all.max_requests,
                all.max_requests_per_connection,
                all.max_retries
            ),
            (7, 2, 9, 1, 4)
        );
        assert_eq!(all.idle_timeout.map(|d| d.seconds), Some(5));
        let keepalive = all.tcp_keepalive.expect("keepalive");
        assert_eq!(keepalive.probes, 3);
        assert_eq!(keepalive.time.map(|d| d.seconds), Some(60));
        // The subset's port-level block replaces everything: no inheritance.
        let v2 = clusters[&format!("outbound|9080|v2|{HOST}")]
            .connection_pool
            .expect("pool");
        assert_eq!((v2.max_connections, v2.max_requests), (3, 0));
    }

    #[test]
    fn outlier_detection_takes_istio_defaults() {
        let clusters = clusters(
            "  trafficPolicy:
    outlierDetection: {baseEjectionTime: 1m}
  subsets:
  - name: v1
    labels: {version: v1}
  - name: v2
    labels: {version: v2}
    trafficPolicy:
      outlierDetection: {consecutiveErrors: 3, maxEjectionPercent: 50, minHealthPercent: 20}
",
        );
        let top = clusters[&format!("outbound|9080||{HOST}")]
            .outlier_detection
            .expect("outlier detection");
        assert_eq!(top.consecutive_5xx_errors, 5);
        assert_eq!(top.consecutive_gateway_errors, 0);
        assert_eq!(top.base_ejection_time.map(|d| d.seconds), Some(60));
        assert_eq!(top.interval.map(|d| d.seconds), Some(10));
        assert_eq!(top.max_ejection_percent, 10);
        assert_eq!(top.min_health_percent, 0);
        // A subset without its own block inherits the rule's.
        let v1 = &clusters[&format!("outbound|9080|v1|{HOST}")];
        assert_eq!(v1.outlier_detection.as_ref(), Some(&top));
        let v2 = clusters[&format!("outbound|9080|v2|{HOST}")]
            .outlier_detection
            .expect("outlier detection");
        assert_eq!(
            (v2.consecutive_5xx_errors, v2.consecutive_gateway_errors),
            (0, 3)
        );
        assert_eq!((v2.max_ejection_percent, v2.min_health_percent), (50, 20));
        assert_eq!(v2.base_ejection_time.map(|d| d.seconds), Some(30));
    }

    #[test]
    fn connection_duration_streams_and_local_origin_split_map() {
        let clusters = clusters(
            "  trafficPolicy:
    connectionPool:
      tcp: {maxConnectionDuration: 90s}
      http: {maxConcurrentStreams: 4}
    outlierDetection: {splitExternalLocalOriginErrors: true}
  subsets:
  - name: v2
    labels: {version: v2}
    trafficPolicy:
      outlierDetection: {splitExternalLocalOriginErrors: true, consecutiveLocalOriginFailures: 2}
  - name: v1
    labels: {version: v1}
    trafficPolicy:
      outlierDetection: {consecutiveLocalOriginFailures: 2}
",
        );
        let top = &clusters[&format!("outbound|9080||{HOST}")];
        let pool = top.connection_pool.expect("pool");
        assert_eq!(pool.max_connection_duration.map(|d| d.seconds), Some(90));
        assert_eq!(pool.max_concurrent_streams, 4);
        let split = |subset: &str| {
            let outlier = clusters[&format!("outbound|9080|{subset}|{HOST}")]
                .outlier_detection
                .expect("outlier detection");
            (
                outlier.split_external_local_origin_errors,
                outlier.consecutive_local_origin_failures,
            )
        };
        // Envoy's default count when only the split is asked for.
        assert_eq!(split(""), (true, 5));
        assert_eq!(split("v2"), (true, 2));
        // Not split: the count is not consulted.
        assert_eq!(split("v1"), (false, 0));
    }

    #[test]
    fn no_blocks_no_limits() {
        let clusters = clusters("  subsets: [{name: v1, labels: {version: v1}}]\n");
        for cluster in clusters.values() {
            assert!(cluster.connection_pool.is_none());
            assert!(cluster.outlier_detection.is_none());
        }
    }

    #[test]
    fn use_client_protocol_wins_over_an_h2_upgrade_which_applies_to_http1_ports() {
        let clusters = clusters(
            "  trafficPolicy:
    connectionPool: {http: {h2UpgradePolicy: UPGRADE}}
  subsets:
  - name: v2
    labels: {version: v2}
    trafficPolicy:
      connectionPool: {http: {h2UpgradePolicy: UPGRADE, useClientProtocol: true}}
  - name: v1
    labels: {version: v1}
    trafficPolicy:
      connectionPool: {http: {h2UpgradePolicy: DO_NOT_UPGRADE}}
",
        );
        let protocol =
            |subset: &str| clusters[&format!("outbound|9080|{subset}|{HOST}")].upstream_protocol;
        assert_eq!(
            protocol(""),
            pb::UpstreamProtocol::Http2PriorKnowledge as i32
        );
        assert_eq!(
            protocol("v2"),
            pb::UpstreamProtocol::UseClientProtocol as i32
        );
        assert_eq!(protocol("v1"), pb::UpstreamProtocol::Http1 as i32);
    }
}
