//! One HTTP request, top-down: [`handle`] runs the phases in order, each a
//! call into the module that owns it (Pingora's phase chart, in Weft's
//! terms). A phase either hands the request on or stops it with an
//! `Early` answer; nothing else leaves the pipeline.
//!
//! | # | phase          | module        | may stop with                          |
//! |---|----------------|---------------|----------------------------------------|
//! | 1 | entry          | `entry`       | 400 DPE (a target that cannot be normalized) |
//! | 2 | policy         | `policy`      | 401/403 (JWT, AuthorizationPolicy)     |
//! | 3 | route          | `route`       | 404 NR; a redirect or direct response  |
//! | 3b| rate limit     | `ratelimit`   | 429 RL; 500 RLSE (failureModeDeny)     |
//! | 4 | CORS preflight | `cors`        | the preflight's answer                 |
//! | 5 | rewrite        | `rewrite`     | —                                      |
//! | 6 | fault          | `fault`       | the abort (FI); a delay adds DI        |
//! | 7 | mirror         | `mirror`      | — (copies are fire-and-forget)         |
//! | 8 | balance, pool, upstream | `retry` → `balance` → `upstream` | UH, UF, UC, UT, UO, URX |
//! | 9 | response       | `response`    | —                                      |
//!
//! Telemetry is not a phase: the request's record starts after entry (so it
//! reads the request a client may not fake) and ends when the response body
//! does.

use std::convert::Infallible;
use std::sync::Arc;

use http::{Request, Response};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;

use super::HttpConn;
use super::entry;
use super::head::{self, UpstreamHead};
use super::route::{self, Decision};
use super::{cors, fault, mirror, policy, ratelimit, response, retry, rewrite};
use crate::body::ProxyBody;
use crate::flags::{ResponseFlag, ResponseFlags};
use crate::reply::LocalReply;
use crate::state::ProxyState;
use crate::telemetry::request::RequestRecord;
use crate::upstream::HttpVersion;

/// How a request leaves the pipeline before an upstream answers.
enum Early {
    /// Something went wrong: the one data-path error, with its flag.
    Reply(LocalReply),
    /// A phase answered by design (a denial, a redirect, a preflight, an
    /// injected abort), with the flags to record.
    Answer(Response<ProxyBody>, ResponseFlags),
}

impl Early {
    fn answer(response: Response<ProxyBody>) -> Self {
        Self::Answer(response, ResponseFlags::default())
    }
}

/// The hyper service: never fails, every problem becomes a local reply.
pub async fn handle(
    state: Arc<ProxyState>,
    conn: Arc<HttpConn>,
    mut request: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    // 1. Entry, before anything reads the request: what a client may not
    // claim is removed, the target made unambiguous, the path normalized.
    let entered = entry::enter(&mut request, &conn, &state.snapshot().hardening);
    let mut record =
        RequestRecord::start(state.clone(), conn.reporter, &conn.downstream, &mut request);
    let response = match phases(&state, &conn, request, entered, &mut record).await {
        Ok((response, flags)) => record.respond(response, flags),
        Err(Early::Reply(reply)) => record.local_reply(reply),
        Err(Early::Answer(response, flags)) => record.respond(response, flags),
    };
    Ok(response)
}

