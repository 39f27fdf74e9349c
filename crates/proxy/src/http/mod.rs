//! HTTP proxying. One request, top-down:
//!
//! 1. [`server`] accepts HTTP/1.1 or HTTP/2 on a downstream connection;
//! 2. [`route`] resolves the request to a service, route and cluster (or a
//!    local reply: NR);
//! 3. [`forward`] picks an endpoint (UH), gets a pooled connection (UF),
//!    sends the request within the route timeout (UT) and streams the
//!    response back, bodies, trailers and upgrades included;
//! 4. [`reply`] builds the local replies that name what went wrong.

pub mod forward;
pub mod reply;
pub mod route;
pub mod server;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type on both sides of the proxy: streamed, never buffered whole.
pub type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;
