//! Istio `Gateway` resources → the listeners and virtual hosts of the
//! gateway proxies ("routers") whose labels their `selector` matches.
//!
//! A gateway proxy sees nothing of the mesh's services: each server port
//! becomes a `GATEWAY` listener whose mode says what it carries
//! (`gateway_tls.rs`: HTTP, HTTPS, TLS passthrough or terminated, TCP).
//! For HTTP and HTTPS, each host a VirtualService bound to the Gateway
//! serves there becomes a virtual host (a `Service` whose name may be a
//! wildcard) carrying that VirtualService's routes; several VirtualServices
//! for one host on one port are merged in namespace/name order, as Istio
//! merges them on gateways. For TCP and TLS, the bound VirtualServices'
//! `tcp`/`tls` routes go on one service port named for the listener.
//!
//! One port carries one kind: a server whose kind differs from the port's
//! first server is left out with a warning (Istio can mix HTTPS and
//! PASSTHROUGH servers on one port by SNI; Weft does not yet).

use std::collections::BTreeMap;
use std::sync::Arc;

use weft_api::Resource;
use weft_api::networking::Server;
use weft_proto::discovery::v1::Node;
use weft_proto::proxy::v1 as pb;
use weft_proto::proxy::v1::GatewayMode;

use super::delegate::Delegates;
use super::gateway_tls::{PendingTls, ServerPlan, https_redirect_route, mode_name, plan};
use super::hosts::{HostIndex, fqdn, wildcard_matches};
use super::http_rule::Audience;
use super::routes::CompiledVs;
use crate::registry::{ServiceDef, labels_match, namespace_or_default};
use crate::store::credentials::CredentialSource;

/// Every Gateway, compiled once per mesh change.
#[derive(Debug)]
pub(super) struct Gateways {
    gateways: Vec<CompiledGateway>,
    /// Where `credentialName`s are looked up, per gateway proxy.
    credentials: Arc<dyn CredentialSource>,
}

impl Default for Gateways {
    fn default() -> Self {
        Self {
            gateways: Vec::new(),
            credentials: Arc::new(crate::store::credentials::NoCredentials),
        }
    }
}

#[derive(Debug)]
struct CompiledGateway {
    /// `Gateway ns/name`, in warnings.
    label: String,
    selector: BTreeMap<String, String>,
    ports: BTreeMap<u32, PortPlan>,
}

/// What one port of one Gateway carries.
#[derive(Debug)]
struct PortPlan {
    mode: GatewayMode,
    /// Virtual host → its routes (HTTP and HTTPS).
    virtual_hosts: BTreeMap<String, Vec<pb::Route>>,
    /// HTTPS and terminated TLS: one per server, chosen by SNI.
    tls_servers: Vec<PendingTls>,
    tcp_routes: Vec<pb::TcpRoute>,
    tls_routes: Vec<pb::TlsRoute>,
}

/// What the compiler needs to lay VirtualServices onto gateway ports.
pub(super) struct Inputs<'a> {
    pub(super) resources: &'a [Resource],
    pub(super) services: &'a [ServiceDef],
    pub(super) hosts: &'a HostIndex,
    pub(super) delegates: &'a Delegates<'a>,
    pub(super) credentials: Arc<dyn CredentialSource>,
}

impl Gateways {
    pub(super) fn build(
        inputs: &Inputs<'_>,
        clusters: &mut BTreeMap<String, pb::Cluster>,
        warnings: &mut Vec<String>,
    ) -> Self {
        let mut gateways = Vec::new();
        for resource in inputs.resources {
            let Resource::Gateway(object) = resource else {
                continue;
            };
            let namespace = namespace_or_default(&object.metadata.namespace);
            let name = &object.metadata.name;
            let audience = Audience::Gateway { namespace, name };
            let bound: Vec<CompiledVs> = inputs
                .resources
                .iter()
                .filter_map(|r| match r {
                    Resource::VirtualService(vs) => {
                        CompiledVs::new(vs, audience, inputs.delegates, warnings)
                    }
                    _ => None,
                })
                .collect();
            let bound: Vec<&CompiledVs> = bound
                .iter()
                .filter(|vs| vs.visibility.allows(namespace))
                .collect();
            let mut ports: BTreeMap<u32, PortPlan> = BTreeMap::new();
            for (index, server) in object.spec.servers.iter().enumerate() {
                let at = format!("Gateway {namespace}/{name}: servers[{index}]");
                let Some(server_plan) = plan(server, &at, warnings) else {
                    continue;
                };
                let number = server_plan.port.number;
                let port = ports.entry(number).or_insert_with(|| PortPlan {
                    mode: server_plan.mode,
                    virtual_hosts: BTreeMap::new(),
                    tls_servers: Vec::new(),
                    tcp_routes: Vec::new(),
                    tls_routes: Vec::new(),
                });
                if port.mode != server_plan.mode {
                    warnings.push(format!(
                        "{at}: port {number} already carries {} from an earlier server; servers of different kinds on one port are not supported; server left out",
                        mode_name(port.mode)
                    ));
                    continue;
                }
                let layer = Layer {
                    server,
                    plan: &server_plan,
                    namespace,
                    inputs,
                };
                layer.lay(port, &bound, clusters, warnings);
                port.tls_servers.extend(server_plan.tls);
            }
            gateways.push(CompiledGateway {
                label: format!("Gateway {namespace}/{name}"),
                selector: object.spec.selector.clone(),
                ports,
            });
        }
        Self {
            gateways,
            credentials: inputs.credentials.clone(),
        }
    }