/// Phases 2 to 9 for a request that passed entry (`entered`: whether the
/// calling app spoke HTTP/1.x, or why the request was refused).
async fn phases(
    state: &Arc<ProxyState>,
    conn: &HttpConn,
    request: Request<Incoming>,
    entered: Result<bool, LocalReply>,
    record: &mut RequestRecord,
) -> Result<(Response<ProxyBody>, ResponseFlags), Early> {
    // The HTTP version the calling app speaks (a mesh peer may carry an
    // HTTP/1.1 app's request over HTTP/2).
    let app_version = match entered.map_err(Early::Reply)? {
        true => HttpVersion::Http1,
        false => conn.version,
    };
    // 2. Policy: the workload's (inbound) or the gateway's JWT rules and
    // policies.
    let (mut request, granted) = policy::check(state, conn, request)
        .await
        .map_err(|(response, flags)| Early::Answer(response, flags))?;
    // 3. Route.
    let mut authority = head::request_authority(&request);
    let downstream_version = request.version();
    let decision = route::decide(
        &state.snapshot(),
        &conn.target,
        authority.as_ref(),
        &request,
    );
    let forwarding = match decision.map_err(Early::Reply)? {
        Decision::Forward(forwarding) => forwarding,
        Decision::Answer { service, response } => {
            record.service = service;
            return Err(Early::answer(response));
        }
    };
    record.service.clone_from(&forwarding.service);
    let route = forwarding.matched.as_ref().map(|m| m.route.clone());
    record.routed(
        route.as_deref().map(|r| r.name.as_str()),
        &forwarding.cluster,
        request.headers_mut(),
    );
    // 3b. Rate limits, once the route is known (rules may name it).
    let routed = ratelimit::Routed {
        route: route.as_deref().map(|r| r.name.as_str()),
        host: authority.as_ref().map(|a| a.host()),
        service: &forwarding.service,
    };
    let limit_headers = ratelimit::check(state, conn, &mut request, routed)
        .await
        .map_err(|(response, flags)| Early::Answer(response, flags))?;
    // 4. CORS acts first, as Envoy's filter precedes fault injection and the
    // router: an allowed preflight is answered without going upstream.
    let cors = cors::Allowed::check(route.as_deref(), &request);
    if let Some(preflight) = cors.as_ref().and_then(|c| c.preflight(&request)) {
        return Err(Early::answer(preflight));
    }
    // 5. Rewrite.
    if let Some(matched) = &forwarding.matched {
        rewrite::edit_request(matched, &mut request, &mut authority);
    }
    let forward = route.as_deref().and_then(|r| r.forward());
    // 6. Fault.
    if let Some(fault) = forward.and_then(|f| f.fault.as_ref()) {
        fault::inject(fault, record.grpc, &mut record.extra)
            .await
            .map_err(|abort| Early::Answer(abort, ResponseFlag::FaultInjected.into()))?;
    }
    // The upstream request: version, upgrade, affinity, counted body.
    let (cluster, timeout) = (&forwarding.cluster, forwarding.timeout);
    let upgrade = app_version == HttpVersion::Http1 && head::is_upgrade_request(request.headers());
    let version = match upgrade {
        true => HttpVersion::Http1,
        false => head::upstream_version(cluster.upstream_protocol, app_version),
    };
    let downstream_upgrade = upgrade.then(|| hyper::upgrade::on(&mut request));
    let live = state.clusters().live(cluster);
    let (hash, set_cookie) = live.affinity(request.headers(), request.uri().query(), conn.peer);
    let (parts, body) = request.into_parts();
    let mut body = ProxyBody::new(body.map_err(Into::into));
    // What an external authorizer was shown goes first.
    if let Some(read) = granted.body {
        body = read.replay(body);
    }
    let mut body = record.count_request(body);
    // 7. Mirror (an upgrade is a connection, not a request to copy).
    if let Some(mirrors) = forward
        .map(|f| &f.mirrors)
        .filter(|m| !m.is_empty() && !upgrade)
    {
        let original = mirror::Original {
            parts: &parts,
            authority: authority.as_ref(),
            downstream: app_version,
            timeout,
        };
        // The body to forward, teed when a copy of it is wanted.
        body = mirror::launch(state, mirrors, &original, body);
    }
    // 8. Balance, pool, upstream: tries under the route's retry policy.
    let exchange = retry::Exchange {
        state,
        cluster,
        live: &live,
        version,
        head: UpstreamHead::new(parts, version, authority, upgrade),
        timeout,
        // An upgraded connection cannot be replayed.
        policy: forward
            .and_then(|f| f.retries.as_deref())
            .filter(|_| !upgrade),
        hash,
        original_dst: conn.target.original_dst(),
    };
    let (response, flags) = retry::send(exchange, body).await.map_err(Early::Reply)?;
    // 9. Response.
    let finish = response::Finish {
        matched: forwarding.matched.as_ref(),
        cors,
        set_cookie,
        downstream_version,
        downstream_upgrade,
    };
    let mut response = finish.apply(state, response);
    limit_headers.apply(&mut response);
    // An external authorizer's response headers (headersToDownstreamOnAllow).
    crate::policy::ext_authz::apply_edits(&granted.response, response.headers_mut());
    Ok((response, flags))
}
