//! The one table of Istio fields Weft accepts but does not honour, and of
//! fields Istio removed but still tolerates.
//!
//! Kubernetes' default field validation answers such fields with a warning,
//! never silence: decoding (`weft validate`, `weft apply`, weftd's apply API)
//! turns every match into a [`FieldWarning`], and `weft analyze` reports the
//! same matches as analyzer messages. Both read [`TABLE`], so the CLI and
//! weftd cannot disagree on what Weft ignores.
//!
//! Patterns are field paths with array indices written `[]` and `**` for
//! any number of segments: `spec.**.tunnel` matches `spec.trafficPolicy.tunnel`
//! and `spec.subsets[].trafficPolicy.portLevelSettings[].tunnel`.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What Weft does with a field of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Treatment {
    /// Part of today's Istio API; accepted, kept in the store, not acted on.
    Ignored,
    /// Gone from Istio's API, which still tolerates it; dropped at decoding
    /// (the typed schema no longer has it).
    Removed,
}

/// One row: a field of one kind, what Weft does with it and why.
#[derive(Debug, Clone, Copy)]
pub struct Unimplemented {
    pub kind: &'static str,
    pub pattern: &'static str,
    pub treatment: Treatment,
    /// Said to the user after the field path.
    pub message: &'static str,
    /// Whether a present value counts (e.g. only CIDR `addresses`); `None`:
    /// any value but `null`.
    pub when: Option<fn(&Value) -> bool>,
}

const fn ignored(
    kind: &'static str,
    pattern: &'static str,
    message: &'static str,
) -> Unimplemented {
    Unimplemented {
        kind,
        pattern,
        treatment: Treatment::Ignored,
        message,
        when: None,
    }
}

const DR: &str = "DestinationRule";
const VS: &str = "VirtualService";
const SIDECAR: &str = "Sidecar";
const GATEWAY: &str = "Gateway";
const TELEMETRY: &str = "Telemetry";

