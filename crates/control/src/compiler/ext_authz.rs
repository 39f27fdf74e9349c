//! CUSTOM AuthorizationPolicies → the external authorizers each proxy asks
//! (`ProxyConfig.ext_authz_providers`), resolved from MeshConfig's
//! `extensionProviders` of kind envoyExtAuthzGrpc or envoyExtAuthzHttp.
//!
//! Each provider's service port becomes a cluster added to the proxy's
//! clusters whatever its Sidecar scope says (the proxy must reach the
//! authorizer to enforce the policy), as for the rate-limit service.
//!
//! A CUSTOM policy naming no provider, an unknown one, one of another kind,
//! or one whose service is not in the mesh keeps an empty `provider`: the
//! proxy denies what it matches (fail closed, as Istio), and a warning
//! names the policy and the provider.

use std::collections::{BTreeMap, BTreeSet};

use weft_api::field::parse_duration;
use weft_api::mesh::MeshConfig;
use weft_api::mesh::providers::{ExtAuthzGrpc, ExtAuthzHttp, RequestBody};
use weft_proto::proxy::v1 as pb;

use super::hosts::fqdn;
use super::ports::cluster_name;
use crate::registry::namespace_or_default;

/// Istio's default for a provider without `timeout`.
const DEFAULT_TIMEOUT_SECS: u64 = 600;

/// One `extensionProviders[]` name, as CUSTOM policies may use it.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Provider {
    /// An ext_authz provider: its service's cluster name and the settings
    /// (`cluster` filled in).
    ExtAuthz(Box<pb::ExtAuthzProvider>),
    /// A provider of another kind (tracing, access log, ...).
    OtherKind(&'static str),
}

/// The MeshConfig's providers by name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Providers(BTreeMap<String, Provider>);

impl From<&MeshConfig> for Providers {
    fn from(mesh: &MeshConfig) -> Self {
        let root = mesh.root_namespace().to_string();
        let mut out = BTreeMap::new();
        for provider in &mesh.extension_providers {
            let entry = if let Some(grpc) = &provider.envoy_ext_authz_grpc {
                Provider::ExtAuthz(Box::new(from_grpc(&provider.name, grpc, &root)))
            } else if let Some(http) = &provider.envoy_ext_authz_http {
                Provider::ExtAuthz(Box::new(from_http(&provider.name, http, &root)))
            } else {
                Provider::OtherKind(provider.kind().map_or("unknown", |k| k.key()))
            };
            // The first of two providers with one name wins (weft-api
            // reports duplicates when the MeshConfig loads).
            out.entry(provider.name.clone()).or_insert(entry);
        }
        Self(out)
    }
}

impl Providers {
    /// Mesh-wide (what `weft analyze` and apply report): each CUSTOM
    /// policy whose provider cannot be used, before any proxy connects.
    pub(super) fn check_policies<'a>(
        &self,
        policies: impl Iterator<Item = &'a pb::AuthzPolicy>,
        warnings: &mut Vec<String>,
    ) {
        for policy in policies {
            if pb::AuthzAction::try_from(policy.action) != Ok(pb::AuthzAction::Custom) {
                continue;
            }
            if let Some(problem) = self.problem(&policy.provider) {
                warnings.push(denial(policy, &problem));
            }
        }
    }

    /// Why `name` cannot be used by a CUSTOM policy; None when it can.
    fn problem(&self, name: &str) -> Option<String> {
        match self.0.get(name) {
            _ if name.is_empty() => Some("names no provider".to_string()),
            None => Some("is not in MeshConfig extensionProviders".to_string()),
            Some(Provider::OtherKind(kind)) => Some(format!(
                "is a {kind} provider, not envoyExtAuthzGrpc or envoyExtAuthzHttp"
            )),
            Some(Provider::ExtAuthz(_)) => None,
        }
    }
}

/// The warning for a CUSTOM policy whose provider cannot be used.
fn denial(policy: &pb::AuthzPolicy, problem: &str) -> String {
    format!(
        "AuthorizationPolicy {}: spec.provider.name {:?} {problem}; requests this CUSTOM \
         policy matches are denied (fail closed)",
        policy.name, policy.provider
    )
}

