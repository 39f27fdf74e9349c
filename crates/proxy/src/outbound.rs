//! The outbound side: connections from the local app (captured by
//! iptables, or through an explicit listener) and from clients of an
//! ingress gateway, up to the HTTP server or the TCP proxy.
//!
//! - OUTBOUND_CAPTURE: the destination the app dialled (`SO_ORIGINAL_DST`)
//!   names a service by VIP, or is passed through when unknown (ALLOW_ANY).
//!   One of the proxy's own ports is refused (`own_port`).
//! - EXPLICIT: the listener's service, or routing by authority.
//! - GATEWAY: HTTP only, routed by host; the port is declared HTTP, so it
//!   is never sniffed against the short detection timeout.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpStream;
use weft_proto::proxy::v1::OutboundTrafficPolicy;

use crate::config::{Cluster, Policy, PortProtocol, Service, ServicePort, Snapshot};
use crate::http::HttpConn;
use crate::http::entry::Trust;
use crate::http::route::Target;
use crate::http::server;
use crate::listener::classify::{Carry, classify, original_dst};
use crate::listener::detect::{Detected, PrefixedIo, detect};
use crate::own_port::refuses_own_port;
use crate::state::ProxyState;
use crate::tcp;
use crate::telemetry::Downstream;
use crate::telemetry::metrics::Reporter;
use crate::upstream::HttpVersion;

pub(crate) async fn outbound(state: Arc<ProxyState>, snapshot: &Snapshot, stream: TcpStream) {
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
    if refuses_own_port(&state, snapshot, &stream, original, Reporter::Source) {
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
                tls: false,
            };
            server::serve(io, conn, state).await;
        }
        carry @ (Carry::Opaque | Carry::Tls(_)) => {
            match vip_port.or_else(|| by_sni(snapshot, &carry, original.port())) {
                Some((service, port)) => {
                    let cluster = to_original(carry.cluster(port, Some(original.ip())), original);
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
                    // Sidecar egressProxy: to the egress proxy, not the
                    // dialled address.
                    let cluster = crate::config::egress_proxy::cluster(snapshot)
                        .cloned()
                        .unwrap_or_else(|| Arc::new(Cluster::passthrough(original)));
                    tcp::proxy(&mut io, &cluster, "", Reporter::Source, &state, &downstream).await;
                }
                None => tracing::info!(
                    flag = "NR",
                    "REGISTRY_ONLY: closing TCP connection to unknown destination {original}"
                ),
            }
        }
    }
}

pub(crate) async fn explicit(
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
                tls: false,
            };
            server::serve(io, conn, state).await;
        }
        (carry @ Carry::Tls(_), None)
            if let Some((service, port)) = by_sni(snapshot, &carry, listen_addr.port()) =>
        {
            let cluster = carry.cluster(port, None);
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

/// The service a TLS connection's SNI names (a ServiceEntry host, exact
/// or wildcard) and its port: `port` when declared, else the service's
/// only port (an explicit listener's port is not the service's).
fn by_sni<'s>(
    snapshot: &'s Snapshot,
    carry: &Carry,
    port: u16,
) -> Option<(&'s Arc<Service>, &'s ServicePort)> {
    let Carry::Tls(Some(sni)) = carry else {
        return None;
    };
    let service = snapshot.service_for_host(sni)?;
    let port = match (service.port(port), service.ports.as_slice()) {
        (Some(port), _) => port,
        (None, [only]) => only,
        // A host declaring HTTP and HTTPS (Istio's `ports: [80, 443]`):
        // TLS goes to its one TLS port.
        (None, ports) => {
            let mut tls = ports.iter().filter(|p| p.protocol == PortProtocol::Tls);
            match (tls.next(), tls.next()) {
                (Some(only), None) => only,
                _ => return None,
            }
        }
    };
    Some((service, port))
}

/// A `resolution: NONE` service's cluster (PASSTHROUGH) sends the
/// connection where the client dialled it: to the endpoint dialled (a
/// headless service's pod, perhaps through its proxy's inbound listener),
/// else to the address itself. The mesh TLS decision for that address
/// still applies (see `config::upstream_tls`).
fn to_original(cluster: Arc<Cluster>, original: SocketAddr) -> Arc<Cluster> {
    if cluster.balancing.policy != Policy::Passthrough {
        return cluster;
    }
    let target = cluster
        .endpoints
        .iter()
        .find(|e| e.dialled == Some(original))
        .map_or(original, |e| e.address);
    Arc::new(Cluster::passthrough(target))
}

/// An ingress gateway port: HTTP only, routed by host among the virtual
/// hosts of the Gateways bound to this proxy.
pub(crate) async fn gateway(
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
        tls: false,
    };
    server::serve(io, conn, state).await;
}
