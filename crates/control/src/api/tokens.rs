//! `POST /v1/tokens`: a bootstrap token for one workload identity, handed
//! to its proxy as `--token-file`.

use http::StatusCode;
use serde::Deserialize;
use serde_json::json;

use super::{Reply, error, json_reply};
use crate::ca::Ca;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TokenRequest {
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    service_account: String,
}

pub(super) fn mint(ca: Option<&Ca>, body: &str) -> Reply {
    let Some(ca) = ca else {
        return error(
            StatusCode::NOT_FOUND,
            "this weftd runs no certificate authority",
        );
    };
    let request: TokenRequest = match serde_json::from_str(body) {
        Ok(request) => request,
        Err(err) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("expected {{\"namespace\": ..., \"serviceAccount\": ...}}: {err}"),
            );
        }
    };
    for (field, value) in [
        ("namespace", &request.namespace),
        ("serviceAccount", &request.service_account),
    ] {
        if !is_dns_label(value) {
            return error(
                StatusCode::BAD_REQUEST,
                format!("{field} {value:?}: must be a DNS label (a-z, 0-9, '-', at most 63)"),
            );
        }
    }
    match ca
        .tokens()
        .mint(&request.namespace, &request.service_account)
    {
        Ok(token) => {
            let identity = crate::ca::SpiffeId {
                trust_domain: ca.trust_domain().to_string(),
                namespace: request.namespace.clone(),
                service_account: request.service_account.clone(),
            }
            .uri();
            json_reply(
                StatusCode::OK,
                &json!({ "token": token, "identity": identity }),
            )
        }
        Err(err) => error(StatusCode::INTERNAL_SERVER_ERROR, err.to_string()),
    }
}

/// Kubernetes names for namespaces and service accounts (RFC 1123 label;
/// service accounts may be longer subdomains, labels cover real use).
fn is_dns_label(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 63
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && !value.starts_with('-')
        && !value.ends_with('-')
}
