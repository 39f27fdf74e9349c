//! The `mesh` key of the `istio` ConfigMap in the root namespace (Istio's
//! MeshConfig source on Kubernetes), watched: every change of the text is
//! sent as it is, `None` when the ConfigMap or its key is gone. Parsing and
//! validation are weftd's (`weft_control::meshconfig`).

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};
use tokio::sync::mpsc;

/// Istio's ConfigMap name and key.
pub const CONFIG_MAP: &str = "istio";
pub const KEY: &str = "mesh";

/// Watches `namespace/istio` until `changes` is closed. Sends the current
/// text first (once the watch started), then each change.
pub async fn watch(client: Client, namespace: String, changes: mpsc::Sender<Option<String>>) {
    let api = Api::<ConfigMap>::namespaced(client, &namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={CONFIG_MAP}"));
    let stream = watcher::watcher(api, config).default_backoff();
    let mut stream = std::pin::pin!(stream);
    let mut held: Option<Option<String>> = None;
    let mut listed: Option<String> = None;
    let mut failing = false;
    while let Some(event) = stream.next().await {
        let text = match event {
            Ok(Event::Apply(map)) => mesh_text(&map),
            Ok(Event::Delete(_)) => None,
            Ok(Event::Init) => {
                listed = None;
                continue;
            }
            Ok(Event::InitApply(map)) => {
                listed = mesh_text(&map);
                continue;
            }
            Ok(Event::InitDone) => listed.take(),
            Err(err) => {
                if !failing {
                    tracing::warn!(
                        "watching ConfigMap {namespace}/{CONFIG_MAP} failed, retrying with backoff: {err}"
                    );
                }
                failing = true;
                continue;
            }
        };
        failing = false;
        if held.as_ref() == Some(&text) {
            continue;
        }
        held = Some(text.clone());
        if changes.send(text).await.is_err() {
            return;
        }
    }
}

/// The text now (weftd reads it once before its CA starts: the trust
/// domain comes from it). `None`: no ConfigMap or no key.
pub async fn get(client: Client, namespace: &str) -> anyhow::Result<Option<String>> {
    let api = Api::<ConfigMap>::namespaced(client, namespace);
    let map = api.get_opt(CONFIG_MAP).await.map_err(|err| {
        anyhow::anyhow!(
            "reading ConfigMap {namespace}/{CONFIG_MAP} (MeshConfig): {err}; weftd needs RBAC to \
             get, list and watch ConfigMaps in {namespace}"
        )
    })?;
    Ok(map.as_ref().and_then(mesh_text))
}

fn mesh_text(map: &ConfigMap) -> Option<String> {
    map.data.as_ref()?.get(KEY).cloned()
}
