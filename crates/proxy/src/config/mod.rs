//! Proxy configuration: a file (YAML or JSON rendering of
//! [`weft_proto::proxy::v1::ProxyConfig`]) is parsed, validated and compiled
//! into a [`Snapshot`], the read-only lookup tables the data path uses.
//!
//! A snapshot is immutable and plain data (compiling is pure); a new
//! config produces a new snapshot that requests pick up as they start, so
//! in-flight requests keep theirs. What changes while it serves (counters,
//! ejections, balancer state) is `crate::balance`, built beside it. One
//! exception: a gateway port's TLS servers ([`GatewayTls`]) re-read their
//! certificate files when they change, so a renewal needs no new config.

pub mod access_logs;
mod authz;
mod cluster;
mod clusters;
pub mod cors;
pub mod dns;
pub mod egress_proxy;
pub mod ext_authz;
mod hardening;
mod load;
pub mod log_format;
pub mod mirror;
mod policies;
pub mod ratelimit;
mod resilience;
mod route;
mod route_match;
mod server_tls;
mod snapshot;
mod tcp_route;
pub mod telemetry;
mod upstream_tls;
pub mod watch;

pub use clusters::{BLACK_HOLE_CLUSTER, PASSTHROUGH_CLUSTER};
pub use hardening::{Hardening, PathNormalization};
pub use load::{ConfigError, parse_config};
pub use policies::{
    Algorithm, Balancing, DEFAULT_BASE_EJECTION_TIME, DEFAULT_IDLE_TIMEOUT, DEFAULT_INTERVAL,
    DEFAULT_MAGLEV_SIZE, DEFAULT_RING_SIZE, HashKey, Keepalive, Limits, MAX_MAGLEV_SIZE,
    MAX_RING_SIZE, OutlierPolicy, Policy, Warmup,
};
pub use resilience::{Fault, FaultAbort, FaultDelay, RetryOn, RetryPolicy};
pub use route::{
    Destination, DirectResponse, Forward, HeaderOps, Redirect, RedirectPort, Rewrite, Route,
    RouteAction,
};
pub use route_match::{PathMatch, RequestView, RouteMatch};
pub use server_tls::{GatewayTls, Terminator};
pub use snapshot::{
    Cluster, Endpoint, InboundPort, ListenerSpec, PortProtocol, Service, ServicePort, Snapshot,
    UpstreamProtocol,
};
pub use tcp_route::{L4Route, Subnet, sni_matches};
pub use upstream_tls::{Origination, UpstreamTls};
