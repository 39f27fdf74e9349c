//! Sending a request upstream under the route's retry policy (Istio's
//! `retries`, Envoy's semantics): up to `attempts + 1` tries, all within the
//! route timeout, each within `per_try_timeout`; a retry waits a jittered,
//! growing backoff and prefers an endpoint not tried yet (Istio's
//! `previous_hosts` predicate).
//!
//! A retry must resend the request body, so the body is read through
//! `retry_body::Replay`, which keeps what it forwarded up to `REPLAY_CAP`. A try may
//! be repeated when its body was not read at all (a connect failure) or was
//! read whole within the cap; a larger or still-streaming body is never
//! replayed.
//!
//! The body arrives as a [`ProxyBody`] rather than hyper's `Incoming` so the
//! caller may wrap it (the mirror's tee copies it on the way through).
//!
//! Circuit breaking: each request holds one of the cluster's maxRequests
//! until its response body ends, each retry one of its maxRetries until the
//! retry's try ends; every try's result feeds outlier detection.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use http::{HeaderMap, Response, StatusCode};

use super::fault;
use super::head::UpstreamHead;
use super::retry_body::{Replay, WithinRouteTimeout, hold};
use crate::balance::Live;
use crate::body::ProxyBody;
use crate::config::{Cluster, RetryPolicy};
use crate::flags::{ResponseFlag, ResponseFlags};
use crate::reply::LocalReply;
use crate::state::ProxyState;
use crate::telemetry::request::UpstreamHost;
use crate::upstream::{HttpVersion, Resource, Slot, TryResult, UpstreamError};

/// Envoy's backoff ceiling: ten times the base.
const MAX_BACKOFF_FACTOR: u32 = 10;
/// Tries after which retryRemoteLocalities leaves out the localities
/// tried (Istio's `update_frequency`).
const REMOTE_UPDATE_FREQUENCY: usize = 2;

/// How many picks to spend looking for an endpoint not tried yet.
const HOST_SELECTION_ATTEMPTS: usize = 5;

/// One downstream request on its way to a cluster.
pub(super) struct Exchange<'a> {
    pub state: &'a ProxyState,
    pub cluster: &'a Cluster,
    /// The cluster's runtime: limits, outlier detection, balancer.
    pub live: &'a Live,
    pub version: HttpVersion,
    pub head: UpstreamHead,
    /// The route timeout: bounds every try and backoff together.
    pub timeout: Option<Duration>,
    /// `None` (or an upgrade): one try.
    pub policy: Option<&'a RetryPolicy>,
    /// The request's consistent-hash key, when the cluster hashes.
    pub hash: Option<u64>,
    /// Where a captured client connected (for PASSTHROUGH balancing).
    pub original_dst: Option<SocketAddr>,
}

/// The upstream's response with the flags to record for it (URX when it is
/// the last of several failed tries), or the local reply to send instead.
pub(super) type Sent = Result<(Response<ProxyBody>, ResponseFlags), LocalReply>;

pub(super) async fn send(exchange: Exchange<'_>, body: ProxyBody) -> Sent {
    let tries = tries(&exchange, body);
    let Some(timeout) = exchange.timeout else {
        return tries.await;
    };
    // One timer entry bounds the wait for the response and then its body
    // (a second one for the body would be a second registration in the
    // timer wheel, which can cost a wake-up syscall: bench/syscalls).
    let mut expiry = Box::pin(tokio::time::sleep(timeout));
    let sent = tokio::select! {
        // The response first when both are ready, as tokio::time::timeout.
        biased;
        sent = tries => sent,
        () = expiry.as_mut() => {
            return Err(LocalReply::new(
                StatusCode::GATEWAY_TIMEOUT,
                ResponseFlag::UpstreamRequestTimeout,
                format!(
                    "cluster {:?} did not answer within {timeout:?} (the route timeout)",
                    exchange.cluster.name
                ),
            ));
        }
    };
    match sent {
        // The route timeout covers the whole response, as Envoy's: the
        // body is cut when it passes. (An upgrade is a connection, not
        // a response, and is not cut.)
        Ok((response, flags)) if response.status() != StatusCode::SWITCHING_PROTOCOLS => {
            let response = response.map(|inner| {
                ProxyBody::new(WithinRouteTimeout {
                    inner,
                    expiry,
                    timeout,
                })
            });
            Ok((response, flags))
        }
        sent => sent,
    }
}

enum Outcome {
    Response(Response<ProxyBody>),
    Failed(UpstreamError),
    TimedOut(Duration),
}

