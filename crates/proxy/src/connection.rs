//! One accepted downstream connection: which listener took it decides where
//! it is headed; its first bytes decide how it is proxied.
//!
//! - OUTBOUND_CAPTURE: the destination the app dialled (`SO_ORIGINAL_DST`)
//!   names a service by VIP, or is passed through when unknown (ALLOW_ANY).
//! - INBOUND_CAPTURE: the original destination port names a port of the
//!   local workload; unknown ports are passed through.
//! - EXPLICIT: the listener's service, or routing by authority.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use bytes::Bytes;
use socket2::SockRef;
use tokio::net::TcpStream;
use weft_proto::proxy::v1::{ListenerKind, OutboundTrafficPolicy};

use crate::config::{Cluster, PortProtocol, ServicePort, Snapshot};
use crate::detect::{Detected, PrefixedIo, detect, peek_sni};
use crate::http::forward::HttpConn;
use crate::http::route::Target;
use crate::http::server;
use crate::metrics::Reporter;
use crate::state::ProxyState;
use crate::tcp;
use crate::telemetry::Downstream;
use crate::upstream::HttpVersion;

pub async fn handle(state: Arc<ProxyState>, stream: TcpStream, listen_addr: SocketAddr) {
    let gauge_owner = state.clone();
    let _active = gauge_owner.metrics.downstream_opened();
    let snapshot = state.snapshot_full();
    let Some(listener) = snapshot.listener(listen_addr) else {
        return;
    };
    match listener.kind {
        ListenerKind::OutboundCapture => outbound(state, &snapshot, stream).await,
        ListenerKind::InboundCapture => inbound(state, &snapshot, stream).await,
        ListenerKind::Explicit => {
            let service = listener.service.clone();
            explicit(state, &snapshot, stream, listen_addr, service).await
        }
        ListenerKind::Gateway => gateway(state, &snapshot, stream, listen_addr).await,
        ListenerKind::Unspecified => {}
    }
}

/// How a connection is carried once classified.
enum Carry {
    Http(HttpVersion),
    Opaque,
    /// TLS passed through untouched, with the ClientHello's SNI if any.
    Tls(Option<String>),
}

impl Carry {
    /// The cluster an opaque or TLS connection to `port` goes to; `dst` is
    /// the original destination IP (none through an explicit listener).
    fn cluster(&self, port: &ServicePort, dst: Option<IpAddr>) -> Arc<Cluster> {
        match self {
            Carry::Tls(sni) => port.tls_target(sni.as_deref(), dst),
            _ => port.tcp_target(dst),
        }
    }
}

async fn classify(
    stream: TcpStream,
    declared: Option<(PortProtocol, bool)>,
    snapshot: &Snapshot,
) -> Option<(Carry, PrefixedIo<TcpStream>)> {
    let mut stream = stream;
    // Both steps share one budget: a slow client delays routing by at most
    // the detection timeout.
    let started = tokio::time::Instant::now();
    let (detected, prefix) = match declared {
        // A declared TLS port is still peeked: its routes need the SNI.
        Some((PortProtocol::Tls, false)) => (Detected::Tls, Bytes::new()),
        Some((protocol, server_first)) if protocol.is_opaque(server_first) => {
            return Some((Carry::Opaque, PrefixedIo::new(Bytes::new(), stream)));
        }
        _ => match detect(&mut stream, snapshot.detect_timeout).await {
            Ok(found) => found,
            Err(err) => {
                tracing::debug!("protocol detection failed: {err}");
                return None;
            }
        },
    };
    let (carry, prefix) = match detected {
        Detected::Http1 => (Carry::Http(HttpVersion::Http1), prefix),
        Detected::Http2 => (Carry::Http(HttpVersion::Http2), prefix),
        Detected::Opaque => (Carry::Opaque, prefix),
        Detected::Tls => {
            let left = snapshot.detect_timeout.saturating_sub(started.elapsed());
            match peek_sni(&mut stream, prefix, left).await {
                Ok((sni, prefix)) => (Carry::Tls(sni), prefix),
                Err(err) => {
                    tracing::debug!("reading the TLS ClientHello failed: {err}");
                    return None;
                }
            }
        }
    };
    Some((carry, PrefixedIo::new(prefix, stream)))
}

async fn outbound(state: Arc<ProxyState>, snapshot: &Snapshot, stream: TcpStream) {
    let peer = stream.peer_addr().ok().map(|addr| addr.ip());
    let downstream = Downstream::of(&stream);
    let original = match original_dst(&stream) {
        Ok(original) => original,
        Err(err) => {
            tracing::warn!(
                "outbound capture: no original destination ({err}); is the REDIRECT rule installed?"
            );
            return;
        }
    };
    if stream.local_addr().ok() == Some(original) {
        tracing::warn!(
            "outbound capture: connection addressed to the capture port itself; closing"
        );
        return;
    }
    let vip_port = snapshot
        .service_by_vip(original.ip())
        .and_then(|service| Some((service, service.port(original.port())?)));
    let declared = vip_port.map(|(_, port)| (port.protocol, port.server_first));
    let Some((carry, mut io)) = classify(stream, declared, snapshot).await else {
        return;
    };
    match carry {
        Carry::Http(version) => {
            let conn = HttpConn {
                target: Target::Outbound {
                    port: original.port(),
                    original_dst: Some(original),
                },
                reporter: Reporter::Source,
                version,
                peer,
                downstream,
            };
            server::serve(io, conn, state).await;
        }
        carry @ (Carry::Opaque | Carry::Tls(_)) => match vip_port {
            Some((service, port)) => {
                let cluster = carry.cluster(port, Some(original.ip()));
                let name = service.name.clone();
                tcp::proxy(
                    &mut io,
                    &cluster,
                    &name,
                    Reporter::Source,
                    &state,
                    &downstream,
                )
                .await;
            }
            None if snapshot.outbound_policy == OutboundTrafficPolicy::AllowAny => {
                let cluster = Cluster::passthrough(original);
                tcp::proxy(&mut io, &cluster, "", Reporter::Source, &state, &downstream).await;
            }
            None => tracing::info!(
                flag = "NR",
                "REGISTRY_ONLY: closing TCP connection to unknown destination {original}"
            ),
        },
    }
}

