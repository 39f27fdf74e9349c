//! `weft describe svc <service>`: what applies to one service and why
//! (istioctl's `x describe`), from the stored resources and the registry.
//!
//! The answer is JSON (served by weftd at `GET /v1/describe`); the CLI
//! prints it. Selection follows the compiler's rules: a VirtualService
//! applies to a host when one of its hosts covers it (the exact host
//! before a wildcard, then the first by namespace and name); the
//! DestinationRule from the caller's namespace, else the service's, else
//! the root namespace's.

use std::collections::BTreeMap;

use serde_json::Value;
use weft_api::Resource;
use weft_api::wire::{
    DescribedDestinationRule, DescribedEndpoint, DescribedGateway, DescribedPolicy, DescribedPort,
    DescribedRoute, DescribedRule, DescribedService, DescribedSubset, DescribedVirtualService,
    PolicySummary, ServiceDescription,
};

use weft_api::analyze::virtual_service::destinations;
use weft_api::analyze::{Input, Object, hosts, string_map, strings};

use crate::registry::{EndpointDef, ROOT_NAMESPACE, Registry, ServiceDef, Workload, labels_match};

/// The service named `name` (short, FQDN, or as written in its
/// ServiceEntry) as seen from `namespace`, described; `Err` says which
/// services exist when none matches.
pub fn describe(
    resources: &[Resource],
    workloads: &[Workload],
    name: &str,
    namespace: &str,
) -> Result<ServiceDescription, String> {
    describe_with_cluster(resources, &Default::default(), workloads, name, namespace)
}

/// [`describe`], with a Kubernetes cluster's Services and Pods in the
/// registry.
pub fn describe_with_cluster(
    resources: &[Resource],
    cluster: &weft_kube::convert::ClusterSnapshot,
    workloads: &[Workload],
    name: &str,
    namespace: &str,
) -> Result<ServiceDescription, String> {
    let target = Target {
        name,
        namespace,
        root: ROOT_NAMESPACE,
    };
    describe_in(resources, cluster, workloads, &target)
}

/// The service [`describe_in`] describes: `name` as seen from `namespace`,
/// `root` being the mesh's root namespace (MeshConfig `rootNamespace`).
pub struct Target<'a> {
    pub name: &'a str,
    pub namespace: &'a str,
    pub root: &'a str,
}

/// [`describe_with_cluster`] under a MeshConfig's root namespace.
pub fn describe_in(
    resources: &[Resource],
    cluster: &weft_kube::convert::ClusterSnapshot,
    workloads: &[Workload],
    target: &Target<'_>,
) -> Result<ServiceDescription, String> {
    let Target {
        name,
        namespace,
        root,
    } = *target;
    let registry = Registry::build_with_cluster(resources, cluster, workloads);
    let wanted = hosts::fqdn(namespace, name);
    let service = registry
        .services()
        .iter()
        .find(|s| hosts::fqdn(&s.namespace, &s.hostname) == wanted || s.hostname == name)
        .ok_or_else(|| {
            let known: Vec<String> = registry
                .services()
                .iter()
                .map(|s| format!("{} ({})", s.hostname, s.namespace))
                .collect();
            format!(
                "no service {name:?} in namespace {namespace:?}; the registry has: {}",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            )
        })?;
    let input = Input::from_resources(resources, "weftd");
    let host = hosts::fqdn(&service.namespace, &service.hostname);
    let endpoints = registry.endpoints(&service.id());
    let rules = destination_rules(&input, &host, (namespace, root), &service.namespace);
    let subsets: Vec<(String, BTreeMap<String, String>)> = rules
        .iter()
        .filter(|rule| rule.applies)
        .flat_map(|rule| &rule.subsets)
        .map(|subset| (subset.name.clone(), subset.labels.clone()))
        .collect();
    Ok(ServiceDescription {
        service: described_service(service),
        virtual_services: virtual_services(&input, &host),
        destination_rules: rules,
        endpoints: endpoints
            .iter()
            .map(|e| described_endpoint(e, service, &subsets))
            .collect(),
        gateways: gateways(&input, &host),
        policies: policies(&input, endpoints, &service.namespace, root),
    })
}