async fn tries(exchange: &Exchange<'_>, body: ProxyBody) -> Sent {
    let cluster = exchange.cluster;
    // Held until the response body ends (or the request is dropped).
    let in_flight = exchange
        .live
        .breaker
        .acquire(Resource::Request)
        .map_err(|full| {
            LocalReply::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ResponseFlag::UpstreamOverflow,
                full.to_string(),
            )
        })?;
    let Some(policy) = exchange.policy else {
        let addr = pick(exchange, &[]).ok_or_else(|| no_endpoint(cluster))?;
        return match one_try(exchange, addr, body, None).await {
            Outcome::Response(response) => {
                Ok((hold(response, in_flight), ResponseFlags::default()))
            }
            other => Err(failure(cluster, addr, other)),
        };
    };
    let replay = Replay::new(body);
    let mut tried = Vec::new();
    let mut attempt = 0;
    // The retry in progress, counted against the cluster's maxRetries.
    let mut _retrying: Option<Slot> = None;
    loop {
        let addr = pick(exchange, &tried).ok_or_else(|| no_endpoint(cluster))?;
        tried.push(addr);
        let outcome = one_try(exchange, addr, replay.body(), policy.per_try_timeout).await;
        let retriable = should_retry(policy, &outcome);
        let mut overflowed = false;
        if retriable && attempt < policy.attempts && replay.can_replay() {
            match exchange.live.breaker.acquire(Resource::Retry) {
                Ok(slot) => {
                    tracing::debug!(%addr, attempt, "retrying request to cluster {:?}", cluster.name);
                    _retrying = Some(slot);
                    // Dropping a failed response closes its stream.
                    drop(outcome);
                    tokio::time::sleep(backoff(policy.backoff, attempt)).await;
                    attempt += 1;
                    continue;
                }
                Err(full) => {
                    // Envoy answers with the last try's result, flagged UO.
                    tracing::debug!(
                        flag = ResponseFlag::UpstreamOverflow.code(),
                        "not retrying: {full}"
                    );
                    overflowed = true;
                }
            }
        }
        let exhausted = retriable && attempt > 0 && attempt == policy.attempts;
        let mut extra = if exhausted {
            ResponseFlags::from(ResponseFlag::UpstreamRetryLimitExceeded)
        } else {
            ResponseFlags::default()
        };
        if overflowed {
            extra = extra.with(ResponseFlag::UpstreamOverflow);
        }
        return match outcome {
            Outcome::Response(response) => Ok((hold(response, in_flight), extra)),
            other => {
                let mut reply = failure(cluster, addr, other);
                reply.extra = reply.extra.union(extra);
                Err(reply)
            }
        };
    }
}

async fn one_try(
    exchange: &Exchange<'_>,
    addr: SocketAddr,
    body: ProxyBody,
    per_try_timeout: Option<Duration>,
) -> Outcome {
    let cluster = exchange.cluster;
    // In flight on `addr` (for LEAST_REQUEST) until the response body ends.
    let load = exchange.live.track(addr);
    let mut request = exchange.head.request(addr, body);
    if !cluster.is_mesh_endpoint(addr) {
        crate::telemetry::peer::strip(request.headers_mut());
    }
    let send = exchange.state.pool.send(
        addr,
        exchange.version,
        &exchange.live.breaker,
        cluster.connect_timeout,
        exchange.state.snapshot().upstream_tls(&cluster.name, addr),
        request,
    );
    let outcome = match per_try_timeout {
        None => send.await,
        Some(limit) => match tokio::time::timeout(limit, send).await {
            Ok(result) => result,
            Err(_) => {
                record(exchange, addr, Some(TryResult::Timeout));
                return Outcome::TimedOut(limit);
            }
        },
    };
    match outcome {
        Ok(response) => {
            record(
                exchange,
                addr,
                Some(TryResult::Status(response.status().as_u16())),
            );
            let mut response = hold(response, load);
            response.extensions_mut().insert(UpstreamHost(addr));
            Outcome::Response(response)
        }
        Err(err) => {
            record(exchange, addr, err.try_result());
            Outcome::Failed(err)
        }
    }
}

/// Feeds one try's result to the cluster's outlier detection.
fn record(exchange: &Exchange<'_>, addr: SocketAddr, result: Option<TryResult>) {
    let (Some(outlier), Some(result)) = (&exchange.live.outlier, result) else {
        return;
    };
    let cluster = exchange.cluster;
    if let Some(time) = outlier.record(addr, result, Instant::now()) {
        exchange.state.metrics.record_ejection(&cluster.name);
        tracing::info!(
            %addr,
            "outlier detection ejected an endpoint of cluster {:?} for {time:?}",
            cluster.name
        );
    }
}

