//! A cluster's policies as plain data, compiled from the DestinationRule
//! parts of the proto: connection-pool limits, outlier detection and load
//! balancing. The runtime that enforces them (counters, ejections, the
//! balancer's tables and in-flight counts) is `balance/`, built from these.

use std::time::Duration;

/// How a cluster balances: the policy, the consistent hash if any, and
/// slow start.
#[derive(Debug, Clone, PartialEq)]
pub struct Balancing {
    pub policy: Policy,
    pub hash: Option<(HashKey, Algorithm)>,
    pub warmup: Option<Warmup>,
}

impl Default for Balancing {
    /// For built-in clusters of one endpoint or none: the policy is moot.
    fn default() -> Self {
        Self {
            policy: Policy::RoundRobin,
            hash: None,
            warmup: None,
        }
    }
}

/// Istio's `ringHash.minimumRingSize` default.
pub const DEFAULT_RING_SIZE: u64 = 1024;
/// Istio's `maglev.tableSize` default (a prime).
pub const DEFAULT_MAGLEV_SIZE: u64 = 65537;
/// Envoy's ceilings, so a typo cannot allocate gigabytes.
pub const MAX_RING_SIZE: u64 = 8 * 1024 * 1024;
pub const MAX_MAGLEV_SIZE: u64 = 5_000_011;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    RoundRobin,
    LeastRequest,
    Random,
    Passthrough,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    /// Lower-cased header name.
    Header(String),
    Cookie {
        name: String,
        path: String,
        ttl: Duration,
    },
    SourceIp,
    QueryParameter(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Ring { minimum_size: u64 },
    Maglev { table_size: u64 },
}

/// Slow start (DestinationRule `loadBalancer.warmup`), as Envoy does it: a
/// new endpoint's weight is scaled by `max(minimum, (age / duration) ^
/// (1 / aggression))` until it is `duration` old.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Warmup {
    pub duration: Duration,
    /// 0..1.
    pub minimum: f64,
    pub aggression: f64,
}

/// Istio's `connectionPool.{tcp,http}.idleTimeout` default.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);

/// A cluster's limits; 0 means no limit for every count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub max_connections: u32,
    pub max_pending_requests: u32,
    pub max_requests: u32,
    /// An HTTP/1 connection is not reused after this many requests.
    pub max_requests_per_connection: u32,
    pub max_retries: u32,
    /// Pooled HTTP/1 connections idle longer than this are closed.
    pub idle_timeout: Duration,
    pub tcp_keepalive: Option<Keepalive>,
    /// Connections older than this take no new requests and are closed
    /// once those in flight finish (`upstream/aging.rs`).
    pub max_connection_duration: Option<Duration>,
    /// HTTP/2: streams per upstream connection before another is opened;
    /// 0: one shared connection per endpoint (the server's limit applies).
    pub max_concurrent_streams: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 0,
            max_pending_requests: 0,
            max_requests: 0,
            max_requests_per_connection: 0,
            max_retries: 0,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            tcp_keepalive: None,
            max_connection_duration: None,
            max_concurrent_streams: 0,
        }
    }
}

/// TCP keepalive for upstream sockets; `None` fields keep the OS default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Keepalive {
    pub probes: Option<u32>,
    pub time: Option<Duration>,
    pub interval: Option<Duration>,
}

/// Istio's `outlierDetection.interval` default.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
/// Istio's `outlierDetection.baseEjectionTime` default.
pub const DEFAULT_BASE_EJECTION_TIME: Duration = Duration::from_secs(30);
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutlierPolicy {
    /// 0 disables each counter.
    pub consecutive_5xx: u32,
    pub consecutive_gateway: u32,
    /// Kept for config dumps: ejections end lazily, at pick time.
    pub interval: Duration,
    pub base_ejection_time: Duration,
    pub max_ejection_percent: u32,
    pub min_health_percent: u32,
    /// `splitExternalLocalOriginErrors`: `Some(n)` counts connect failures,
    /// resets and timeouts apart, ejecting after `n` in a row (0: never);
    /// `None`: they count as 503/504.
    pub local_origin: Option<u32>,
}
