//! The rate-limit phase (after routing, so rules can name routes): the
//! local token buckets, then one call to the global rate-limit service with
//! every descriptor the matching rules build.
//!
//! What a user sees, as with Envoy's two filters:
//! - a local bucket empty: 429 with the `RL` flag;
//! - the service answering OVER_LIMIT: 429, `RL`, `x-envoy-ratelimited:
//!   true` and the headers the service asked for;
//! - the service answering OK: its request headers go upstream and its
//!   response headers (`x-ratelimit-remaining`, ...) on the response;
//! - the service failing or slow (past its timeout): the request goes on
//!   (logged at debug), or with `failureModeDeny` 500 with `RLSE`
//!   (Envoy's status and flag for that case).
//!
//! Only requests on inbound ports (sidecar) and gateway listeners are
//! limited; a sidecar's outbound calls are the callee's to limit.

use std::net::IpAddr;
use std::sync::Arc;

use http::{HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use weft_proto::envoy::extensions::common::ratelimit::v3::{
    RateLimitDescriptor, rate_limit_descriptor::Entry as PbEntry,
};

use super::HttpConn;
use super::entry::EXTERNAL_ADDRESS;
use super::route::Target;
use crate::body::ProxyBody;
use crate::config::ratelimit::{Descriptor, RateLimitService, RuleInput, Source};
use crate::flags::{ResponseFlag, ResponseFlags};
use crate::ratelimit::rls::{self, Headers, Verdict};
use crate::reply::LocalReply;
use crate::state::ProxyState;

/// Envoy's header on a reply refused by the global service.
const RATELIMITED: &str = "x-envoy-ratelimited";

/// A refused request's reply and flags.
pub(super) type Refusal = (Response<ProxyBody>, ResponseFlags);

/// The routed request, as rules and descriptors read it.
pub(super) struct Routed<'a> {
    pub route: Option<&'a str>,
    pub host: Option<&'a str>,
    pub service: &'a str,
}

/// Headers the rate-limit service asked to add to the response of an
/// admitted request.
#[derive(Default)]
pub(super) struct ResponseHeaders(Headers);

impl ResponseHeaders {
    pub(super) fn apply(self, response: &mut Response<ProxyBody>) {
        let target = response.headers_mut();
        for (name, value) in self.0 {
            target.append(name, value);
        }
    }
}

