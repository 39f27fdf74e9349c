//! VirtualService `http[]` → proxy routes.
//!
//! Each VirtualService is first reduced to the rules the proxy model can
//! express ([`CompiledVs`]), once; then [`CompiledVs::routes`] lays those rules
//! onto one service port. A rule using a match the proxy cannot express
//! (headers, regex, query parameters, ...) is skipped with a warning rather
//! than compiled into a wider match.

use std::collections::BTreeMap;
use std::time::Duration;

use weft_api::Object;
use weft_api::networking::{HttpMatchRequest, HttpRoute, VirtualService};
use weft_proto::proxy::v1 as pb;

use super::clusters;
use super::hosts::{HostIndex, Visibility, fqdn};
use super::ports::cluster_name;
use crate::registry::{ServiceDef, ServicePortDef, namespace_or_default};

/// The reserved gateway name for sidecars.
const MESH_GATEWAY: &str = "mesh";

/// A VirtualService that applies to sidecars, reduced to what the proxy
/// model can express.
pub(super) struct CompiledVs {
    pub(super) name: String,
    pub(super) namespace: String,
    pub(super) hosts: Vec<String>,
    pub(super) visibility: Visibility,
    rules: Vec<Rule>,
}

struct Rule {
    name: String,
    /// Empty: every request.
    matches: Vec<MatchRule>,
    destinations: Vec<Target>,
    timeout: Option<Duration>,
}

struct MatchRule {
    name: String,
    path: Option<pb::route_match::Path>,
    /// Only on this service port.
    port: Option<u32>,
}

struct Target {
    host: String,
    subset: String,
    port: Option<u32>,
    weight: u32,
}

impl CompiledVs {
    /// `None` when the VirtualService is for gateways only.
    pub(super) fn new(object: &Object<VirtualService>, warnings: &mut Vec<String>) -> Option<Self> {
        let spec = &object.spec;
        if !(spec.gateways.is_empty() || spec.gateways.iter().any(|g| g == MESH_GATEWAY)) {
            return None;
        }
        let namespace = namespace_or_default(&object.metadata.namespace).to_string();
        let label = format!("VirtualService {namespace}/{}", object.metadata.name);
        if !spec.tcp.is_empty() || !spec.tls.is_empty() {
            warnings.push(format!(
                "{label}: tcp and tls routes are not supported yet; opaque traffic goes to all endpoints"
            ));
        }
        let rules = spec
            .http
            .iter()
            .enumerate()
            .filter_map(|(index, http)| rule(&object.metadata.name, &label, index, http, warnings))
            .collect();
        Some(Self {
            name: object.metadata.name.clone(),
            visibility: Visibility::from_export_to(&spec.export_to, &namespace),
            namespace,
            hosts: spec.hosts.clone(),
            rules,
        })
    }

    /// The routes of this VirtualService on one port of the service it
    /// applies to, in order. Route destinations missing from `clusters` are
    /// added empty, with a warning, so traffic to them fails visibly.
    pub(super) fn routes(
        &self,
        port: &ServicePortDef,
        services: &[ServiceDef],
        hosts: &HostIndex,
        clusters: &mut BTreeMap<String, pb::Cluster>,
        warnings: &mut Vec<String>,
    ) -> Vec<pb::Route> {
        let mut routes = Vec::new();
        for rule in &self.rules {
            let targets: Vec<pb::WeightedCluster> = rule
                .destinations
                .iter()
                .map(|t| pb::WeightedCluster {
                    cluster: self.target_cluster(t, port, services, hosts, clusters, warnings),
                    weight: t.weight,
                })
                .collect();
            let timeout = rule.timeout.map(Into::into);
            if rule.matches.is_empty() {
                routes.push(pb::Route {
                    name: rule.name.clone(),
                    r#match: None,
                    clusters: targets,
                    timeout,
                });
                continue;
            }
            for m in rule
                .matches
                .iter()
                .filter(|m| m.port.is_none_or(|p| p == port.number))
            {
                routes.push(pb::Route {
                    name: if m.name.is_empty() {
                        rule.name.clone()
                    } else {
                        format!("{}.{}", rule.name, m.name)
                    },
                    r#match: m
                        .path
                        .clone()
                        .map(|path| pb::RouteMatch { path: Some(path) }),
                    clusters: targets.clone(),
                    timeout,
                });
            }
        }
        routes
    }

