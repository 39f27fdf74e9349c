//! ServiceEntry analyzers.

use serde_json::Value;

use super::{Input, Message, SERVICE_ENTRY_ADDRESSES_REQUIRED};

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
