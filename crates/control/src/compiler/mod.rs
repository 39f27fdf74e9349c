//! Mesh state → each proxy's config.
//!
//! [`MeshIndex::build`] does the proxy-independent work once per mesh change:
//! the registry (services, endpoints, VIPs), every cluster, and every
//! service's ports with the routes of each VirtualService that could apply.
//! [`MeshIndex::proxy_config`] then only selects (visibility, Sidecar scope,
//! which VirtualService the proxy may see, routes limited to some callers by
//! `sourceLabels` / `sourceNamespace`) and adds the per-proxy parts
//! (listeners, inbound ports, short-name aliases), so it stays cheap for
//! many proxies × many services.
//!
//! The output always passes the proxy's own validation
//! (`weft_proxy::config::Snapshot::compile`); anything that cannot be
//! expressed is left out and reported by [`MeshIndex::warnings`] (mesh-wide)
//! or [`ProxyOutput::warnings`] (one proxy).

mod access_log_format;
mod access_log_providers;
mod authz;
mod checks;
mod clusters;
mod delegate;
mod dns_table;
mod egress_proxy;
pub mod ext_authz;
mod gateway;
mod gateway_auto;
mod gateway_tls;
mod hosts;
mod http_rule;
pub mod incremental;
mod locality;
pub mod mesh_defaults;
pub mod peer_authentication;
mod ports;
mod provider_warnings;
mod proxy;
mod ratelimit;
mod request_authn;
mod resilience;
mod routes;
mod scope;
mod shape;
mod telemetry;
mod telemetry_metrics;
pub mod tls;
mod trace_providers;

use std::collections::BTreeMap;
use std::sync::Arc;

use weft_api::Resource;
use weft_proto::discovery::v1::Node;
use weft_proto::proxy::v1::{self as pb, ProxyConfig};

use self::delegate::Delegates;
use self::hosts::{HostIndex, Visibility, kube_aliases, kube_parts};
use self::http_rule::{Audience, Source};
use self::peer_authentication::PeerPolicies;
use self::routes::CompiledVs;
use self::scope::Sidecars;
use crate::registry::{Registry, Workload};

pub use self::provider_warnings::{ProviderWarning, telemetry_provider_warnings};
pub use self::proxy::ProxyOutput;

/// What a build reads besides the resources and the MeshConfig.
pub struct BuildInputs<'a> {
    pub cluster: &'a weft_kube::convert::ClusterSnapshot,
    pub workloads: &'a [Workload],
    pub peers: &'a tls::MeshPeers,
    /// Where Gateway servers' `credentialName`s are found.
    pub credentials: std::sync::Arc<dyn crate::store::credentials::CredentialSource>,
}

/// Everything proxy-independent, compiled once per mesh change.
///
/// Its parts are shared (`Arc`) so that an index patched for an endpoint
/// change ([`incremental`]) shares everything but the changed clusters
/// with the index it was patched from.
#[derive(Debug, Default, Clone)]
pub struct MeshIndex {
    /// Sorted by (hostname, namespace).
    services: Arc<Vec<CompiledService>>,
    clusters: BTreeMap<String, Arc<pb::Cluster>>,
    /// Clusters under the DestinationRule other callers get.
    rule_clusters: clusters::RuleClusters,
    sidecars: Arc<Sidecars>,
    gateways: Arc<gateway::Gateways>,
    /// AuthorizationPolicy and RequestAuthentication, by scope.
    authz: Arc<authz::AuthzPolicies>,
    jwt: Arc<request_authn::JwtPolicies>,
    telemetry: Arc<telemetry::Policies>,
    /// RateLimit resources, by scope.
    rate_limits: Arc<ratelimit::Policies>,
    warnings: Arc<Vec<String>>,
    /// PeerAuthentication, for each proxy's inbound ports.
    peer_policies: Arc<PeerPolicies>,
    /// MeshConfig's defaults, where no resource says otherwise.
    mesh: Arc<mesh_defaults::MeshDefaults>,
    /// The label pairs any selector names (see [`shape`]).
    selector_labels: Arc<shape::SelectorLabels>,
    /// Where DestinationRule `credentialName`s are found, per proxy.
    credentials: crate::store::credentials::Credentials,
}