/// An endpoint, preferring one not in `tried` when the cluster has others
/// (a consistent hash walks on to the next distinct entry by itself).
fn pick(exchange: &Exchange<'_>, tried: &[SocketAddr]) -> Option<SocketAddr> {
    let cluster = exchange.cluster;
    // retryRemoteLocalities, as Istio configures Envoy (previous
    // priorities, update frequency 2): every second try, the localities
    // tried so far are left out; the first retry still goes local.
    let elsewhere = match exchange.policy {
        Some(policy) if policy.remote_localities => {
            &tried[..tried.len() / REMOTE_UPDATE_FREQUENCY * REMOTE_UPDATE_FREQUENCY]
        }
        _ => &[],
    };
    let choose = || {
        exchange
            .live
            .choose_in(exchange.hash, exchange.original_dst, tried, elsewhere)
    };
    let mut picked = choose()?;
    let picks = HOST_SELECTION_ATTEMPTS.max(cluster.endpoints.len());
    for _ in 1..picks {
        if !tried.contains(&picked) {
            break;
        }
        picked = choose()?;
    }
    Some(picked)
}

/// Whether `outcome` is a failure the policy retries (Envoy's `retry_on`).
fn should_retry(policy: &RetryPolicy, outcome: &Outcome) -> bool {
    let on = &policy.on;
    match outcome {
        // Envoy counts a per-try timeout and any reset (connect failures
        // included) under 5xx, gateway-error and reset.
        Outcome::TimedOut(_) => on.server_error || on.gateway_error || on.reset,
        // A local limit, not the upstream's answer: never retried.
        Outcome::Failed(UpstreamError::Overflow(_)) => false,
        Outcome::Failed(err) => {
            on.server_error
                || on.gateway_error
                || on.reset
                || (on.connect_failure && err.is_connect_failure())
                || (on.refused_stream && is_refused_stream(err))
        }
        Outcome::Response(response) => {
            let status = response.status();
            let code = status.as_u16();
            (on.server_error && status.is_server_error())
                || (on.gateway_error && matches!(code, 502..=504))
                || (on.retriable_4xx && code == 409)
                || (on.status_codes && policy.status_codes.contains(&status))
                || grpc_retriable(policy, response.headers())
        }
    }
}

/// gRPC conditions read `grpc-status` from the response headers, where a
/// trailers-only response (the usual form of a failed call) puts it.
fn grpc_retriable(policy: &RetryPolicy, headers: &HeaderMap) -> bool {
    let Some(code) = headers
        .get(crate::reply::GRPC_STATUS)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u32>().ok())
    else {
        return false;
    };
    let on = &policy.on;
    match code {
        1 => on.grpc_cancelled,
        4 => on.grpc_deadline_exceeded,
        8 => on.grpc_resource_exhausted,
        13 => on.grpc_internal,
        14 => on.grpc_unavailable,
        _ => false,
    }
}

/// HTTP/2 REFUSED_STREAM: the upstream guarantees it did not process the
/// request. hyper does not expose the reset reason, so this reads h2's
/// description of it from the error chain.
fn is_refused_stream(err: &UpstreamError) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        let text = e.to_string();
        if text.contains("REFUSED_STREAM") || text.contains("refused stream") {
            return true;
        }
        source = e.source();
    }
    false
}

/// Envoy's fully jittered exponential backoff: uniform in
/// [0, base × 2^attempt), capped at 10 × base.
fn backoff(base: Duration, attempt: u32) -> Duration {
    let ceiling = base
        .saturating_mul(1u32 << attempt.min(16))
        .min(base.saturating_mul(MAX_BACKOFF_FACTOR));
    ceiling.mul_f64(fault::random_fraction())
}

fn no_endpoint(cluster: &Cluster) -> LocalReply {
    let why = if cluster.endpoints.is_empty() {
        format!("has no endpoints{}", cluster.unresolved_reason())
    } else {
        format!(
            "has all {} endpoints ejected by outlier detection",
            cluster.endpoints.len()
        )
    };
    LocalReply::new(
        StatusCode::SERVICE_UNAVAILABLE,
        ResponseFlag::NoHealthyUpstream,
        format!("no healthy upstream: cluster {:?} {why}", cluster.name),
    )
}

/// The local reply for a try that got no response.
fn failure(cluster: &Cluster, addr: SocketAddr, outcome: Outcome) -> LocalReply {
    let name = &cluster.name;
    match outcome {
        Outcome::Failed(err) => err.into_reply(name),
        Outcome::TimedOut(limit) => LocalReply::new(
            StatusCode::GATEWAY_TIMEOUT,
            ResponseFlag::UpstreamRequestTimeout,
            format!("upstream {addr} of cluster {name:?} did not answer within {limit:?}"),
        ),
        // Not reached: responses are passed through; kept total for safety.
        Outcome::Response(response) => LocalReply::new(
            response.status(),
            ResponseFlag::UpstreamConnectionTermination,
            format!("upstream {addr} of cluster {name:?} failed"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_jittered_below_a_growing_ceiling() {
        let base = Duration::from_millis(25);
        for attempt in 0..20 {
            let wait = backoff(base, attempt);
            let ceiling = (base * (1u32 << attempt.min(16))).min(base * 10);
            assert!(wait < ceiling.max(Duration::from_nanos(1)), "{wait:?}");
        }
    }
}
