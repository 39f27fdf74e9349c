//! The per-proxy step: select what one proxy sees from a [`MeshIndex`] and
//! add its own listeners and inbound ports.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;

use weft_proto::discovery::v1::Node;
use weft_proto::proxy::v1::{self as pb, ProxyConfig};

use super::hosts::fqdn;
use super::http_rule::Source;
use super::ports::{cluster_name, is_server_first};
use super::{CompiledService, MeshIndex, RoutedPorts};
use crate::registry::{PortProtocol, namespace_or_default};

/// Istio's capture ports.
const OUTBOUND_CAPTURE: &str = "0.0.0.0:15001";
const INBOUND_CAPTURE: &str = "0.0.0.0:15006";

/// One proxy's config, and what had to be left out of it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProxyOutput {
    pub config: ProxyConfig,
    /// Problems specific to this proxy (an explicit listener naming an
    /// unknown service, a duplicate port, ...).
    pub warnings: Vec<String>,
}

impl MeshIndex {
    /// The config of one proxy, with the problems found compiling it.
    pub fn compile(&self, node: &Node) -> ProxyOutput {
        if node.router {
            return self.compile_router(node);
        }
        let namespace = namespace_or_default(&node.namespace);
        let mut warnings = Vec::new();
        let scope = self.sidecars.for_node(namespace, &node.labels);
        let port_scope = |s: &CompiledService| match scope {
            None => Some(None),
            Some(scope) => scope
                .ports(namespace, &s.namespace, &s.name)
                .map(|p| (!p.is_everything()).then_some(p)),
        };
        let visible =
            |s: &&CompiledService| s.visibility.allows(namespace) && port_scope(s).is_some();
        // One service per hostname (the same host may be defined in several
        // namespaces): the proxy's own namespace first, else the first.
        let chosen: Vec<&CompiledService> = self
            .services
            .chunk_by(|a, b| a.name == b.name)
            .filter_map(|group| {
                group
                    .iter()
                    .filter(visible)
                    .min_by_key(|s| s.namespace != namespace)
            })
            .collect();

        // Host → index into `services`. Names are claimed before aliases so
        // that a real hostname always wins over someone else's alias.
        let mut claimed: HashMap<String, usize> = HashMap::with_capacity(chosen.len() * 4);
        let mut services: Vec<pb::Service> = Vec::with_capacity(chosen.len());
        let mut kept: Vec<&CompiledService> = Vec::with_capacity(chosen.len());
        for service in chosen {
            if claimed.contains_key(&service.key) {
                warnings.push(format!(
                    "service {:?} differs from another only in case; left out",
                    service.name
                ));
                continue;
            }
            let mut ports = service
                .routed
                .iter()
                .find(|r| r.visibility.allows(namespace))
                .map_or_else(
                    || service.plain_ports.clone(),
                    |r| r.ports_for(namespace, &node.labels),
                );
            // A port-scoped Sidecar egress listener: only its ports.
            if let Some(Some(only)) = port_scope(service) {
                ports.retain(|p| only.admits(p.port));
                if ports.is_empty() {
                    continue;
                }
            }
            claimed.insert(service.key.clone(), services.len());
            services.push(pb::Service {
                name: service.name.clone(),
                namespace: service.namespace.clone(),
                hosts: vec![service.key.clone()],
                vips: service.vips.clone(),
                ports,
                cidrs: service.cidrs.clone(),
            });
            kept.push(service);
        }
        for (index, service) in kept.iter().enumerate() {
            let short = service
                .short
                .as_ref()
                .filter(|(_, ns)| ns == namespace)
                .map(|(short, _)| short);
            for alias in service.aliases.iter().chain(short) {
                if !claimed.contains_key(alias) {
                    claimed.insert(alias.clone(), index);
                    services[index].hosts.push(alias.clone());
                }
            }
        }

        let clusters = self.clusters_for(&services, node, &mut warnings);
        let mut listeners = listeners(node, namespace, &services, &claimed, &mut warnings);
        for listener in scope
            .map(|s| s.bound_listeners(&mut warnings))
            .unwrap_or_default()
        {
            if listeners.iter().any(|l| l.address == listener.address) {
                warnings.push(format!(
                    "Sidecar egress listener {}: address already used by another listener; left out",
                    listener.address
                ));
                continue;
            }
            listeners.push(listener);
        }
        let mut inbound_ports = match scope.and_then(|s| s.ingress_ports(&mut warnings)) {
            Some(ports) => ports,
            None => inbound_ports(node, &mut warnings),
        };
        self.secure_inbound(node, &mut listeners, &mut inbound_ports, &mut warnings);
        let security = self.inbound_security(namespace, &node.labels);
        for port in &mut inbound_ports {
            port.security.clone_from(&security);
            port.connection_pool = scope.and_then(|s| s.inbound_pool(port.port));
        }
        // DNS proxying: only a proxy the app's queries are captured to.
        let dns_hosts = if node.dns_capture {
            let answerable = kept.iter().map(|s| (s.name.as_str(), &s.dns_addresses[..]));
            super::dns_table::dns_hosts(answerable, namespace)
        } else {
            Vec::new()
        };
        let outbound_traffic_policy = scope
            .and_then(|s| s.outbound_policy)
            .unwrap_or(self.mesh.outbound);
        let egress_proxy_cluster = super::egress_proxy::cluster(
            scope.and_then(|s| s.egress_proxy.as_ref()),
            outbound_traffic_policy,
            &clusters,
            &mut warnings,
        );
        let mut output = ProxyOutput {
            config: ProxyConfig {
                version: String::new(),
                listeners,
                services,
                clusters,
                inbound_ports,
                outbound_traffic_policy: outbound_traffic_policy as i32,
                protocol_detection_timeout: self.mesh.protocol_detection_timeout.map(Into::into),
                path_normalization: self.mesh.path_normalization as i32,
                telemetry: self.node_telemetry(namespace, node),
                dns_hosts,
                egress_proxy_cluster,
                ..Default::default()
            },
            warnings,
        };
        self.attach_rate_limits(node, &mut output);
        self.attach_ext_authz(node, &mut output);
        self.attach_tracing(node, &mut output);
        self.attach_access_logs(node, &mut output);
        output
    }

