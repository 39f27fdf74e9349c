//! Istio's per-pod injection annotations, read into [`Options`].
//!
//! A value Weft cannot use is an error (the pod is refused at admission, as
//! Istio refuses it, instead of starting with an init container that fails).
//! An annotation Weft does not implement is a warning returned to the
//! client (`kubectl` prints it), never dropped in silence.

use std::collections::BTreeMap;

use serde_json::Value;
use weft_api::mesh::ProxyDefaults;

use super::capture::{self, Capture};

pub const PROXY_CONFIG: &str = "proxy.istio.io/config";
const TRAFFIC: &str = "traffic.sidecar.istio.io/";
const SIDECAR: &str = "sidecar.istio.io/";
/// Prefixes of annotations that configure injection (Istio's families).
const FAMILIES: [&str; 5] = [
    "sidecar.istio.io/",
    "traffic.sidecar.istio.io/",
    "proxy.istio.io/",
    "status.sidecar.istio.io/",
    "readiness.status.sidecar.istio.io/",
];

/// Requests and limits of the sidecar (Istio's defaults: 100m/128Mi
/// requested, 2000m/1024Mi limits).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resources {
    pub cpu: String,
    pub memory: String,
    pub cpu_limit: String,
    pub memory_limit: String,
}

impl Default for Resources {
    fn default() -> Self {
        Self {
            cpu: "100m".into(),
            memory: "128Mi".into(),
            cpu_limit: "2000m".into(),
            memory_limit: "1024Mi".into(),
        }
    }
}

/// What the annotations ask of the injected containers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Options {
    pub capture: Capture,
    pub resources: Resources,
    /// `RUST_LOG` for the proxy (from `sidecar.istio.io/logLevel`).
    pub log_level: Option<String>,
    /// `sidecar.istio.io/nativeSidecar`: overrides the server's default.
    pub native_sidecar: Option<bool>,
    pub hold_application: bool,
    /// Proxy worker threads (`concurrency`; 0 = every core).
    pub concurrency: Option<u32>,
    /// `--drain-timeout` (`terminationDrainDuration`), as `<N>ms`.
    pub drain: Option<String>,
    /// `sidecar.istio.io/rewriteAppHTTPProbers: "false"`: app probes stay
    /// as written instead of going through the sidecar's 15020.
    pub keep_probes: bool,
    /// `gatewayTopology.numTrustedProxies` (gateways only:
    /// `--num-trusted-proxies`).
    pub num_trusted_proxies: Option<u32>,
    /// `proxyMetadata`: environment variables of the proxy container (see
    /// `proxy_metadata`; DNS capture is read from it into `capture.dns`).
    pub proxy_metadata: BTreeMap<String, String>,
}

impl Options {
    /// weft-proxy's flags for `concurrency` and `terminationDrainDuration`
    /// (injection and `weft up` start the proxy with them).
    pub fn proxy_flags(&self) -> Vec<String> {
        let mut flags = Vec::new();
        if let Some(workers) = self.concurrency.filter(|n| *n > 0) {
            flags.extend(["--workers".into(), workers.to_string()]);
        }
        if let Some(drain) = &self.drain {
            flags.extend(["--drain-timeout".into(), drain.clone()]);
        }
        flags
    }
}

/// [`Options`] plus the warnings for what was said but is not implemented.
#[derive(Debug, Clone, Default)]
pub struct Read {
    pub options: Options,
    pub warnings: Vec<String>,
}

pub fn read(annotations: &BTreeMap<String, String>) -> Result<Read, String> {
    read_with_defaults(annotations, &ProxyDefaults::default())
}

/// [`read`] over the mesh's `defaultConfig`: each field the annotations
/// set overrides the mesh's.
pub fn read_with_defaults(
    annotations: &BTreeMap<String, String>,
    defaults: &ProxyDefaults,
) -> Result<Read, String> {
    let mut read = Read::default();
    super::mesh_defaults::apply(defaults, &mut read.options, &mut read.warnings)?;
    let options = &mut read.options;
    for (key, value) in annotations {
        if !FAMILIES.iter().any(|family| key.starts_with(family)) {
            continue;
        }
        let capture = &mut options.capture;
        match key.as_str() {
            "sidecar.istio.io/inject" | "sidecar.istio.io/status" => {}
            k if k.starts_with(TRAFFIC) => match &k[TRAFFIC.len()..] {
                "includeInboundPorts" => {
                    capture.include_inbound_ports = capture::parse_ports(k, value).map_err(err)?
                }
                "excludeInboundPorts" => {
                    capture.exclude_inbound_ports =
                        capture::parse_port_list(k, value).map_err(err)?
                }
                "includeOutboundIPRanges" => {
                    capture.include_outbound_ranges =
                        capture::parse_ranges(k, value).map_err(err)?
                }
                "excludeOutboundIPRanges" => {
                    let (v4, v6) = capture::parse_range_list(k, value).map_err(err)?;
                    if !v6.is_empty() {
                        read.warnings.push(format!(
                            "{k}: {} not captured anyway (interception is IPv4 only)",
                            capture::join(&v6)
                        ));
                    }
                    capture.exclude_outbound_ranges = v4;
                }
                "excludeOutboundPorts" => {
                    capture.exclude_outbound_ports =
                        capture::parse_port_list(k, value).map_err(err)?
                }
                _ => read.warnings.push(unsupported(k)),
            },
            "sidecar.istio.io/proxyCPU" => options.resources.cpu = quantity(key, value)?,
            "sidecar.istio.io/proxyMemory" => options.resources.memory = quantity(key, value)?,
            "sidecar.istio.io/proxyCPULimit" => options.resources.cpu_limit = quantity(key, value)?,
            "sidecar.istio.io/proxyMemoryLimit" => {
                options.resources.memory_limit = quantity(key, value)?
            }
            "sidecar.istio.io/logLevel" => options.log_level = Some(log_level(key, value)?),
            "sidecar.istio.io/nativeSidecar" => options.native_sidecar = Some(boolean(key, value)?),
            super::probes::REWRITE_ANNOTATION => options.keep_probes = !boolean(key, value)?,
            PROXY_CONFIG => proxy_config(value, options, &mut read.warnings)?,
            k => read.warnings.push(unsupported(k)),
        }
    }
    Ok(read)
}

