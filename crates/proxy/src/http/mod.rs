//! HTTP proxying: [`server`] is the one hyper server (HTTP/1.1 with
//! upgrades, HTTP/2) for every listener and for mesh mTLS; each request it
//! reads goes through [`pipeline::handle`], which runs the phases in order,
//! one module each:
//!
//! 1. [`entry`]: absolute-form target, mesh-only headers, [`normalize`]d
//!    path, the gateway's XFF;
//! 2. `policy`: the workload's (inbound) or the gateway's JWT rules and
//!    AuthorizationPolicy (`crate::policy`);
//! 3. [`route`]: service, route and cluster, or NR, or the route's own
//!    redirect or direct response (built by [`rewrite`]);
//!    then `ratelimit`: local token buckets and the global rate-limit
//!    service (429 RL, 500 RLSE);
//! 4. [`cors`]: allowed preflights answered;
//! 5. [`rewrite`]: path/authority rewrites, request header operations;
//! 6. `fault`: delay or abort (DI, FI);
//! 7. [`mirror`]: fire-and-forget copies, responses drained;
//! 8. [`retry`]: tries within the route timeout, each picking an endpoint
//!    (`crate::balance`) and sending through the pool (`crate::upstream`),
//!    from the request head `head` prepared once;
//! 9. `response`: upgrade, hop-by-hop headers, response header operations,
//!    CORS, the hash cookie, the client's version.
//!
//! Every early stop is a [`crate::reply::LocalReply`] (with its response
//! flag) or an answer the phase gives by design.

mod coarse_timer;
pub mod cors;
pub mod entry;
pub(crate) mod ext_authz;
mod fault;
mod head;
pub mod mirror;
pub mod normalize;
pub mod pipeline;
mod policy;
mod ratelimit;
mod response;
pub mod retry;
mod retry_body;
pub mod rewrite;
pub mod route;
pub mod server;

pub use self::retry_body::REPLAY_CAP;

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
    /// The request came over TLS this proxy terminated (gateway HTTPS,
    /// mesh mTLS): `X-Forwarded-Proto: https` where the header is set.
    pub tls: bool,
}