    /// The Telemetry settings of a proxy: its resources', then MeshConfig's.
    fn node_telemetry(
        &self,
        namespace: &str,
        node: &Node,
    ) -> Option<weft_proto::proxy::v1::Telemetry> {
        let mut telemetry = self
            .mesh
            .fill_telemetry(self.telemetry.for_node(namespace, &node.labels));
        let named = self.telemetry.names_prometheus(namespace, &node.labels);
        self.mesh.fill_metrics(&mut telemetry, named);
        telemetry
    }

    /// A gateway proxy: the listeners and virtual hosts of the Gateways
    /// selecting it, and the clusters their routes use.
    fn compile_router(&self, node: &Node) -> ProxyOutput {
        let (listeners, services, mut warnings) = self.gateways.for_node(node);
        let clusters = self.clusters_for(&services, node, &mut warnings);
        // Policies select a gateway by its labels as they select a sidecar.
        let namespace = namespace_or_default(&node.namespace);
        let gateway_security = self.inbound_security(namespace, &node.labels);
        let mut output = ProxyOutput {
            config: ProxyConfig {
                listeners,
                services,
                clusters,
                gateway_security,
                // The proxy's own flag, else MeshConfig's gatewayTopology.
                num_trusted_proxies: match node.num_trusted_proxies {
                    0 => self.mesh.num_trusted_proxies.unwrap_or(0),
                    set => set,
                },
                path_normalization: self.mesh.path_normalization as i32,
                telemetry: self.node_telemetry(namespace, node),
                ..Default::default()
            },
            warnings,
        };
        self.attach_rate_limits(node, &mut output);
        self.attach_ext_authz(node, &mut output);
        self.attach_tracing(node, &mut output);
        self.attach_access_logs(node, &mut output);
        output
    }

