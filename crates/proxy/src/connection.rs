//! One accepted downstream connection: which listener took it decides where
//! it is headed; its first bytes decide how it is proxied.
//!
//! - OUTBOUND_CAPTURE: the destination the app dialled (`SO_ORIGINAL_DST`)
//!   names a service by VIP, or is passed through when unknown (ALLOW_ANY).
//! - INBOUND_CAPTURE: the original destination port names a port of the
//!   local workload; unknown ports are passed through. A listener with
//!   `inbound_port` (no interception) leads to that port. PeerAuthentication
//!   then decides on the first bytes: mesh mTLS (a ClientHello offering an
//!   `istio*` ALPN) is terminated here (`tls::inbound`), plaintext is
//!   served as before unless the port is STRICT, which closes it.
//! - EXPLICIT: the listener's service, or routing by authority.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use bytes::Bytes;
use socket2::SockRef;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use weft_proto::proxy::v1::{ListenerKind, OutboundTrafficPolicy};

use crate::config::{Cluster, InboundPort, PortProtocol, ServicePort, Snapshot};
use crate::detect::{Detected, PrefixedIo, detect, peek_client_hello, peek_sni};
use crate::http::entry::Trust;
use crate::http::forward::HttpConn;
use crate::http::route::Target;
use crate::http::server;
use crate::metrics::Reporter;
use crate::state::ProxyState;
use crate::tcp;
use crate::telemetry::Downstream;
use crate::tls::{self, inbound::Accept};
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
        ListenerKind::InboundCapture => {
            let fixed_port = tls::inbound::listener_port(&snapshot, listen_addr);
            inbound(state, &snapshot, stream, fixed_port, listen_addr).await
        }
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

async fn classify<S: AsyncRead + Unpin>(
    stream: S,
    declared: Option<(PortProtocol, bool)>,
    snapshot: &Snapshot,
) -> Option<(Carry, PrefixedIo<S>)> {
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
                trust: Trust::Client,
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

async fn inbound(
    state: Arc<ProxyState>,
    snapshot: &Snapshot,
    stream: TcpStream,
    fixed_port: Option<u16>,
    listen_addr: SocketAddr,
) {
    let peer = stream.peer_addr().ok().map(|addr| addr.ip());
    let downstream = Downstream::of(&stream);
    let original = match fixed_port {
        // A listener without interception: the workload's own address.
        Some(port) => match stream.local_addr() {
            Ok(local) => SocketAddr::new(local.ip(), port),
            Err(err) => {
                tracing::debug!("inbound listener: no local address ({err})");
                return;
            }
        },
        None => match original_dst(&stream) {
            Ok(original) => original,
            // Not redirected: a client dialled the capture listener itself,
            // which serves the workload port of the same number (tests on
            // loopback, no iptables). Anything else would loop back here.
            Err(err) => match stream.local_addr() {
                Ok(local) if snapshot.inbound_port(local.port()).is_some() => local,
                _ => {
                    tracing::warn!("inbound capture: no original destination ({err})");
                    return;
                }
            },
        },
    };
    let declared = snapshot.inbound_port(original.port());
    let accept = match declared {
        Some(_) => tls::inbound::accept_mode(snapshot, original.port(), &state.tls),
        None => tls::inbound::undeclared_mode(snapshot, listen_addr, &state.tls),
    };
    let Some(port) = declared else {
        // Not a declared port: passed through to where it was headed, as
        // Istio does; mesh mTLS is still terminated, and STRICT still
        // refuses plaintext.
        let cluster = Cluster::passthrough(original);
        if accept == Accept::Plaintext {
            let mut io = PrefixedIo::new(Default::default(), stream);
            tcp::proxy_inbound(&mut io, &cluster, original, &state, &downstream).await;
            return;
        }
        let Some((mesh, io)) = sniff_mesh(stream, snapshot).await else {
            return;
        };
        if mesh {
            tls::inbound::serve(io, state, &cluster, original, peer, downstream).await;
        } else if accept == Accept::Strict {
            refuse_plaintext(peer, original);
        } else {
            let mut io = io;
            tcp::proxy_inbound(&mut io, &cluster, original, &state, &downstream).await;
        }
        return;
    };
    if accept == Accept::Plaintext {
        let io = PrefixedIo::new(Bytes::new(), stream);
        return inbound_plaintext(state, snapshot, io, port, original, peer, downstream).await;
    }
    // PERMISSIVE or STRICT: the first bytes say whether this is mesh mTLS.
    let Some((mesh, io)) = sniff_mesh(stream, snapshot).await else {
        return;
    };
    if mesh {
        tls::inbound::serve(io, state, &port.cluster, original, peer, downstream).await;
    } else if accept == Accept::Strict {
        refuse_plaintext(peer, original);
    } else {
        inbound_plaintext(state, snapshot, io, port, original, peer, downstream).await;
    }
}

/// Reads the first bytes (within the detection timeout): whether they are
/// a ClientHello for mesh mTLS, and the stream with those bytes to replay.
async fn sniff_mesh(
    mut stream: TcpStream,
    snapshot: &Snapshot,
) -> Option<(bool, PrefixedIo<TcpStream>)> {
    let started = tokio::time::Instant::now();
    let (detected, mut prefix) = match detect(&mut stream, snapshot.detect_timeout).await {
        Ok(found) => found,
        Err(err) => {
            tracing::debug!("protocol detection failed: {err}");
            return None;
        }
    };
    let mut mesh = false;
    if detected == Detected::Tls {
        let left = snapshot.detect_timeout.saturating_sub(started.elapsed());
        match peek_client_hello(&mut stream, prefix, left).await {
            Ok((hello, read)) => {
                mesh = hello.is_some_and(|h| tls::is_mesh_alpn(&h.alpn));
                prefix = read;
            }
            Err(err) => {
                tracing::debug!("reading the TLS ClientHello failed: {err}");
                return None;
            }
        }
    }
    Some((mesh, PrefixedIo::new(prefix, stream)))
}

fn refuse_plaintext(peer: Option<IpAddr>, original: SocketAddr) {
    tracing::info!(
        "STRICT mTLS: closing a plaintext connection from {} to port {}",
        peer.map_or_else(|| "?".to_string(), |p| p.to_string()),
        original.port()
    );
}

/// An inbound connection served without mesh TLS.
async fn inbound_plaintext<S>(
    state: Arc<ProxyState>,
    snapshot: &Snapshot,
    io: S,
    port: &InboundPort,
    original: SocketAddr,
    peer: Option<IpAddr>,
    downstream: Downstream,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let cluster = port.cluster.clone();
    let Some((carry, mut io)) =
        classify(io, Some((port.protocol, port.server_first)), snapshot).await
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
                trust: Trust::Client,
            };
            let serving = server::serve(io, conn, state.clone());
            until_strict(serving, &state, original.port()).await;
        }
        Carry::Opaque | Carry::Tls(_) => {
            let proxying = tcp::proxy_inbound(&mut io, &cluster, original, &state, &downstream);
            until_strict(proxying, &state, original.port()).await;
        }
    }
}

