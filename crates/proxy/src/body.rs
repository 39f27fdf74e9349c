//! The body type on both sides of the proxy: streamed, never buffered
//! whole. Every module that carries a request or response body (the HTTP
//! phases, telemetry's counters, policy's refusals, the upstream pool)
//! names it from here.

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request or response body as it crosses the proxy.
pub type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;
