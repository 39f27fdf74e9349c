//! Gateway analyzers.

use std::collections::BTreeMap;

use serde_json::Value;

use super::labels_match;
use super::{
    CONFLICTING_GATEWAYS, GATEWAY_PORT_NOT_ON_SERVICE, GATEWAY_SERVER_NOT_SERVED, Input, Message,
    Object, REFERENCED_RESOURCE_NOT_FOUND, hosts, string_map, strings,
};

/// IST0145: two Gateways whose workload selectors can pick the same
/// gateway workload (one selector within the other) claim the same port
/// for overlapping hosts; the gateway cannot serve both.
pub fn conflicting(input: &Input, out: &mut Vec<Message>) {
    struct Claim<'a> {
        gateway: &'a Object,
        selector: BTreeMap<String, String>,
        port: u64,
        hosts: Vec<String>,
    }
    let mut claims = Vec::new();
    for gateway in input.istio("Gateway") {
        let selector = string_map(gateway.spec.get("selector"));
        for server in servers(gateway) {
            // A server without a port is a schema error, not a conflict.
            let Some(port) = server.pointer("/port/number").and_then(Value::as_u64) else {
                continue;
            };
            claims.push(Claim {
                gateway,
                selector: selector.clone(),
                port,
                hosts: strings(server.get("hosts"))
                    .iter()
                    .map(|h| bare_host(h).to_string())
                    .collect(),
            });
        }
    }
    // Per gateway: the others it conflicts with, and on what.
    let mut conflicts: BTreeMap<String, (&Object, BTreeMap<String, String>)> = BTreeMap::new();
    for (i, a) in claims.iter().enumerate() {
        for b in &claims[i + 1..] {
            if a.gateway.resource() == b.gateway.resource()
                || a.port != b.port
                || !(within(&a.selector, &b.selector) || within(&b.selector, &a.selector))
            {
                continue;
            }
            let shared: Vec<&String> = a
                .hosts
                .iter()
                .filter(|h| b.hosts.iter().any(|o| hosts::overlap(h, o)))
                .collect();
            let Some(host) = shared.first() else {
                continue;
            };
            for (this, other) in [(a, b), (b, a)] {
                let entry = conflicts
                    .entry(this.gateway.resource())
                    .or_insert_with(|| (this.gateway, BTreeMap::new()));
                entry.1.entry(other.gateway.resource()).or_insert(format!(
                    "port {}, host {host}, workload selector {}",
                    this.port,
                    selector_text(&this.selector)
                ));
            }
        }
    }
    for (gateway, others) in conflicts.into_values() {
        let listed: Vec<String> = others
            .iter()
            .map(|(other, on)| format!("{other} ({on})"))
            .collect();
        out.push(gateway.message(
            CONFLICTING_GATEWAYS,
            format!("Conflict with gateways {}", listed.join(", ")),
        ));
    }
}