/// Every field Weft does not honour. Keep it in step with the compiler:
/// a row leaves when the field is implemented.
pub const TABLE: &[Unimplemented] = &[
    // DestinationRule: every TrafficPolicy (top, port-level, subsets).
    ignored(
        DR,
        "spec.**.tunnel",
        "not implemented (HTTP CONNECT/POST tunnelling to an upstream proxy); traffic goes to the destination directly",
    ),
    ignored(
        DR,
        "spec.**.proxyProtocol",
        "not implemented; no PROXY protocol header is sent upstream",
    ),
    ignored(
        DR,
        "spec.**.retryBudget",
        "not implemented; retries are limited only by connectionPool.http.maxRetries",
    ),
    ignored(
        DR,
        "spec.**.tls.caCrl",
        "not implemented; upstream certificates are not checked against a revocation list",
    ),
    ignored(
        DR,
        "spec.**.outlierDetection.outlierDetectionHttpErrorCodes",
        "not implemented; only 5xx (and gateway errors) count",
    ),
    ignored(
        DR,
        "spec.**.connectionPool.http.http2KeepAlive",
        "not implemented; no HTTP/2 PINGs are sent to upstreams",
    ),
    ignored(
        DR,
        "spec.**.loadBalancer.consistentHash.httpCookie.attributes",
        "not implemented; the generated cookie carries only name, path and ttl",
    ),
    ignored(
        DR,
        "spec.**.loadBalancer.backendUtilization",
        "not implemented; the simple/consistentHash balancer applies",
    ),
    ignored(
        DR,
        "spec.**.loadBalancer.zoneAwareLbSetting",
        "not implemented; use localityLbSetting",
    ),
    // VirtualService.
    ignored(
        VS,
        "spec.http[].retries.retryIgnorePreviousHosts",
        "not implemented; a retry may go to the host that failed",
    ),
    ignored(
        VS,
        "spec.http[].match[].statPrefix",
        "not implemented; route statistics carry no prefix",
    ),
    ignored(
        VS,
        "spec.http[].fault.delay.exponentialDelay",
        "not implemented (only fixedDelay); no delay is injected",
    ),
    ignored(
        VS,
        "spec.http[].fault.abort.http2Error",
        "not implemented (only httpStatus and grpcStatus); no abort is injected",
    ),
    Unimplemented {
        kind: VS,
        pattern: "spec.http[].corsPolicy.unmatchedPreflights",
        treatment: Treatment::Ignored,
        message: "IGNORE is not implemented; preflights no origin matches are forwarded",
        when: Some(is_ignore),
    },
    ignored(
        VS,
        "spec.tcp[].match[].sourceSubnet",
        "not implemented (needs proxy support); the TCP rule is left out, never applied to every caller",
    ),
    Unimplemented {
        kind: VS,
        pattern: "spec.http[].websocketUpgrade",
        treatment: Treatment::Removed,
        message: "removed from Istio's API (WebSocket upgrades need no setting); ignored",
        when: None,
    },
    Unimplemented {
        kind: VS,
        pattern: "spec.http[].appendHeaders",
        treatment: Treatment::Removed,
        message: "removed from Istio's API (use headers.request.add); ignored, as Kubernetes prunes it",
        when: None,
    },
    Unimplemented {
        kind: VS,
        pattern: "spec.http[].appendRequestHeaders",
        treatment: Treatment::Removed,
        message: "removed from Istio's API (use headers.request.add); ignored, as Kubernetes prunes it",
        when: None,
    },
    Unimplemented {
        kind: VS,
        pattern: "spec.http[].removeRequestHeaders",
        treatment: Treatment::Removed,
        message: "removed from Istio's API (use headers.request.remove); ignored, as Kubernetes prunes it",
        when: None,
    },
    Unimplemented {
        kind: VS,
        pattern: "spec.http[].appendResponseHeaders",
        treatment: Treatment::Removed,
        message: "removed from Istio's API (use headers.response.add); ignored, as Kubernetes prunes it",
        when: None,
    },
    Unimplemented {
        kind: VS,
        pattern: "spec.http[].removeResponseHeaders",
        treatment: Treatment::Removed,
        message: "removed from Istio's API (use headers.response.remove); ignored, as Kubernetes prunes it",
        when: None,
    },
    // ServiceEntry, WorkloadEntry, WorkloadGroup.
    ignored(
        "ServiceEntry",
        "spec.subjectAltNames",
        "not implemented; mesh mTLS checks the identity each endpoint's proxy holds",
    ),
    ignored(
        "ServiceEntry",
        "spec.endpoints[].network",
        "multi-network is not implemented; the endpoint is dialled directly",
    ),
    ignored(
        "WorkloadEntry",
        "spec.network",
        "multi-network is not implemented; the workload is dialled directly",
    ),
    ignored(
        "WorkloadGroup",
        "spec.template.network",
        "multi-network is not implemented; the workloads are dialled directly",
    ),
    ignored(
        "WorkloadGroup",
        "spec.metadata",
        "not applied (Weft does not auto-register WorkloadEntries from a group)",
    ),
    ignored(
        "WorkloadGroup",
        "spec.probe",
        "health probes are not implemented; registered workloads count as ready",
    ),
    // Sidecar.
    Unimplemented {
        kind: SIDECAR,
        pattern: "spec.ingress[].defaultEndpoint",
        treatment: Treatment::Ignored,
        message: "0.0.0.0/[::] (the workload's own address) is reached over loopback: weft-proxy forwards to 127.0.0.1/[::1] on that port",
        when: Some(is_any_address),
    },
    Unimplemented {
        kind: SIDECAR,
        pattern: "spec.ingress[].defaultEndpoint",
        treatment: Treatment::Ignored,
        message: "unix sockets are not implemented (needs proxy support); the port is left out of the proxy's inbound ports",
        when: Some(is_unix),
    },
    ignored(
        SIDECAR,
        "spec.ingress[].bind",
        "not implemented; the proxy's inbound listener binds as usual",
    ),
    ignored(
        SIDECAR,
        "spec.ingress[].captureMode",
        "not implemented; inbound capture follows the proxy's mode",
    ),
    ignored(
        SIDECAR,
        "spec.ingress[].tls",
        "not implemented (needs proxy support); the port keeps mesh mTLS as PeerAuthentication sets it",
    ),
    Unimplemented {
        kind: SIDECAR,
        pattern: "spec.egress[].bind",
        treatment: Treatment::Ignored,
        message: "unix sockets are not implemented (IP addresses are); no listener is bound for this egress listener",
        when: Some(is_unix),
    },
    ignored(
        SIDECAR,
        "spec.egress[].captureMode",
        "not implemented; outbound capture follows the proxy's mode",
    ),
    // Gateway.
    ignored(
        GATEWAY,
        "spec.servers[].bind",
        "not implemented; the server listens on the gateway's address",
    ),
    ignored(
        GATEWAY,
        "spec.servers[].defaultEndpoint",
        "not implemented; traffic is routed by the bound VirtualServices",
    ),
    ignored(
        GATEWAY,
        "spec.servers[].tls.caCrl",
        "not implemented; client certificates are not checked against a revocation list",
    ),
    ignored(
        GATEWAY,
        "spec.servers[].tls.verifyCertificateSpki",
        "not implemented; client certificates are verified against caCertificates (and subjectAltNames) only",
    ),
    ignored(
        GATEWAY,
        "spec.servers[].tls.verifyCertificateHash",
        "not implemented; client certificates are verified against caCertificates (and subjectAltNames) only",
    ),
    ignored(
        GATEWAY,
        "spec.servers[].tls.ecdhCurves",
        "not implemented; rustls' default key-exchange groups are offered",
    ),
    ignored(
        GATEWAY,
        "spec.servers[].tls.credentialNames",
        "not implemented (one certificate per server); use credentialName or serverCertificate/privateKey; the server is left out",
    ),
    ignored(
        GATEWAY,
        "spec.servers[].tls.tlsCertificates",
        "not implemented (one certificate per server); use serverCertificate/privateKey; the server is left out",
    ),
    ignored(
        GATEWAY,
        "spec.servers[].tls.caCertCredentialName",
        "not implemented; use credentialName (with its <name>-cacert) or caCertificates",
    ),
    Unimplemented {
        kind: GATEWAY,
        pattern: "spec.servers[].port.protocol",
        treatment: Treatment::Ignored,
        message: "is not served by Weft's gateways (HTTP, HTTP2, GRPC, HTTPS, TLS and TCP are); the server is left out",
        when: Some(is_unserved_gateway_protocol),
    },
    Unimplemented {
        kind: GATEWAY,
        pattern: "spec.servers[]",
        treatment: Treatment::Ignored,
        message: "tls.mode AUTO_PASSTHROUGH is served on protocol TLS servers only (it routes by SNI without terminating); the server is left out",
        when: Some(is_unserved_auto_passthrough),
    },
    // Telemetry metrics: Istio's standard metrics on the prometheus provider
    // are implemented (see weft-control's compiler/telemetry_metrics.rs).
    ignored(
        TELEMETRY,
        "spec.metrics[].reportingInterval",
        "not implemented; Prometheus reads Weft's metrics when it scrapes",
    ),
    ignored(
        TELEMETRY,
        "spec.metrics[].overrides[].match.customMetric",
        "custom metrics are not implemented; the override is left out",
    ),
    Unimplemented {
        kind: TELEMETRY,
        pattern: "spec.metrics[].providers[].name",
        treatment: Treatment::Ignored,
        message: "only the prometheus metrics provider is implemented; an entry naming only other providers is left out",
        when: Some(is_not_prometheus),
    },
];