    /// The listeners and virtual hosts of a gateway proxy: every Gateway
    /// whose selector matches its labels (an empty selector matches every
    /// gateway proxy), and warnings for what cannot be served together.
    pub(super) fn for_node(
        &self,
        node: &Node,
    ) -> (Vec<pb::Listener>, Vec<pb::Service>, Vec<String>) {
        let namespace = namespace_or_default(&node.namespace);
        let mut warnings = Vec::new();
        let mut merged: BTreeMap<String, BTreeMap<u32, Vec<pb::Route>>> = BTreeMap::new();
        let mut listeners: BTreeMap<u32, pb::Listener> = BTreeMap::new();
        let mut l4: BTreeMap<u32, pb::ServicePort> = BTreeMap::new();
        for gateway in &self.gateways {
            if !labels_match(&gateway.selector, &node.labels) {
                continue;
            }
            for (port, plan) in &gateway.ports {
                let listener = listeners.entry(*port).or_insert_with(|| pb::Listener {
                    name: format!("gateway|{port}"),
                    address: format!("0.0.0.0:{port}"),
                    kind: pb::ListenerKind::Gateway as i32,
                    gateway_mode: plan.mode as i32,
                    ..Default::default()
                });
                if listener.gateway_mode() != plan.mode {
                    warnings.push(format!(
                        "{}: port {port} carries {} here but {} in another Gateway selecting this proxy; left out",
                        gateway.label,
                        mode_name(plan.mode),
                        mode_name(listener.gateway_mode())
                    ));
                    continue;
                }
                for pending in &plan.tls_servers {
                    if pending.tls.mode == pb::server_tls::Mode::IstioMutual as i32 && !node.mtls {
                        warnings.push(format!(
                            "{}: tls.mode ISTIO_MUTUAL needs the gateway proxy's workload certificate, and this proxy has none (start it with a token); server left out",
                            pending.tls.origin
                        ));
                        continue;
                    }
                    listener.tls_servers.extend(pending.resolve(
                        namespace,
                        self.credentials.as_ref(),
                        &mut warnings,
                    ));
                }
                if is_l4(plan.mode) {
                    let service = l4_service_name(*port);
                    listener.service = service;
                    listener.service_port = *port;
                    let held = l4.entry(*port).or_insert_with(|| pb::ServicePort {
                        port: *port,
                        protocol: pb::Protocol::Tcp as i32,
                        ..Default::default()
                    });
                    held.tcp_routes.extend(plan.tcp_routes.iter().cloned());
                    held.tls_routes.extend(plan.tls_routes.iter().cloned());
                    continue;
                }
                for (host, routes) in &plan.virtual_hosts {
                    let held = merged.entry(host.clone()).or_default();
                    held.entry(*port)
                        .or_default()
                        .extend(routes.iter().cloned());
                }
            }
        }
        // A terminating port whose every server lost its credential cannot
        // listen (the proxy would refuse the whole config), nor route.
        listeners.retain(|port, l| {
            let terminates = matches!(
                l.gateway_mode(),
                GatewayMode::GatewayHttps | GatewayMode::GatewayTlsTerminate
            );
            let keep = !terminates || !l.tls_servers.is_empty();
            if !keep {
                warnings.push(format!(
                    "gateway port {port}: none of its TLS servers can be served; the port does not listen"
                ));
                for ports in merged.values_mut() {
                    ports.remove(port);
                }
                l4.remove(port);
            }
            keep
        });
        let mut services: Vec<pb::Service> = merged
            .into_iter()
            .filter_map(|(host, ports)| {
                // A host without any route answers 404, as an unknown host
                // does: the proxy needs no entry for it.
                let ports: Vec<pb::ServicePort> = ports
                    .into_iter()
                    .filter(|(_, routes)| !routes.is_empty())
                    .map(|(port, routes)| pb::ServicePort {
                        port,
                        protocol: pb::Protocol::Http as i32,
                        routes,
                        ..Default::default()
                    })
                    .collect();
                (!ports.is_empty()).then(|| pb::Service {
                    name: host,
                    namespace: namespace.to_string(),
                    ports,
                    ..Default::default()
                })
            })
            .collect();
        for (port, service_port) in l4 {
            if service_port.tcp_routes.is_empty() && service_port.tls_routes.is_empty() {
                warnings.push(format!(
                    "gateway port {port}: no VirtualService binds tcp or tls routes to it; connections are closed"
                ));
            }
            services.push(pb::Service {
                name: l4_service_name(port),
                namespace: namespace.to_string(),
                ports: vec![service_port],
                ..Default::default()
            });
        }
        let listeners = listeners.into_values().collect();
        (listeners, services, warnings)
    }
}

