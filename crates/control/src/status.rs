//! What each connected proxy holds: the board behind `weft proxy-status`.

use std::collections::BTreeMap;
use std::sync::RwLock;

use serde::Serialize;

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProxyStatus {
    pub id: String,
    pub workload: String,
    pub namespace: String,
    pub connected: bool,
    /// The version weftd last pushed.
    pub sent_version: String,
    /// The version the proxy last ACKed (serving).
    pub acked_version: String,
    /// Why the proxy refused the last push, while it does (NACK).
    pub error: Option<String>,
}

impl ProxyStatus {
    /// In sync: connected, and serving what was last pushed.
    pub fn synced(&self) -> bool {
        self.connected && self.error.is_none() && self.sent_version == self.acked_version
    }
}

#[derive(Debug, Default)]
pub struct StatusBoard {
    proxies: RwLock<BTreeMap<String, ProxyStatus>>,
}

impl StatusBoard {
    /// Creates the entry if needed, then lets `change` edit it.
    pub fn update(&self, id: &str, change: impl FnOnce(&mut ProxyStatus)) {
        let mut proxies = self.proxies.write().unwrap_or_else(|p| p.into_inner());
        let entry = proxies
            .entry(id.to_string())
            .or_insert_with(|| ProxyStatus {
                id: id.to_string(),
                ..ProxyStatus::default()
            });
        change(entry);
    }

    /// Every proxy seen, by id.
    pub fn list(&self) -> Vec<ProxyStatus> {
        let proxies = self.proxies.read().unwrap_or_else(|p| p.into_inner());
        proxies.values().cloned().collect()
    }
}
