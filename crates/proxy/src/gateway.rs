//! A gateway port's connections, by what the port carries
//! (`ListenerSpec::gateway_mode`, from the Istio Gateway server):
//!
//! - HTTP: plaintext, routed by host (`outbound::gateway`).
//! - HTTPS: TLS terminated with the server the SNI picks
//!   (`config::GatewayTls`), then HTTP/1.1 or HTTP/2 by ALPN, routed by host.
//! - TLS_TERMINATE: TLS terminated likewise, then the bytes follow the
//!   port's `tcp` routes.
//! - TLS_PASSTHROUGH: TLS left untouched and routed by its SNI (`tls`
//!   routes).
//! - TCP: opaque bytes by the `tcp` routes.
//!
//! A terminating server with `ISTIO_MUTUAL` ends the mesh's mutual TLS with
//! this proxy's workload certificate (the egress gateway pattern): the
//! caller must present a mesh certificate, its identity is the request's
//! source principal (AuthorizationPolicy, `x-forwarded-client-cert`), and
//! the ALPN names the mesh speaks (`istio-h2`, `istio-http/1.1`) pick the
//! HTTP version. A TLS_TERMINATE port follows `tls` routes on the
//! handshake's SNI (which a sidecar sets from its DestinationRule's `sni`),
//! then `tcp` routes.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use http::HeaderValue;
use tokio::net::TcpStream;
use tokio_rustls::LazyConfigAcceptor;
use tokio_rustls::server::TlsStream;
use weft_proto::proxy::v1::GatewayMode;

use crate::config::{ListenerSpec, PortProtocol, ServicePort, Snapshot, Terminator};
use crate::flags::ResponseFlags;
use crate::http::HttpConn;
use crate::http::entry::Trust;
use crate::http::route::Target;
use crate::http::server;
use crate::listener::classify::{Carry, classify};
use crate::state::ProxyState;
use crate::telemetry::Downstream;
use crate::telemetry::metrics::Reporter;
use crate::tls::{ALPN_H2, MeshTls};
use crate::upstream::HttpVersion;
use crate::{outbound, tcp};

pub(crate) async fn serve(
    state: Arc<ProxyState>,
    snapshot: &Snapshot,
    stream: TcpStream,
    listener: &ListenerSpec,
) {
    let listen_addr = listener.address;
    match listener.gateway_mode {
        GatewayMode::GatewayHttp => {
            outbound::gateway(state, snapshot, stream, listen_addr).await;
        }
        GatewayMode::GatewayHttps => {
            let mut downstream = Downstream::of(&stream);
            let peer = downstream.remote.map(|a| a.ip());
            let Some(done) = terminate(snapshot, &state.tls, stream, listener).await else {
                return;
            };
            let tls = done.tls;
            let version = match tls.get_ref().1.alpn_protocol() {
                Some(b"h2") | Some(ALPN_H2) => HttpVersion::Http2,
                _ => HttpVersion::Http1,
            };
            let trust = match done.mesh_peer {
                // A mesh peer proved itself: its proxy's mesh-only headers
                // are believed, and the upstream learns who called (Istio's
                // gateways forward client certificate details likewise).
                Some(uri) => {
                    let by = state
                        .tls
                        .ready_identity()
                        .map(|i| i.spiffe.clone())
                        .unwrap_or_default();
                    let xfcc = HeaderValue::from_str(&format!("By={by};URI={uri}")).ok();
                    downstream.principal = Some(uri);
                    Trust::MeshPeer { xfcc }
                }
                None => Trust::Client,
            };
            let conn = HttpConn {
                target: Target::Gateway {
                    port: listen_addr.port(),
                },
                reporter: Reporter::Source,
                version,
                peer,
                downstream,
                trust,
                tls: true,
            };
            server::serve(tls, conn, state).await;
        }
        GatewayMode::GatewayTlsTerminate => {
            let mut downstream = Downstream::of(&stream);
            let Some((name, port)) = l4_port(listener) else {
                return;
            };
            let Some(done) = terminate(snapshot, &state.tls, stream, listener).await else {
                return;
            };
            let mut tls = done.tls;
            downstream.principal = done.mesh_peer;
            // `tls` routes match the SNI of the handshake that ended here.
            let cluster = port.tls_target(done.sni.as_deref(), None);
            let sni = done.sni.as_deref();
            if let Err(flags) = authorized(&state, &downstream, listen_addr.port(), sni).await {
                let reporter = Reporter::Source;
                return tcp::refused_by_policy(
                    &state,
                    &cluster,
                    name,
                    reporter,
                    &downstream,
                    flags,
                );
            }
            tcp::proxy(
                &mut tls,
                &cluster,
                name,
                Reporter::Source,
                &state,
                &downstream,
            )
            .await;
        }
        GatewayMode::GatewayTlsPassthrough | GatewayMode::GatewayTcp => {
            let downstream = Downstream::of(&stream);
            let Some((name, port)) = l4_port(listener) else {
                return;
            };
            let declared = if listener.gateway_mode == GatewayMode::GatewayTcp {
                PortProtocol::Tcp
            } else {
                PortProtocol::Tls
            };
            let Some((carry, mut io)) = classify(stream, Some((declared, false)), snapshot).await
            else {
                return;
            };
            if let Carry::Tls(None) = carry {
                tracing::info!(
                    flag = "NR",
                    "gateway port {listen_addr} routes TLS by SNI; closing a connection whose ClientHello has none"
                );
                return;
            }
            let sni = match &carry {
                Carry::Tls(sni) => sni.as_deref(),
                _ => None,
            };
            let cluster = carry.cluster(port, None);
            if let Err(flags) = authorized(&state, &downstream, listen_addr.port(), sni).await {
                let reporter = Reporter::Source;
                return tcp::refused_by_policy(
                    &state,
                    &cluster,
                    name,
                    reporter,
                    &downstream,
                    flags,
                );
            }
            tcp::proxy(
                &mut io,
                &cluster,
                name,
                Reporter::Source,
                &state,
                &downstream,
            )
            .await;
        }
    }
}

