//! The compiled, validated form of a [`pb::ProxyConfig`]: lookup tables with
//! every reference resolved, so the data path never fails on a dangling name.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use weft_proto::proxy::v1 as pb;

use super::ConfigError;
use super::clusters::compile_clusters;
pub use super::clusters::{Cluster, Endpoint};
use super::route::{Route, compile_route};
use super::tcp_route::{L4Route, compile_tcp_routes, compile_tls_routes};

/// Istio's `connectionPool.tcp.connectTimeout` default.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Long enough for a client's first write on loopback or a LAN, short enough
/// that a server-first protocol on an undeclared port is only briefly delayed.
pub const DEFAULT_DETECT_TIMEOUT: Duration = Duration::from_millis(100);

/// What a port carries, as declared; `Detect` means sniff the first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortProtocol {
    Detect,
    Http,
    Http2,
    Grpc,
    Tcp,
    Tls,
}

impl PortProtocol {
    fn from_pb(value: i32) -> Option<Self> {
        Some(match pb::Protocol::try_from(value).ok()? {
            pb::Protocol::Unspecified => Self::Detect,
            pb::Protocol::Http => Self::Http,
            pb::Protocol::Http2 => Self::Http2,
            pb::Protocol::Grpc => Self::Grpc,
            pb::Protocol::Tcp => Self::Tcp,
            pb::Protocol::Tls => Self::Tls,
        })
    }

    /// Whether traffic on this port is forwarded as opaque bytes without
    /// waiting for the client to speak first.
    pub fn is_opaque(self, server_first: bool) -> bool {
        server_first || matches!(self, Self::Tcp | Self::Tls)
    }
}

/// Which HTTP version the proxy speaks to a cluster's endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamProtocol {
    ClientProtocol,
    Http1,
    Http2,
}

pub struct ListenerSpec {
    pub name: String,
    pub address: SocketAddr,
    pub kind: pb::ListenerKind,
    /// EXPLICIT listeners bound to one service port.
    pub service: Option<(Arc<Service>, u16)>,
    /// An inbound listener without interception: the workload port its
    /// connections are for.
    pub inbound_port: Option<u16>,
    /// PeerAuthentication for what this listener accepts on ports the
    /// workload did not declare.
    pub mtls: pb::mtls::Mode,
    /// GATEWAY only: what the port carries (plaintext HTTP by default).
    pub gateway_mode: pb::GatewayMode,
    /// GATEWAY with HTTPS or TLS_TERMINATE: the TLS servers by SNI.
    pub gateway_tls: Option<Arc<super::GatewayTls>>,
}

pub struct Service {
    pub name: String,
    pub namespace: String,
    pub ports: Vec<ServicePort>,
}

impl Service {
    pub fn port(&self, number: u16) -> Option<&ServicePort> {
        self.ports.iter().find(|p| p.port == number)
    }
}

pub struct ServicePort {
    pub port: u16,
    pub protocol: PortProtocol,
    pub server_first: bool,
    /// Never empty: a port without routes gets one route to its cluster.
    pub routes: Vec<Arc<Route>>,
    /// Where opaque TCP for this port goes when no TCP route matches.
    pub tcp_cluster: Arc<Cluster>,
    /// VirtualService `tcp` routes, first match wins (see [`super::tcp_route`]).
    pub tcp_routes: Vec<L4Route>,
    /// VirtualService `tls` routes by SNI, first match wins.
    pub tls_routes: Vec<L4Route>,
}

pub struct InboundPort {
    pub port: u16,
    pub protocol: PortProtocol,
    pub server_first: bool,
    pub cluster: Arc<Cluster>,
    /// PeerAuthentication's mode for this port, as weftd compiled it.
    pub mtls: pb::mtls::Mode,
    /// Authorization and JWT checks (see [`super::authz`]); None: none.
    pub guard: Option<Arc<crate::policy::authz::InboundGuard>>,
}

