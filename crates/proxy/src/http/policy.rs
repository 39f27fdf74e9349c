//! Phase 2, inbound policy: a request for the local workload passes its
//! port's guard (RequestAuthentication's JWT rules, then
//! AuthorizationPolicy, both compiled into the snapshot) before it is
//! routed; on a gateway listener, the policies selecting the gateway do
//! the same. Outbound requests have no guard here.
//!
//! Contract: the policies see the request entry made (normalized path,
//! mesh-only headers gone); `remote.ip` is what a gateway in front decided
//! when the caller is a mesh peer, else the connection's peer, never a
//! client's `X-Forwarded-For`; on a gateway it is the client entry names
//! (`numTrustedProxies` hops back in `X-Forwarded-For`, else the peer) and
//! `destination.port` the gateway server's port; a port the workload did not declare falls
//! back to the workload's policies, as the TCP path does. A refusal is the
//! policy's own answer (401 or 403, no response flag), or a CUSTOM
//! policy's external authorizer's (flagged UAEX).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use std::sync::Arc;

use http::Request;

use super::HttpConn;
use super::entry;
use super::ext_authz::PoolTransport;
use super::route::Target;
use crate::policy::authz::{self, Caller, Refusal};
use crate::policy::ext_authz::Granted;
use crate::state::ProxyState;

/// `Ok` with the request (JWT output headers set, those a client sent
/// removed, an external authorizer's added) and what the authorizer left
/// for later (response headers; the body it was shown, to forward before
/// the rest), when it may go on; `Err` with the refusal and its flags
/// otherwise.
pub(super) async fn check<B>(
    state: &Arc<ProxyState>,
    conn: &HttpConn,
    request: Request<B>,
) -> Result<(Request<B>, Granted), Refusal>
where
    B: http_body::Body<Data = bytes::Bytes> + Unpin,
    B::Error: Into<crate::body::BoxError>,
{
    let (guard, remote, destination) = match &conn.target {
        Target::Inbound { port, original_dst } => (
            state.snapshot().inbound_guard(*port),
            entry::remote_address(request.headers(), conn.peer, &conn.trust),
            *original_dst,
        ),
        Target::Gateway { port } => (
            state.snapshot().gateway_guard(),
            // Entry decided it (numTrustedProxies hops back in the
            // X-Forwarded-For it completed) after dropping a client's own.
            entry::external_address(request.headers()).or(conn.peer),
            // `ports` in a policy is the gateway server's port.
            SocketAddr::new(
                conn.downstream
                    .local
                    .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |l| l.ip()),
                *port,
            ),
        ),
        Target::Outbound { .. } | Target::Service { .. } => {
            return Ok((request, Granted::default()));
        }
    };
    let Some(guard) = guard else {
        return Ok((request, Granted::default()));
    };
    let caller = Caller {
        peer: conn.peer,
        remote,
        // Only a certificate the handshake verified (mesh mTLS, or a
        // gateway's MUTUAL server) names a principal.
        principal: conn.downstream.mesh_principal(),
        destination,
    };
    authz::authorize_request(&guard, &caller, request, &PoolTransport(state)).await
}
