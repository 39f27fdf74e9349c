//! One function per API call: store or status board in, JSON reply out.

use std::sync::Arc;

use http::StatusCode;
use weft_api::wire::{
    self, AppliedObject, ApplyReply, DeleteReply, DeletedReply, ListReply, ObjectKey,
    ProblemsReply, ProxiesReply, ProxyStatus, Refusal,
};

use weft_api::unimplemented::FieldWarning;

use super::{Failure, Reply, canonical_kind, error, json_reply, known_kinds};
use crate::status::StatusBoard;
use crate::store::{Applied, Change, ResourceKey, Store, StoreError};

/// `POST /v1/apply`: all or nothing, as the store guarantees. An accepted
/// apply carries a warning for every field Weft does not honour (the
/// table in `weft_api::unimplemented`), and for every provider an applied
/// Telemetry names that the proxies cannot use under the MeshConfig in
/// force (`mesh`), as Kubernetes answers with warnings.
pub(super) async fn apply(
    store: Arc<Store>,
    text: String,
    source: String,
    mesh: Arc<crate::meshconfig::InForce>,
) -> Reply {
    let work = move || {
        let (applied, mut warnings) = store.apply_text_with_warnings(&text, &source)?;
        warnings.extend(provider_warnings(&store, &applied, &mesh, &source));
        Ok::<_, StoreError>((applied, warnings))
    };
    match blocking(work).await {
        Ok(Ok((applied, warnings))) => json_reply(
            StatusCode::OK,
            &wire::to_value(&ApplyReply {
                applied: applied.iter().map(applied_object).collect(),
                warnings,
            }),
        ),
        Ok(Err(StoreError::Invalid(problems))) => json_reply(
            StatusCode::UNPROCESSABLE_ENTITY,
            &wire::to_value(&ProblemsReply {
                problems: problems.iter().map(ToString::to_string).collect(),
            }),
        ),
        Ok(Err(err)) => error(StatusCode::INTERNAL_SERVER_ERROR, err.to_string()),
        Err(failure) => failure.reply(),
    }
}

/// The applied Telemetry resources' references to providers the proxies
/// cannot use, as warnings of the apply from `file`.
fn provider_warnings(
    store: &Store,
    applied: &[Applied],
    mesh: &crate::meshconfig::InForce,
    file: &str,
) -> Vec<FieldWarning> {
    let telemetry: Vec<weft_api::Resource> = applied
        .iter()
        .filter(|applied| applied.key.kind == "Telemetry")
        .filter_map(|applied| store.get(&applied.key))
        .map(|stored| stored.resource)
        .collect();
    crate::compiler::telemetry_provider_warnings(&telemetry, &mesh.loaded.config)
        .into_iter()
        .map(|warning| FieldWarning {
            file: file.to_string(),
            resource: warning.resource,
            field: warning.field,
            message: warning.message,
        })
        .collect()
}

/// `POST /v1/delete`: deletes every object the documents name. Only kind,
/// namespace and name are read, so a file that no longer validates can
/// still be deleted with the command that applied it.
pub(super) async fn delete_named(store: Arc<Store>, text: &str, source: &str) -> Reply {
    let named = match named_objects(text, source) {
        Ok(named) => named,
        Err(problems) => {
            return json_reply(
                StatusCode::UNPROCESSABLE_ENTITY,
                &wire::to_value(&ProblemsReply { problems }),
            );
        }
    };
    let outcome = blocking(move || {
        let (mut deleted, mut not_found) = (Vec::new(), Vec::new());
        for key in named.keys {
            match store.delete(&key)? {
                Some(applied) => deleted.push(applied_object(&applied)),
                None => not_found.push(object_key(&key)),
            }
        }
        Ok::<_, StoreError>((deleted, not_found, named.skipped))
    })
    .await;
    match outcome {
        Ok(Ok((deleted, not_found, skipped))) => json_reply(
            StatusCode::OK,
            &wire::to_value(&DeleteReply {
                deleted,
                not_found,
                skipped,
            }),
        ),
        Ok(Err(err)) => error(StatusCode::INTERNAL_SERVER_ERROR, err.to_string()),
        Err(failure) => failure.reply(),
    }
}

/// `DELETE /v1/resources/<Kind>/<namespace>/<name>`.
pub(super) async fn delete_one(
    store: Arc<Store>,
    kind: &str,
    namespace: &str,
    name: &str,
) -> Reply {
    let key = match key_of(kind, namespace, name) {
        Ok(key) => key,
        Err(failure) => return failure.reply(),
    };
    let missing = not_found(&key);
    match blocking(move || store.delete(&key)).await {
        Ok(Ok(Some(applied))) => json_reply(
            StatusCode::OK,
            &wire::to_value(&DeletedReply {
                deleted: applied_object(&applied),
            }),
        ),
        Ok(Ok(None)) => missing,
        Ok(Err(err)) => error(StatusCode::INTERNAL_SERVER_ERROR, err.to_string()),
        Err(failure) => failure.reply(),
    }
}

