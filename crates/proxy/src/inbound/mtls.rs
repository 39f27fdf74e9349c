//! The server side of mesh mTLS: PeerAuthentication's decision for one
//! inbound connection, the handshake, and serving what the connection
//! carries with the caller's identity known.
//!
//! - HTTP (`istio-h2` / `istio-http/1.1`): served by the one HTTP server
//!   (`http::server`) as a mesh peer's connection: each request is
//!   forwarded with `x-forwarded-client-cert` set as Istio does
//!   (`By=<this workload>;URI=<caller>`), and the caller's proxy says in
//!   `x-weft-client-protocol` which HTTP version the app used, so an
//!   HTTP/1.1 app gets HTTP/1.1 although the hop between sidecars is
//!   HTTP/2 (see `http::entry`).
//! - TCP (`istio`): the bytes inside TLS go to the workload.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use http::HeaderValue;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsAcceptor;
use weft_proto::proxy::v1::mtls;

use crate::config::{Cluster, Snapshot};
use crate::http::HttpConn;
use crate::http::entry::Trust;
use crate::http::route::Target;
use crate::http::server;
use crate::state::ProxyState;
use crate::tcp;
use crate::telemetry::Downstream;
use crate::telemetry::metrics::Reporter;
use crate::tls::{ALPN_H2, ALPN_HTTP1, ALPN_TCP, MeshTls};
use crate::upstream::HttpVersion;

/// What PeerAuthentication lets through on one inbound port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accept {
    /// Plaintext only (DISABLE, or a workload without a mesh identity): a
    /// TLS connection goes to the workload untouched.
    Plaintext,
    /// Mesh mTLS, or plaintext.
    Permissive,
    /// Mesh mTLS only.
    Strict,
}

/// The mode of workload port `port` in `snapshot`.
pub fn accept_mode(snapshot: &Snapshot, port: u16, tls: &MeshTls) -> Accept {
    let mode = snapshot
        .inbound_port(port)
        .map_or(mtls::Mode::Unset, |p| p.mtls);
    accept(mode, tls)
}

/// The mode of the ports the workload does not declare, as the capture
/// listener at `listen_addr` carries it.
pub fn undeclared_mode(snapshot: &Snapshot, listen_addr: SocketAddr, tls: &MeshTls) -> Accept {
    let mode = snapshot
        .listener(listen_addr)
        .map_or(mtls::Mode::Unset, |l| l.mtls);
    accept(mode, tls)
}

fn accept(mode: mtls::Mode, tls: &MeshTls) -> Accept {
    // A plaintext-only workload (no identity configured) passes TLS through
    // untouched. A workload that has an identity but no certificate yet
    // keeps its ports' modes: STRICT stays closed to plaintext, and a mesh
    // ClientHello is closed (the caller retries elsewhere) rather than
    // handed to the app as if it were plaintext.
    if tls.identity.is_none() {
        return Accept::Plaintext;
    }
    match mode {
        mtls::Mode::Disable => Accept::Plaintext,
        mtls::Mode::Strict => Accept::Strict,
        mtls::Mode::Permissive | mtls::Mode::Unset => Accept::Permissive,
    }
}

/// The workload port a listener without interception leads to, if
/// `listen_addr` is one.
pub fn listener_port(snapshot: &Snapshot, listen_addr: SocketAddr) -> Option<u16> {
    snapshot.listener(listen_addr)?.inbound_port
}

/// Terminates mesh mTLS on `io` (its ClientHello not yet consumed) and
/// serves the connection to `destination`: TCP goes to `cluster` (the
/// workload port's, or a passthrough to an undeclared port).
pub async fn serve<I>(
    io: I,
    state: Arc<ProxyState>,
    cluster: &Cluster,
    destination: SocketAddr,
    peer: Option<IpAddr>,
    mut downstream: Downstream,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let context = state.tls.clone();
    let (Some(config), Some(identity)) = (context.server_config(), context.ready_identity()) else {
        tracing::info!("mTLS connection from {peer:?} closed: no certificate held yet");
        return;
    };
    // A client that offers mesh mTLS and then goes quiet is given up on.
    let deadline = state.snapshot().hardening.tls_handshake_timeout;
    let handshake = tokio::time::timeout(deadline, TlsAcceptor::from(config).accept(io)).await;
    let stream = match handshake {
        Ok(Ok(stream)) => stream,
        Ok(Err(err)) => {
            tracing::info!(
                "mTLS handshake with {peer:?} for port {} failed: {err}",
                destination.port()
            );
            return;
        }
        Err(_) => {
            tracing::info!(
                "mTLS handshake with {peer:?} for port {} did not finish within {deadline:?}; \
                 closing",
                destination.port()
            );
            return;
        }
    };
    let (_, session) = stream.get_ref();
    let principal = crate::tls::peer_principal(session.peer_certificates());
    let Some(principal) = principal else {
        tracing::info!("mTLS peer {peer:?} presented no SPIFFE identity; closing");
        return;
    };
    let alpn = session.alpn_protocol().map(<[u8]>::to_vec);
    tracing::debug!(%principal, "mTLS connection accepted");
    // Telemetry's principal carries the scheme, as Istio's labels do.
    downstream.principal = Some(Arc::from(format!("spiffe://{principal}")));
    match alpn.as_deref() {
        Some(ALPN_TCP) => {
            let mut stream = stream;
            tcp::proxy_inbound(&mut stream, cluster, destination, &state, &downstream).await;
        }
        Some(protocol @ (ALPN_H2 | ALPN_HTTP1)) => {
            let by = identity.spiffe.clone();
            let wire = if protocol == ALPN_H2 {
                HttpVersion::Http2
            } else {
                HttpVersion::Http1
            };
            serve_http(stream, state, wire, destination, peer, downstream, &by).await;
        }
        other => tracing::info!(
            "mTLS peer {principal} offered no known protocol ({:?}); closing",
            other.map(String::from_utf8_lossy)
        ),
    }
}

async fn serve_http<I>(
    io: I,
    state: Arc<ProxyState>,
    wire: HttpVersion,
    destination: SocketAddr,
    peer: Option<IpAddr>,
    downstream: Downstream,
    by: &str,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let uri = downstream.principal.as_deref().unwrap_or_default();
    let xfcc = HeaderValue::from_str(&format!("By={by};URI={uri}")).ok();
    let conn = HttpConn {
        target: Target::Inbound {
            port: destination.port(),
            original_dst: destination,
        },
        reporter: Reporter::Destination,
        version: wire,
        peer,
        downstream,
        // The caller's proxy proved itself: what it says is believed, and
        // the app learns who called in `x-forwarded-client-cert`.
        trust: Trust::MeshPeer { xfcc },
        tls: true,
    };
    server::serve(io, conn, state).await;
}
