//! Envoy access-log format strings as weftd checks them at apply time:
//! every `%COMMAND%` must be one the proxy writes. Envoy itself refuses a
//! listener naming an unknown operator ("Not supported field in
//! StreamInfo"), so Weft refuses the MeshConfig, naming the field, rather
//! than let proxies fall back.
//!
//! The proxy parses the same grammar (weft-proxy `telemetry/log_format.rs`);
//! this side only checks it.

use serde_json::Value;

use crate::field::FieldErrors;

/// The operators the proxy renders.
pub const OPERATORS: &[&str] = &[
    "START_TIME",
    "REQ",
    "RESP",
    "RESPONSE_CODE",
    "RESPONSE_FLAGS",
    "RESPONSE_CODE_DETAILS",
    "DURATION",
    "BYTES_RECEIVED",
    "BYTES_SENT",
    "PROTOCOL",
    "UPSTREAM_HOST",
    "UPSTREAM_CLUSTER",
    "UPSTREAM_LOCAL_ADDRESS",
    "DOWNSTREAM_REMOTE_ADDRESS",
    "DOWNSTREAM_LOCAL_ADDRESS",
    "DOWNSTREAM_PEER_URI_SAN",
    "REQUESTED_SERVER_NAME",
    "ROUTE_NAME",
    "UPSTREAM_TRANSPORT_FAILURE_REASON",
    "CONNECTION_TERMINATION_DETAILS",
];

/// The first problem in `format`, if any.
pub fn problem(format: &str) -> Option<String> {
    let mut rest = format;
    while let Some(at) = rest.find('%') {
        let body = &rest[at + 1..];
        let mut depth = 0usize;
        let end = body.char_indices().find_map(|(i, c)| {
            match c {
                '(' => depth += 1,
                ')' => depth = depth.saturating_sub(1),
                '%' if depth == 0 => return Some(i),
                _ => {}
            }
            None
        });
        let Some(end) = end else {
            return Some(format!(
                "unterminated command operator at {:?}",
                &rest[at..]
            ));
        };
        let token = &body[..end];
        let name = token.split('(').next().unwrap_or(token);
        if !OPERATORS.contains(&name) {
            return Some(format!(
                "%{token}%: unknown command operator {name} (Weft writes {})",
                OPERATORS.join(", ")
            ));
        }
        let args = token.find('(').map(|open| (open, token.rfind(')')));
        match (name, args) {
            ("REQ" | "RESP", None) => return Some(format!("%{token}%: {name} needs (header)")),
            (_, Some((open, Some(close)))) if close > open => {
                let tail = &token[close + 1..];
                if name != "START_TIME" && !matches!(name, "REQ" | "RESP") {
                    return Some(format!("%{token}%: {name} takes no argument"));
                }
                if !tail.is_empty()
                    && tail
                        .strip_prefix(':')
                        .is_none_or(|n| n.parse::<usize>().is_err())
                {
                    return Some(format!("%{token}%: expected ':length' after ')'"));
                }
            }
            (_, Some(_)) => return Some(format!("%{token}%: missing ')'")),
            _ => {}
        }
        rest = &body[end + 1..];
    }
    None
}

pub(super) fn check_text(path: &str, format: &str, errors: &mut FieldErrors) {
    if let Some(problem) = problem(format) {
        errors.push(path, problem);
    }
}

/// `labels`: a JSON object whose values are format strings.
pub(super) fn check_labels(path: &str, labels: &Value, errors: &mut FieldErrors) {
    let Some(object) = labels.as_object() else {
        errors.push(path, "must be an object of field name to format string");
        return;
    };
    for (name, value) in object {
        match value.as_str() {
            Some(format) => check_text(&format!("{path}.{name}"), format, errors),
            None => errors.push(format!("{path}.{name}"), "must be a format string"),
        }
    }
}