fn err(e: capture::CaptureError) -> String {
    format!("annotation {e}")
}

fn unsupported(key: &str) -> String {
    let what = if key.starts_with(SIDECAR) || key.starts_with(TRAFFIC) {
        "an injection annotation"
    } else {
        "a proxy annotation"
    };
    format!("{key}: {what} Weft does not implement; it has no effect")
}

/// A Kubernetes quantity, checked only for shape (the API server checks
/// the rest): digits, an optional fraction, an optional suffix.
fn quantity(key: &str, value: &str) -> Result<String, String> {
    let value = value.trim();
    let digits = value.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let suffix = &value[digits.len()..];
    let known = [
        "", "m", "k", "M", "G", "T", "P", "E", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei",
    ];
    if !digits.is_empty() && digits.parse::<f64>().is_ok() && known.contains(&suffix) {
        Ok(value.to_string())
    } else {
        Err(format!(
            "annotation {key}: {value:?} is not a quantity (e.g. 100m, 256Mi)"
        ))
    }
}

fn boolean(key: &str, value: &str) -> Result<bool, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(format!(
            "annotation {key}: {value:?} is neither \"true\" nor \"false\""
        )),
    }
}

/// Istio's (Envoy's) levels as `RUST_LOG` levels.
fn log_level(key: &str, value: &str) -> Result<String, String> {
    Ok(match value.trim().to_ascii_lowercase().as_str() {
        "trace" => "trace",
        "debug" => "debug",
        "info" => "info",
        "warning" | "warn" => "warn",
        "error" | "critical" => "error",
        "off" => "off",
        _ => {
            return Err(format!(
                "annotation {key}: {value:?} is not one of trace, debug, info, warning, error, critical, off"
            ));
        }
    }
    .to_string())
}

/// `proxy.istio.io/config`: a ProxyConfig in YAML or JSON. The three fields
/// Weft reads are used; any other is a warning.
fn proxy_config(
    text: &str,
    options: &mut Options,
    warnings: &mut Vec<String>,
) -> Result<(), String> {
    let value: Value = serde_saphyr::from_str(text)
        .map_err(|e| format!("annotation {PROXY_CONFIG}: not YAML or JSON: {e}"))?;
    let Value::Object(fields) = value else {
        if value.is_null() {
            return Ok(());
        }
        return Err(format!(
            "annotation {PROXY_CONFIG}: expected a ProxyConfig object"
        ));
    };
    for (field, value) in fields {
        let at = format!("annotation {PROXY_CONFIG}: {field}");
        match field.as_str() {
            "holdApplicationUntilProxyStarts" => {
                options.hold_application = value
                    .as_bool()
                    .ok_or_else(|| format!("{at}: expected true or false"))?
            }
            "concurrency" => {
                let n = value
                    .as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or_else(|| format!("{at}: expected a whole number"))?;
                options.concurrency = Some(n);
            }
            "terminationDrainDuration" => {
                let text = value
                    .as_str()
                    .ok_or_else(|| format!("{at}: expected a duration like \"5s\""))?;
                options.drain = Some(duration_ms(text).ok_or_else(|| {
                    format!("{at}: {text:?} is not a duration like \"5s\" or \"1.5s\"")
                })?);
            }
            "gatewayTopology" => gateway_topology(&value, &at, options, warnings)?,
            "proxyMetadata" => super::proxy_metadata::read(&value, &at, options, warnings)?,
            _ => warnings.push(format!(
                "{PROXY_CONFIG}: field {field} is not implemented by Weft; it has no effect"
            )),
        }
    }
    Ok(())
}