fn is_not_prometheus(value: &Value) -> bool {
    value.as_str().is_some_and(|name| name != "prometheus")
}

fn is_any_address(value: &Value) -> bool {
    value
        .as_str()
        .is_some_and(|s| s.starts_with("0.0.0.0:") || s.starts_with("[::]:"))
}

fn is_unix(value: &Value) -> bool {
    value.as_str().is_some_and(|s| s.starts_with("unix://"))
}

fn is_ignore(value: &Value) -> bool {
    value.as_str() == Some("IGNORE")
}

fn is_unserved_gateway_protocol(value: &Value) -> bool {
    value.as_str().is_some_and(|protocol| {
        !["HTTP", "HTTP2", "GRPC", "HTTPS", "TLS", "TCP"]
            .iter()
            .any(|served| protocol.eq_ignore_ascii_case(served))
    })
}

/// A server (the whole object: the mode and the protocol together) with
/// AUTO_PASSTHROUGH on a protocol other than TLS. ISTIO_MUTUAL is served
/// on every protocol gateways serve.
fn is_unserved_auto_passthrough(server: &Value) -> bool {
    let mode = server.pointer("/tls/mode").and_then(Value::as_str);
    let protocol = server.pointer("/port/protocol").and_then(Value::as_str);
    mode == Some("AUTO_PASSTHROUGH") && !protocol.is_some_and(|p| p.eq_ignore_ascii_case("TLS"))
}

/// One field Weft does not honour, as weftd's apply API returns it and
/// `weft apply` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldWarning {
    /// The file (or API request source) the object came from.
    pub file: String,
    /// `Kind namespace/name`.
    pub resource: String,
    /// `spec.trafficPolicy.tunnel`.
    pub field: String,
    pub message: String,
}

impl fmt::Display for FieldWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {}: {}: {}",
            self.file, self.resource, self.field, self.message
        )
    }
}

/// A match of the table in one object: the field path (with indices) and
/// the row.
#[derive(Debug, Clone)]
pub struct Found {
    pub path: String,
    pub row: &'static Unimplemented,
}

/// Every table match in an object of `kind` (the whole object as JSON,
/// `spec` inside), in document order.
pub fn scan(kind: &str, object: &Value) -> Vec<Found> {
    let rows: Vec<&'static Unimplemented> = TABLE.iter().filter(|r| r.kind == kind).collect();
    let mut found = Vec::new();
    if rows.is_empty() {
        return found;
    }
    if let Some(spec) = object.get("spec") {
        let mut path = vec!["spec".to_string()];
        walk(spec, &mut path, "spec", &rows, &mut found);
    }
    found
}

