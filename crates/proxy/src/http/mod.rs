//! HTTP proxying. One request, top-down:
//!
//! 1. [`server`] accepts HTTP/1.1 or HTTP/2 on a downstream connection;
//! 2. [`route`] resolves the request to a service, route and cluster (or a
//!    local reply: NR; or the route's own redirect or direct response, built
//!    by [`rewrite`]);
//! 3. [`rewrite`] applies the route's path/authority rewrites and request
//!    header operations;
//! 4. [`forward`] picks an endpoint (UH), gets a pooled connection (UF),
//!    sends the request within the route timeout (UT) and streams the
//!    response back (with the route's response header operations), bodies,
//!    trailers and upgrades included;
//!    [`fault`] first injects the route's delay or abort (DI, FI);
//!    [`retry`] repeats failed tries under the route's retry policy (URX);
//!    [`cors`] answers the route's CORS preflights and marks CORS
//!    responses; [`mirror`] sends fire-and-forget copies to mirror clusters;
//! 5. [`reply`] builds the local replies that name what went wrong.

pub mod cors;
pub mod entry;
mod fault;
pub mod forward;
pub mod mirror;
pub mod normalize;
pub mod reply;
pub mod retry;
pub mod rewrite;
pub mod route;
pub mod server;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type on both sides of the proxy: streamed, never buffered whole.
pub type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;
