//! Opaque TCP proxying.
//!
//! Bytes are copied both ways until both sides are done. Half-close is
//! honoured: when one side finishes sending (FIN), the proxy shuts down its
//! write half toward the other side and keeps copying the other direction.
//!
//! The upstream connection counts against the cluster's maxConnections for
//! its whole life; over the limit the downstream connection is closed (UO).
//! A failed connect counts for outlier detection.

use std::net::SocketAddr;
use std::time::Instant;

use http::StatusCode;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::config::Cluster;
use crate::flags::{ResponseFlag, ResponseFlags};
use crate::http::ext_authz::PoolTransport;
use crate::policy::authz::{Caller, Connection, InboundGuard, authorize_connection};
use crate::reply::LocalReply;
use crate::state::ProxyState;
use crate::telemetry::Downstream;
use crate::telemetry::metrics::Reporter;
use crate::telemetry::tcp::TcpRecord;
use crate::upstream::{self, Resource, TryResult};

/// An inbound opaque connection to the local workload (a declared port or
/// passed through to an undeclared one, dialled at `destination`):
/// authorized as the caller in `conn` ([`authorize`]), then proxied.
pub async fn proxy_inbound<D>(
    downstream: &mut D,
    cluster: &Cluster,
    destination: SocketAddr,
    state: &ProxyState,
    conn: &Downstream,
) where
    D: AsyncRead + AsyncWrite + Unpin,
{
    let reporter = Reporter::Destination;
    if let Err(flags) = authorize(state, conn, destination, None).await {
        return refused_by_policy(state, cluster, "", reporter, conn, flags);
    }
    proxy(downstream, cluster, "", reporter, state, conn).await;
}

/// The authorization phase of an opaque connection, before any upstream
/// is dialled: AuthorizationPolicy on `destination`'s port, asking a CUSTOM
/// policy's gRPC authorizer (`policy::authz::authorize_connection`).
/// `Err`: close it, with these flags. A sidecar's inbound guard decides;
/// `gateway` has its own guard and calls the phase with it.
pub async fn authorize(
    state: &ProxyState,
    conn: &Downstream,
    destination: SocketAddr,
    sni: Option<&str>,
) -> Result<(), ResponseFlags> {
    let Some(guard) = state.snapshot().inbound_guard(destination.port()) else {
        return Ok(());
    };
    authorize_with(&guard, state, conn, destination, sni).await
}

/// [`authorize`] with `guard`.
pub async fn authorize_with(
    guard: &InboundGuard,
    state: &ProxyState,
    conn: &Downstream,
    destination: SocketAddr,
    sni: Option<&str>,
) -> Result<(), ResponseFlags> {
    let peer = conn.remote.map(|a| a.ip());
    let caller = Caller {
        peer,
        remote: peer,
        principal: conn.mesh_principal(),
        destination,
    };
    let own = state.tls.identity.as_ref().map(|i| i.spiffe.as_str());
    let facts = Connection {
        source: conn.remote,
        sni,
        // Only a mesh mTLS connection presented this proxy's certificate.
        local_principal: own
            .filter(|_| caller.principal.is_some())
            .map(|id| id.strip_prefix("spiffe://").unwrap_or(id)),
    };
    let decided = authorize_connection(guard, &caller, &facts, &PoolTransport(state)).await;
    if decided.is_err() {
        tracing::info!(
            destination = %destination,
            source = ?conn.remote,
            principal = caller.principal.unwrap_or("none"),
            "closing TCP connection: denied by authorization policy"
        );
    }
    decided
}

/// Records a connection the authorization phase closed: an access-log
/// line and a closed connection in the metrics, with `flags` (`UAEX` when
/// the external authorizer refused it, as Envoy's network ext_authz
/// filter sets). A plain policy denial sets none and is only logged, as
/// before.
pub fn refused_by_policy(
    state: &ProxyState,
    cluster: &Cluster,
    service: &str,
    reporter: Reporter,
    conn: &Downstream,
    flags: ResponseFlags,
) {
    // The one flag this phase sets.
    let flag = ResponseFlag::UnauthorizedExternalService;
    if !flags.contains(flag) {
        return;
    }
    let mut record = TcpRecord::start(state, reporter, service, cluster, conn);
    record.refused(flag);
    record.closed(0, 0);
}

pub async fn proxy<D>(
    downstream: &mut D,
    cluster: &Cluster,
    service: &str,
    reporter: Reporter,
    state: &ProxyState,
    conn: &Downstream,
) where
    D: AsyncRead + AsyncWrite + Unpin,
{
    let mut record = TcpRecord::start(state, reporter, service, cluster, conn);
    let live = state.clusters().live(cluster);
    let Some(endpoint) = live.pick_endpoint(cluster) else {
        let why = format!(
            "cluster {:?} has no endpoints{}",
            cluster.name,
            cluster.unresolved_reason()
        );
        let reply = LocalReply::new(UNAVAILABLE, ResponseFlag::NoHealthyUpstream, why);
        return refuse(&mut record, reply);
    };
    let _counted = match live.breaker.acquire(Resource::Connection) {
        Ok(slot) => slot,
        Err(full) => {
            let reply = LocalReply::new(
                UNAVAILABLE,
                ResponseFlag::UpstreamOverflow,
                full.to_string(),
            );
            return refuse(&mut record, reply);
        }
    };
    let keepalive = live.breaker.limits.tcp_keepalive.as_ref();
    let decided = state
        .snapshot()
        .upstream_tls(&cluster.name, endpoint.address);
    let connected = upstream::connect(
        endpoint.address,
        cluster.connect_timeout,
        keepalive,
        decided,
        &state.tls,
    )
    .await;
    if let Some(outlier) = &live.outlier {
        // Envoy's TCP proxy reports connect failures and successes only.
        let result = match &connected {
            Ok(_) => TryResult::Status(200),
            Err(_) => TryResult::ConnectFailure,
        };
        outlier.record(endpoint.address, result, Instant::now());
    }
    let mut upstream = match connected {
        Ok(stream) => stream,
        Err(err) => {
            let why = format!("cluster {:?}: {err}", cluster.name);
            let reply = LocalReply::new(UNAVAILABLE, ResponseFlag::UpstreamConnectFailure, why);
            return refuse(&mut record, reply);
        }
    };
    record.opened(endpoint);
    let (received, sent) = match tokio::io::copy_bidirectional(downstream, &mut upstream).await {
        Ok(counts) => counts,
        Err(err) => {
            tracing::debug!("TCP proxy to {} ended: {err}", endpoint.address);
            (0, 0)
        }
    };
    record.closed(sent, received);
}

/// What a refused connection would have been answered with over HTTP; a
/// TCP client just sees the connection closed.
const UNAVAILABLE: StatusCode = StatusCode::SERVICE_UNAVAILABLE;

/// Closes the downstream connection for `reply`'s reason: recorded with its
/// flag, logged with the cause.
fn refuse(record: &mut TcpRecord<'_>, reply: LocalReply) {
    record.refused(reply.flag);
    tracing::info!(
        flag = reply.flag.code(),
        source = ?reply.source,
        "closing TCP connection: {}",
        reply.message
    );
}
