//! HTTP proxying. One request, top-down (the phases are called in order
//! from [`forward::handle`]):
//!
//! 1. [`server`] is the one hyper server (HTTP/1.1 with upgrades, HTTP/2),
//!    for every listener and for mesh mTLS;
//! 2. [`entry`] makes the request safe to read: absolute-form target,
//!    mesh-only headers, [`normalize`]d path, the gateway's XFF;
//! 3. inbound policy (`authz`, `jwt`) on the normalized request;
//! 4. [`route`] resolves it to a service, route and cluster (or a local
//!    reply: NR; or the route's own redirect or direct response, built by
//!    [`rewrite`]); [`cors`] answers allowed preflights;
//! 5. [`rewrite`] applies the route's path/authority rewrites and request
//!    header operations; `fault` injects delay or abort (DI, FI);
//!    [`mirror`] sends fire-and-forget copies;
//! 6. [`retry`] tries the cluster's endpoints (UH, UF, UT, URX) within the
//!    route timeout, which also bounds the response body; the response
//!    streams back with the route's response header operations;
//! 7. [`reply`] is the one data-path error and the reply it becomes.

pub mod cors;
pub mod entry;
mod fault;
mod head;
pub mod mirror;
pub mod normalize;
pub mod pipeline;
mod policy;
mod response;
pub mod retry;
pub mod rewrite;
pub mod route;
pub mod server;

use self::entry::Trust;
use self::route::Target;
use crate::telemetry::Downstream;
use crate::telemetry::metrics::Reporter;
use crate::upstream::HttpVersion;

/// What the server knows about the downstream connection.
pub struct HttpConn {
    pub target: Target,
    pub reporter: Reporter,
    pub version: HttpVersion,
    /// The downstream peer's IP (consistent hashing by source IP).
    pub peer: Option<std::net::IpAddr>,
    /// Addresses and proven identity, for telemetry.
    pub downstream: Downstream,
    /// Whether the caller is a mesh peer proven by mTLS.
    pub trust: Trust,
}
