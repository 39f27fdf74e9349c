//! Sidecar resources: which one applies to a proxy, what it lets the proxy
//! see (`egress[]`, each listener's hosts on its port), its inbound ports
//! (`ingress[]`) and its outbound traffic policy.
//!
//! As in Istio, an egress listener with a `port` makes its hosts visible on
//! that service port only, and a listener without one on every other port:
//! a port named by a port-scoped listener belongs to it alone, so a host of
//! the catch-all listener is not reachable there. An egress listener with
//! `bind` gets its own listener on `bind:port`. Unix-socket binds,
//! `captureMode`, ingress `tls`/`connectionPool`, `inboundConnectionPool`
//! and `egressProxy` need the proxy's support and are warned at apply time
//! (weft-api's table), never widened.

use std::collections::{BTreeMap, BTreeSet};

use weft_api::networking::Sidecar;
use weft_api::{Object, Resource};
use weft_proto::proxy::v1 as pb;

use super::clusters::limits::pool_of;
use super::hosts::wildcard_matches;
use super::ports::{is_server_first, protocol};
use weft_api::networking::OutboundMode;

use crate::registry::{PortProtocol, RootNamespace, labels_match, namespace_or_default};

/// The compiled form of one Sidecar.
#[derive(Debug)]
pub(super) struct SidecarScope {
    /// `None`: no egress listed, every exported service is visible.
    egress: Option<Vec<EgressHost>>,
    /// Ports named by port-scoped egress listeners.
    scoped_ports: BTreeSet<u32>,
    /// `ingress[]`, when given: the proxy's inbound ports are these.
    ingress: Option<Vec<IngressPort>>,
    /// `egress[]` listeners with `bind` and `port`: `(bind, port)`.
    bound: Vec<(String, u32)>,
    pub(super) outbound_policy: Option<pb::OutboundTrafficPolicy>,
    /// `inboundConnectionPool`: limits toward the app on every inbound port.
    inbound_pool: Option<pb::ConnectionPool>,
    /// `outboundTrafficPolicy.egressProxy` (`egress_proxy.rs`).
    pub(super) egress_proxy: Option<weft_api::networking::EgressProxy>,
}

/// One `namespace/host` of `egress[].hosts`, with its listener's port.
#[derive(Debug)]
struct EgressHost {
    namespace: EgressNamespace,
    /// `*`, `*.suffix` or a host.
    host: String,
    /// The listener's port; `None` for the catch-all listener.
    port: Option<u32>,
}

#[derive(Debug)]
enum EgressNamespace {
    Any,
    /// `.`: the proxy's own namespace.
    Own,
    /// `~`: no namespace (nothing from the registry).
    None,
    Named(String),
}

/// One `ingress[]` listener.
#[derive(Debug)]
struct IngressPort {
    number: u32,
    protocol: PortProtocol,
    /// `defaultEndpoint` as written.
    endpoint: String,
    /// The listener's own `connectionPool`, over `inboundConnectionPool`.
    pool: Option<pb::ConnectionPool>,
}

/// The service ports a Sidecar lets a proxy reach on one service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct PortScope {
    /// Ports of port-scoped listeners naming the service.
    listed: BTreeSet<u32>,
    /// Set when the catch-all listener names the service: every port but
    /// these (the port-scoped listeners' own).
    all_but: Option<BTreeSet<u32>>,
}

impl PortScope {
    fn everything() -> Self {
        Self {
            listed: BTreeSet::new(),
            all_but: Some(BTreeSet::new()),
        }
    }

    pub(super) fn admits(&self, port: u32) -> bool {
        self.listed.contains(&port) || self.all_but.as_ref().is_some_and(|b| !b.contains(&port))
    }

    pub(super) fn is_everything(&self) -> bool {
        self.all_but.as_ref().is_some_and(BTreeSet::is_empty)
    }
}