/// Checks `request` against this proxy's rate limits; on admission the
/// service's request headers (if any) are added to it, and its response
/// headers returned for the response.
pub(super) async fn check(
    state: &Arc<ProxyState>,
    conn: &HttpConn,
    request: &mut Request<Incoming>,
    routed: Routed<'_>,
) -> Result<ResponseHeaders, Refusal> {
    let port = match conn.target {
        Target::Inbound { port, .. } | Target::Gateway { port } => port,
        Target::Outbound { .. } | Target::Service { .. } => return Ok(ResponseHeaders::default()),
    };
    // Most proxies have no limits: a cheap look before holding the snapshot.
    if state.snapshot().rate_limits.is_empty() {
        return Ok(ResponseHeaders::default());
    }
    let snapshot = state.snapshot_full();
    let limits = &snapshot.rate_limits;
    let input = RuleInput {
        route: routed.route,
        host: routed.host,
        path: request.uri().path(),
        method: request.method(),
        port,
    };
    let mut descriptors = Vec::new();
    for rule in limits.rules.iter().filter(|r| r.matches.matches(&input)) {
        if let Some(spec) = rule.local
            && !state
                .rate_limit_buckets
                .get(&rule.name, spec, |name| {
                    limits.rules.iter().any(|r| r.name == name)
                })
                .try_take()
        {
            let reply = LocalReply::new(
                StatusCode::TOO_MANY_REQUESTS,
                ResponseFlag::RateLimited,
                format!("local rate limit {} exceeded", rule.name),
            );
            return Err((reply.into_response(), ResponseFlag::RateLimited.into()));
        }
        descriptors.extend(
            rule.descriptors
                .iter()
                .filter_map(|d| build(d, request, conn, &routed)),
        );
    }
    let Some(service) = limits.service.as_ref().filter(|_| !descriptors.is_empty()) else {
        return Ok(ResponseHeaders::default());
    };
    match ask(state, service, descriptors).await {
        Ok(Verdict::Admit {
            request: upstream,
            response,
        }) => {
            let target = request.headers_mut();
            for (name, value) in upstream {
                target.insert(name, value);
            }
            Ok(ResponseHeaders(response))
        }
        Ok(Verdict::OverLimit(headers)) => {
            let reply = LocalReply::new(
                StatusCode::TOO_MANY_REQUESTS,
                ResponseFlag::RateLimited,
                "the rate-limit service answered OVER_LIMIT",
            );
            let mut response = reply.into_response();
            let target = response.headers_mut();
            target.insert(RATELIMITED, HeaderValue::from_static("true"));
            for (name, value) in headers {
                target.append(name, value);
            }
            Err((response, ResponseFlag::RateLimited.into()))
        }
        Err(err) if service.failure_mode_deny => {
            let reply = LocalReply::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                ResponseFlag::RateLimitServiceError,
                format!(
                    "rate-limit service (cluster {}) failed and failureModeDeny is set: {err}",
                    service.cluster.name
                ),
            );
            Err((
                reply.into_response(),
                ResponseFlag::RateLimitServiceError.into(),
            ))
        }
        Err(err) => {
            tracing::debug!(
                "rate-limit service (cluster {}) failed, request allowed: {err}",
                service.cluster.name
            );
            Ok(ResponseHeaders::default())
        }
    }
}

/// One call to the service through an endpoint of its cluster.
async fn ask(
    state: &Arc<ProxyState>,
    service: &RateLimitService,
    descriptors: Vec<RateLimitDescriptor>,
) -> Result<Verdict, String> {
    let cluster = &service.cluster;
    let live = state.clusters().live(cluster);
    let addr = live
        .pick_endpoint(cluster)
        .map(|e| e.address)
        .ok_or_else(|| format!("cluster {} has no endpoint", cluster.name))?;
    let target = rls::Target {
        pool: &state.pool,
        breaker: &live.breaker,
        addr,
        tls: state.snapshot().upstream_tls(&cluster.name, addr),
        connect_timeout: cluster.connect_timeout.min(service.timeout),
        authority: None,
    };
    rls::should_rate_limit(target, &service.domain, descriptors, service.timeout).await
}

/// The descriptor `spec` gives for this request; `None` when one of its
/// sources is absent (Envoy then sends no descriptor for the action).
fn build(
    spec: &Descriptor,
    request: &Request<Incoming>,
    conn: &HttpConn,
    routed: &Routed<'_>,
) -> Option<RateLimitDescriptor> {
    let entries = spec
        .entries
        .iter()
        .map(|entry| {
            let value = match &entry.source {
                Source::Literal(value) => value.clone(),
                Source::Header(name) => request.headers().get(name)?.to_str().ok()?.to_string(),
                Source::Path => request.uri().path().to_string(),
                Source::Method => request.method().as_str().to_string(),
                Source::SourceAddress => client_ip(request, conn)?.to_string(),
                Source::SourcePrincipal => conn.downstream.principal.as_deref()?.to_string(),
                Source::DestinationService => {
                    Some(routed.service).filter(|s| !s.is_empty())?.to_string()
                }
            };
            Some(PbEntry {
                key: entry.key.clone(),
                value,
            })
        })
        .collect::<Option<Vec<_>>>()?;
    Some(RateLimitDescriptor { entries })
}

/// The client: at a gateway the address entry picked (after
/// numTrustedProxies), else the peer.
fn client_ip(request: &Request<Incoming>, conn: &HttpConn) -> Option<IpAddr> {
    request
        .headers()
        .get(EXTERNAL_ADDRESS)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
        .or(conn.peer)
}
