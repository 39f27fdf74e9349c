//! A cluster's connection-pool limits, outlier detection and load balancer,
//! from [`pb::ConnectionPool`], [`pb::OutlierDetection`] and
//! [`pb::LoadBalancer`].

use weft_proto::proxy::v1 as pb;

use super::policies::{
    Algorithm, Balancing, DEFAULT_BASE_EJECTION_TIME, DEFAULT_INTERVAL, DEFAULT_MAGLEV_SIZE,
    DEFAULT_RING_SIZE, HashKey, Keepalive, Limits, MAX_MAGLEV_SIZE, MAX_RING_SIZE, OutlierPolicy,
    Policy, Warmup,
};
use super::snapshot::{Problems, duration};

/// Unset: no limits (Istio's defaults are all "no limit" too).
pub(super) fn compile_limits(
    pool: Option<&pb::ConnectionPool>,
    path: &str,
    problems: &mut Problems,
) -> Limits {
    let Some(pool) = pool else {
        return Limits::default();
    };
    let defaults = Limits::default();
    let idle_timeout = duration(
        pool.idle_timeout.as_ref(),
        &format!("{path}.idleTimeout"),
        problems,
    )
    .filter(|d| !d.is_zero())
    .unwrap_or(defaults.idle_timeout);
    let tcp_keepalive = pool.tcp_keepalive.as_ref().map(|k| Keepalive {
        probes: (k.probes > 0).then_some(k.probes),
        time: duration(
            k.time.as_ref(),
            &format!("{path}.tcpKeepalive.time"),
            problems,
        )
        .filter(|d| !d.is_zero()),
        interval: duration(
            k.interval.as_ref(),
            &format!("{path}.tcpKeepalive.interval"),
            problems,
        )
        .filter(|d| !d.is_zero()),
    });
    Limits {
        max_connections: pool.max_connections,
        max_pending_requests: pool.max_pending_requests,
        max_requests: pool.max_requests,
        max_requests_per_connection: pool.max_requests_per_connection,
        max_retries: pool.max_retries,
        idle_timeout,
        tcp_keepalive,
        max_connection_duration: duration(
            pool.max_connection_duration.as_ref(),
            &format!("{path}.maxConnectionDuration"),
            problems,
        )
        .filter(|d| !d.is_zero()),
        max_concurrent_streams: pool.max_concurrent_streams,
    }
}

/// Unset: no outlier detection. Unset durations take Istio's defaults.
pub(super) fn compile_outlier(
    outlier: Option<&pb::OutlierDetection>,
    path: &str,
    problems: &mut Problems,
) -> Option<OutlierPolicy> {
    let outlier = outlier?;
    for (name, value) in [
        ("maxEjectionPercent", outlier.max_ejection_percent),
        ("minHealthPercent", outlier.min_health_percent),
    ] {
        if value > 100 {
            problems.push(
                format!("{path}.{name}"),
                format!("must be 0..100, got {value}"),
            );
        }
    }
    let interval = duration(
        outlier.interval.as_ref(),
        &format!("{path}.interval"),
        problems,
    )
    .filter(|d| !d.is_zero())
    .unwrap_or(DEFAULT_INTERVAL);
    let base_ejection_time = duration(
        outlier.base_ejection_time.as_ref(),
        &format!("{path}.baseEjectionTime"),
        problems,
    )
    .filter(|d| !d.is_zero())
    .unwrap_or(DEFAULT_BASE_EJECTION_TIME);
    Some(OutlierPolicy {
        consecutive_5xx: outlier.consecutive_5xx_errors,
        consecutive_gateway: outlier.consecutive_gateway_errors,
        interval,
        base_ejection_time,
        max_ejection_percent: outlier.max_ejection_percent.min(100),
        min_health_percent: outlier.min_health_percent.min(100),
        local_origin: outlier
            .split_external_local_origin_errors
            .then_some(outlier.consecutive_local_origin_failures),
    })
}

/// The balancer's slow start, when `warmup` is set. Which endpoints warm
/// up (those new to the running cluster) is decided when the balancer is
/// built (`balance/`).
fn compile_warmup(
    lb: Option<&pb::LoadBalancer>,
    path: &str,
    problems: &mut Problems,
) -> Option<Warmup> {
    let warmup = lb.and_then(|lb| lb.warmup.as_ref())?;
    let path = format!("{path}.warmup");
    let Some(duration) = duration(
        warmup.duration.as_ref(),
        &format!("{path}.duration"),
        problems,
    ) else {
        problems.push(format!("{path}.duration"), "is required");
        return None;
    };
    if !(0.0..=100.0).contains(&warmup.minimum_percent) {
        problems.push(
            format!("{path}.minimumPercent"),
            format!("must be 0..100, got {}", warmup.minimum_percent),
        );
    }
    if warmup.aggression < 0.0 || warmup.aggression.is_nan() {
        problems.push(format!("{path}.aggression"), "must not be negative");
    }
    let aggression = if warmup.aggression == 0.0 {
        1.0
    } else {
        warmup.aggression
    };
    Some(Warmup {
        duration,
        minimum: (warmup.minimum_percent / 100.0).clamp(0.0, 1.0),
        aggression,
    })
}

/// The loadBalancer block: policy, consistent hash, slow start.
pub(super) fn compile_balancing(
    lb: Option<&pb::LoadBalancer>,
    path: &str,
    problems: &mut Problems,
) -> Balancing {
    let (policy, hash) = compile_balancer(lb, path, problems);
    Balancing {
        policy,
        hash,
        warmup: compile_warmup(lb, path, problems),
    }
}

