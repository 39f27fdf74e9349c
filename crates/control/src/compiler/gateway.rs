//! Istio `Gateway` resources → the listeners and virtual hosts of the
//! gateway proxies ("routers") whose labels their `selector` matches.
//!
//! A gateway proxy sees nothing of the mesh's services: each HTTP server
//! port becomes a `GATEWAY` listener, and each host a VirtualService bound
//! to the Gateway serves there becomes a virtual host (a `Service` whose
//! name may be a wildcard) carrying that VirtualService's routes. Several
//! VirtualServices for one host on one port are merged in namespace/name
//! order, as Istio merges them on gateways.

use std::collections::BTreeMap;

use weft_api::Resource;
use weft_api::networking::Server;
use weft_proto::discovery::v1::Node;
use weft_proto::proxy::v1 as pb;

use super::delegate::Delegates;
use super::hosts::{HostIndex, fqdn, wildcard_matches};
use super::http_rule::Audience;
use super::routes::CompiledVs;
use crate::registry::{
    PortProtocol, ServiceDef, ServicePortDef, labels_match, namespace_or_default,
};

/// Every Gateway, compiled once per mesh change.
#[derive(Debug, Default)]
pub(super) struct Gateways {
    gateways: Vec<CompiledGateway>,
}

#[derive(Debug)]
struct CompiledGateway {
    selector: BTreeMap<String, String>,
    /// Server port → virtual host → its routes.
    ports: BTreeMap<u32, BTreeMap<String, Vec<pb::Route>>>,
}

/// What the compiler needs to lay VirtualServices onto gateway ports.
pub(super) struct Inputs<'a> {
    pub(super) resources: &'a [Resource],
    pub(super) services: &'a [ServiceDef],
    pub(super) hosts: &'a HostIndex,
    pub(super) delegates: &'a Delegates<'a>,
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
            let mut ports: BTreeMap<u32, BTreeMap<String, Vec<pb::Route>>> = BTreeMap::new();
            for (index, server) in object.spec.servers.iter().enumerate() {
                let at = format!("Gateway {namespace}/{name}: servers[{index}]");
                let Some(port) = http_port(server, &at, warnings) else {
                    continue;
                };
                let virtual_hosts = ports.entry(port.number).or_default();
                for vs in bound.iter().filter(|vs| vs.visibility.allows(namespace)) {
                    let hosts = served_hosts(server, vs, namespace);
                    if hosts.is_empty() {
                        continue;
                    }
                    let routes: Vec<pb::Route> = vs
                        .routes(&port, inputs.services, inputs.hosts, clusters, warnings)
                        .into_iter()
                        .map(|(route, _)| route)
                        .collect();
                    for host in hosts {
                        virtual_hosts
                            .entry(host)
                            .or_default()
                            .extend(routes.iter().cloned());
                    }
                }
            }
            gateways.push(CompiledGateway {
                selector: object.spec.selector.clone(),
                ports,
            });
        }
        Self { gateways }
    }

    /// The listeners and virtual hosts of a gateway proxy: every Gateway
    /// whose selector matches its labels (an empty selector matches every
    /// gateway proxy).
    pub(super) fn for_node(&self, node: &Node) -> (Vec<pb::Listener>, Vec<pb::Service>) {
        let namespace = namespace_or_default(&node.namespace);
        let mut merged: BTreeMap<String, BTreeMap<u32, Vec<pb::Route>>> = BTreeMap::new();
        let mut listeners: BTreeMap<u32, pb::Listener> = BTreeMap::new();
        for gateway in &self.gateways {
            if !labels_match(&gateway.selector, &node.labels) {
                continue;
            }
            for (port, virtual_hosts) in &gateway.ports {
                listeners.entry(*port).or_insert_with(|| pb::Listener {
                    name: format!("gateway|{port}"),
                    address: format!("0.0.0.0:{port}"),
                    kind: pb::ListenerKind::Gateway as i32,
                    ..Default::default()
                });
                for (host, routes) in virtual_hosts {
                    let held = merged.entry(host.clone()).or_default();
                    held.entry(*port)
                        .or_default()
                        .extend(routes.iter().cloned());
                }
            }
        }
        let services = merged
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
        (listeners.into_values().collect(), services)
    }
}

/// The server's port if it carries plain HTTP; other servers are left out
/// with a warning (TLS termination at gateways comes later).
fn http_port(server: &Server, at: &str, warnings: &mut Vec<String>) -> Option<ServicePortDef> {
    let port = server.port.as_ref()?;
    let protocol = PortProtocol::parse(&port.protocol);
    let https_redirect = server
        .tls
        .as_ref()
        .is_some_and(|tls| tls.https_redirect == Some(true));
    match protocol {
        PortProtocol::Http | PortProtocol::Http2 | PortProtocol::Grpc if !https_redirect => {
            Some(ServicePortDef {
                number: port.number,
                name: port.name.clone(),
                protocol,
                target_port: None,
            })
        }
        _ => {
            warnings.push(format!(
                "{at}: protocol {:?}{} is not supported on gateways yet; server left out",
                port.protocol,
                if https_redirect {
                    " with httpsRedirect"
                } else {
                    ""
                }
            ));
            None
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
