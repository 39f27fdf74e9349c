//! Bootstrap tokens over the API, behind `weft token create|list|revoke`:
//!
//! - `POST /v1/tokens {"namespace","workloadGroup","address"?,"ttl"?}` mints
//!   a token admitting one proxy into that WorkloadGroup (which must be in
//!   the store); its service account is the group's
//!   `template.serviceAccount`, or "default". Answers `{"token", "id",
//!   "identity", "expires"}`: the only time the token itself is shown.
//! - `GET /v1/tokens` lists the unexpired tokens (never their values).
//! - `DELETE /v1/tokens/<id>` revokes one.

use std::sync::Arc;

use http::StatusCode;
use weft_api::wire::{self, TokenInfo, TokenList, TokenMinted, TokenRequest, TokenRevoked};

use super::{Reply, error, json_reply};
use crate::ca::Ca;
use crate::ca::token::{MintRequest, MintedToken, RevokeError};
use crate::store::Store;

const SHAPE: &str =
    r#"expected {"namespace": ..., "workloadGroup": ..., "address"?: IP, "ttl"?: "1h"}"#;

/// `POST /v1/tokens`.
pub(super) async fn mint(ca: Option<Arc<Ca>>, store: &Store, body: &str, who: String) -> Reply {
    let Some(ca) = ca else {
        return no_ca();
    };
    let request: TokenRequest = match serde_json::from_str(body) {
        Ok(request) => request,
        Err(err) => return error(StatusCode::BAD_REQUEST, format!("{SHAPE}: {err}")),
    };
    for (field, value) in [
        ("namespace", &request.namespace),
        ("workloadGroup", &request.workload_group),
    ] {
        if !is_dns_label(value) {
            return error(
                StatusCode::BAD_REQUEST,
                format!("{field} {value:?}: must be a DNS label (a-z, 0-9, '-', at most 63)"),
            );
        }
    }
    let ttl = match request.ttl.as_deref().map(humantime::parse_duration) {
        None => None,
        Some(Ok(ttl)) => Some(ttl),
        Some(Err(err)) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "ttl {:?}: {err} (write e.g. \"10m\", \"1h\", \"7d\")",
                    request.ttl
                ),
            );
        }
    };
    if let Some(ttl) = ttl
        && (ttl.is_zero() || ttl > crate::ca::token::MAX_TTL)
    {
        return error(
            StatusCode::BAD_REQUEST,
            format!(
                "ttl {}: must be above zero and at most 30 days",
                humantime::format_duration(ttl)
            ),
        );
    }
    let service_account = match store.workload_group(&request.namespace, &request.workload_group) {
        Some(group) => group.spec.service_account().to_string(),
        None => {
            return error(
                StatusCode::NOT_FOUND,
                format!(
                    "no WorkloadGroup {}/{}: apply one first (its template names the service \
                     account, labels and ports of the proxies the token admits)",
                    request.namespace, request.workload_group
                ),
            );
        }
    };
    let mint = MintRequest {
        namespace: request.namespace,
        service_account,
        workload_group: request.workload_group,
        address: request.address,
        ttl,
        minted_by: who,
    };
    // Signing and the token list's fsync: off the async workers.
    match tokio::task::spawn_blocking(move || ca.tokens().mint(&mint)).await {
        Ok(Ok(minted)) => json_reply(
            StatusCode::OK,
            &wire::to_value(&TokenMinted {
                token: minted.token,
                id: minted.record.id,
                identity: minted.identity,
                workload_group: minted.record.workload_group,
                address: minted.record.address,
                expires: minted.record.expires,
            }),
        ),
        Ok(Err(err)) => error(StatusCode::INTERNAL_SERVER_ERROR, format!("{err:#}")),
        Err(err) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("minting failed: {err}"),
        ),
    }
}

/// `GET /v1/tokens`.
pub(super) fn list(ca: Option<&Ca>) -> Reply {
    match ca {
        Some(ca) => {
            let tokens = ca.tokens().list().into_iter().map(token_info).collect();
            json_reply(StatusCode::OK, &wire::to_value(&TokenList { tokens }))
        }
        None => no_ca(),
    }
}

/// `DELETE /v1/tokens/<id>`.
pub(super) async fn revoke(ca: Option<Arc<Ca>>, id: &str) -> Reply {
    let Some(ca) = ca else {
        return no_ca();
    };
    let id = id.to_string();
    match tokio::task::spawn_blocking(move || ca.tokens().revoke(&id)).await {
        Ok(Ok(token)) => json_reply(
            StatusCode::OK,
            &wire::to_value(&TokenRevoked {
                revoked: token_info(token),
            }),
        ),
        Ok(Err(err @ RevokeError::NotFound(_))) => error(StatusCode::NOT_FOUND, err.to_string()),
        Ok(Err(err)) => error(StatusCode::INTERNAL_SERVER_ERROR, err.to_string()),
        Err(err) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("revoking failed: {err}"),
        ),
    }
}

/// The token list's record as the API shows it. The record is also what
/// weftd keeps on disk, so the wire type is its own struct.
fn token_info(token: MintedToken) -> TokenInfo {
    TokenInfo {
        id: token.id,
        namespace: token.namespace,
        service_account: token.service_account,
        workload_group: token.workload_group,
        address: token.address,
        issued: token.issued,
        expires: token.expires,
        minted_by: token.minted_by,
        revoked: token.revoked,
    }
}

fn no_ca() -> Reply {
    error(
        StatusCode::NOT_FOUND,
        "this weftd runs no certificate authority",
    )
}

/// Kubernetes names for namespaces and groups (RFC 1123 label).
fn is_dns_label(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 63
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && !value.starts_with('-')
        && !value.ends_with('-')
}