/// `GET /v1/resources?kind=K&namespace=N`, both optional.
pub(super) fn list(store: &Store, query: &str) -> Reply {
    let mut kind = None;
    let mut namespace = None;
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "kind" if !value.is_empty() => match canonical_kind(value) {
                Some(canonical) => kind = Some(canonical),
                None => return error(StatusCode::BAD_REQUEST, unknown_kind(value)),
            },
            "namespace" if !value.is_empty() => namespace = Some(value),
            _ => {}
        }
    }
    let items = store
        .list(kind, namespace)
        .iter()
        .map(|stored| stored.to_versioned_value())
        .collect();
    json_reply(StatusCode::OK, &wire::to_value(&ListReply { items }))
}

/// `GET /v1/resources/<Kind>/<namespace>/<name>`.
pub(super) fn get(store: &Store, kind: &str, namespace: &str, name: &str) -> Reply {
    match key_of(kind, namespace, name) {
        Ok(key) => match store.get(&key) {
            Some(stored) => json_reply(StatusCode::OK, &stored.to_versioned_value()),
            None => not_found(&key),
        },
        Err(failure) => failure.reply(),
    }
}

/// `GET /v1/proxies`.
pub(super) fn proxies(status: &StatusBoard) -> Reply {
    let proxies = status
        .list()
        .into_iter()
        .map(|proxy| ProxyStatus {
            synced: proxy.synced(),
            id: proxy.id,
            workload: proxy.workload,
            namespace: proxy.namespace,
            connected: proxy.connected,
            sent_version: proxy.sent_version,
            acked_version: proxy.acked_version,
            error: proxy.error,
        })
        .collect();
    let refused = status
        .refusals()
        .into_iter()
        .map(|refused| Refusal {
            time: refused.time,
            peer: refused.peer,
            id: refused.id,
            code: refused.code,
            reason: refused.reason,
        })
        .collect();
    json_reply(
        StatusCode::OK,
        &wire::to_value(&ProxiesReply { proxies, refused }),
    )
}

/// The objects a delete body names, and the ones skipped (kinds Weft does
/// not store); or every problem, so nothing is deleted on a typo.
struct Named {
    keys: Vec<ResourceKey>,
    skipped: Vec<String>,
}

fn named_objects(text: &str, source: &str) -> Result<Named, Vec<String>> {
    let identified = weft_api::identify_str(text, source);
    if !identified.problems.is_empty() {
        return Err(identified
            .problems
            .iter()
            .map(ToString::to_string)
            .collect());
    }
    Ok(Named {
        keys: identified
            .named
            .iter()
            .map(|named| ResourceKey::new(&named.kind, &named.namespace, &named.name))
            .collect(),
        skipped: identified.notices,
    })
}

fn key_of(kind: &str, namespace: &str, name: &str) -> Result<ResourceKey, Failure> {
    match canonical_kind(kind) {
        Some(kind) => Ok(ResourceKey::new(kind, namespace, name)),
        None => Err(Failure(StatusCode::NOT_FOUND, unknown_kind(kind))),
    }
}

fn unknown_kind(kind: &str) -> String {
    format!("unknown kind {kind:?}; Weft stores {}", known_kinds())
}

fn not_found(key: &ResourceKey) -> Reply {
    error(StatusCode::NOT_FOUND, format!("{key} not found"))
}

fn object_key(key: &ResourceKey) -> ObjectKey {
    ObjectKey {
        kind: key.kind.clone(),
        namespace: key.namespace.clone(),
        name: key.name.clone(),
    }
}

fn change_name(change: &Change) -> &'static str {
    match change {
        Change::Created => "created",
        Change::Configured => "configured",
        Change::Unchanged => "unchanged",
        Change::Deleted => "deleted",
    }
}

fn applied_object(applied: &Applied) -> AppliedObject {
    AppliedObject {
        kind: applied.key.kind.clone(),
        namespace: applied.key.namespace.clone(),
        name: applied.key.name.clone(),
        change: change_name(&applied.change).to_string(),
        resource_version: applied.resource_version,
    }
}

/// Store changes may write to disk: run them off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Failure> {
    tokio::task::spawn_blocking(work).await.map_err(|err| {
        Failure(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the store operation failed: {err}"),
        )
    })
}