pub struct Snapshot {
    /// The config as received, for `/config_dump`.
    pub config: pb::ProxyConfig,
    pub listeners: Vec<ListenerSpec>,
    pub outbound_policy: pb::OutboundTrafficPolicy,
    pub detect_timeout: Duration,
    /// Edge defences (path normalization, deadlines, connection limit).
    pub hardening: super::Hardening,
    /// How connections to each endpoint address are secured.
    upstream_tls: super::upstream_tls::Decisions,
    services_by_host: HashMap<String, Arc<Service>>,
    services_by_vip: HashMap<IpAddr, Arc<Service>>,
    /// Services by address range (ServiceEntry CIDRs), narrowest first.
    services_by_cidr: Vec<(ipnet::IpNet, Arc<Service>)>,
    clusters: HashMap<String, Arc<Cluster>>,
    inbound: HashMap<u16, InboundPort>,
    /// What GATEWAY listeners check before routing (policies selecting the
    /// gateway); None: nothing.
    gateway_guard: Option<Arc<crate::policy::authz::InboundGuard>>,
    /// Rate limits of inbound and gateway requests.
    pub rate_limits: super::ratelimit::RateLimits,
    /// The names the DNS server answers itself (empty without DNS capture).
    pub names: Arc<super::dns::NameTable>,
    /// Telemetry metric overrides and access-log filters, compiled.
    pub custom_telemetry: super::telemetry::Custom,
}

impl Snapshot {
    /// Validates and compiles; every problem is reported, one per line.
    /// Pure: what must outlive a config change (outlier ejections, when an
    /// endpoint joined) is carried by the runtime built beside it
    /// (`balance::Clusters::build`).
    pub fn compile(config: pb::ProxyConfig, source_name: &str) -> Result<Self, ConfigError> {
        let mut problems = Problems::default();
        let clusters = compile_clusters(&config, &mut problems);
        let (services_by_host, services_by_vip, services_by_cidr) =
            compile_services(&config, &clusters, &mut problems);
        let providers = super::ext_authz::compile(&config, &clusters, &mut problems);
        let inbound = compile_inbound(&config, &providers, &mut problems);
        super::egress_proxy::check(&config, &clusters, &mut problems);
        let gateway_guard = super::authz::compile_security(
            config.gateway_security.as_ref(),
            "gatewaySecurity",
            &providers,
            &mut problems,
        );
        let listeners = compile_listeners(&config, &services_by_host, &mut problems);
        let detect_timeout = duration(
            config.protocol_detection_timeout.as_ref(),
            "protocolDetectionTimeout",
            &mut problems,
        )
        .unwrap_or(DEFAULT_DETECT_TIMEOUT);
        let hardening = super::Hardening::compile(&config, &mut problems);
        let names = Arc::new(super::dns::compile_names(&config.dns_hosts, &mut problems));
        let upstream_tls = super::upstream_tls::decisions(&config);
        let rate_limits = super::ratelimit::RateLimits::compile(
            config.rate_limits.as_ref(),
            &clusters,
            &mut problems,
        );
        let custom_telemetry = super::telemetry::Custom::compile(config.telemetry.as_ref())
            .unwrap_or_else(|problem| {
                problems.0.push(problem);
                Default::default()
            });
        let outbound_policy = pb::OutboundTrafficPolicy::try_from(config.outbound_traffic_policy)
            .unwrap_or(pb::OutboundTrafficPolicy::AllowAny);
        if !problems.0.is_empty() {
            return Err(ConfigError::new(source_name, problems.0.join("\n  ")));
        }
        Ok(Self {
            config,
            listeners,
            outbound_policy,
            detect_timeout,
            hardening,
            upstream_tls,
            services_by_host,
            services_by_vip,
            services_by_cidr,
            clusters,
            inbound,
            gateway_guard,
            rate_limits,
            names,
            custom_telemetry,
        })
    }

    /// How a connection of `cluster` to `addr` is secured: the cluster's
    /// own decision, else the address's (plaintext when no cluster names
    /// it: passthrough).
    pub fn upstream_tls(&self, cluster: &str, addr: SocketAddr) -> super::UpstreamTls {
        self.upstream_tls.cluster(cluster, addr)
    }

    pub fn version(&self) -> &str {
        &self.config.version
    }

    /// Looks a service up by host name (case-insensitive, without port).
    pub fn service_by_host(&self, host: &str) -> Option<&Arc<Service>> {
        if host.bytes().any(|b| b.is_ascii_uppercase()) {
            return self.services_by_host.get(&host.to_ascii_lowercase());
        }
        self.services_by_host.get(host)
    }

    /// A gateway's virtual host for `host`: the exact name, else the
    /// longest `*.suffix` wildcard that covers it, else `*`.
    pub fn service_for_gateway_host(&self, host: &str) -> Option<&Arc<Service>> {
        self.service_for_host(host)
            .or_else(|| self.services_by_host.get("*"))
    }