async fn inbound(state: Arc<ProxyState>, snapshot: &Snapshot, stream: TcpStream) {
    let peer = stream.peer_addr().ok().map(|addr| addr.ip());
    let downstream = Downstream::of(&stream);
    let original = match original_dst(&stream) {
        Ok(original) => original,
        // Not redirected: a client dialled the inbound listener itself,
        // which serves the workload port of the same number (tests on
        // loopback, no iptables). Anything else would loop back here.
        Err(err) => match stream.local_addr() {
            Ok(local) if snapshot.inbound_port(local.port()).is_some() => local,
            _ => {
                tracing::warn!("inbound capture: no original destination ({err})");
                return;
            }
        },
    };
    let Some(port) = snapshot.inbound_port(original.port()) else {
        // Not a declared port: pass it through untouched, as Istio does.
        let cluster = Cluster::passthrough(original);
        let mut io = PrefixedIo::new(Default::default(), stream);
        tcp::proxy(
            &mut io,
            &cluster,
            "",
            Reporter::Destination,
            &state,
            &downstream,
        )
        .await;
        return;
    };
    let cluster = port.cluster.clone();
    let Some((carry, mut io)) =
        classify(stream, Some((port.protocol, port.server_first)), snapshot).await
    else {
        return;
    };
    match carry {
        Carry::Http(version) => {
            let conn = HttpConn {
                target: Target::Inbound {
                    port: original.port(),
                    original_dst: original,
                },
                reporter: Reporter::Destination,
                version,
                peer,
                downstream,
            };
            server::serve(io, conn, state).await;
        }
        Carry::Opaque | Carry::Tls(_) => {
            tcp::proxy(
                &mut io,
                &cluster,
                "",
                Reporter::Destination,
                &state,
                &downstream,
            )
            .await
        }
    }
}

async fn explicit(
    state: Arc<ProxyState>,
    snapshot: &Snapshot,
    stream: TcpStream,
    listen_addr: SocketAddr,
    service: Option<(Arc<crate::config::Service>, u16)>,
) {
    let peer = stream.peer_addr().ok().map(|addr| addr.ip());
    let downstream = Downstream::of(&stream);
    let declared = service.as_ref().and_then(|(service, port)| {
        let port = service.port(*port)?;
        Some((port.protocol, port.server_first))
    });
    let Some((carry, mut io)) = classify(stream, declared, snapshot).await else {
        return;
    };
    match (carry, service) {
        (Carry::Http(version), service) => {
            let target = match service {
                Some((service, port)) => Target::Service {
                    name: service.name.clone(),
                    port,
                },
                None => Target::Outbound {
                    port: listen_addr.port(),
                    original_dst: None,
                },
            };
            let conn = HttpConn {
                target,
                reporter: Reporter::Source,
                version,
                peer,
                downstream,
            };
            server::serve(io, conn, state).await;
        }
        (carry @ (Carry::Opaque | Carry::Tls(_)), Some((service, port))) => {
            let Some(cluster) = service.port(port).map(|p| carry.cluster(p, None)) else {
                return;
            };
            tcp::proxy(
                &mut io,
                &cluster,
                &service.name,
                Reporter::Source,
                &state,
                &downstream,
            )
            .await;
        }
        (Carry::Opaque | Carry::Tls(_), None) => tracing::info!(
            flag = "NR",
            "listener {listen_addr} routes by HTTP authority; closing a non-HTTP connection"
        ),
    }
}

/// An ingress gateway port: HTTP only, routed by host among the virtual
/// hosts of the Gateways bound to this proxy.
async fn gateway(
    state: Arc<ProxyState>,
    snapshot: &Snapshot,
    stream: TcpStream,
    listen_addr: SocketAddr,
) {
    let peer = stream.peer_addr().ok().map(|addr| addr.ip());
    let downstream = Downstream::of(&stream);
    let declared = Some((PortProtocol::Http, false));
    let Some((carry, io)) = classify(stream, declared, snapshot).await else {
        return;
    };
    let Carry::Http(version) = carry else {
        tracing::info!(
            flag = "NR",
            "gateway port {listen_addr} serves HTTP; closing a non-HTTP connection"
        );
        return;
    };
    let conn = HttpConn {
        target: Target::Gateway {
            port: listen_addr.port(),
        },
        reporter: Reporter::Source,
        version,
        peer,
        downstream,
    };
    server::serve(io, conn, state).await;
}

/// The destination the client dialled before iptables redirected it.
fn original_dst(stream: &TcpStream) -> std::io::Result<SocketAddr> {
    let socket = SockRef::from(stream);
    let original = if stream.local_addr()?.is_ipv6() {
        socket.original_dst_v6()?
    } else {
        socket.original_dst_v4()?
    };
    original
        .as_socket()
        .ok_or_else(|| std::io::Error::other("original destination is not an IP address"))
}
