//! The transport of external authorization: one check sent to an endpoint
//! of the provider's cluster through the proxy's own pool (pooled
//! connections, the cluster's limits, mesh mTLS when the authorizer is a
//! mesh workload), bounded by the provider's timeout. gRPC checks go over
//! HTTP/2 as `ratelimit::rls` calls do; HTTP checks over HTTP/1.1.
//! What the answer means is `policy::ext_authz`'s.

use crate::policy::ext_authz::{Answer, Call, Provider, Transport, grpc};
use crate::ratelimit::rls;
use crate::state::ProxyState;
use crate::upstream::HttpVersion;

/// Checks through this proxy's pool (for HTTP requests, and for opaque
/// connections in `tcp` and `gateway`).
pub(crate) struct PoolTransport<'a>(pub &'a ProxyState);

impl Transport for PoolTransport<'_> {
    async fn call(&self, provider: &Provider, call: Call) -> Result<Answer, String> {
        let timeout = provider.timeout;
        match tokio::time::timeout(timeout, self.send(provider, call)).await {
            Ok(result) => result,
            Err(_) => Err(format!("no answer within {timeout:?}")),
        }
    }
}

impl PoolTransport<'_> {
    async fn send(&self, provider: &Provider, call: Call) -> Result<Answer, String> {
        let state = self.0;
        // Snapshot guards are not held across the call.
        let cluster = state
            .snapshot()
            .cluster(&provider.cluster)
            .cloned()
            .ok_or_else(|| format!("no cluster {}", provider.cluster))?;
        let cluster = &cluster;
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
            connect_timeout: cluster.connect_timeout.min(provider.timeout),
            authority: Some(provider.authority.as_str()).filter(|a| !a.is_empty()),
        };
        match call {
            Call::Grpc(message) => rls::unary(target, grpc::CHECK, &message)
                .await
                .map(Answer::Grpc),
            // HTTP/1 shape: origin-form path, the original Host.
            Call::Http(request) => {
                let response = target
                    .pool
                    .send(
                        addr,
                        HttpVersion::Http1,
                        target.breaker,
                        target.connect_timeout,
                        target.tls,
                        request,
                    )
                    .await
                    .map_err(|err| format!("calling {addr}: {err}"))?;
                let (head, body) = response.into_parts();
                let (body, _) = rls::read_all(body)
                    .await
                    .map_err(|err| format!("reading the answer of {addr}: {err}"))?;
                Ok(Answer::Http(head, body))
            }
        }
    }
}
