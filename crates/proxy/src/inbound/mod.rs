//! The inbound side: connections for the local workload (captured by
//! iptables, or through a listener without interception).
//!
//! The original destination port names a port of the workload; unknown
//! ports are passed through (one of the proxy's own ports is refused,
//! `own_port`). A listener with `inbound_port` leads to that port.
//! PeerAuthentication then decides on the first bytes: mesh mTLS (a
//! ClientHello offering an `istio*` ALPN) is terminated ([`mtls`]),
//! plaintext is served unless the port is STRICT, which closes it.

pub mod mtls;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use self::mtls::Accept;
use crate::config::{Cluster, InboundPort, Snapshot};
use crate::http::HttpConn;
use crate::http::entry::Trust;
use crate::http::route::Target;
use crate::http::server;
use crate::listener::classify::{Carry, classify, original_dst};
use crate::listener::detect::{Detected, PrefixedIo, detect, peek_client_hello};
use crate::own_port::refuses_own_port;
use crate::state::ProxyState;
use crate::tcp;
use crate::telemetry::Downstream;
use crate::telemetry::metrics::Reporter;
use crate::tls;

pub(crate) async fn inbound(
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
    if declared.is_none()
        && refuses_own_port(&state, snapshot, &stream, original, Reporter::Destination)
    {
        return;
    }
    let accept = match declared {
        Some(_) => mtls::accept_mode(snapshot, original.port(), &state.tls),
        None => mtls::undeclared_mode(snapshot, listen_addr, &state.tls),
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
            mtls::serve(io, state, &cluster, original, peer, downstream).await;
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
        mtls::serve(io, state, &port.cluster, original, peer, downstream).await;
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
                tls: false,
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
            if mtls::accept_mode(&state.snapshot(), port, &state.tls) == Accept::Strict {
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