/// Istio configures one ext_authz filter per workload, so it takes one
/// CUSTOM provider per workload; Weft asks each policy's own.
fn several_providers(namespace: &str, name: &str, providers: &[&str]) -> String {
    format!(
        "workload {namespace}/{name}: CUSTOM AuthorizationPolicies name {} providers ({}); \
         Istio allows one per workload, Weft asks each policy's own provider",
        providers.len(),
        providers.join(", ")
    )
}

/// `ns/host` or `host` (Istio accepts both) → the service's host.
pub(super) fn service_host(service: &str, root: &str) -> String {
    let (namespace, host) = service.split_once('/').unwrap_or((root, service));
    fqdn(host, namespace)
}

fn timeout(value: Option<&str>) -> std::time::Duration {
    value
        .and_then(parse_duration)
        .unwrap_or(std::time::Duration::from_secs(DEFAULT_TIMEOUT_SECS))
}

/// `statusOnError` ("403" by default; weft-api checked it is a number).
fn status(value: &str) -> u32 {
    value.parse().unwrap_or(403)
}

/// Envoy requires a positive `maxRequestBytes`: without one the body is
/// not sent (weft-api refuses such a MeshConfig when it loads).
fn body(body: Option<&RequestBody>) -> Option<pb::ExtAuthzBody> {
    body.filter(|b| b.max_request_bytes > 0)
        .map(|b| pb::ExtAuthzBody {
            max_request_bytes: b.max_request_bytes,
            allow_partial_message: b.allow_partial_message,
            pack_as_bytes: b.pack_as_bytes,
        })
}

fn from_grpc(name: &str, grpc: &ExtAuthzGrpc, root: &str) -> pb::ExtAuthzProvider {
    pb::ExtAuthzProvider {
        name: name.to_string(),
        grpc: true,
        cluster: cluster_name(grpc.port, "", &service_host(&grpc.service, root)),
        // Istio names the service host as the gRPC authority.
        authority: service_host(&grpc.service, root),
        timeout: Some(timeout(grpc.timeout.as_deref()).into()),
        fail_open: grpc.fail_open,
        status_on_error: status(&grpc.status_on_error),
        include_request_body: body(grpc.include_request_body_in_check.as_ref()),
        ..Default::default()
    }
}

fn from_http(name: &str, http: &ExtAuthzHttp, root: &str) -> pb::ExtAuthzProvider {
    let lower = |list: &[String]| list.iter().map(|h| h.to_ascii_lowercase()).collect();
    // The deprecated field still counts when the new one is unset.
    let include = if http.include_request_headers_in_check.is_empty() {
        &http.include_headers_in_check
    } else {
        &http.include_request_headers_in_check
    };
    pb::ExtAuthzProvider {
        name: name.to_string(),
        grpc: false,
        cluster: cluster_name(http.port, "", &service_host(&http.service, root)),
        timeout: Some(timeout(http.timeout.as_deref()).into()),
        fail_open: http.fail_open,
        status_on_error: status(&http.status_on_error),
        include_request_headers_in_check: lower(include),
        include_additional_headers_in_check: http.include_additional_headers_in_check.clone(),
        headers_to_upstream_on_allow: lower(&http.headers_to_upstream_on_allow),
        headers_to_downstream_on_deny: lower(&http.headers_to_downstream_on_deny),
        headers_to_downstream_on_allow: lower(&http.headers_to_downstream_on_allow),
        path_prefix: http.path_prefix.clone(),
        include_request_body: body(http.include_request_body_in_check.as_ref()),
        authority: String::new(),
    }
}