    /// The service an outbound request's host or a TLS SNI names: the
    /// exact name, else the longest `*.suffix` wildcard host (a wildcard
    /// ServiceEntry) that covers it.
    pub fn service_for_host(&self, host: &str) -> Option<&Arc<Service>> {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        if let Some(found) = self.services_by_host.get(&host) {
            return Some(found);
        }
        let mut rest = host.as_str();
        while let Some((_, parent)) = rest.split_once('.') {
            if let Some(found) = self.services_by_host.get(&format!("*.{parent}")) {
                return Some(found);
            }
            rest = parent;
        }
        None
    }

    pub fn service_by_vip(&self, ip: IpAddr) -> Option<&Arc<Service>> {
        self.services_by_vip.get(&ip).or_else(|| {
            self.services_by_cidr
                .iter()
                .find(|(net, _)| net.contains(&ip))
                .map(|(_, service)| service)
        })
    }

    pub fn cluster(&self, name: &str) -> Option<&Arc<Cluster>> {
        self.clusters.get(name)
    }

    pub fn clusters(&self) -> impl Iterator<Item = &Arc<Cluster>> {
        self.clusters.values()
    }

    /// The workload's ports, each with its cluster.
    pub fn inbound_ports(&self) -> impl Iterator<Item = &InboundPort> {
        self.inbound.values()
    }

    pub fn inbound_port(&self, port: u16) -> Option<&InboundPort> {
        self.inbound.get(&port)
    }

    /// The authorization guarding `port`, else the workload's (weftd gives
    /// every port of a workload the same policies), so that traffic to an
    /// undeclared port is not left unchecked.
    pub fn inbound_guard(&self, port: u16) -> Option<Arc<crate::policy::authz::InboundGuard>> {
        match self.inbound.get(&port) {
            Some(declared) => declared.guard.clone(),
            None => self.inbound.values().find_map(|p| p.guard.clone()),
        }
    }

    /// The authorization guarding every GATEWAY listener.
    pub fn gateway_guard(&self) -> Option<Arc<crate::policy::authz::InboundGuard>> {
        self.gateway_guard.clone()
    }

    pub fn listener(&self, address: SocketAddr) -> Option<&ListenerSpec> {
        self.listeners.iter().find(|l| l.address == address)
    }
}

#[derive(Default)]
pub(super) struct Problems(pub(super) Vec<String>);

impl Problems {
    pub(super) fn push(&mut self, path: impl std::fmt::Display, message: impl std::fmt::Display) {
        self.0.push(format!("{path}: {message}"));
    }
}

pub(super) fn duration(
    value: Option<&pbjson_types::Duration>,
    path: &str,
    problems: &mut Problems,
) -> Option<Duration> {
    let value = value?;
    if value.seconds < 0 || value.nanos < 0 {
        problems.push(path, "must not be negative");
        return None;
    }
    Some(Duration::new(value.seconds as u64, value.nanos as u32))
}

fn port_number(value: u32, path: &str, problems: &mut Problems) -> Option<u16> {
    match u16::try_from(value) {
        Ok(port) if port > 0 => Some(port),
        _ => {
            problems.push(path, format!("must be 1..65535, got {value}"));
            None
        }
    }
}

type ServiceTables = (
    HashMap<String, Arc<Service>>,
    HashMap<IpAddr, Arc<Service>>,
    Vec<(ipnet::IpNet, Arc<Service>)>,
);

