//! One HTTP request, top-down: [`handle`] runs the phases in order, each
//! a call into the module that owns it (Pingora's phase chart, in Weft's
//! terms):
//!
//! 1. entry (`entry`): target, mesh-only headers, path normalization, XFF
//! 2. inbound policy (`authz`, `jwt`): tokens and AuthorizationPolicy
//! 3. route (`route`): service, route and cluster, or the route's answer
//! 4. CORS preflight (`cors`)
//! 5. rewrite (`rewrite`): path, authority, header operations
//! 6. fault (`fault`): delay, abort
//! 7. mirror (`mirror`): copies, fire-and-forget
//! 8. balance, pool, upstream (`retry` → cluster balancer → `upstream`)
//! 9. response: upgrade, header operations, CORS, cookie, version
//!
//! Every way to stop early is a [`crate::reply::LocalReply`].

use std::convert::Infallible;
use std::sync::Arc;

use http::header::{self, HeaderMap, HeaderName};
use http::uri::{Authority, PathAndQuery, Uri};
use http::{Request, Response, StatusCode, Version};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use super::entry::{self, Trust};
use super::route::{self, Decision, Target};
use super::{cors, fault, mirror, retry, rewrite};
use crate::body::ProxyBody;
use crate::config::{RequestView, UpstreamProtocol};
use crate::flags::{ResponseFlag, ResponseFlags};
use crate::state::ProxyState;
use crate::telemetry::Downstream;
use crate::telemetry::metrics::Reporter;
use crate::telemetry::request::RequestRecord;
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