impl SidecarScope {
    fn new(sidecar: &Sidecar) -> Self {
        let hosts: Vec<EgressHost> = sidecar
            .egress
            .iter()
            .flat_map(|listener| {
                let port = listener.port.as_ref().map(|p| p.number);
                listener.hosts.iter().map(move |entry| (port, entry))
            })
            .map(|(port, entry)| {
                // Validation requires `ns/host`; a bare host means any namespace.
                let (namespace, host) = entry.split_once('/').unwrap_or(("*", entry));
                EgressHost {
                    namespace: match namespace {
                        "*" => EgressNamespace::Any,
                        "." => EgressNamespace::Own,
                        "~" => EgressNamespace::None,
                        other => EgressNamespace::Named(other.to_string()),
                    },
                    host: host.to_string(),
                    port,
                }
            })
            .collect();
        let outbound_policy = sidecar.outbound_traffic_policy.as_ref().map(|policy| {
            // Istio's enum default (an unset mode) is REGISTRY_ONLY.
            match policy.mode {
                Some(OutboundMode::AllowAny) => pb::OutboundTrafficPolicy::AllowAny,
                Some(OutboundMode::RegistryOnly) | None => pb::OutboundTrafficPolicy::RegistryOnly,
            }
        });
        let ingress = (!sidecar.ingress.is_empty()).then(|| {
            sidecar
                .ingress
                .iter()
                .filter_map(|listener| {
                    let port = listener.port.as_ref()?;
                    Some(IngressPort {
                        number: port.number,
                        protocol: PortProtocol::parse(&port.protocol),
                        endpoint: listener.default_endpoint.clone(),
                        pool: listener.connection_pool.as_ref().map(pool_of),
                    })
                })
                .collect()
        });
        let bound = sidecar
            .egress
            .iter()
            .filter(|listener| !listener.bind.is_empty())
            .filter_map(|listener| Some((listener.bind.clone(), listener.port.as_ref()?.number)))
            .collect();
        Self {
            bound,
            scoped_ports: hosts.iter().filter_map(|h| h.port).collect(),
            egress: (!sidecar.egress.is_empty()).then_some(hosts),
            ingress,
            outbound_policy,
            inbound_pool: sidecar.inbound_connection_pool.as_ref().map(pool_of),
            egress_proxy: sidecar
                .outbound_traffic_policy
                .as_ref()
                .and_then(|policy| policy.egress_proxy.clone()),
        }
    }

    /// The limits of inbound port `port` toward the app, as Istio picks
    /// them: the `ingress[]` listener's `connectionPool`, else the
    /// Sidecar's `inboundConnectionPool`; `None`: no limits.
    pub(super) fn inbound_pool(&self, port: u32) -> Option<pb::ConnectionPool> {
        self.ingress
            .iter()
            .flatten()
            .find(|listener| listener.number == port)
            .and_then(|listener| listener.pool)
            .or(self.inbound_pool)
    }

    /// Which ports of the service `name` of `namespace` a proxy in
    /// `node_namespace` may reach; `None`: none, the service is not
    /// visible.
    pub(super) fn ports(
        &self,
        node_namespace: &str,
        namespace: &str,
        name: &str,
    ) -> Option<PortScope> {
        let Some(egress) = &self.egress else {
            return Some(PortScope::everything());
        };
        let mut scope = PortScope {
            listed: BTreeSet::new(),
            all_but: None,
        };
        for e in egress {
            let namespace_ok = match &e.namespace {
                EgressNamespace::Any => true,
                EgressNamespace::Own => namespace == node_namespace,
                EgressNamespace::None => false,
                EgressNamespace::Named(n) => n == namespace,
            };
            if !(namespace_ok && wildcard_matches(&e.host, name)) {
                continue;
            }
            match e.port {
                Some(port) => {
                    scope.listed.insert(port);
                }
                None => scope.all_but = Some(self.scoped_ports.clone()),
            }
        }
        (!scope.listed.is_empty() || scope.all_but.is_some()).then_some(scope)
    }

    /// Listeners for egress listeners with a `bind` address: Istio binds
    /// such a listener on `bind:port` and routes what arrives by host among
    /// the services visible on that port; weft-proxy's explicit listener
    /// without a service does the same for HTTP. A unix socket is left out
    /// (warned at apply time).
    pub(super) fn bound_listeners(&self, warnings: &mut Vec<String>) -> Vec<pb::Listener> {
        let mut out = Vec::new();
        for (bind, port) in &self.bound {
            let Ok(ip) = bind.parse::<std::net::IpAddr>() else {
                warnings.push(format!(
                    "Sidecar egress listener bind {bind:?}: not an IP address weft-proxy can listen on; left out"
                ));
                continue;
            };
            let Ok(number) = u16::try_from(*port) else {
                continue;
            };
            let address = std::net::SocketAddr::new(ip, number).to_string();
            out.push(pb::Listener {
                name: format!("sidecar|{address}"),
                address,
                kind: pb::ListenerKind::Explicit as i32,
                service: String::new(),
                service_port: *port,
                inbound_port: 0,
                mtls_mode: 0,
                ..Default::default()
            });
        }
        out
    }