/// Unset policy: LEAST_REQUEST, Istio's default.
fn compile_balancer(
    lb: Option<&pb::LoadBalancer>,
    path: &str,
    problems: &mut Problems,
) -> (Policy, Option<(HashKey, Algorithm)>) {
    use pb::consistent_hash::{Algorithm as PbAlgorithm, Key};
    let policy = match lb.map(|lb| pb::load_balancer::Policy::try_from(lb.policy)) {
        Some(Ok(pb::load_balancer::Policy::RoundRobin)) => Policy::RoundRobin,
        Some(Ok(pb::load_balancer::Policy::Random)) => Policy::Random,
        Some(Ok(pb::load_balancer::Policy::Passthrough)) => Policy::Passthrough,
        Some(Ok(_)) | None => Policy::LeastRequest,
        Some(Err(_)) => {
            problems.push(format!("{path}.policy"), "unknown load balancing policy");
            Policy::LeastRequest
        }
    };
    let hash = lb
        .and_then(|lb| lb.consistent_hash.as_ref())
        .and_then(|hash| {
            let path = format!("{path}.consistentHash");
            let key = match hash.key.as_ref() {
                Some(Key::HttpHeaderName(name)) if !name.is_empty() => {
                    HashKey::Header(name.to_ascii_lowercase())
                }
                Some(Key::HttpCookie(cookie)) if !cookie.name.is_empty() => HashKey::Cookie {
                    name: cookie.name.clone(),
                    path: cookie.path.clone(),
                    ttl: duration(
                        cookie.ttl.as_ref(),
                        &format!("{path}.httpCookie.ttl"),
                        problems,
                    )
                    .unwrap_or_default(),
                },
                Some(Key::UseSourceIp(true)) => HashKey::SourceIp,
                Some(Key::HttpQueryParameterName(name)) if !name.is_empty() => {
                    HashKey::QueryParameter(name.clone())
                }
                _ => {
                    problems.push(path, "needs one non-empty hash key");
                    return None;
                }
            };
            let algorithm = match hash.algorithm {
                Some(PbAlgorithm::MaglevTableSize(size)) => {
                    let size = if size == 0 { DEFAULT_MAGLEV_SIZE } else { size };
                    if size > MAX_MAGLEV_SIZE || !is_prime(size) {
                        problems.push(
                            format!("{path}.maglevTableSize"),
                            format!("must be a prime up to {MAX_MAGLEV_SIZE}, got {size}"),
                        );
                    }
                    Algorithm::Maglev { table_size: size }
                }
                Some(PbAlgorithm::RingHashMinimumRingSize(size)) if size > 0 => {
                    if size > MAX_RING_SIZE {
                        problems.push(
                            format!("{path}.ringHashMinimumRingSize"),
                            format!("must be at most {MAX_RING_SIZE}, got {size}"),
                        );
                    }
                    Algorithm::Ring { minimum_size: size }
                }
                _ => Algorithm::Ring {
                    minimum_size: DEFAULT_RING_SIZE,
                },
            };
            Some((key, algorithm))
        });
    (policy, hash)
}

fn is_prime(n: u64) -> bool {
    n >= 2
        && (2..)
            .take_while(|d| d * d <= n)
            .all(|d| !n.is_multiple_of(d))
}

#[cfg(test)]
mod tests {
    use crate::config::{ConfigError, Snapshot, parse_config};

    fn compile(yaml: &str) -> Result<Snapshot, ConfigError> {
        Snapshot::compile(parse_config(yaml, "t.yaml")?, "t.yaml")
    }

    #[test]
    fn limits_and_outlier_detection_compile() {
        let snapshot = compile(
            "
clusters:
- name: c
  endpoints: [{address: 127.0.0.1:1}]
  connectionPool: {maxConnections: 2, maxRequests: 3, idleTimeout: 5s, tcpKeepalive: {probes: 3}, maxConnectionDuration: 7s, maxConcurrentStreams: 8}
  outlierDetection: {consecutive5xxErrors: 4, splitExternalLocalOriginErrors: true, consecutiveLocalOriginFailures: 2}
",
        )
        .expect("valid");
        let cluster = snapshot.cluster("c").expect("cluster");
        let limits = &cluster.limits;
        assert_eq!((limits.max_connections, limits.max_requests), (2, 3));
        assert_eq!(limits.idle_timeout.as_secs(), 5);
        assert_eq!(limits.max_connection_duration.map(|d| d.as_secs()), Some(7));
        assert_eq!(limits.max_concurrent_streams, 8);
        assert_eq!(
            limits.tcp_keepalive.as_ref().and_then(|k| k.probes),
            Some(3)
        );
        let outlier = cluster.outlier.as_ref().expect("outlier detection");
        assert_eq!(outlier.consecutive_5xx, 4);
        assert_eq!(outlier.local_origin, Some(2));
        assert_eq!(outlier.base_ejection_time.as_secs(), 30);
        assert_eq!(outlier.interval.as_secs(), 10);
    }

    #[test]
    fn percentages_are_checked() {
        let err = compile(
            "
clusters:
- name: c
  outlierDetection: {maxEjectionPercent: 101, minHealthPercent: 200}
",
        )
        .err()
        .expect("invalid")
        .to_string();
        assert!(
            err.contains("clusters[0].outlierDetection.maxEjectionPercent: must be 0..100"),
            "{err}"
        );
        assert!(err.contains("minHealthPercent"), "{err}");
    }
}
