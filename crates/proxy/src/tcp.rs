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
use crate::flags::ResponseFlag;
use crate::reply::LocalReply;
use crate::state::ProxyState;
use crate::telemetry::Downstream;
use crate::telemetry::metrics::Reporter;
use crate::telemetry::tcp::TcpRecord;
use crate::upstream::{self, Resource, TryResult};

/// An inbound opaque connection to the local workload (a declared port or
/// passed through to an undeclared one, dialled at `destination`):
/// authorized as the caller in `conn`, then proxied.
pub async fn proxy_inbound<D>(
    downstream: &mut D,
    cluster: &Cluster,
    destination: SocketAddr,
    state: &ProxyState,
    conn: &Downstream,
) where
    D: AsyncRead + AsyncWrite + Unpin,
{
    let guard = state.snapshot().inbound_guard(destination.port());
    if let Some(guard) = guard {
        let who = crate::policy::authz::Caller {
            peer: conn.remote.map(|a| a.ip()),
            remote: conn.remote.map(|a| a.ip()),
            principal: conn.mesh_principal(),
            destination,
        };
        if !crate::policy::authz::authorize_connection(&guard, &who, None) {
            tracing::info!(
                destination = %destination,
                "closing TCP connection: denied by authorization policy"
            );
            return;
        }
    }
    proxy(downstream, cluster, "", Reporter::Destination, state, conn).await;
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