fn compile_services(
    config: &pb::ProxyConfig,
    clusters: &HashMap<String, Arc<Cluster>>,
    problems: &mut Problems,
) -> ServiceTables {
    let mut by_host = HashMap::new();
    let mut by_vip = HashMap::new();
    let mut by_cidr = Vec::new();
    for (index, service) in config.services.iter().enumerate() {
        let path = format!("services[{index}]");
        if service.name.is_empty() {
            problems.push(format!("{path}.name"), "is required");
            continue;
        }
        let ports = service
            .ports
            .iter()
            .enumerate()
            .filter_map(|(p_index, port)| {
                compile_service_port(
                    service,
                    port,
                    &format!("{path}.ports[{p_index}]"),
                    clusters,
                    problems,
                )
            })
            .collect::<Vec<_>>();
        let mut seen = HashSet::new();
        for port in &ports {
            if !seen.insert(port.port) {
                problems.push(
                    format!("{path}.ports"),
                    format!("port {} is listed twice", port.port),
                );
            }
        }
        let compiled = Arc::new(Service {
            name: service.name.clone(),
            namespace: service.namespace.clone(),
            ports,
        });
        let hosts = std::iter::once(&service.name).chain(service.hosts.iter());
        for host in hosts {
            let host = host.to_ascii_lowercase();
            if let Some(other) = by_host.insert(host.clone(), compiled.clone())
                && other.name != compiled.name
            {
                problems.push(
                    format!("{path}.hosts"),
                    format!("host {host:?} is also a host of service {:?}", other.name),
                );
            }
        }
        for (v_index, vip) in service.vips.iter().enumerate() {
            match vip.parse::<IpAddr>() {
                Ok(ip) => {
                    if let Some(other) = by_vip.insert(ip, compiled.clone()) {
                        problems.push(
                            format!("{path}.vips[{v_index}]"),
                            format!("{ip} is also a VIP of service {:?}", other.name),
                        );
                    }
                }
                Err(_) => problems.push(
                    format!("{path}.vips[{v_index}]"),
                    format!("{vip:?} is not an IP address"),
                ),
            }
        }
        for (c_index, cidr) in service.cidrs.iter().enumerate() {
            match cidr.parse::<ipnet::IpNet>() {
                Ok(net) => by_cidr.push((net.trunc(), compiled.clone())),
                Err(_) => problems.push(
                    format!("{path}.cidrs[{c_index}]"),
                    format!("{cidr:?} is not an address range (a.b.c.d/n)"),
                ),
            }
        }
    }
    // The narrowest range containing an address wins.
    by_cidr.sort_by_key(|(net, _)| std::cmp::Reverse(net.prefix_len()));
    (by_host, by_vip, by_cidr)
}

fn compile_service_port(
    service: &pb::Service,
    port: &pb::ServicePort,
    path: &str,
    clusters: &HashMap<String, Arc<Cluster>>,
    problems: &mut Problems,
) -> Option<ServicePort> {
    let number = port_number(port.port, &format!("{path}.port"), problems)?;
    let protocol = PortProtocol::from_pb(port.protocol).unwrap_or(PortProtocol::Detect);
    let explicit_default = !port.cluster.is_empty();
    let default_name = if explicit_default {
        port.cluster.clone()
    } else {
        format!("outbound|{number}||{}", service.name)
    };
    let default_cluster = clusters.get(&default_name).cloned();
    if explicit_default && default_cluster.is_none() {
        problems.push(
            format!("{path}.cluster"),
            format!("no cluster named {default_name:?}"),
        );
        return None;
    }
    let mut routes = Vec::new();
    for (r_index, route) in port.routes.iter().enumerate() {
        let r_path = format!("{path}.routes[{r_index}]");
        if let Some(compiled) = compile_route(route, &r_path, clusters, problems) {
            routes.push(Arc::new(compiled));
        }
    }
    // A port with only TCP/TLS routes (a gateway's TCP and TLS servers)
    // needs no HTTP route: unmatched bytes go nowhere (BlackHoleCluster).
    let l4_only = port.routes.is_empty()
        && default_cluster.is_none()
        && (!(port.tcp_routes.is_empty() && port.tls_routes.is_empty())
            || matches!(protocol, PortProtocol::Tcp | PortProtocol::Tls));
    if port.routes.is_empty() && !l4_only {
        let Some(cluster) = default_cluster.clone() else {
            problems.push(
                format!("{path}.cluster"),
                format!(
                    "no routes and no cluster named {default_name:?}: add one or set `cluster`"
                ),
            );
            return None;
        };
        routes.push(Arc::new(Route::to_cluster(cluster)));
    }
    if routes.is_empty() && !l4_only {
        // Every route had a problem, already reported.
        return None;
    }
    // Opaque TCP on an HTTP port follows the default cluster, else the first
    // forwarding route; a port that only redirects or answers has nowhere to
    // send bytes (Istio's BlackHoleCluster: no endpoints, flag UH).
    let tcp_cluster = default_cluster
        .or_else(|| {
            routes
                .iter()
                .find_map(|r| Some(r.forward()?.destinations.first()?.cluster.clone()))
        })
        .unwrap_or_else(|| Arc::new(Cluster::black_hole()));
    let tcp_routes = compile_tcp_routes(&port.tcp_routes, path, clusters, problems);
    let tls_routes = compile_tls_routes(&port.tls_routes, path, clusters, problems);
    Some(ServicePort {
        port: number,
        protocol,
        server_first: port.server_first,
        routes,
        tcp_cluster,
        tcp_routes,
        tls_routes,
    })
}

