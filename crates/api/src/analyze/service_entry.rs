//! ServiceEntry analyzers.

use serde_json::Value;

use super::{
    CONFLICTING_SERVICE_ENTRY_PROTOCOL, Input, Message, Object, SERVICE_ENTRY_ADDRESSES_REQUIRED,
    strings,
};

/// IST0134: a ServiceEntry with a TCP port (or one whose protocol is not
/// given) and no `addresses` can only be told apart by its port, which
/// other TCP services share. weftd allocates a VIP to such a ServiceEntry
/// (as Istio's DNS auto-allocation does), so this is a warning about the
/// config's portability rather than about Weft's routing. An object
/// whose status already carries allocated addresses is fine.
pub fn addresses(input: &Input, out: &mut Vec<Message>) {
    for entry in input.istio("ServiceEntry") {
        let has = |value: Option<&Value>| {
            value
                .and_then(Value::as_array)
                .is_some_and(|a| !a.is_empty())
        };
        if has(entry.spec.get("addresses")) || has(entry.raw.pointer("/status/addresses")) {
            continue;
        }
        let ports = entry
            .spec
            .get("ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten();
        let tcp = ports.into_iter().any(|port| {
            let protocol = port.get("protocol").and_then(Value::as_str).unwrap_or("");
            protocol.is_empty() || protocol.eq_ignore_ascii_case("TCP")
        });
        if tcp {
            out.push(entry.message(
                SERVICE_ENTRY_ADDRESSES_REQUIRED,
                "ServiceEntry addresses are required for this protocol.".to_string(),
            ));
        }
    }
}

/// IST0177: ServiceEntries visible in a common namespace declare one
/// host and port with different protocols; which protocol the proxy uses
/// is undefined.
pub fn conflicting_protocols(input: &Input, out: &mut Vec<Message>) {
    struct Port<'a> {
        entry: &'a Object,
        host: String,
        number: u64,
        protocol: String,
        /// `None` for every namespace.
        scope: Option<Vec<String>>,
    }
    let mut ports = Vec::new();
    for entry in input.istio("ServiceEntry") {
        let export_to = strings(entry.spec.get("exportTo"));
        let scope = (!export_to.is_empty() && !export_to.iter().any(|e| e == "*")).then(|| {
            export_to
                .iter()
                .map(|e| {
                    if e == "." {
                        entry.namespace.clone()
                    } else {
                        e.clone()
                    }
                })
                .collect()
        });
        let declared = entry
            .spec
            .get("ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten();
        for port in declared {
            let Some(number) = port.get("number").and_then(Value::as_u64) else {
                continue;
            };
            let protocol = port
                .get("protocol")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_ascii_uppercase();
            for host in strings(entry.spec.get("hosts")) {
                ports.push(Port {
                    entry,
                    host: host.to_ascii_lowercase(),
                    number,
                    protocol: protocol.clone(),
                    scope: scope.clone(),
                });
            }
        }
    }
    let shared = |a: &Option<Vec<String>>, b: &Option<Vec<String>>| match (a, b) {
        (Some(a), Some(b)) => a.iter().any(|ns| b.contains(ns)),
        _ => true,
    };
    let mut reported = std::collections::BTreeSet::new();
    for a in &ports {
        let rivals: Vec<&Port> = ports
            .iter()
            .filter(|b| {
                b.entry.resource() != a.entry.resource()
                    && b.host == a.host
                    && b.number == a.number
                    && b.protocol != a.protocol
                    && shared(&a.scope, &b.scope)
            })
            .collect();
        if rivals.is_empty() || !reported.insert((a.entry.resource(), a.host.clone(), a.number)) {
            continue;
        }
        let mut others: Vec<String> = rivals
            .iter()
            .map(|r| format!("{} ({})", r.entry.resource(), r.protocol))
            .collect();
        others.dedup();
        out.push(a.entry.message(
            CONFLICTING_SERVICE_ENTRY_PROTOCOL,
            format!(
                "Host {} port {} is declared with protocol {} here and differently by {}",
                a.host,
                a.number,
                a.protocol,
                others.join(", ")
            ),
        ));
    }
}