/// The hyper service: never fails, every problem becomes a local reply.
pub async fn handle(
    state: Arc<ProxyState>,
    conn: Arc<HttpConn>,
    mut request: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    // 1. Entry. Before anything reads the request: what a client may not claim is
    // removed, the target made unambiguous, the path normalized.
    let hardening = state.snapshot().hardening;
    let prepared = entry::prepare(&mut request, &conn.trust, hardening.path_normalization);
    if let Target::Gateway { .. } = &conn.target {
        entry::forwarded_for(
            request.headers_mut(),
            conn.peer,
            hardening.num_trusted_proxies,
        );
    }
    let mut record =
        RequestRecord::start(state.clone(), conn.reporter, &conn.downstream, &mut request);
    // The HTTP version the calling app speaks (a mesh peer may carry an
    // HTTP/1.1 app's request over HTTP/2).
    let app_version = match prepared {
        Ok(true) => HttpVersion::Http1,
        Ok(false) => conn.version,
        Err(reply) => return Ok(record.local_reply(reply)),
    };
    // 2. Inbound policy: the workload's JWT rules and policies.
    if let Target::Inbound { port, original_dst } = &conn.target {
        // An undeclared port falls back to the workload's policies, as the
        // TCP path does: nothing reaches the workload unchecked.
        let guard = state.snapshot().inbound_guard(*port);
        if let Some(guard) = guard {
            let caller = crate::policy::authz::Caller {
                peer: conn.peer,
                remote: entry::remote_address(request.headers(), conn.peer, &conn.trust),
                principal: conn.downstream.mesh_principal(),
                destination: *original_dst,
            };
            request = match crate::policy::authz::authorize_request(&guard, &caller, request).await
            {
                Ok(request) => request,
                Err(response) => {
                    return Ok(record.respond(response, ResponseFlags::default()));
                }
            };
        }
    }
    // 3. Route.
    let mut authority = request_authority(&request);
    let downstream_version = request.version();
    let decision = {
        let snapshot = state.snapshot();
        let view = RequestView {
            path: request.uri().path(),
            query: request.uri().query(),
            method: request.method(),
            authority: authority.as_ref().map(Authority::as_str),
            // Downstream connections are plaintext until the proxy
            // terminates TLS itself.
            scheme: "http",
            headers: request.headers(),
        };
        route::resolve(&snapshot, &conn.target, authority.as_ref(), &view)
    };
    let forwarding = match decision {
        Ok(Decision::Forward(forwarding)) => forwarding,
        Ok(Decision::Answer { service, response }) => {
            record.service = service;
            return Ok(record.respond(response, ResponseFlags::default()));
        }
        Err(reply) => return Ok(record.local_reply(reply)),
    };
    record.service.clone_from(&forwarding.service);
    let route = forwarding.matched.as_ref().map(|m| m.route.clone());
    record.routed(
        route.as_deref().map(|r| r.name.as_str()),
        &forwarding.cluster,
        request.headers_mut(),
    );
    // 4. CORS acts first, as Envoy's filter precedes fault injection and the
    // router: an allowed preflight is answered without going upstream.
    let cors_policy = route.as_deref().and_then(|r| r.cors.as_deref());
    let cors_origin = cors_policy.and_then(|c| c.allowed_origin(request.headers()));
    if let (Some(cors), Some(origin)) = (cors_policy, &cors_origin)
        && cors::is_preflight(request.method(), request.headers())
    {
        let mut response = cors.preflight(origin.clone());
        *response.version_mut() = downstream_version;
        return Ok(record.respond(response, ResponseFlags::default()));
    }
    // 5. Rewrite.
    if let Some(matched) = &forwarding.matched {
        rewrite::edit_request(matched, &mut request, &mut authority);
    }
    let forward = route.as_deref().and_then(|r| r.forward());
    // 6. Fault.
    if let Some(fault) = forward.and_then(|f| f.fault.as_ref()) {
        let injected = fault::decide(fault);
        if let Some(delay) = injected.delay {
            tokio::time::sleep(delay).await;
            record.extra = record.extra.with(ResponseFlag::DelayInjected);
        }
        if let Some(abort) = injected.abort {
            let (_, response) = fault::abort_response(&abort, record.grpc, record.extra);
            return Ok(record.respond(response, ResponseFlag::FaultInjected.into()));
        }
    }
    let cluster = forwarding.cluster;

    let upgrade = app_version == HttpVersion::Http1 && is_upgrade_request(request.headers());
    let version = if upgrade {
        HttpVersion::Http1
    } else {
        upstream_version(cluster.upstream_protocol, app_version)
    };
    let downstream_upgrade = upgrade.then(|| hyper::upgrade::on(&mut request));
    let (hash, set_cookie) = cluster.affinity(request.headers(), request.uri().query(), conn.peer);
    let original_dst = match &conn.target {
        Target::Outbound { original_dst, .. } => *original_dst,
        Target::Inbound { original_dst, .. } => Some(*original_dst),
        Target::Service { .. } | Target::Gateway { .. } => None,
    };
    let (parts, body) = request.into_parts();
    let mut body = record.count_request(ProxyBody::new(body.map_err(Into::into)));
    // 7. Mirror.
    if let Some(mirrors) = forward.map(|f| &f.mirrors).filter(|m| !m.is_empty()) {
        // An upgrade is a connection, not a request to copy.
        if !upgrade {
            let original = mirror::Original {
                parts: &parts,
                authority: authority.as_ref(),
                downstream: app_version,
                timeout: forwarding.timeout,
            };
            // The body to forward, teed when a copy of it is wanted.
            body = mirror::launch(&state, mirrors, &original, body);
        } else {
            tracing::debug!("upgrade request not mirrored");
        }
    }
    // 8. Balance, pool, upstream: tries under the route's retry policy.
    let exchange = retry::Exchange {
        state: &state,
        cluster: &cluster,
        version,
        head: UpstreamHead::new(parts, version, authority, upgrade),
        timeout: forwarding.timeout,
        // An upgraded connection cannot be replayed.
        policy: forward
            .and_then(|f| f.retries.as_deref())
            .filter(|_| !upgrade),
        hash,
        original_dst,
    };
    let (mut response, flags) = match retry::send(exchange, body).await {
        Ok(sent) => sent,
        Err(reply) => return Ok(record.local_reply(reply)),
    };

    // 9. Response.
    if response.status() == StatusCode::SWITCHING_PROTOCOLS
        && let Some(downstream_upgrade) = downstream_upgrade
    {
        let upstream_upgrade = hyper::upgrade::on(&mut response);
        state.drain.spawn_connection(async move {
            let (Ok(downstream), Ok(upstream)) = tokio::join!(downstream_upgrade, upstream_upgrade)
            else {
                return;
            };
            let _ = tokio::io::copy_bidirectional(
                &mut TokioIo::new(downstream),
                &mut TokioIo::new(upstream),
            )
            .await;
        });
    } else {
        strip_hop_by_hop(response.headers_mut(), false);
    }
    if let Some(matched) = &forwarding.matched {
        rewrite::edit_response(matched, response.headers_mut());
    }
    if let (Some(cors), Some(origin)) = (cors_policy, cors_origin) {
        cors.decorate(origin, response.headers_mut());
    }
    // The hash cookie the proxy generated, so the client sticks from now on.
    if let Some(value) = set_cookie.and_then(|c| header::HeaderValue::from_str(&c).ok()) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    // Answer in the client's HTTP version, whatever the upstream spoke.
    *response.version_mut() = downstream_version;
    Ok(record.respond(response, flags))
}