    /// The AuthorizationPolicies and JWT rules that guard this workload's
    /// inbound ports; None when nothing applies.
    fn inbound_security(
        &self,
        namespace: &str,
        labels: &BTreeMap<String, String>,
    ) -> Option<pb::InboundSecurity> {
        let mut policies = self.authz.for_workload(namespace, labels);
        for policy in &mut policies {
            self.mesh.expand_principals(policy);
        }
        let jwt_rules = self.jwt.for_workload(namespace, labels);
        (!policies.is_empty() || !jwt_rules.is_empty()).then_some(pb::InboundSecurity {
            policies,
            jwt_rules,
        })
    }

    /// The clusters `services` refer to: each port's default cluster and
    /// every route destination (HTTP, TCP, TLS) and mirror, in name order.
    /// Each service's DestinationRule is the one `node` gets (its namespace
    /// and labels); locality-aware balancing and the rule's TLS credential
    /// are applied for it here.
    fn clusters_for(
        &self,
        services: &[pb::Service],
        node: &Node,
        warnings: &mut Vec<String>,
    ) -> Vec<pb::Cluster> {
        let namespace = namespace_or_default(&node.namespace);
        let mut names = BTreeSet::new();
        for service in services {
            for port in &service.ports {
                names.insert(cluster_name(port.port, "", &service.name));
                for route in &port.routes {
                    names.extend(route.clusters.iter().map(|c| c.cluster.clone()));
                    names.extend(route.mirrors.iter().map(|m| m.cluster.clone()));
                }
                let tcp = port.tcp_routes.iter().flat_map(|r| &r.clusters);
                let tls = port.tls_routes.iter().flat_map(|r| &r.clusters);
                names.extend(tcp.chain(tls).map(|c| c.cluster.clone()));
            }
        }
        names
            .iter()
            .filter_map(|name| self.cluster_for(name, node, namespace, warnings))
            .collect()
    }

    /// Cluster `name` as `node` (in `namespace`) gets it: its
    /// DestinationRule's variant, with locality-aware balancing and the
    /// rule's TLS credential applied for it.
    pub(super) fn cluster_for(
        &self,
        name: &str,
        node: &Node,
        namespace: &str,
        warnings: &mut Vec<String>,
    ) -> Option<pb::Cluster> {
        let resolved =
            self.rule_clusters
                .resolve_chosen(name, &self.clusters, namespace, &node.labels)?;
        let mut cluster = resolved.cluster;
        self.mesh.fill_cluster(&mut cluster);
        super::locality::apply(&mut cluster, node);
        if cluster
            .tls
            .as_ref()
            .is_some_and(|t| !t.credential_name.is_empty())
        {
            super::tls::attach_credential(
                &mut cluster,
                namespace,
                node.router,
                resolved.by_selector,
                self.credentials.0.as_ref(),
                warnings,
            );
        }
        Some(cluster)
    }
}

impl RoutedPorts {
    /// The ports as a proxy in `namespace` with `labels` sees them: without
    /// the routes limited to other callers.
    fn ports_for(
        &self,
        namespace: &str,
        labels: &BTreeMap<String, String>,
    ) -> Vec<pb::ServicePort> {
        if self.sources.is_empty() {
            return self.ports.clone();
        }
        let admitted = |sources: &[Option<Source>], index: usize| {
            sources
                .get(index)
                .and_then(Option::as_ref)
                .is_none_or(|s| s.admits(namespace, labels))
        };
        fn keep<T: Clone>(routes: &[T], admit: impl Fn(usize) -> bool) -> Vec<T> {
            let kept = routes.iter().enumerate().filter(|(index, _)| admit(*index));
            kept.map(|(_, route)| route.clone()).collect()
        }
        self.ports
            .iter()
            .zip(&self.sources)
            .map(|(port, sources)| pb::ServicePort {
                routes: keep(&port.routes, |i| admitted(&sources.http, i)),
                tcp_routes: keep(&port.tcp_routes, |i| admitted(&sources.tcp, i)),
                tls_routes: keep(&port.tls_routes, |i| admitted(&sources.tls, i)),
                ..port.clone()
            })
            .collect()
    }
}