fn described_service(service: &ServiceDef) -> DescribedService {
    DescribedService {
        host: service.hostname.clone(),
        namespace: service.namespace.clone(),
        vips: service.vips.iter().map(ToString::to_string).collect(),
        ports: service
            .ports
            .iter()
            .map(|p| DescribedPort {
                number: p.number,
                name: p.name.clone(),
                protocol: format!("{:?}", p.protocol).to_uppercase(),
            })
            .collect(),
        export_to: service.export_to.clone(),
    }
}

/// Every VirtualService with a host covering the service; the one the
/// sidecars use is marked `applies` (exact host first, then by
/// namespace and name), the others say why not.
fn virtual_services(input: &Input, host: &str) -> Vec<DescribedVirtualService> {
    let mut candidates: Vec<(bool, &Object, String)> = Vec::new();
    for vs in input.istio("VirtualService") {
        let matched = strings(vs.spec.get("hosts"))
            .into_iter()
            .map(|h| hosts::fqdn(&vs.namespace, &h))
            .filter(|h| hosts::overlap(h, host))
            .min_by_key(|h| h.starts_with('*'));
        if let Some(matched) = matched {
            candidates.push((matched.starts_with('*'), vs, matched));
        }
    }
    candidates
        .sort_by(|a, b| (a.0, &a.1.namespace, &a.1.name).cmp(&(b.0, &b.1.namespace, &b.1.name)));
    let mut mesh_taken = false;
    candidates
        .into_iter()
        .map(|(_, vs, matched)| {
            let gateways = strings(vs.spec.get("gateways"));
            let for_mesh = gateways.is_empty() || gateways.iter().any(|g| g == "mesh");
            let applies = for_mesh && !mesh_taken;
            let why = if !for_mesh {
                format!("host {matched} matches; bound to gateways only ({})", gateways.join(", "))
            } else if applies {
                format!("host {matched} matches; {}", export_text(&vs.spec))
            } else {
                format!("host {matched} matches, but another VirtualService already routes this host for the sidecars")
            };
            mesh_taken |= applies;
            DescribedVirtualService {
                name: vs.name.clone(),
                namespace: vs.namespace.clone(),
                applies,
                why,
                gateways,
                rules: http_rules(&vs.spec),
            }
        })
        .collect()
}

fn export_text(spec: &Value) -> String {
    let export_to = strings(spec.get("exportTo"));
    if export_to.is_empty() {
        "exported to every namespace".to_string()
    } else {
        format!("exportTo {}", export_to.join(","))
    }
}

/// Each rule: its matches (as written) and weighted destinations.
fn http_rules(spec: &Value) -> Vec<DescribedRule> {
    let mut out = Vec::new();
    for section in ["http", "tcp", "tls"] {
        for rule in spec
            .get(section)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let routes = rule
                .get("route")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|r| {
                    let destination = r.get("destination").unwrap_or(&Value::Null);
                    DescribedRoute {
                        host: text(destination.get("host")),
                        subset: destination
                            .get("subset")
                            .and_then(Value::as_str)
                            .map(String::from),
                        port: number(destination.pointer("/port/number")),
                        weight: number(r.get("weight")),
                    }
                })
                .collect();
            out.push(DescribedRule {
                protocol: section.to_string(),
                name: rule.get("name").and_then(Value::as_str).map(String::from),
                matches: rule.get("match").cloned().unwrap_or(Value::Null),
                routes,
            });
        }
    }
    out
}