    /// The proxy's inbound ports when the Sidecar lists `ingress`: Istio
    /// then builds inbound listeners for those ports only, each forwarding
    /// to its `defaultEndpoint`. `None` without `ingress`.
    pub(super) fn ingress_ports(&self, warnings: &mut Vec<String>) -> Option<Vec<pb::InboundPort>> {
        let ingress = self.ingress.as_ref()?;
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        for port in ingress {
            if !seen.insert(port.number) {
                continue;
            }
            let target = match ingress_target(&port.endpoint) {
                Ok(target) => target,
                Err(why) => {
                    warnings.push(format!(
                        "Sidecar ingress port {}: defaultEndpoint {:?} {why}; port left out",
                        port.number, port.endpoint
                    ));
                    continue;
                }
            };
            out.push(pb::InboundPort {
                port: port.number,
                protocol: protocol(port.protocol) as i32,
                server_first: is_server_first(port.number, port.protocol),
                target,
                security: None,
                mtls_mode: 0,
                connection_pool: None,
            });
        }
        Some(out)
    }
}

/// `defaultEndpoint` → the proxy's inbound target (`""`: its default,
/// `127.0.0.1:<port>`). `0.0.0.0`/`[::]` mean the workload's own address
/// in Istio; a config is shared by a workload's replicas (weftd compiles
/// once per proxy shape), so the same workload is reached over loopback
/// instead (warned at apply time).
fn ingress_target(endpoint: &str) -> Result<String, &'static str> {
    if endpoint.is_empty() {
        return Ok(String::new());
    }
    if endpoint.starts_with("unix://") {
        return Err("is a unix socket, which weft-proxy cannot forward to yet");
    }
    for (any, loopback) in [
        ("0.0.0.0:", std::net::IpAddr::from([127, 0, 0, 1])),
        (
            "[::]:",
            std::net::IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
        ),
    ] {
        if let Some(port) = endpoint.strip_prefix(any) {
            let port: u16 = port.parse().map_err(|_| "has no valid port")?;
            return Ok(std::net::SocketAddr::new(loopback, port).to_string());
        }
    }
    endpoint
        .parse::<std::net::SocketAddr>()
        .map(|a| a.to_string())
        .map_err(|_| "is not an address")
}

#[derive(Debug, Default)]
struct NamespaceSidecars {
    /// With a `workloadSelector`, in name order.
    selecting: Vec<(BTreeMap<String, String>, SidecarScope)>,
    default: Option<SidecarScope>,
}

/// Every Sidecar, by namespace.
#[derive(Debug, Default)]
pub(super) struct Sidecars {
    by_namespace: BTreeMap<String, NamespaceSidecars>,
    /// MeshConfig `rootNamespace`.
    root: RootNamespace,
}

impl Sidecars {
    pub(super) fn build(resources: &[Resource], warnings: &mut Vec<String>) -> Self {
        let mut objects: Vec<&Object<Sidecar>> = resources
            .iter()
            .filter_map(|r| match r {
                Resource::Sidecar(object) => Some(object),
                _ => None,
            })
            .collect();
        objects.sort_by(|a, b| {
            (&a.metadata.namespace, &a.metadata.name)
                .cmp(&(&b.metadata.namespace, &b.metadata.name))
        });
        let mut by_namespace: BTreeMap<String, NamespaceSidecars> = BTreeMap::new();
        for object in objects {
            let namespace = namespace_or_default(&object.metadata.namespace);
            let entry = by_namespace.entry(namespace.to_string()).or_default();
            let scope = SidecarScope::new(&object.spec);
            match &object.spec.workload_selector {
                Some(selector) if !selector.labels.is_empty() => {
                    entry.selecting.push((selector.labels.clone(), scope));
                }
                _ if entry.default.is_some() => warnings.push(format!(
                    "Sidecar {namespace}/{}: namespace {namespace} already has a Sidecar without workloadSelector; ignored",
                    object.metadata.name
                )),
                _ => entry.default = Some(scope),
            }
        }
        Self {
            by_namespace,
            root: RootNamespace::default(),
        }
    }

    /// Under MeshConfig's `rootNamespace`.
    pub(super) fn with_root(mut self, root: &str) -> Self {
        self.root = RootNamespace::new(root);
        self
    }

    /// The Sidecar for a proxy: a selecting one in its namespace, else the
    /// namespace's selector-less one, else the root namespace's.
    pub(super) fn for_node(
        &self,
        namespace: &str,
        labels: &BTreeMap<String, String>,
    ) -> Option<&SidecarScope> {
        let own = self.by_namespace.get(namespace);
        own.and_then(|n| {
            n.selecting
                .iter()
                .find(|(selector, _)| labels_match(selector, labels))
                .map(|(_, scope)| scope)
        })
        .or_else(|| own.and_then(|n| n.default.as_ref()))
        .or_else(|| {
            self.by_namespace
                .get(self.root.as_str())
                .and_then(|n| n.default.as_ref())
        })
    }
}
