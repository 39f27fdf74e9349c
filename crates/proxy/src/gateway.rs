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

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpStream;
use tokio_rustls::LazyConfigAcceptor;
use tokio_rustls::server::TlsStream;
use weft_proto::proxy::v1::GatewayMode;

use crate::config::{ListenerSpec, PortProtocol, ServicePort, Snapshot};
use crate::http::HttpConn;
use crate::http::entry::Trust;
use crate::http::route::Target;
use crate::http::server;
use crate::listener::classify::{Carry, classify};
use crate::state::ProxyState;
use crate::telemetry::Downstream;
use crate::telemetry::metrics::Reporter;
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
            let downstream = Downstream::of(&stream);
            let peer = downstream.remote.map(|a| a.ip());
            let Some(tls) = terminate(snapshot, stream, listener).await else {
                return;
            };
            let version = match tls.get_ref().1.alpn_protocol() {
                Some(b"h2") => HttpVersion::Http2,
                _ => HttpVersion::Http1,
            };
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
            server::serve(tls, conn, state).await;
        }
        GatewayMode::GatewayTlsTerminate => {
            let downstream = Downstream::of(&stream);
            let Some((name, port)) = l4_port(listener) else {
                return;
            };
            let Some(mut tls) = terminate(snapshot, stream, listener).await else {
                return;
            };
            let cluster = port.tcp_target(None);
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
            let cluster = carry.cluster(port, None);
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

/// The service port whose TCP/TLS routes a TCP-carrying gateway port
/// follows, and the service's name (for telemetry).
fn l4_port(listener: &ListenerSpec) -> Option<(&str, &ServicePort)> {
    let (service, number) = listener.service.as_ref()?;
    Some((service.name.as_str(), service.port(*number)?))
}

/// The TLS handshake with the server the ClientHello's SNI picks, within
/// the handshake deadline. None (logged): no server, or the client failed.
async fn terminate(
    snapshot: &Snapshot,
    stream: TcpStream,
    listener: &ListenerSpec,
) -> Option<TlsStream<TcpStream>> {
    let servers = listener.gateway_tls.as_ref()?;
    let listen_addr: SocketAddr = listener.address;
    let handshake = async {
        let start = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream)
            .await
            .map_err(|err| format!("reading the ClientHello: {err}"))?;
        let sni = start.client_hello().server_name().map(str::to_owned);
        let config = servers.config_for(sni.as_deref())?;
        start
            .into_stream(config)
            .await
            .map_err(|err| format!("TLS handshake (SNI {sni:?}): {err}"))
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
