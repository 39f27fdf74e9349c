//! Connections whose original destination is one of this proxy's own
//! ports are refused at once: passed through, they would come straight
//! back to the proxy and loop (each turn a new connection).
//!
//! (This is the logic of the "pods" work on connection.rs, kept as one
//! function, [`refuses_own_port`], for both sides.)

use std::net::{IpAddr, SocketAddr};

use tokio::net::TcpStream;
use weft_proto::proxy::v1::ListenerKind;

use crate::config::Snapshot;
use crate::state::ProxyState;
use crate::telemetry::metrics::Reporter;

/// Istio's fixed proxy ports: admin, outbound and inbound capture, merged
/// metrics, health, Prometheus.
const PROXY_PORTS: [u16; 6] = [15000, 15001, 15006, 15020, 15021, 15090];

/// Whether the connection must be refused because `original` is one of the
/// proxy's own ports; a refusal is logged and counted
/// (`weft_loop_connections_refused{reporter}`). `side`: Source for the
/// outbound capture, Destination for an undeclared inbound port.
pub fn refuses_own_port(
    state: &ProxyState,
    snapshot: &Snapshot,
    stream: &TcpStream,
    original: SocketAddr,
    side: Reporter,
) -> bool {
    let loops = match side {
        Reporter::Source => loops_back(snapshot, stream, original),
        Reporter::Destination => is_own_port(snapshot, original.port()),
    };
    if loops {
        let peer = stream.peer_addr().ok().map(|addr| addr.ip());
        refuse_loop(state, side, peer, original);
    }
    loops
}

/// The proxy's own ports: Istio's fixed ones and every configured listener.
fn is_own_port(snapshot: &Snapshot, port: u16) -> bool {
    PROXY_PORTS.contains(&port) || snapshot.listeners.iter().any(|l| l.address.port() == port)
}

/// An outbound connection dialled to one of this proxy's capture listeners
/// on one of this host's addresses: passed through, it would come back.
fn loops_back(snapshot: &Snapshot, stream: &TcpStream, original: SocketAddr) -> bool {
    let capture = snapshot.listeners.iter().any(|l| {
        l.address.port() == original.port()
            && matches!(
                l.kind,
                ListenerKind::OutboundCapture | ListenerKind::InboundCapture
            )
    });
    stream.local_addr().ok() == Some(original)
        || capture
            && (original.ip().is_loopback()
                // Only a local address can be bound.
                || std::net::UdpSocket::bind((original.ip(), 0)).is_ok())
}

/// Logs and counts a refused connection.
fn refuse_loop(state: &ProxyState, side: Reporter, peer: Option<IpAddr>, original: SocketAddr) {
    state.metrics.record_loop_refused(side);
    tracing::warn!(
        "{} connection from {} to {original}, a port of this proxy: refused (it would loop back to the proxy)",
        if side == Reporter::Source {
            "outbound"
        } else {
            "inbound"
        },
        peer.map_or_else(|| "?".to_string(), |p| p.to_string()),
    );
}
