//! VirtualService `http[]` → proxy routes.
//!
//! Each VirtualService is first reduced to the rules the proxy model can
//! express ([`CompiledVs`]), once, with delegates inlined; then
//! [`CompiledVs::routes`] lays those rules onto one service port. A rule
//! the proxy cannot express is skipped with a warning (see
//! [`http_rule`](super::http_rule)) rather than compiled into a wider match.

use std::collections::BTreeMap;

use weft_api::Object;
use weft_api::networking::VirtualService;
use weft_proto::proxy::v1 as pb;

use super::clusters;
use super::delegate::Delegates;
use super::hosts::{HostIndex, Visibility, fqdn};
use super::http_rule::{Action, Audience, Rule, Source, Target, rule};
use super::ports::cluster_name;
use crate::registry::{ServiceDef, ServicePortDef, namespace_or_default};

// Declared here rather than in `compiler/mod.rs`, as `http_rule` does with
// `mirror_cors`, so VirtualService rules stay in the files that own them.
#[path = "l4_routes.rs"]
mod l4_routes;

/// A VirtualService that applies to sidecars (or to one gateway), reduced
/// to what the proxy model can express.
pub(super) struct CompiledVs {
    pub(super) name: String,
    pub(super) namespace: String,
    pub(super) hosts: Vec<String>,
    pub(super) visibility: Visibility,
    rules: Vec<Rule>,
    /// `tcp[]` and `tls[]`.
    l4: Vec<l4_routes::L4Rule>,
}

impl CompiledVs {
    /// `None` when the VirtualService is not for `audience`, or a delegate
    /// (no hosts: it only applies through a root that names it).
    pub(super) fn new(
        object: &Object<VirtualService>,
        audience: Audience<'_>,
        delegates: &Delegates,
        warnings: &mut Vec<String>,
    ) -> Option<Self> {
        let spec = &object.spec;
        let namespace = namespace_or_default(&object.metadata.namespace).to_string();
        if !audience.admits(&spec.gateways, &namespace) || spec.hosts.is_empty() {
            return None;
        }
        let vs_name = &object.metadata.name;
        let label = format!("VirtualService {namespace}/{vs_name}");
        // A match block without `gateways` inherits the VirtualService's,
        // which admitted this audience already.
        let admits = |gateways: &[String]| match audience {
            Audience::Mesh => l4_routes::for_mesh(gateways),
            Audience::Gateway { .. } => {
                gateways.is_empty() || audience.named_in(gateways, &namespace)
            }
        };
        let l4 = l4_routes::rules(spec, vs_name, &label, &admits, warnings);
        let mut rules = Vec::new();
        for (index, http) in spec.http.iter().enumerate() {
            let at = format!("{label}: http[{index}]");
            let default_name = format!("{vs_name}.{index}");
            if http.delegate.is_none() {
                rules.extend(rule(
                    &default_name,
                    &at,
                    http,
                    (audience, &namespace),
                    warnings,
                ));
                continue;
            }
            for (j, leaf_at, merged) in delegates.expand(http, &namespace, &at, warnings) {
                rules.extend(rule(
                    &format!("{default_name}.{j}"),
                    &leaf_at,
                    &merged,
                    (audience, &namespace),
                    warnings,
                ));
            }
        }
        Some(Self {
            name: vs_name.clone(),
            visibility: Visibility::from_export_to(&spec.export_to, &namespace),
            namespace,
            hosts: spec.hosts.clone(),
            rules,
            l4,
        })
    }

    /// The routes of this VirtualService on one port of the service it
    /// applies to, in order, each with the calling proxies it is limited
    /// to. Route destinations missing from `clusters` are added empty, with
    /// a warning, so traffic to them fails visibly.
    pub(super) fn routes(
        &self,
        port: &ServicePortDef,
        services: &[ServiceDef],
        hosts: &HostIndex,
        clusters: &mut BTreeMap<String, pb::Cluster>,
        warnings: &mut Vec<String>,
    ) -> Vec<(pb::Route, Option<Source>)> {
        let mut routes = Vec::new();
        for rule in &self.rules {
            let applicable: Vec<_> = rule
                .matches
                .iter()
                .filter(|m| m.port.is_none_or(|p| p == port.number))
                .collect();
            if !rule.matches.is_empty() && applicable.is_empty() {
                continue;
            }
            let mut route = pb::Route {
                name: rule.name.clone(),
                r#match: None,
                clusters: Vec::new(),
                timeout: rule.timeout.map(Into::into),
                redirect: None,
                direct_response: None,
                rewrite: rule.rewrite.clone(),
                request_headers: rule.request_headers.clone(),
                response_headers: rule.response_headers.clone(),
                retries: rule.retries.clone(),
                fault: rule.fault,
                mirrors: Vec::new(),
                cors: rule.cors.clone(),
            };
            match &rule.action {
                Action::Forward(targets) => {
                    route.clusters = targets
                        .iter()
                        .map(|t| pb::WeightedCluster {
                            cluster: self
                                .target_cluster(t, port, services, hosts, clusters, warnings),
                            weight: t.weight,
                            request_headers: t.request_headers.clone(),
                            response_headers: t.response_headers.clone(),
                        })
                        .collect();
                    // Mirror clusters are named (and, when missing, added
                    // empty) as destinations are, so proxies get them.
                    route.mirrors = rule
                        .mirrors
                        .iter()
                        .map(|m| {
                            m.to_pb(self.target_cluster(
                                &m.target, port, services, hosts, clusters, warnings,
                            ))
                        })
                        .collect();
                }
                Action::Redirect(redirect) => route.redirect = Some(redirect.clone()),
                Action::Respond(response) => route.direct_response = Some(response.clone()),
            }
            if rule.matches.is_empty() {
                routes.push((route, None));
                continue;
            }
            for m in applicable {
                let name = if m.name.is_empty() {
                    rule.name.clone()
                } else {
                    format!("{}.{}", rule.name, m.name)
                };
                let one = pb::Route {
                    name,
                    r#match: m.conditions.clone(),
                    ..route.clone()
                };
                routes.push((one, m.source.clone()));
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