/// One service, ready to hand out.
#[derive(Debug)]
struct CompiledService {
    name: String,
    /// Lower-cased name, for the proxy's case-insensitive host lookup.
    key: String,
    namespace: String,
    visibility: Visibility,
    /// Names valid from every namespace (`x.ns.svc`, `x.ns`).
    aliases: Vec<String>,
    /// `(short name, its namespace)`: `x` works only from inside `ns`.
    short: Option<(String, String)>,
    vips: Vec<String>,
    /// The addresses DNS proxying answers for this host (see `dns_table`).
    dns_addresses: Vec<String>,
    cidrs: Vec<String>,
    /// Ports without any VirtualService.
    plain_ports: Vec<pb::ServicePort>,
    /// Ports as each applicable VirtualService routes them, preferred first.
    routed: Vec<RoutedPorts>,
}

#[derive(Debug)]
struct RoutedPorts {
    /// The VirtualService's `exportTo`.
    visibility: Visibility,
    ports: Vec<pb::ServicePort>,
    /// Per port: the calling proxies each route is limited to
    /// (`sourceLabels`, `sourceNamespace`). Empty when no route is limited.
    sources: Vec<PortSources>,
}

/// Per route of one port (HTTP, TCP, TLS, in the port's order): the
/// callers it is limited to, `None` for everyone.
#[derive(Debug, Default)]
struct PortSources {
    http: Vec<Option<Source>>,
    tcp: Vec<Option<Source>>,
    tls: Vec<Option<Source>>,
}

impl PortSources {
    fn limits_nobody(&self) -> bool {
        self.http
            .iter()
            .chain(&self.tcp)
            .chain(&self.tls)
            .all(Option::is_none)
    }
}

impl MeshIndex {
    pub fn build(resources: &[Resource], workloads: &[Workload]) -> Self {
        Self::build_with_peers(resources, workloads, &tls::MeshPeers::default())
    }

    /// [`build`](Self::build), with the connected proxies' mesh TLS facts:
    /// endpoints then lead to their proxies' inbound listeners and carry
    /// the identity auto-mTLS verifies.
    pub fn build_with_peers(
        resources: &[Resource],
        workloads: &[Workload],
        peers: &tls::MeshPeers,
    ) -> Self {
        Self::build_with_cluster(resources, &Default::default(), workloads, peers)
    }

    /// [`build_with_peers`](Self::build_with_peers), with a Kubernetes
    /// cluster's Services, endpoints and Pods in the registry.
    pub fn build_with_cluster(
        resources: &[Resource],
        cluster: &weft_kube::convert::ClusterSnapshot,
        workloads: &[Workload],
        peers: &tls::MeshPeers,
    ) -> Self {
        let none = std::sync::Arc::new(crate::store::credentials::NoCredentials);
        Self::build_with_credentials(resources, cluster, workloads, peers, none)
    }

    /// [`build_with_cluster`](Self::build_with_cluster), with where Gateway
    /// servers' `credentialName`s are found.
    pub fn build_with_credentials(
        resources: &[Resource],
        cluster: &weft_kube::convert::ClusterSnapshot,
        workloads: &[Workload],
        peers: &tls::MeshPeers,
        credentials: std::sync::Arc<dyn crate::store::credentials::CredentialSource>,
    ) -> Self {
        let inputs = BuildInputs {
            cluster,
            workloads,
            peers,
            credentials,
        };
        Self::build_with_mesh(resources, inputs, &weft_api::mesh::MeshConfig::default())
    }

    /// [`build_with_credentials`](Self::build_with_credentials) under a
    /// MeshConfig: its defaults apply where no resource says otherwise.
    pub fn build_with_mesh(
        resources: &[Resource],
        inputs: BuildInputs<'_>,
        mesh_config: &weft_api::mesh::MeshConfig,
    ) -> Self {
        let registry = Registry::build_with_cluster(resources, inputs.cluster, inputs.workloads);
        Self::build_from_registry(&registry, resources, inputs, mesh_config)
    }