/// Whether AuthorizationPolicy selecting this gateway lets a connection
/// carried as bytes go on: the caller's address, its mesh identity (after
/// an ISTIO_MUTUAL handshake), the SNI, and the gateway server's port as
/// `ports`. Rules naming HTTP attributes cannot match bytes (as in Istio);
/// a CUSTOM policy asks its gRPC authorizer (`tcp::authorize_with`).
/// `Err`: close it, with these flags.
async fn authorized(
    state: &ProxyState,
    downstream: &Downstream,
    port: u16,
    sni: Option<&str>,
) -> Result<(), ResponseFlags> {
    let Some(guard) = state.snapshot().gateway_guard() else {
        return Ok(());
    };
    let local = downstream
        .local
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |l| l.ip());
    let destination = SocketAddr::new(local, port);
    tcp::authorize_with(&guard, state, downstream, destination, sni).await
}

/// The service port whose TCP/TLS routes a TCP-carrying gateway port
/// follows, and the service's name (for telemetry).
fn l4_port(listener: &ListenerSpec) -> Option<(&str, &ServicePort)> {
    let (service, number) = listener.service.as_ref()?;
    Some((service.name.as_str(), service.port(*number)?))
}

/// A connection whose TLS ended here.
struct Terminated {
    tls: TlsStream<TcpStream>,
    /// The SNI the client sent.
    sni: Option<String>,
    /// ISTIO_MUTUAL: the caller's SPIFFE URI (`spiffe://...`), proven by
    /// its mesh certificate.
    mesh_peer: Option<Arc<str>>,
}

/// The TLS handshake with the server the ClientHello's SNI picks, within
/// the handshake deadline. None (logged): no server, or the client failed.
async fn terminate(
    snapshot: &Snapshot,
    mesh: &MeshTls,
    stream: TcpStream,
    listener: &ListenerSpec,
) -> Option<Terminated> {
    let servers = listener.gateway_tls.as_ref()?;
    let listen_addr: SocketAddr = listener.address;
    let handshake = async {
        let start = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream)
            .await
            .map_err(|err| format!("reading the ClientHello: {err}"))?;
        let sni = start.client_hello().server_name().map(str::to_owned);
        let (config, is_mesh) = match servers.config_for(sni.as_deref())? {
            Terminator::Own(config) => (config, false),
            Terminator::Mesh => (
                mesh.server_config().ok_or_else(|| {
                    format!(
                        "an ISTIO_MUTUAL server (SNI {sni:?}) needs this proxy's workload \
                         certificate, and it holds none (started without --token-file, or \
                         weftd has not issued one yet)"
                    )
                })?,
                true,
            ),
        };
        let tls = start
            .into_stream(config)
            .await
            .map_err(|err| format!("TLS handshake (SNI {sni:?}): {err}"))?;
        let mesh_peer = if is_mesh {
            let principal = crate::tls::peer_principal(tls.get_ref().1.peer_certificates())
                .ok_or_else(|| format!("mTLS peer (SNI {sni:?}) presented no SPIFFE identity"))?;
            Some(Arc::from(format!("spiffe://{principal}")))
        } else {
            None
        };
        Ok::<_, String>(Terminated {
            tls,
            sni,
            mesh_peer,
        })
    };
    let deadline = snapshot.hardening.tls_handshake_timeout;
    match tokio::time::timeout(deadline, handshake).await {
        Ok(Ok(tls)) => Some(tls),
        Ok(Err(why)) => {
            tracing::info!("gateway port {listen_addr}: closing connection: {why}");
            None
        }
        Err(_) => {
            tracing::info!(
                "gateway port {listen_addr}: closing connection: no TLS handshake within {deadline:?}"
            );
            None
        }
    }
}