/// Runs a plaintext inbound connection until it ends or its port turns
/// STRICT: a policy change closes plaintext connections accepted under
/// the old one (as Envoy drains a replaced filter chain).
async fn until_strict(serving: impl Future<Output = ()>, state: &ProxyState, port: u16) {
    const CHECK_EVERY: std::time::Duration = std::time::Duration::from_millis(500);
    let can_be_strict = state.tls.identity.is_some();
    if !can_be_strict {
        // A plaintext-only workload: no policy can ever close it.
        return serving.await;
    }
    let strict = async {
        loop {
            tokio::time::sleep(CHECK_EVERY).await;
            if tls::inbound::accept_mode(&state.snapshot(), port, &state.tls) == Accept::Strict {
                return;
            }
        }
    };
    tokio::select! {
        () = serving => {}
        () = strict => tracing::info!(
            "PeerAuthentication turned STRICT on port {port}: closing a plaintext connection"
        ),
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
                trust: Trust::Client,
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
    // A port declared HTTP is never sniffed against the short detection
    // timeout (Istio does not sniff declared ports): the client has the
    // whole request-header deadline to start, and only HTTP/1 or HTTP/2
    // is told apart from its first bytes.
    let mut stream = stream;
    let waited = detect(&mut stream, snapshot.hardening.request_header_timeout).await;
    let version = match waited {
        Ok((Detected::Http1, prefix)) => (HttpVersion::Http1, prefix),
        Ok((Detected::Http2, prefix)) => (HttpVersion::Http2, prefix),
        Ok(_) | Err(_) => {
            tracing::info!(
                flag = "NR",
                "gateway port {listen_addr} serves HTTP; closing a connection that sent no \
                 HTTP request within {:?}",
                snapshot.hardening.request_header_timeout
            );
            return;
        }
    };
    let (version, prefix) = version;
    let io = PrefixedIo::new(prefix, stream);
    let conn = HttpConn {
        target: Target::Gateway {
            port: listen_addr.port(),
        },
        reporter: Reporter::Source,
        version,
        peer,
        downstream,
        trust: Trust::Client,
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