/// `gatewayTopology`: Weft reads `numTrustedProxies`; the rest is a warning.
fn gateway_topology(
    value: &Value,
    at: &str,
    options: &mut Options,
    warnings: &mut Vec<String>,
) -> Result<(), String> {
    let Value::Object(fields) = value else {
        return Err(format!("{at}: expected an object"));
    };
    for (field, value) in fields {
        match field.as_str() {
            "numTrustedProxies" => {
                let n = value
                    .as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or_else(|| format!("{at}.numTrustedProxies: expected a whole number"))?;
                options.num_trusted_proxies = Some(n);
            }
            _ => warnings.push(format!(
                "{PROXY_CONFIG}: field gatewayTopology.{field} is not implemented by Weft; \
                 it has no effect"
            )),
        }
    }
    Ok(())
}

/// A protobuf-style duration (`5s`, `1.5s`, `500ms`, `2m`, `1h`) as `<N>ms`.
pub(super) fn duration_ms(text: &str) -> Option<String> {
    let text = text.trim();
    let (number, unit_ms) = if let Some(n) = text.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1000.0)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60_000.0)
    } else if let Some(n) = text.strip_suffix('h') {
        (n, 3_600_000.0)
    } else {
        return None;
    };
    let value: f64 = number.parse().ok()?;
    (value.is_finite() && value >= 0.0).then(|| format!("{}ms", (value * unit_ms).round() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inject::capture::{Ports, Ranges};

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn every_supported_annotation_is_read() {
        let read = read(&map(&[
            ("traffic.sidecar.istio.io/includeInboundPorts", "9080"),
            ("traffic.sidecar.istio.io/excludeInboundPorts", "9443"),
            ("traffic.sidecar.istio.io/includeOutboundIPRanges", "10.0.0.0/8"),
            ("traffic.sidecar.istio.io/excludeOutboundIPRanges", "10.0.0.1/32"),
            ("traffic.sidecar.istio.io/excludeOutboundPorts", "5432,6379"),
            ("sidecar.istio.io/proxyCPU", "250m"),
            ("sidecar.istio.io/proxyMemory", "64Mi"),
            ("sidecar.istio.io/proxyCPULimit", "1"),
            ("sidecar.istio.io/proxyMemoryLimit", "256Mi"),
            ("sidecar.istio.io/logLevel", "warning"),
            ("sidecar.istio.io/nativeSidecar", "false"),
            (
                "proxy.istio.io/config",
                "holdApplicationUntilProxyStarts: true\nconcurrency: 4\nterminationDrainDuration: 1.5s\n",
            ),
        ]))
        .expect("valid");
        assert!(read.warnings.is_empty(), "{:?}", read.warnings);
        let o = read.options;
        assert_eq!(o.capture.include_inbound_ports, Ports::Only(vec![9080]));
        assert_eq!(o.capture.exclude_inbound_ports, vec![9443]);
        assert!(matches!(o.capture.include_outbound_ranges, Ranges::Only(ref r) if r.len() == 1));
        assert_eq!(o.capture.exclude_outbound_ports, vec![5432, 6379]);
        assert_eq!(o.resources.cpu, "250m");
        assert_eq!(o.resources.memory_limit, "256Mi");
        assert_eq!(o.log_level.as_deref(), Some("warn"));
        assert_eq!(o.native_sidecar, Some(false));
        assert!(o.hold_application);
        assert_eq!(o.concurrency, Some(4));
        assert_eq!(o.drain.as_deref(), Some("1500ms"));
    }

    #[test]
    fn json_proxy_config_and_unknown_fields_warn() {
        let read = read(&map(&[
            (
                "proxy.istio.io/config",
                r#"{"concurrency": 2, "tracing": {"sampling": 10}}"#,
            ),
            ("sidecar.istio.io/userVolume", "[]"),
            ("traffic.sidecar.istio.io/excludeInterfaces", "eth1"),
            ("status.sidecar.istio.io/port", "0"),
            ("example.com/other", "ignored: not an injection annotation"),
        ]))
        .expect("valid");
        assert_eq!(read.options.concurrency, Some(2));
        let all = read.warnings.join("\n");
        for wanted in [
            "field tracing is not implemented",
            "sidecar.istio.io/userVolume",
            "traffic.sidecar.istio.io/excludeInterfaces",
            "status.sidecar.istio.io/port",
        ] {
            assert!(all.contains(wanted), "{wanted} missing from {all}");
        }
        assert!(!all.contains("example.com"));
    }

    #[test]
    fn bad_values_are_refused_with_the_annotation_named() {
        for (key, value, wanted) in [
            ("sidecar.istio.io/proxyCPU", "lots", "proxyCPU"),
            ("sidecar.istio.io/logLevel", "loud", "logLevel"),
            (
                "traffic.sidecar.istio.io/excludeOutboundPorts",
                "x",
                "excludeOutboundPorts",
            ),
            ("proxy.istio.io/config", "concurrency: -1", "concurrency"),
            (
                "proxy.istio.io/config",
                "terminationDrainDuration: soon",
                "terminationDrainDuration",
            ),
            ("sidecar.istio.io/nativeSidecar", "maybe", "nativeSidecar"),
        ] {
            let err = read(&map(&[(key, value)])).expect_err(value);
            assert!(err.contains(wanted), "{err}");
        }
    }
}