fn listeners(
    node: &Node,
    namespace: &str,
    services: &[pb::Service],
    hosts: &HashMap<String, usize>,
    warnings: &mut Vec<String>,
) -> Vec<pb::Listener> {
    let mut listeners = Vec::new();
    if node.capture {
        for (name, address, kind) in [
            (
                "virtualOutbound",
                OUTBOUND_CAPTURE,
                pb::ListenerKind::OutboundCapture,
            ),
            (
                "virtualInbound",
                INBOUND_CAPTURE,
                pb::ListenerKind::InboundCapture,
            ),
        ] {
            listeners.push(pb::Listener {
                name: name.to_string(),
                address: address.to_string(),
                kind: kind as i32,
                service: String::new(),
                service_port: 0,
                inbound_port: 0,
                mtls_mode: 0,
                ..Default::default()
            });
        }
    }
    for explicit in &node.explicit_listeners {
        if explicit.address.parse::<SocketAddr>().is_err() {
            warnings.push(format!(
                "listener {:?}: not an ip:port address; left out",
                explicit.address
            ));
            continue;
        }
        let mut listener = pb::Listener {
            name: format!("explicit|{}", explicit.address),
            address: explicit.address.clone(),
            kind: pb::ListenerKind::Explicit as i32,
            service: String::new(),
            service_port: explicit.port,
            inbound_port: 0,
            mtls_mode: 0,
            ..Default::default()
        };
        if !explicit.service.is_empty() {
            let wanted = explicit.service.to_ascii_lowercase();
            let found = hosts
                .get(&wanted)
                .or_else(|| hosts.get(&fqdn(&wanted, namespace)))
                .map(|index| &services[*index]);
            let Some(service) = found else {
                warnings.push(format!(
                    "listener {}: no service {:?} visible to this proxy; listener left out",
                    explicit.address, explicit.service
                ));
                continue;
            };
            let port_ok = match (explicit.port, service.ports.as_slice()) {
                (0, [_only]) => true,
                (0, _) => false,
                (number, ports) => ports.iter().any(|p| p.port == number),
            };
            if !port_ok {
                warnings.push(format!(
                    "listener {}: service {:?} has no port {} (ports: {:?}); listener left out",
                    explicit.address,
                    service.name,
                    explicit.port,
                    service.ports.iter().map(|p| p.port).collect::<Vec<_>>()
                ));
                continue;
            }
            listener.service = service.name.clone();
        }
        if listeners.iter().any(|l| l.address == listener.address) {
            warnings.push(format!(
                "listener {}: address already used by another listener; left out",
                explicit.address
            ));
            continue;
        }
        listeners.push(listener);
    }
    listeners
}

fn inbound_ports(node: &Node, warnings: &mut Vec<String>) -> Vec<pb::InboundPort> {
    let mut seen = BTreeSet::new();
    let mut inbound = Vec::new();
    for port in &node.ports {
        if !(1..=65535).contains(&port.port) || !seen.insert(port.port) {
            warnings.push(format!(
                "inbound port {}: invalid or listed twice; left out",
                port.port
            ));
            continue;
        }
        inbound.push(pb::InboundPort {
            port: port.port,
            protocol: port.protocol,
            server_first: is_server_first(port.port, PortProtocol::Unknown),
            target: String::new(),
            security: None,
            mtls_mode: 0,
            connection_pool: None,
        });
    }
    inbound
}