impl super::MeshIndex {
    /// Resolves the providers of `output`'s CUSTOM policies: each usable
    /// one is added with its cluster; the others are cleared from their
    /// policies (which then deny what they match) with a warning.
    pub(super) fn attach_ext_authz(&self, node: &super::Node, output: &mut super::ProxyOutput) {
        let namespace = namespace_or_default(&node.namespace);
        let config = &mut output.config;
        let securities = config
            .inbound_ports
            .iter_mut()
            .filter_map(|p| p.security.as_mut())
            .chain(config.gateway_security.as_mut());
        let custom = securities
            .flat_map(|s| s.policies.iter_mut())
            .filter(|p| pb::AuthzAction::try_from(p.action) == Ok(pb::AuthzAction::Custom));
        let mut used: BTreeMap<String, pb::ExtAuthzProvider> = BTreeMap::new();
        // Each (policy, provider) problem once, though a policy may guard
        // several ports.
        let mut reported = BTreeSet::new();
        for policy in custom {
            let problem = match self.mesh.ext_authz.0.get(&policy.provider) {
                Some(Provider::ExtAuthz(provider)) if !policy.provider.is_empty() => {
                    if used.contains_key(&provider.name) {
                        None
                    } else if let Some(cluster) = self.rule_clusters.resolve(
                        &provider.cluster,
                        &self.clusters,
                        namespace,
                        &node.labels,
                    ) {
                        add_cluster(&mut config.clusters, cluster, node);
                        used.insert(provider.name.clone(), (**provider).clone());
                        None
                    } else {
                        Some(format!(
                            "has service port {} that is not a known service port",
                            provider.cluster
                        ))
                    }
                }
                _ => self.mesh.ext_authz.problem(&policy.provider),
            };
            if let Some(problem) = problem {
                if reported.insert((policy.name.clone(), policy.provider.clone())) {
                    output.warnings.push(denial(policy, &problem));
                }
                policy.provider.clear();
            }
        }
        http_providers_on_tcp(config, &used, &mut output.warnings);
        if used.len() > 1 {
            let names: Vec<&str> = used.keys().map(String::as_str).collect();
            output
                .warnings
                .push(several_providers(&node.namespace, &node.workload, &names));
        }
        config.ext_authz_providers = used.into_values().collect();
    }
}

/// Istio leaves a CUSTOM policy whose provider is envoyExtAuthzHttp out of
/// TCP filter chains (only envoyExtAuthzGrpc has a network filter): on a
/// TCP or TLS port the proxy does the same, and the operator is told
/// which policy does nothing where.
fn http_providers_on_tcp(
    config: &pb::ProxyConfig,
    used: &BTreeMap<String, pb::ExtAuthzProvider>,
    warnings: &mut Vec<String>,
) {
    let mut ports: BTreeMap<(&str, &str), Vec<u32>> = BTreeMap::new();
    for port in &config.inbound_ports {
        let opaque = matches!(
            pb::Protocol::try_from(port.protocol),
            Ok(pb::Protocol::Tcp | pb::Protocol::Tls)
        );
        let Some(security) = port.security.as_ref().filter(|_| opaque) else {
            continue;
        };
        for policy in &security.policies {
            let custom = pb::AuthzAction::try_from(policy.action) == Ok(pb::AuthzAction::Custom);
            if custom && used.get(&policy.provider).is_some_and(|p| !p.grpc) {
                ports
                    .entry((&policy.name, &policy.provider))
                    .or_default()
                    .push(port.port);
            }
        }
    }
    for ((policy, provider), ports) in ports {
        let ports: Vec<String> = ports.iter().map(u32::to_string).collect();
        warnings.push(format!(
            "AuthorizationPolicy {policy}: provider {provider:?} is envoyExtAuthzHttp, which \
             cannot check TCP connections; the CUSTOM policy does nothing on TCP port(s) {} \
             (as in Istio; use an envoyExtAuthzGrpc provider)",
            ports.join(", ")
        ));
    }
}

/// Adds `cluster` unless there (clusters stay in name order).
pub(super) fn add_cluster(
    clusters: &mut Vec<pb::Cluster>,
    mut cluster: pb::Cluster,
    node: &super::Node,
) {
    if clusters.iter().any(|c| c.name == cluster.name) {
        return;
    }
    super::locality::apply(&mut cluster, node);
    let at = clusters.partition_point(|c| c.name < cluster.name);
    clusters.insert(at, cluster);
}