fn is_l4(mode: GatewayMode) -> bool {
    matches!(
        mode,
        GatewayMode::GatewayTlsPassthrough
            | GatewayMode::GatewayTlsTerminate
            | GatewayMode::GatewayTcp
    )
}

/// The service carrying a TCP/TLS gateway port's routes (not a host name:
/// no HTTP request can name it).
fn l4_service_name(port: u32) -> String {
    format!("gateway|{port}|tcp")
}

/// One server laid onto its port: the bound VirtualServices' routes for
/// the hosts the server admits.
struct Layer<'a> {
    server: &'a Server,
    plan: &'a ServerPlan,
    namespace: &'a str,
    inputs: &'a Inputs<'a>,
}

impl Layer<'_> {
    fn lay(
        &self,
        port: &mut PortPlan,
        bound: &[&CompiledVs],
        clusters: &mut BTreeMap<String, pb::Cluster>,
        warnings: &mut Vec<String>,
    ) {
        let (services, hosts) = (self.inputs.services, self.inputs.hosts);
        if self.plan.https_redirect {
            // Every host the server lists answers the redirect, with or
            // without a VirtualService (Istio's `require_tls`).
            let mut names: Vec<String> = self
                .server
                .hosts
                .iter()
                .map(|h| h.split_once('/').map_or(h.as_str(), |(_, host)| host))
                .map(str::to_ascii_lowercase)
                .collect();
            for vs in bound {
                names.extend(served_hosts(self.server, vs, self.namespace));
            }
            for name in names {
                port.virtual_hosts
                    .insert(name, vec![https_redirect_route()]);
            }
            return;
        }
        if self.plan.auto_passthrough {
            // Istio's AUTO_PASSTHROUGH ignores VirtualServices: the SNI
            // names the cluster.
            port.tls_routes.extend(super::gateway_auto::routes(
                self.server,
                self.namespace,
                services,
                clusters,
            ));
            return;
        }
        for vs in bound {
            let served = served_hosts(self.server, vs, self.namespace);
            if served.is_empty() {
                continue;
            }
            if is_l4(self.plan.mode) {
                let (tcp, tls) = vs.l4_routes(&self.plan.port, services, hosts, clusters, warnings);
                port.tcp_routes
                    .extend(tcp.into_iter().map(|(route, _)| route));
                // Terminated TLS too: `sniHosts` then match the handshake's
                // SNI (the egress pattern's ISTIO_MUTUAL servers).
                if matches!(
                    self.plan.mode,
                    GatewayMode::GatewayTlsPassthrough | GatewayMode::GatewayTlsTerminate
                ) {
                    port.tls_routes
                        .extend(tls.into_iter().map(|(route, _)| route));
                }
                continue;
            }
            let routes: Vec<pb::Route> = vs
                .routes(&self.plan.port, services, hosts, clusters, warnings)
                .into_iter()
                .map(|(route, _)| route)
                .collect();
            for host in served {
                port.virtual_hosts
                    .entry(host)
                    .or_default()
                    .extend(routes.iter().cloned());
            }
        }
    }
}

/// The hosts `vs` serves on `server`: each VirtualService host that one of
/// the server's hosts admits (namespace part included), narrowed to the
/// more specific of the two names.
fn served_hosts(server: &Server, vs: &CompiledVs, gw_ns: &str) -> Vec<String> {
    let mut out = Vec::new();
    for vs_host in &vs.hosts {
        let vs_host = fqdn(vs_host, &vs.namespace).to_ascii_lowercase();
        for server_host in &server.hosts {
            let (ns, host) = server_host.split_once('/').unwrap_or(("*", server_host));
            let ns_ok = match ns {
                "*" => true,
                "." => vs.namespace == gw_ns,
                other => other == vs.namespace,
            };
            if !ns_ok {
                continue;
            }
            let host = host.to_ascii_lowercase();
            let narrower = if wildcard_matches(&host, &vs_host) {
                Some(vs_host.clone())
            } else if wildcard_matches(&vs_host, &host) {
                Some(host)
            } else {
                None
            };
            if let Some(name) = narrower
                && !out.contains(&name)
            {
                out.push(name);
            }
        }
    }
    out
}