/// DestinationRules for the host, in Istio's lookup order (as the compiler
/// decides, `compiler/clusters/rules.rs`): the caller's namespace, then
/// the service's when it exports the rule to the caller, then the root
/// namespace's; rules elsewhere are never consulted. A rule with a
/// `workloadSelector` applies only to the workloads it selects in its own
/// namespace, which a description by namespace cannot know: it is listed,
/// not marked as applying.
fn destination_rules(
    input: &Input,
    host: &str,
    (caller, root): (&str, &str),
    service_namespace: &str,
) -> Vec<DescribedDestinationRule> {
    let mut found: Vec<(usize, &Object)> = input
        .istio("DestinationRule")
        .filter(|rule| {
            let rule_host = rule.spec.get("host").and_then(Value::as_str).unwrap_or("");
            hosts::overlap(&hosts::fqdn(&rule.namespace, rule_host), host)
        })
        .map(|rule| {
            let export = strings(rule.spec.get("exportTo"));
            let seen_by_caller = hosts::visible(&export, &rule.namespace, caller);
            let rank = if rule.namespace == caller && caller != root {
                0
            } else if rule.namespace == service_namespace && seen_by_caller {
                1
            } else if rule.namespace == root && seen_by_caller {
                2
            } else {
                3
            };
            (rank, rule)
        })
        .collect();
    found.sort_by(|a, b| (a.0, &a.1.namespace, &a.1.name).cmp(&(b.0, &b.1.namespace, &b.1.name)));
    let has_selector = |rule: &Object| rule.spec.get("workloadSelector").is_some();
    // The first catch-all rule (no selector) of the nearest place applies;
    // later rules of the same place merge into it (subsets, a missing
    // top-level policy), as Istio merges them.
    let applying_rank = found
        .iter()
        .find(|(rank, rule)| *rank < 3 && !has_selector(rule))
        .map(|(rank, _)| *rank);
    let mut first_applying = true;
    found
        .iter()
        .map(|(rank, rule)| {
            let applies = Some(*rank) == applying_rank && !has_selector(rule);
            let why = if has_selector(rule) && *rank == 0 {
                "host matches; applies only to the caller's workloads its workloadSelector selects".to_string()
            } else if *rank == 3 {
                format!(
                    "host matches, but Istio consults only the caller's namespace, the service's ({service_namespace}) and {root}, each as far as exportTo allows"
                )
            } else if !applies {
                "host matches, but a DestinationRule nearer the caller takes precedence".to_string()
            } else if !first_applying {
                "host matches; merged into the first rule of its namespace (subsets, a missing top-level policy)".to_string()
            } else {
                first_applying = false;
                match rank {
                    0 => format!("host matches; in the caller's namespace {caller}"),
                    1 => "host matches; in the service's namespace".to_string(),
                    _ => format!("host matches; mesh-wide from {root}"),
                }
            };
            let subsets = rule
                .spec
                .get("subsets")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|subset| DescribedSubset {
                    name: text(subset.get("name")),
                    labels: string_map(subset.get("labels")),
                    policy: policy_summary(subset.get("trafficPolicy")),
                })
                .collect();
            DescribedDestinationRule {
                name: rule.name.clone(),
                namespace: rule.namespace.clone(),
                applies,
                why,
                policy: policy_summary(rule.spec.get("trafficPolicy")),
                subsets,
            }
        })
        .collect()
}

/// The parts of a traffic policy a reader looks for, as written.
fn policy_summary(policy: Option<&Value>) -> PolicySummary {
    let Some(policy) = policy else {
        return PolicySummary::new();
    };
    ["loadBalancer", "connectionPool", "outlierDetection", "tls"]
        .into_iter()
        .filter_map(|key| Some((key.to_string(), policy.get(key)?.clone())))
        .collect()
}

