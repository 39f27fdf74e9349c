//! Opaque TCP proxying.
//!
//! Bytes are copied both ways until both sides are done. Half-close is
//! honoured: when one side finishes sending (FIN), the proxy shuts down its
//! write half toward the other side and keeps copying the other direction.

use tokio::io::{AsyncRead, AsyncWrite};

use crate::config::Cluster;
use crate::flags::ResponseFlag;
use crate::metrics::Reporter;
use crate::state::ProxyState;
use crate::upstream;

pub async fn proxy<D>(
    downstream: &mut D,
    cluster: &Cluster,
    service: &str,
    reporter: Reporter,
    state: &ProxyState,
) where
    D: AsyncRead + AsyncWrite + Unpin,
{
    let Some(endpoint) = cluster.pick_endpoint() else {
        tracing::info!(
            flag = ResponseFlag::NoHealthyUpstream.code(),
            "closing TCP connection: cluster {:?} has no endpoints",
            cluster.name
        );
        return;
    };
    let mut upstream = match upstream::connect(endpoint.address, cluster.connect_timeout).await {
        Ok(stream) => stream,
        Err(err) => {
            tracing::info!(
                flag = ResponseFlag::UpstreamConnectFailure.code(),
                "closing TCP connection: cluster {:?}: {err}",
                cluster.name
            );
            return;
        }
    };
    state.metrics.record_tcp_open(reporter, service);
    let (received, sent) = match tokio::io::copy_bidirectional(downstream, &mut upstream).await {
        Ok(counts) => counts,
        Err(err) => {
            tracing::debug!("TCP proxy to {} ended: {err}", endpoint.address);
            (0, 0)
        }
    };
    state
        .metrics
        .record_tcp_close(reporter, service, sent, received);
}
