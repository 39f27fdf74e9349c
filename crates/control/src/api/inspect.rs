//! Inspection calls: `POST /v1/analyze`, `GET /v1/describe` and
//! `GET /v1/proxies/<id>/config`.

use http::StatusCode;
use serde_json::json;
use weft_api::wire::{self, AnalyzeMessage, AnalyzeReply, AnalyzeRequest, PushedConfig};

use super::{Reply, error, json_reply};
use crate::analyze::{self, Input};
use crate::status::StatusBoard;
use crate::store::Store;

/// `POST /v1/analyze`: the analyzers over everything stored, plus the
/// objects in the body as if they were applied (`{"objects": [{"origin":
/// FILE, "document": N, "object": {...}}], "analyzers": [NAME]}`, all
/// optional): `weft analyze` without `-f`, or
/// with `-f FILES --use-weftd`.
pub(super) fn analyze(
    store: &Store,
    status: &StatusBoard,
    mesh_config: Option<&crate::meshconfig::Receiver>,
    body: &str,
) -> Reply {
    let request: AnalyzeRequest = if body.trim().is_empty() {
        AnalyzeRequest::default()
    } else {
        let parsed = serde_json::from_str(body)
            .map_err(|err| format!("the analyze request is not JSON: {err}"))
            .and_then(|value| {
                wire::decode("the analyze request", &value).map_err(|err| err.to_string())
            });
        match parsed {
            Ok(request) => request,
            Err(message) => return error(StatusCode::BAD_REQUEST, message),
        }
    };
    let resources = store.resources();
    let mut input = Input::from_resources(&resources, "weftd");
    // Connected proxies are workloads too (policies select them).
    for workload in status.workloads().iter() {
        let proxy = json!({
            "apiVersion": "weft.io/v1", "kind": "ConnectedProxy",
            "metadata": {"name": workload.name, "namespace": workload.namespace, "labels": workload.labels},
        });
        input.add_document(proxy, "weftd", 0, "default");
    }
    for item in request.objects {
        input.add_document(item.object, &item.origin, item.document, "default");
    }
    let only: Vec<&str> = request.analyzers.iter().map(String::as_str).collect();
    match analyze::analyze(&input, &only) {
        Ok(messages) => {
            let mut messages: Vec<AnalyzeMessage> =
                messages.iter().map(AnalyzeMessage::from).collect();
            // The MeshConfig's fields Weft does not apply, when the caller
            // did not ask for some analyzers only.
            if let Some(in_force) = mesh_config.filter(|_| only.is_empty()) {
                let in_force = in_force.borrow().clone();
                for warning in &in_force.loaded.warnings {
                    messages.push(AnalyzeMessage {
                        code: weft_api::analyze::NOT_IMPLEMENTED.code.into(),
                        name: weft_api::analyze::NOT_IMPLEMENTED.name.into(),
                        resource: "MeshConfig".into(),
                        // Mesh-wide: shown whatever namespace is analyzed.
                        namespace: String::new(),
                        text: warning.clone(),
                        origin: in_force.source.clone(),
                    });
                }
                // Telemetry naming a tracing provider that gives no spans.
                let config = &in_force.loaded.config;
                // ... or an access-log provider that takes no lines.
                for warning in crate::compiler::telemetry_provider_warnings(&resources, config) {
                    messages.push(AnalyzeMessage {
                        code: weft_api::analyze::NOT_IMPLEMENTED.code.into(),
                        name: weft_api::analyze::NOT_IMPLEMENTED.name.into(),
                        resource: "Telemetry".into(),
                        namespace: String::new(),
                        text: warning.to_string(),
                        origin: "weftd".into(),
                    });
                }
            }
            json_reply(StatusCode::OK, &wire::to_value(&AnalyzeReply { messages }))
        }
        Err(message) => error(StatusCode::BAD_REQUEST, message),
    }
}

/// `GET /v1/meshconfig`: the MeshConfig in force, its source, warnings
/// and the last change refused.
pub(super) fn mesh_config(held: Option<&crate::meshconfig::Receiver>) -> Reply {
    let in_force = held.map_or_else(
        || std::sync::Arc::new(crate::meshconfig::InForce::defaults()),
        |held| held.borrow().clone(),
    );
    let config = &in_force.loaded.config;
    let reply = wire::MeshConfigReply {
        source: in_force.source.clone(),
        config: wire::to_value(&config.effective()),
        written: wire::to_value(config),
        warnings: in_force.loaded.warnings.clone(),
        refused: in_force.refused.clone(),
    };
    json_reply(StatusCode::OK, &wire::to_value(&reply))
}

/// `GET /v1/describe?service=NAME&namespace=NS`: what applies to one
/// service and why ([`analyze::describe`]), over the store and the
/// workloads of the proxies connected now.
pub(super) fn describe(
    store: &Store,
    status: &StatusBoard,
    mesh_config: Option<&crate::meshconfig::Receiver>,
    query: &str,
) -> Reply {
    let mut service = None;
    let mut namespace = "default".to_string();
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "service" if !value.is_empty() => service = Some(value.to_string()),
            "namespace" if !value.is_empty() => namespace = value.to_string(),
            _ => {}
        }
    }
    let Some(service) = service else {
        return error(
            StatusCode::BAD_REQUEST,
            "describe needs ?service=NAME (and optionally &namespace=NS)",
        );
    };
    let resources = store.resources();
    let workloads = status.workloads();
    let cluster = store.cluster_discovery();
    // Under the MeshConfig's root namespace, as the compiler sees it.
    let root = api_root(mesh_config);
    let target = analyze::Target {
        name: &service,
        namespace: &namespace,
        root: &root,
    };
    match analyze::describe_in(&resources, &cluster, &workloads, &target) {
        Ok(described) => json_reply(StatusCode::OK, &wire::to_value(&described)),
        Err(message) => error(StatusCode::NOT_FOUND, message),
    }
}

/// The root namespace of the MeshConfig in force (Istio's without one).
fn api_root(mesh_config: Option<&crate::meshconfig::Receiver>) -> String {
    mesh_config.map_or_else(
        || weft_api::mesh::DEFAULT_ROOT_NAMESPACE.to_string(),
        |held| held.borrow().loaded.config.root_namespace().to_string(),
    )
}

/// `GET /v1/proxies/<id>/config`: the config weftd last pushed to a proxy,
/// in the shape of the proxy's own `/config_dump`. What the proxy serves
/// may differ (a NACKed push; see `/v1/proxies`), and only the proxy knows
/// which endpoints are ejected: `weft proxy-config --admin` asks it.
pub(super) fn pushed_config(status: &StatusBoard, id: &str) -> Reply {
    let Some((version, resources)) = status.last_sent(id) else {
        return error(
            StatusCode::NOT_FOUND,
            format!(
                "weftd has pushed no config to a proxy {id:?}; `weft proxy-status` lists the proxies"
            ),
        );
    };
    let config = weft_proto::resources::assemble(resources.values(), &version);
    match serde_json::to_value(&config) {
        Ok(config) => json_reply(
            StatusCode::OK,
            &wire::to_value(&PushedConfig {
                source: "weftd (last pushed)".into(),
                version,
                config,
            }),
        ),
        Err(err) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode the config: {err}"),
        ),
    }
}