fn compile_inbound(
    config: &pb::ProxyConfig,
    providers: &super::ext_authz::Providers,
    problems: &mut Problems,
) -> HashMap<u16, InboundPort> {
    let mut inbound = HashMap::new();
    for (index, port) in config.inbound_ports.iter().enumerate() {
        let path = format!("inboundPorts[{index}]");
        let Some(number) = port_number(port.port, &format!("{path}.port"), problems) else {
            continue;
        };
        let target = if port.target.is_empty() {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), number)
        } else {
            match port.target.parse() {
                Ok(target) => target,
                Err(_) => {
                    problems.push(
                        format!("{path}.target"),
                        format!("{:?} is not an ip:port address", port.target),
                    );
                    continue;
                }
            }
        };
        let mut cluster = Cluster::new(
            format!("inbound|{number}||"),
            String::new(),
            UpstreamProtocol::ClientProtocol,
            DEFAULT_CONNECT_TIMEOUT,
            vec![Endpoint {
                address: target,
                labels: BTreeMap::new(),
                weight: 1,
                priority: 0,
                workload: None,
                mesh: false,
                dialled: None,
            }],
        );
        cluster.limits = super::cluster::compile_limits(
            port.connection_pool.as_ref(),
            &format!("{path}.connectionPool"),
            problems,
        );
        let compiled = InboundPort {
            port: number,
            protocol: PortProtocol::from_pb(port.protocol).unwrap_or(PortProtocol::Detect),
            server_first: port.server_first,
            cluster: Arc::new(cluster),
            mtls: port.mtls_mode(),
            guard: super::authz::compile_security(
                port.security.as_ref(),
                &format!("{path}.security"),
                providers,
                problems,
            ),
        };
        if inbound.insert(number, compiled).is_some() {
            problems.push(
                format!("{path}.port"),
                format!("port {number} is listed twice"),
            );
        }
    }
    inbound
}

fn compile_listeners(
    config: &pb::ProxyConfig,
    services: &HashMap<String, Arc<Service>>,
    problems: &mut Problems,
) -> Vec<ListenerSpec> {
    let mut listeners: Vec<ListenerSpec> = Vec::new();
    for (index, listener) in config.listeners.iter().enumerate() {
        let path = format!("listeners[{index}]");
        let Ok(address) = listener.address.parse::<SocketAddr>() else {
            problems.push(
                format!("{path}.address"),
                format!("{:?} is not an ip:port address", listener.address),
            );
            continue;
        };
        let kind = pb::ListenerKind::try_from(listener.kind).unwrap_or_default();
        if kind == pb::ListenerKind::Unspecified {
            problems.push(
                format!("{path}.kind"),
                "is required: OUTBOUND_CAPTURE, INBOUND_CAPTURE, EXPLICIT or GATEWAY",
            );
            continue;
        }
        let mut service = None;
        if !listener.service.is_empty() {
            if kind != pb::ListenerKind::Explicit && kind != pb::ListenerKind::Gateway {
                problems.push(
                    format!("{path}.service"),
                    "only EXPLICIT and GATEWAY listeners name a service",
                );
                continue;
            }
            let Some(found) = services.get(&listener.service.to_ascii_lowercase()) else {
                problems.push(
                    format!("{path}.service"),
                    format!("no service named {:?}", listener.service),
                );
                continue;
            };
            let port = match (listener.service_port, found.ports.as_slice()) {
                (0, [only]) => only.port,
                (0, ports) => {
                    problems.push(
                        format!("{path}.servicePort"),
                        format!(
                            "service {:?} has {} ports: say which one",
                            found.name,
                            ports.len()
                        ),
                    );
                    continue;
                }
                (number, _) if found.ports.iter().any(|p| u32::from(p.port) == number) => {
                    number as u16
                }
                (number, _) => {
                    problems.push(
                        format!("{path}.servicePort"),
                        format!("service {:?} has no port {number}", found.name),
                    );
                    continue;
                }
            };
            service = Some((found.clone(), port));
        }
        let gateway_mode = listener.gateway_mode();
        let Some(gateway_tls) = gateway_tls(listener, kind, service.is_some(), &path, problems)
        else {
            continue;
        };
        if listeners.iter().any(|l| l.address == address) {
            problems.push(
                format!("{path}.address"),
                format!("{address} is used by another listener"),
            );
            continue;
        }
        listeners.push(ListenerSpec {
            name: listener.name.clone(),
            address,
            kind,
            service,
            inbound_port: u16::try_from(listener.inbound_port)
                .ok()
                .filter(|port| *port != 0),
            mtls: listener.mtls_mode(),
            gateway_mode,
            gateway_tls,
        });
    }
    listeners
}

