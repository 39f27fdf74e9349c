//! `proxy.istio.io/config` → `proxyMetadata`: Istio passes each entry to the
//! proxy container as an environment variable. Weft does the same, and
//! reads the ones it implements:
//!
//! - `ISTIO_META_DNS_CAPTURE: "true"`: DNS proxying. The init container
//!   redirects the app's port-53 traffic (`weft intercept --capture-dns`)
//!   and weft-proxy serves DNS on 127.0.0.1:15053 (it reads the variable).
//! - `ISTIO_META_DNS_AUTO_ALLOCATE`: no effect (a warning): weftd always
//!   allocates VIPs for ServiceEntries without addresses, as Istio 1.25+
//!   does, and DNS capture answers them.
//!
//! Any other entry is passed on and reported: weft-proxy does not read it.

use serde_json::Value;

use super::annotations::Options;

pub const DNS_CAPTURE: &str = "ISTIO_META_DNS_CAPTURE";
pub const DNS_AUTO_ALLOCATE: &str = "ISTIO_META_DNS_AUTO_ALLOCATE";

/// Reads `proxyMetadata` (at `at`, the annotation or MeshConfig) into
/// `options`, over the entries already there: the pod's annotation adds to
/// and overrides the mesh's defaults entry by entry, as in Istio.
pub(super) fn read(
    value: &Value,
    at: &str,
    options: &mut Options,
    warnings: &mut Vec<String>,
) -> Result<(), String> {
    let Value::Object(entries) = value else {
        return Err(format!("{at}: expected a map of names to strings"));
    };
    for (name, value) in entries {
        // Istio's field is map<string, string>; a YAML `true` is taken as
        // the string it reads as.
        let text = match value {
            Value::String(text) => text.clone(),
            Value::Bool(flag) => flag.to_string(),
            Value::Number(number) => number.to_string(),
            _ => return Err(format!("{at}.{name}: expected a string")),
        };
        match name.as_str() {
            DNS_CAPTURE => options.capture.dns = truthy(&text, &format!("{at}.{name}"))?,
            DNS_AUTO_ALLOCATE => {
                truthy(&text, &format!("{at}.{name}"))?;
                warnings.push(format!(
                    "{at}.{name} has no effect in Weft: weftd always \
                     allocates VIPs (240.240.0.0/16) for ServiceEntries without addresses, as \
                     Istio 1.25+ does, and DNS capture answers them"
                ));
            }
            _ => warnings.push(format!(
                "{at}.{name} is passed to the proxy's environment \
                 but weft-proxy does not read it; it has no effect"
            )),
        }
        options.proxy_metadata.insert(name.clone(), text);
    }
    Ok(())
}

/// Istio reads these as Go booleans: `true`/`1`/... or `false`/`0`/....
fn truthy(text: &str, at: &str) -> Result<bool, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "t" | "yes" | "on" => Ok(true),
        "false" | "0" | "f" | "no" | "off" | "" => Ok(false),
        other => Err(format!("{at}: {other:?} is not true or false")),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use crate::inject::annotations;

    fn read(config: &str) -> Result<annotations::Read, String> {
        let map = BTreeMap::from([(annotations::PROXY_CONFIG.to_string(), config.to_string())]);
        annotations::read(&map)
    }

    #[test]
    fn dns_capture_turns_on_the_dns_rules_and_reaches_the_proxy_env() {
        let read = read("proxyMetadata:\n  ISTIO_META_DNS_CAPTURE: \"true\"\n").expect("read");
        assert!(read.options.capture.dns);
        assert_eq!(
            read.options.proxy_metadata.get("ISTIO_META_DNS_CAPTURE"),
            Some(&"true".to_string())
        );
        assert!(read.warnings.is_empty(), "{:?}", read.warnings);
        let off = self::read("proxyMetadata: {ISTIO_META_DNS_CAPTURE: \"false\"}").expect("read");
        assert!(!off.options.capture.dns);
    }

    #[test]
    fn auto_allocation_and_unknown_entries_are_warned_about() {
        let read = read(
            "proxyMetadata:\n  ISTIO_META_DNS_CAPTURE: \"true\"\n  \
             ISTIO_META_DNS_AUTO_ALLOCATE: \"true\"\n  FOO: bar\n",
        )
        .expect("read");
        assert_eq!(read.warnings.len(), 2, "{:?}", read.warnings);
        let warned = |what: &str| read.warnings.iter().any(|w| w.contains(what));
        assert!(warned("ISTIO_META_DNS_AUTO_ALLOCATE has no effect"));
        assert!(warned("proxyMetadata.FOO"));
        let err = self::read("proxyMetadata: {ISTIO_META_DNS_CAPTURE: maybe}").expect_err("bad");
        assert!(err.contains("ISTIO_META_DNS_CAPTURE"), "{err}");
    }
}