fn upstream_version(protocol: UpstreamProtocol, downstream: HttpVersion) -> HttpVersion {
    match protocol {
        UpstreamProtocol::Http1 => HttpVersion::Http1,
        UpstreamProtocol::Http2 => HttpVersion::Http2,
        UpstreamProtocol::ClientProtocol => downstream,
    }
}

/// The request's authority: the URI's (HTTP/2, absolute-form) or `Host`.
fn request_authority<B>(request: &Request<B>) -> Option<Authority> {
    if let Some(authority) = request.uri().authority() {
        return Some(authority.clone());
    }
    let host = request.headers().get(header::HOST)?.to_str().ok()?;
    host.parse().ok()
}

fn is_upgrade_request(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|token| token.trim().eq_ignore_ascii_case("upgrade"))
}

/// A downstream request's head rewritten for the upstream hop, once, so
/// each try can be built from it: hop-by-hop headers removed, origin-form
/// URI and `Host` for HTTP/1, absolute URI carrying the original authority
/// for HTTP/2.
pub(super) struct UpstreamHead {
    parts: http::request::Parts,
    authority: Option<Authority>,
    version: HttpVersion,
}

impl UpstreamHead {
    pub(super) fn new(
        mut parts: http::request::Parts,
        version: HttpVersion,
        authority: Option<Authority>,
        upgrade: bool,
    ) -> Self {
        strip_hop_by_hop(&mut parts.headers, upgrade);
        let path = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        match version {
            HttpVersion::Http1 => {
                parts.version = Version::HTTP_11;
                parts.uri = Uri::from(path);
                if !parts.headers.contains_key(header::HOST)
                    && let Some(authority) = &authority
                    && let Ok(value) = authority.as_str().parse()
                {
                    parts.headers.insert(header::HOST, value);
                }
            }
            HttpVersion::Http2 => {
                parts.version = Version::HTTP_2;
                parts.uri = Uri::from(path);
                parts.headers.remove(header::HOST);
            }
        }
        Self {
            parts,
            authority,
            version,
        }
    }

    /// The request of one try to `addr`.
    pub(super) fn request(
        &self,
        addr: std::net::SocketAddr,
        body: ProxyBody,
    ) -> Request<ProxyBody> {
        let mut request = Request::new(body);
        *request.method_mut() = self.parts.method.clone();
        *request.version_mut() = self.parts.version;
        *request.headers_mut() = self.parts.headers.clone();
        *request.uri_mut() = self.parts.uri.clone();
        if self.version == HttpVersion::Http2 {
            let authority = self
                .authority
                .clone()
                .or_else(|| addr.to_string().parse().ok())
                .unwrap_or_else(|| Authority::from_static("localhost"));
            let path = self
                .parts
                .uri
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/"));
            if let Ok(uri) = Uri::builder()
                .scheme("http")
                .authority(authority)
                .path_and_query(path)
                .build()
            {
                *request.uri_mut() = uri;
            }
        }
        request
    }
}

/// Connection-level headers that must not cross a proxy (RFC 9110 §7.6.1),
/// plus any the `Connection` header names. An upgrade keeps `Connection` and
/// `Upgrade`; gRPC's `te: trailers` is kept.
fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|token| HeaderName::try_from(token.trim()).ok())
        .filter(|name| !(upgrade && name == header::UPGRADE))
        .collect();
    for name in named {
        headers.remove(name);
    }
    if !upgrade {
        headers.remove(header::CONNECTION);
        headers.remove(header::UPGRADE);
    }
    for name in ["keep-alive", "proxy-connection", "transfer-encoding"] {
        headers.remove(name);
    }
    headers.remove(header::PROXY_AUTHENTICATE);
    headers.remove(header::PROXY_AUTHORIZATION);
    headers.remove(header::TRAILER);
    if headers
        .get(header::TE)
        .is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"trailers"))
    {
        headers.remove(header::TE);
    }
}