/// A gateway listener's TLS servers, checked against its mode: `Some(None)`
/// when it terminates no TLS, `None` (with problems) when it cannot serve.
fn gateway_tls(
    listener: &pb::Listener,
    kind: pb::ListenerKind,
    has_service: bool,
    path: &str,
    problems: &mut Problems,
) -> Option<Option<Arc<super::GatewayTls>>> {
    use pb::GatewayMode as M;
    let mode = listener.gateway_mode();
    if kind != pb::ListenerKind::Gateway {
        if mode != M::GatewayHttp || !listener.tls_servers.is_empty() {
            problems.push(
                format!("{path}.gatewayMode"),
                "only GATEWAY listeners have a gateway mode or TLS servers",
            );
            return None;
        }
        return Some(None);
    }
    let terminates = matches!(mode, M::GatewayHttps | M::GatewayTlsTerminate);
    if terminates == listener.tls_servers.is_empty() {
        problems.push(
            format!("{path}.tlsServers"),
            if terminates {
                "HTTPS and TLS_TERMINATE need at least one TLS server"
            } else {
                "only HTTPS and TLS_TERMINATE listeners terminate TLS"
            },
        );
        return None;
    }
    let l4 = matches!(
        mode,
        M::GatewayTlsPassthrough | M::GatewayTlsTerminate | M::GatewayTcp
    );
    if l4 != has_service {
        problems.push(
            format!("{path}.service"),
            if l4 {
                "TCP and TLS gateway modes need the service whose routes they follow"
            } else {
                "an HTTP gateway routes by host and names no service"
            },
        );
        return None;
    }
    if !terminates {
        return Some(None);
    }
    let mut found = Vec::new();
    let compiled =
        super::GatewayTls::compile(&listener.tls_servers, mode == M::GatewayHttps, &mut found);
    for (field, message) in found {
        problems.push(format!("{path}.{field}"), message);
    }
    compiled.map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_config;

    fn compile(yaml: &str) -> Result<Snapshot, ConfigError> {
        Snapshot::compile(parse_config(yaml, "t.yaml")?, "t.yaml")
    }

    const TWO_ENDPOINTS: &str = "
services:
- name: web.default.svc.cluster.local
  hosts: [web, Web.Default]
  vips: [240.240.0.1]
  ports: [{port: 80, protocol: HTTP}]
clusters:
- name: outbound|80||web.default.svc.cluster.local
  loadBalancer: {policy: ROUND_ROBIN}
  endpoints:
  - {address: 127.0.0.1:8001, weight: 2}
  - {address: 127.0.0.1:8002}
";

    #[test]
    fn hosts_and_vips_resolve_case_insensitively() {
        let snapshot = compile(TWO_ENDPOINTS).expect("valid");
        assert!(snapshot.service_by_host("WEB").is_some());
        assert!(snapshot.service_by_host("web.default").is_some());
        assert!(
            snapshot
                .service_by_vip("240.240.0.1".parse().expect("ip"))
                .is_some()
        );
        assert!(snapshot.service_by_host("other").is_none());
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let err = compile(
            "
listeners:
- {name: a, address: nowhere, kind: EXPLICIT}
- {name: b, address: 127.0.0.1:1, kind: EXPLICIT, service: missing}
services:
- name: s
  ports: [{port: 80, routes: [{clusters: [{cluster: gone}]}]}]
",
        )
        .err()
        .expect("invalid")
        .to_string();
        assert!(err.contains("listeners[0].address"), "{err}");
        assert!(
            err.contains("listeners[1].service: no service named \"missing\""),
            "{err}"
        );
        assert!(
            err.contains("services[0].ports[0].routes[0].clusters[0].cluster"),
            "{err}"
        );
    }

    #[test]
    fn route_weights_split_traffic() {
        let snapshot = compile(
            "
services:
- name: s
  ports: [{port: 80, routes: [{clusters: [{cluster: a, weight: 75}, {cluster: b, weight: 25}]}]}]
clusters: [{name: a}, {name: b}]
",
        )
        .expect("valid");
        let route = &snapshot.service_by_host("s").expect("service").ports[0].routes[0];
        let forward = route.forward().expect("forwarding route");
        let to_a = (0..100)
            .filter(|_| forward.destinations[forward.pick()].cluster.name == "a")
            .count();
        assert_eq!(to_a, 75);
    }
}