    fn target_cluster(
        &self,
        target: &Target,
        port: &ServicePortDef,
        services: &[ServiceDef],
        hosts: &HostIndex,
        clusters: &mut BTreeMap<String, pb::Cluster>,
        warnings: &mut Vec<String>,
    ) -> String {
        let found = hosts.exact(&target.host, &self.namespace).first();
        let service = found.map(|i| &services[*i]);
        let host = service.map_or_else(
            || fqdn(&target.host, &self.namespace),
            |s| s.hostname.clone(),
        );
        let number = target
            .port
            .or_else(|| match service.map(|s| s.ports.as_slice()) {
                Some([only]) => Some(only.number),
                _ => None,
            })
            .unwrap_or(port.number);
        let name = cluster_name(number, &target.subset, &host);
        if !clusters.contains_key(&name) {
            warnings.push(format!(
                "VirtualService {}/{}: destination {name:?} matches no service port or subset; requests to it will fail",
                self.namespace, self.name
            ));
            clusters.insert(name.clone(), clusters::empty(&name, &host, &target.subset));
        }
        name
    }
}

fn rule(
    vs_name: &str,
    label: &str,
    index: usize,
    http: &HttpRoute,
    warnings: &mut Vec<String>,
) -> Option<Rule> {
    let at = format!("{label}: http[{index}]");
    let mut skip = |why: String| {
        warnings.push(format!("{at} skipped: {why}"));
        None
    };
    if http.redirect.is_some() || http.direct_response.is_some() || http.delegate.is_some() {
        return skip("redirect, directResponse and delegate are not supported yet".into());
    }
    if http.route.is_empty() {
        return skip("no route destinations".into());
    }
    let mut matches = Vec::new();
    for (m_index, m) in http.matches.iter().enumerate() {
        // A block for gateways only never matches sidecar traffic: dropping
        // it narrows nothing.
        if !(m.gateways.is_empty() || m.gateways.iter().any(|g| g == MESH_GATEWAY)) {
            continue;
        }
        match match_rule(m) {
            Ok(rule) => matches.push(rule),
            Err(what) => {
                return skip(format!(
                    "match[{m_index}] uses {what}, which the proxy cannot match on yet"
                ));
            }
        }
    }
    if !http.matches.is_empty() && matches.is_empty() {
        return None;
    }
    let ignored: Vec<&str> = [
        ("rewrite", http.rewrite.is_some()),
        ("retries", http.retries.is_some()),
        ("fault", http.fault.is_some()),
        ("mirror", http.mirror.is_some() || !http.mirrors.is_empty()),
        ("corsPolicy", http.cors_policy.is_some()),
        (
            "headers",
            http.headers.is_some() || http.route.iter().any(|r| r.headers.is_some()),
        ),
    ]
    .into_iter()
    .filter_map(|(name, set)| set.then_some(name))
    .collect();
    if !ignored.is_empty() {
        warnings.push(format!(
            "{at}: {} not supported yet; ignored",
            ignored.join(", ")
        ));
    }
    let mut destinations: Vec<Target> = http
        .route
        .iter()
        .map(|r| Target {
            host: r.destination.host.clone(),
            subset: r.destination.subset.clone(),
            port: r
                .destination
                .port
                .as_ref()
                .map(|p| p.number)
                .filter(|n| *n > 0),
            weight: r.weight.unwrap_or(0).max(0) as u32,
        })
        .collect();
    // Several destinations without weights: an even split, never a rule the
    // proxy would reject for weights adding up to 0.
    if destinations.len() > 1 && destinations.iter().all(|d| d.weight == 0) {
        destinations.iter_mut().for_each(|d| d.weight = 1);
    }
    Some(Rule {
        name: if http.name.is_empty() {
            format!("{vs_name}.{index}")
        } else {
            http.name.clone()
        },
        matches,
        destinations,
        // Istio: 0s disables the timeout.
        timeout: weft_api::field::parse_duration(&http.timeout).filter(|t| !t.is_zero()),
    })
}

/// The block as a path match, or the name of the first condition the proxy
/// model cannot express.
fn match_rule(m: &HttpMatchRequest) -> Result<MatchRule, &'static str> {
    let unsupported = [
        ("headers", !m.headers.is_empty()),
        ("withoutHeaders", !m.without_headers.is_empty()),
        ("queryParams", !m.query_params.is_empty()),
        ("method", m.method.is_some()),
        ("scheme", m.scheme.is_some()),
        ("authority", m.authority.is_some()),
        ("ignoreUriCase", m.ignore_uri_case == Some(true)),
        ("sourceLabels", !m.source_labels.is_empty()),
        ("sourceNamespace", !m.source_namespace.is_empty()),
    ];
    if let Some((what, _)) = unsupported.into_iter().find(|(_, set)| *set) {
        return Err(what);
    }
    let path = match &m.uri {
        None => None,
        Some(uri) if uri.regex.is_some() => return Err("uri.regex"),
        Some(uri) => match (&uri.exact, &uri.prefix) {
            (Some(exact), _) => Some(pb::route_match::Path::PathExact(exact.clone())),
            (None, Some(prefix)) => Some(pb::route_match::Path::PathPrefix(prefix.clone())),
            (None, None) => None,
        },
    };
    Ok(MatchRule {
        name: m.name.clone(),
        path,
        port: m.port.filter(|p| *p > 0),
    })
}