    /// [`build_with_mesh`](Self::build_with_mesh) from a registry already
    /// built of `resources` and the inputs' cluster and workloads.
    pub(crate) fn build_from_registry(
        registry: &Registry,
        resources: &[Resource],
        inputs: BuildInputs<'_>,
        mesh_config: &weft_api::mesh::MeshConfig,
    ) -> Self {
        let BuildInputs {
            peers, credentials, ..
        } = inputs;
        let mesh = mesh_defaults::MeshDefaults::from(mesh_config);
        let mut warnings = registry.warnings().to_vec();
        let services = registry.services();
        let hosts = HostIndex::new(services);
        let (mut clusters, mut rule_clusters) = clusters::build(
            registry,
            &hosts,
            resources,
            &mesh.root_namespace,
            &mut warnings,
        );
        let peer_policies = PeerPolicies::new(resources).with_root(&mesh.root_namespace);
        tls::secure_endpoints(&mut clusters, peers, &peer_policies);
        rule_clusters.for_each_mut(|map| tls::secure_endpoints(map, peers, &peer_policies));

        let delegates = Delegates::new(resources);
        let mut virtual_services: Vec<CompiledVs> = resources
            .iter()
            .filter_map(|r| match r {
                Resource::VirtualService(object) => {
                    CompiledVs::new(object, Audience::Mesh, &delegates, &mut warnings)
                }
                _ => None,
            })
            .collect();
        virtual_services.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        // Per service: (matched through a wildcard, VirtualService index).
        // Istio gives each host one VirtualService: exact over wildcard, then
        // the first by namespace and name.
        let mut candidates: BTreeMap<usize, BTreeMap<usize, bool>> = BTreeMap::new();
        for (vs_index, vs) in virtual_services.iter().enumerate() {
            for host in &vs.hosts {
                for (service, wildcard) in hosts.matching(host, &vs.namespace) {
                    let held = candidates.entry(service).or_default().entry(vs_index);
                    let entry = held.or_insert(wildcard);
                    *entry &= wildcard;
                }
            }
        }

        let mut compiled = Vec::with_capacity(services.len());
        for (index, service) in services.iter().enumerate() {
            let mut order: Vec<(bool, usize)> = candidates
                .get(&index)
                .map(|c| c.iter().map(|(vs, wildcard)| (*wildcard, *vs)).collect())
                .unwrap_or_default();
            order.sort();
            let routed = order
                .into_iter()
                .map(|(_, vs_index)| {
                    let vs = &virtual_services[vs_index];
                    let mut ports = Vec::with_capacity(service.ports.len());
                    let mut sources = Vec::with_capacity(service.ports.len());
                    for port in &service.ports {
                        let mut out = ports::service_port(port);
                        let mut port_sources = PortSources::default();
                        if ports::carries_http(port) {
                            let routes =
                                vs.routes(port, services, &hosts, &mut clusters, &mut warnings);
                            (out.routes, port_sources.http) = routes.into_iter().unzip();
                            // No rule for this port: Istio's default route.
                            if out.routes.is_empty()
                                && let Some(route) =
                                    ports::default_route(port, &service.hostname, &clusters)
                            {
                                out.routes.push(route);
                                port_sources.http.push(None);
                            }
                        }
                        let (tcp, tls) =
                            vs.l4_routes(port, services, &hosts, &mut clusters, &mut warnings);
                        (out.tcp_routes, port_sources.tcp) = tcp.into_iter().unzip();
                        (out.tls_routes, port_sources.tls) = tls.into_iter().unzip();
                        ports.push(out);
                        sources.push(port_sources);
                    }
                    if sources.iter().all(PortSources::limits_nobody) {
                        sources.clear();
                    }
                    RoutedPorts {
                        visibility: vs.visibility.clone(),
                        ports,
                        sources,
                    }
                })
                .collect();
            let key = service.hostname.to_ascii_lowercase();
            compiled.push(CompiledService {
                name: service.hostname.clone(),
                namespace: service.namespace.clone(),
                visibility: Visibility::from_export_to(&service.export_to, &service.namespace),
                aliases: kube_aliases(&key),
                short: kube_parts(&key).map(|(short, ns)| (short.to_string(), ns.to_string())),
                vips: service.vips.iter().map(ToString::to_string).collect(),
                dns_addresses: dns_table::answerable(service),
                cidrs: clusters::match_ranges(service, registry.endpoints(&service.id())),
                plain_ports: service
                    .ports
                    .iter()
                    .map(|port| pb::ServicePort {
                        routes: ports::default_route(port, &service.hostname, &clusters)
                            .into_iter()
                            .collect(),
                        ..ports::service_port(port)
                    })
                    .collect(),
                routed,
                key,
            });
        }
        let sidecars = Sidecars::build(resources, &mut warnings).with_root(&mesh.root_namespace);
        let gateway_inputs = gateway::Inputs {
            resources,
            services,
            hosts: &hosts,
            delegates: &delegates,
            credentials: credentials.clone(),
        };
        let gateways = gateway::Gateways::build(&gateway_inputs, &mut clusters, &mut warnings);
        let authz = authz::AuthzPolicies::build(
            resources.iter().filter_map(|r| match r {
                Resource::AuthorizationPolicy(object) => Some(object),
                _ => None,
            }),
            &mut warnings,
        )
        .with_root(&mesh.root_namespace);
        mesh.ext_authz
            .check_policies(authz.policies(), &mut warnings);
        let jwt = request_authn::JwtPolicies::build(
            resources.iter().filter_map(|r| match r {
                Resource::RequestAuthentication(object) => Some(object),
                _ => None,
            }),
            &mut warnings,
        )
        .with_root(&mesh.root_namespace);
        let telemetry = telemetry::Policies::build(resources, &mut warnings)
            .with_root(&mesh.root_namespace)
            .with_log_defaults(&mesh.logging.defaults);
        let mut providers_left_out = Vec::new();
        trace_providers::check_telemetry(resources, &mesh.tracing, &mut providers_left_out);
        access_log_providers::check_telemetry(resources, &mesh.logging, &mut providers_left_out);
        warnings.extend(providers_left_out.iter().map(ToString::to_string));
        let selector_labels = shape::SelectorLabels::collect(resources);
        let rate_limits = ratelimit::Policies::build(resources);
        Self {
            services: Arc::new(compiled),
            clusters: clusters
                .into_iter()
                .map(|(name, cluster)| (name, Arc::new(cluster)))
                .collect(),
            rule_clusters,
            sidecars: Arc::new(sidecars),
            gateways: Arc::new(gateways),
            authz: Arc::new(authz),
            jwt: Arc::new(jwt),
            telemetry: Arc::new(telemetry),
            rate_limits: Arc::new(rate_limits),
            warnings: Arc::new(warnings),
            peer_policies: Arc::new(peer_policies),
            mesh: Arc::new(mesh),
            selector_labels: Arc::new(selector_labels),
            credentials: crate::store::credentials::Credentials(credentials),
        }
    }

    /// The labels of a proxy that can change its config: those some
    /// selector names. Proxies alike in everything else but these labels
    /// get the same config, so one compilation serves them all.
    pub fn relevant_labels(&self, labels: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        self.selector_labels.relevant(labels)
    }

    /// The config of one proxy.
    pub fn proxy_config(&self, node: &Node) -> ProxyConfig {
        self.compile(node).config
    }

    /// Mesh-wide problems: config left out because the proxy model cannot
    /// express it yet, conflicts, dangling references. Stable for a given
    /// input, so a caller can log them once per mesh change.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }
}

#[cfg(test)]
mod corpus_tests;
#[cfg(test)]
mod dr_tests;
#[cfg(test)]
mod gateway_policy_tests;
#[cfg(test)]
mod gateway_tests;
#[cfg(test)]
mod gateway_tls_tests;
#[cfg(test)]
mod headless_tests;
#[cfg(test)]
mod mesh_config_tests;
#[cfg(test)]
mod ratelimit_tests;
#[cfg(test)]
mod route_tests;
#[cfg(test)]
mod sidecar_tests;
#[cfg(test)]
mod tests;