/// A string field as written, empty when absent.
fn text(value: Option<&Value>) -> String {
    value
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// A port number or weight as written (validated at apply time).
fn number(value: Option<&Value>) -> Option<u32> {
    value
        .and_then(Value::as_u64)
        .and_then(|n| u32::try_from(n).ok())
}

fn described_endpoint(
    endpoint: &EndpointDef,
    service: &ServiceDef,
    subsets: &[(String, BTreeMap<String, String>)],
) -> DescribedEndpoint {
    let ports: Vec<String> = service
        .ports
        .iter()
        .map(|p| format!("{}:{}", endpoint.address, endpoint.port_for(p)))
        .collect();
    DescribedEndpoint {
        addresses: ports,
        workload: endpoint.workload.clone(),
        labels: endpoint.labels.clone(),
        locality: endpoint.locality.clone(),
        subsets: subsets
            .iter()
            .filter(|(_, labels)| labels_match(labels, &endpoint.labels))
            .map(|(name, _)| name.clone())
            .collect(),
    }
}

/// Gateways that expose the service: those bound by a VirtualService
/// that routes to it.
fn gateways(input: &Input, host: &str) -> Vec<DescribedGateway> {
    let mut out = Vec::new();
    for vs in input.istio("VirtualService") {
        let routes_here = destinations(&vs.spec).iter().any(|d| {
            let to = d.get("host").and_then(Value::as_str).unwrap_or("");
            hosts::fqdn(&vs.namespace, to) == host
        });
        if !routes_here {
            continue;
        }
        for reference in strings(vs.spec.get("gateways"))
            .into_iter()
            .filter(|g| g != "mesh")
        {
            let (namespace, name) = reference
                .split_once('/')
                .map_or((vs.namespace.clone(), reference.clone()), |(n, g)| {
                    (n.to_string(), g.to_string())
                });
            let gateway = input
                .istio("Gateway")
                .find(|g| g.namespace == namespace && g.name == name);
            let servers: Vec<String> = gateway
                .into_iter()
                .flat_map(weft_api::analyze::gateway::servers)
                .map(|s| {
                    format!(
                        "{} {} {}",
                        s.pointer("/port/number")
                            .map(ToString::to_string)
                            .unwrap_or_default(),
                        s.pointer("/port/protocol")
                            .and_then(Value::as_str)
                            .unwrap_or(""),
                        strings(s.get("hosts")).join(",")
                    )
                })
                .collect();
            out.push(DescribedGateway {
                name,
                namespace,
                found: gateway.is_some(),
                via: format!("VirtualService {}/{}", vs.namespace, vs.name),
                servers,
            });
        }
    }
    out
}

/// PeerAuthentications and AuthorizationPolicies that select at least
/// one of the service's endpoints: mesh-wide (root namespace, no
/// selector), namespace-wide (no selector), or by workload labels.
fn policies(
    input: &Input,
    endpoints: &[EndpointDef],
    namespace: &str,
    root: &str,
) -> Vec<DescribedPolicy> {
    let mut out = Vec::new();
    for kind in ["PeerAuthentication", "AuthorizationPolicy"] {
        for policy in input.istio(kind) {
            let selector = string_map(policy.spec.pointer("/selector/matchLabels"));
            let why = if policy.namespace == root && selector.is_empty() {
                Some(format!("mesh-wide (namespace {root}, no selector)"))
            } else if policy.namespace != namespace {
                None
            } else if selector.is_empty() {
                Some(format!("namespace-wide in {namespace} (no selector)"))
            } else {
                let selected: Vec<&str> = endpoints
                    .iter()
                    .filter(|e| labels_match(&selector, &e.labels))
                    .map(|e| e.workload.as_str())
                    .collect();
                (!selected.is_empty()).then(|| {
                    let pairs: Vec<String> =
                        selector.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    format!(
                        "selector {} matches {}",
                        pairs.join(","),
                        selected.join(", ")
                    )
                })
            };
            if let Some(why) = why {
                out.push(DescribedPolicy {
                    kind: kind.to_string(),
                    name: policy.name.clone(),
                    namespace: policy.namespace.clone(),
                    why,
                    action: policy
                        .spec
                        .get("action")
                        .and_then(Value::as_str)
                        .map(String::from),
                    mtls: policy
                        .spec
                        .pointer("/mtls/mode")
                        .and_then(Value::as_str)
                        .map(String::from),
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(yaml: &str) -> Input {
        let mut input = Input::default();
        for (index, document) in weft_api::parse_documents(yaml)
            .expect("yaml")
            .into_iter()
            .enumerate()
        {
            input.add_document(document, "test", index, "default");
        }
        input
    }

    fn rule(namespace: &str, export: &str) -> String {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: r, namespace: {namespace}}}\nspec:\n  host: shop.shop.svc.cluster.local\n  exportTo: [{export}]\n---\n"
        )
    }

    fn applying(yaml: &str, caller: &str) -> Vec<String> {
        applying_under(yaml, caller, ROOT_NAMESPACE)
    }

    fn applying_under(yaml: &str, caller: &str, root: &str) -> Vec<String> {
        destination_rules(
            &input(yaml),
            "shop.shop.svc.cluster.local",
            (caller, root),
            "shop",
        )
        .into_iter()
        .filter(|rule| rule.applies)
        .map(|rule| rule.namespace)
        .collect()
    }

    #[test]
    fn the_rule_described_as_applying_is_the_one_istio_picks() {
        let yaml = rule("front", "\".\"")
            + &rule("shop", "\".\"")
            + &rule("istio-system", "\"*\"")
            + &rule("other", "\"*\"");
        assert_eq!(applying(&yaml, "front"), ["front"]);
        assert_eq!(applying(&yaml, "shop"), ["shop"]);
        // shop keeps its rule to itself; another namespace's rule is never
        // consulted, so the root namespace's applies.
        assert_eq!(applying(&yaml, "team"), ["istio-system"]);
        // Under MeshConfig `rootNamespace: other`, other's rule is the
        // mesh-wide one.
        assert_eq!(applying_under(&yaml, "team", "other"), ["other"]);
    }
}