/// WEFT0002: a MUTUAL server with no CA to verify clients, and a server
/// whose port an earlier server of the same Gateway
/// uses for another kind of traffic (plaintext HTTP, terminated HTTPS, TLS
/// passthrough, terminated TLS, TCP). Istio can split such a port by SNI;
/// Weft's gateway serves the port's first kind and leaves the others out.
pub fn server_kinds(input: &Input, out: &mut Vec<Message>) {
    for gateway in input.istio("Gateway") {
        let mut kinds: BTreeMap<u64, (usize, &'static str)> = BTreeMap::new();
        for (index, server) in servers(gateway).enumerate() {
            let Some(port) = server.pointer("/port/number").and_then(Value::as_u64) else {
                continue;
            };
            let Some(kind) = server_kind(server) else {
                continue;
            };
            let mode = server.pointer("/tls/mode").and_then(Value::as_str);
            let has = |field: &str| {
                server
                    .pointer(&format!("/tls/{field}"))
                    .and_then(Value::as_str)
                    .is_some_and(|v| !v.is_empty())
            };
            if matches!(mode, Some("MUTUAL" | "OPTIONAL_MUTUAL"))
                && !has("caCertificates")
                && !has("credentialName")
            {
                out.push(gateway.message(
                    GATEWAY_SERVER_NOT_SERVED,
                    format!(
                        "servers[{index}]: MUTUAL and OPTIONAL_MUTUAL need tls.caCertificates (or a credentialName with a CA) to verify clients: the server is left out"
                    ),
                ));
                continue;
            }
            match kinds.get(&port) {
                None => {
                    kinds.insert(port, (index, kind));
                }
                Some((first, held)) if *held != kind => out.push(gateway.message(
                    GATEWAY_SERVER_NOT_SERVED,
                    format!(
                        "servers[{index}] carries {kind} on port {port}, which servers[{first}] uses for {held}; Weft serves one kind per port: servers[{index}] is left out"
                    ),
                )),
                Some(_) => {}
            }
        }
    }
}

/// What a server puts on its port, as the gateway compiler decides it;
/// None for servers it leaves out anyway (warned elsewhere).
fn server_kind(server: &Value) -> Option<&'static str> {
    let protocol = server
        .pointer("/port/protocol")
        .and_then(Value::as_str)?
        .to_ascii_uppercase();
    let mode = server
        .pointer("/tls/mode")
        .and_then(Value::as_str)
        .unwrap_or("PASSTHROUGH");
    let terminates = matches!(mode, "SIMPLE" | "MUTUAL" | "OPTIONAL_MUTUAL");
    match protocol.as_str() {
        "HTTP" | "HTTP2" | "GRPC" => Some("plaintext HTTP"),
        "HTTPS" | "TLS" if mode == "PASSTHROUGH" => Some("TLS passthrough"),
        "HTTPS" if terminates => Some("terminated HTTPS"),
        "TLS" if terminates => Some("terminated TLS"),
        "TCP" => Some("TCP"),
        _ => None,
    }
}

/// IST0101: a Gateway whose selector picks no workload (checked only when
/// the input knows workloads: Pods, WorkloadEntries or weftd's connected
/// proxies); IST0162: a server port that no Kubernetes Service in front
/// of the selected workloads defines (as `port` or `targetPort`).
pub fn workload_ports(input: &Input, out: &mut Vec<Message>) {
    let workloads = input.workloads();
    if workloads.is_empty() {
        return;
    }
    let services: Vec<&Object> = input.core("Service").collect();
    for gateway in input.istio("Gateway") {
        let selector = string_map(gateway.spec.get("selector"));
        let selected: Vec<&(String, BTreeMap<String, String>)> = workloads
            .iter()
            .filter(|(_, labels)| labels_match(&selector, labels))
            .collect();
        if selected.is_empty() {
            out.push(gateway.message(
                REFERENCED_RESOURCE_NOT_FOUND,
                format!(
                    "Referenced selector not found: \"{}\"",
                    selector_text(&selector)
                ),
            ));
            continue;
        }
        let fronting: Vec<&&Object> = services
            .iter()
            .filter(|service| {
                let picks = string_map(service.spec.get("selector"));
                !picks.is_empty()
                    && selected.iter().any(|(namespace, labels)| {
                        *namespace == service.namespace && labels_match(&picks, labels)
                    })
            })
            .collect();
        if fronting.is_empty() {
            continue;
        }
        let mut ports = Vec::new();
        for service in &fronting {
            for port in service
                .spec
                .get("ports")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                ports.extend(port.get("port").and_then(Value::as_u64));
                ports.extend(port.get("targetPort").and_then(Value::as_u64));
            }
        }
        for server in servers(gateway) {
            let Some(number) = server.pointer("/port/number").and_then(Value::as_u64) else {
                continue;
            };
            if !ports.contains(&number) {
                let names: Vec<&str> = fronting.iter().map(|s| s.name.as_str()).collect();
                out.push(gateway.message(
                    GATEWAY_PORT_NOT_ON_SERVICE,
                    format!(
                        "The gateway is listening on a target port (port {number}) that is not defined in the Service associated with its workload ({})",
                        names.join(", ")
                    ),
                ));
            }
        }
    }
}

pub fn servers(gateway: &Object) -> impl Iterator<Item = &Value> {
    gateway
        .spec
        .get("servers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

/// `ns/host` → `host`.
pub fn bare_host(host: &str) -> &str {
    host.split_once('/').map_or(host, |(_, h)| h)
}

/// `a ⊆ b`.
fn within(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) -> bool {
    a.iter().all(|(k, v)| b.get(k) == Some(v))
}

fn selector_text(selector: &BTreeMap<String, String>) -> String {
    let pairs: Vec<String> = selector.iter().map(|(k, v)| format!("{k}={v}")).collect();
    pairs.join(",")
}
