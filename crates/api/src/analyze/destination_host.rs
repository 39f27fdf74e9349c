//! `virtualservice.DestinationHostAnalyzer`: do a VirtualService's
//! destinations exist where it applies?

use serde_json::Value;

use super::{
    INGRESS_ROUTE_RULES_NOT_AFFECTED, Input, Message, Object, PORT_SELECTOR_REQUIRED,
    REFERENCED_RESOURCE_NOT_FOUND, hosts, strings,
};

/// A destination a VirtualService may name: a Kubernetes Service or a
/// ServiceEntry host.
struct Known {
    /// FQDN or wildcard.
    host: String,
    namespace: String,
    export_to: Vec<String>,
    ports: Vec<u64>,
}

/// IST0101: a destination host no visible Service or ServiceEntry
/// defines — visible from every namespace the VirtualService is exported
/// to — or a destination port the service lacks; IST0112: no port given
/// for a service with several; IST0140: a gateway route without subset to
/// a host whose mesh VirtualService splits by subset (that split does not
/// apply to gateway traffic).
pub fn analyze(input: &Input, out: &mut Vec<Message>) {
    let known = known_services(input);
    for vs in input.istio("VirtualService") {
        let export_to = strings(vs.spec.get("exportTo"));
        let seen_from: Vec<String> = if export_to.is_empty() || export_to.iter().any(|e| e == "*") {
            vec![vs.namespace.clone()]
        } else {
            export_to
                .iter()
                .map(|e| {
                    if e == "." {
                        vs.namespace.clone()
                    } else {
                        e.clone()
                    }
                })
                .collect()
        };
        for destination in route_destinations(&vs.spec) {
            let host = destination
                .and_then(|d| d.get("host"))
                .and_then(Value::as_str)
                .unwrap_or("");
            let wanted = hosts::fqdn(&vs.namespace, host);
            let port = destination
                .and_then(|d| d.pointer("/port/number"))
                .and_then(Value::as_u64);
            let matching: Vec<&Known> = known
                .iter()
                .filter(|k| {
                    !host.is_empty()
                        && (k.host == wanted
                            || k.host.starts_with('*') && hosts::overlap(&k.host, &wanted))
                })
                .collect();
            let visible_everywhere = seen_from.iter().all(|namespace| {
                matching
                    .iter()
                    .any(|k| hosts::visible(&k.export_to, &k.namespace, namespace))
            });
            if matching.is_empty() || !visible_everywhere {
                out.push(vs.message(
                    REFERENCED_RESOURCE_NOT_FOUND,
                    format!("Referenced host not found: \"{host}\""),
                ));
                continue;
            }
            let service = matching[0];
            match port {
                Some(port) if !service.ports.is_empty() && !service.ports.contains(&port) => {
                    out.push(vs.message(
                        REFERENCED_RESOURCE_NOT_FOUND,
                        format!("Referenced host:port not found: \"{host}:{port}\""),
                    ));
                }
                None if service.ports.len() > 1 => out.push(vs.message(
                    PORT_SELECTOR_REQUIRED,
                    format!("This VirtualService must specify port selector for destination host {host} which has multiple ports"),
                )),
                _ => {}
            }
        }
    }
    ingress_without_subsets(input, out);
}

fn ingress_without_subsets(input: &Input, out: &mut Vec<Message>) {
    let mesh_split: Vec<(&Object, Vec<String>)> = input
        .istio("VirtualService")
        .filter(|vs| {
            let gateways = strings(vs.spec.get("gateways"));
            (gateways.is_empty() || gateways.iter().any(|g| g == "mesh"))
                && route_destinations(&vs.spec)
                    .iter()
                    .any(|d| d.and_then(|d| d.get("subset")).is_some())
        })
        .map(|vs| {
            let hosts = strings(vs.spec.get("hosts"))
                .iter()
                .map(|h| hosts::fqdn(&vs.namespace, h))
                .collect();
            (vs, hosts)
        })
        .collect();
    for vs in input.istio("VirtualService") {
        let gateways = strings(vs.spec.get("gateways"));
        if gateways.is_empty() || gateways.iter().all(|g| g == "mesh") {
            continue;
        }
        for destination in route_destinations(&vs.spec).into_iter().flatten() {
            if destination.get("subset").is_some() {
                continue;
            }
            let host = destination
                .get("host")
                .and_then(Value::as_str)
                .unwrap_or("");
            let wanted = hosts::fqdn(&vs.namespace, host);
            for (mesh_vs, _) in mesh_split.iter().filter(|(_, h)| h.contains(&wanted)) {
                out.push(vs.message(
                    INGRESS_ROUTE_RULES_NOT_AFFECTED,
                    format!(
                        "Subset in virtual service {} has no effect on ingress gateway {} requests",
                        mesh_vs.resource(),
                        vs.resource()
                    ),
                ));
            }
        }
    }
}

/// Every route's destination (`None` for a route without one) and every
/// mirror, in HTTP, TCP and TLS rules.
fn route_destinations(spec: &Value) -> Vec<Option<&Value>> {
    let mut out = Vec::new();
    for section in ["http", "tcp", "tls"] {
        for rule in spec
            .get(section)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            for route in rule
                .get("route")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                out.push(route.get("destination"));
            }
            if let Some(mirror) = rule.get("mirror") {
                out.push(Some(mirror));
            }
            for mirror in rule
                .get("mirrors")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                out.push(mirror.get("destination"));
            }
        }
    }
    out
}

fn known_services(input: &Input) -> Vec<Known> {
    let mut known: Vec<Known> = input
        .core("Service")
        .map(|service| {
            let export_to = service
                .raw
                .pointer("/metadata/annotations/networking.istio.io~1exportTo")
                .and_then(Value::as_str)
                .map(|list| list.split(',').map(|e| e.trim().to_string()).collect())
                .unwrap_or_default();
            Known {
                host: hosts::fqdn(&service.namespace, &service.name),
                namespace: service.namespace.clone(),
                export_to,
                ports: numbers(service.spec.get("ports"), "port"),
            }
        })
        .collect();
    for entry in input.istio("ServiceEntry") {
        for host in strings(entry.spec.get("hosts")) {
            known.push(Known {
                host: hosts::fqdn(&entry.namespace, &host),
                namespace: entry.namespace.clone(),
                export_to: strings(entry.spec.get("exportTo")),
                ports: numbers(entry.spec.get("ports"), "number"),
            });
        }
    }
    known
}

fn numbers(list: Option<&Value>, key: &str) -> Vec<u64> {
    list.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|item| item.get(key).and_then(Value::as_u64))
        .collect()
}