/// Removes every [`Treatment::Removed`] field from `object` (so the typed
/// schema accepts it), returning what it matched.
pub fn strip_removed(kind: &str, object: &mut Value) -> Vec<Found> {
    let found: Vec<Found> = scan(kind, object)
        .into_iter()
        .filter(|f| f.row.treatment == Treatment::Removed)
        .collect();
    for f in &found {
        remove_path(object, &f.path);
    }
    found
}

fn walk(
    value: &Value,
    pattern_path: &mut Vec<String>,
    shown: &str,
    rows: &[&'static Unimplemented],
    out: &mut Vec<Found>,
) {
    if !value.is_null() {
        for row in rows {
            if glob(row.pattern, pattern_path) && row.when.is_none_or(|when| when(value)) {
                out.push(Found {
                    path: shown.to_string(),
                    row,
                });
            }
        }
    }
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                pattern_path.push(key.clone());
                walk(child, pattern_path, &format!("{shown}.{key}"), rows, out);
                pattern_path.pop();
            }
        }
        Value::Array(items) => {
            // `[]` joins its key: `http[]` is one pattern segment.
            if let Some(last) = pattern_path.last_mut() {
                last.push_str("[]");
            }
            for (index, child) in items.iter().enumerate() {
                walk(child, pattern_path, &format!("{shown}[{index}]"), rows, out);
            }
            if let Some(last) = pattern_path.last_mut() {
                last.truncate(last.len() - 2);
            }
        }
        _ => {}
    }
}

/// `pattern` (dot-separated, `**` = any number of segments) against path
/// segments.
fn glob(pattern: &str, path: &[String]) -> bool {
    let parts: Vec<&str> = pattern.split('.').collect();
    glob_parts(&parts, path)
}

fn glob_parts(pattern: &[&str], path: &[String]) -> bool {
    match pattern.split_first() {
        None => path.is_empty(),
        Some((&"**", rest)) => (0..=path.len()).any(|skip| glob_parts(rest, &path[skip..])),
        Some((head, rest)) => path
            .split_first()
            .is_some_and(|(first, tail)| first == head && glob_parts(rest, tail)),
    }
}

/// Removes the field at a shown path (`spec.http[0].websocketUpgrade`).
fn remove_path(object: &mut Value, path: &str) {
    let mut current = object;
    let mut segments = path.split('.').peekable();
    while let Some(segment) = segments.next() {
        let (key, indices) = match segment.find('[') {
            Some(at) => (&segment[..at], &segment[at..]),
            None => (segment, ""),
        };
        if segments.peek().is_none() && indices.is_empty() {
            if let Some(map) = current.as_object_mut() {
                map.remove(key);
            }
            return;
        }
        let Some(next) = current.get_mut(key) else {
            return;
        };
        current = next;
        for index in indices.split(['[', ']']).filter(|s| !s.is_empty()) {
            let Some(next) = index.parse::<usize>().ok().and_then(|i| current.get_mut(i)) else {
                return;
            };
            current = next;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nested_traffic_policies_match_a_double_star_pattern() {
        let dr = json!({"spec": {"host": "r", "subsets": [{"name": "v1", "trafficPolicy": {
            "portLevelSettings": [{"port": {"number": 80}, "tunnel": {"protocol": "CONNECT"}}]}}]}});
        let found = scan("DestinationRule", &dr);
        let paths: Vec<&str> = found.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            paths,
            ["spec.subsets[0].trafficPolicy.portLevelSettings[0].tunnel"]
        );
    }

    #[test]
    fn removed_fields_are_stripped_and_reported() {
        let mut vs =
            json!({"spec": {"hosts": ["a"], "http": [{"websocketUpgrade": true, "route": []}]}});
        let found = strip_removed("VirtualService", &mut vs);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].path, "spec.http[0].websocketUpgrade");
        assert_eq!(
            vs,
            json!({"spec": {"hosts": ["a"], "http": [{"route": []}]}})
        );
    }

    #[test]
    fn nulls_and_other_kinds_are_not_reported() {
        let dr = json!({"spec": {"trafficPolicy": {"tunnel": null}}});
        assert!(scan("DestinationRule", &dr).is_empty());
        assert!(scan("PeerAuthentication", &json!({"spec": {"tunnel": {}}})).is_empty());
    }

    #[test]
    fn decoding_accepts_removed_header_fields_with_a_warning() {
        let yaml = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: old, namespace: shop}\nspec:\n  hosts: [old]\n  http:\n  - appendHeaders: {x-a: \"1\"}\n    route:\n    - destination: {host: old}\n";
        let decoded = crate::decode_str(yaml, "old.yaml");
        assert!(decoded.problems.is_empty(), "{:?}", decoded.problems);
        assert_eq!(decoded.resources.len(), 1);
        assert_eq!(
            decoded.warnings[0].to_string(),
            "old.yaml: VirtualService shop/old: spec.http[0].appendHeaders: removed from Istio's API (use headers.request.add); ignored, as Kubernetes prunes it"
        );
    }
}
