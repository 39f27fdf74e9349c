//! Kubernetes object metadata, as much of it as Weft reads.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    #[serde(default)]
    pub name: String,
    /// Empty means the namespace the resource is applied to ("default").
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Everything else Kubernetes puts here (uid, generation, ...), kept as is.
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

impl ObjectMeta {
    /// `namespace/name`, with `default` for an unset namespace.
    pub fn key(&self) -> String {
        let namespace = if self.namespace.is_empty() {
            "default"
        } else {
            &self.namespace
        };
        format!("{namespace}/{}", self.name)
    }
}
