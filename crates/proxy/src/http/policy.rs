//! Phase 2, inbound policy: a request for the local workload passes its
//! port's guard (RequestAuthentication's JWT rules, then
//! AuthorizationPolicy, both compiled into the snapshot) before it is
//! routed. Outbound and gateway requests have no guard here.
//!
//! Contract: the policies see the request entry made (normalized path,
//! mesh-only headers gone); `remote.ip` is what a gateway in front decided
//! when the caller is a mesh peer, else the connection's peer, never a
//! client's `X-Forwarded-For`; a port the workload did not declare falls
//! back to the workload's policies, as the TCP path does. A refusal is the
//! policy's own answer (401 or 403, no response flag).

use http::{Request, Response};

use super::HttpConn;
use super::entry;
use super::route::Target;
use crate::body::ProxyBody;
use crate::policy::authz::{self, Caller};
use crate::state::ProxyState;

/// `Ok` with the request (JWT output headers set, those a client sent
/// removed) when it may go on; `Err` with the refusal otherwise.
pub(super) async fn check<B>(
    state: &ProxyState,
    conn: &HttpConn,
    request: Request<B>,
) -> Result<Request<B>, Response<ProxyBody>> {
    let Target::Inbound { port, original_dst } = &conn.target else {
        return Ok(request);
    };
    let Some(guard) = state.snapshot().inbound_guard(*port) else {
        return Ok(request);
    };
    let caller = Caller {
        peer: conn.peer,
        remote: entry::remote_address(request.headers(), conn.peer, &conn.trust),
        principal: conn.downstream.mesh_principal(),
        destination: *original_dst,
    };
    authz::authorize_request(&guard, &caller, request).await
}
