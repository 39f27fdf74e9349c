//! What weftd knows of each proxy, for `weft proxy-status` and the API's
//! inspection calls: the board behind them.
//!
//! Per-proxy state (status, what was last sent) lives as long as the
//! proxy's registration and is dropped with it ([`StatusBoard::remove`]);
//! refused streams are kept as the last [`MAX_REFUSALS`], so nothing here
//! grows with the number of proxies that ever connected.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use serde::Serialize;
use weft_proto::discovery::v1::Resource;
use weft_proto::encoded::EncodedSet;

use crate::registry::Workload;

/// Refusals kept for `weft proxy-status`.
pub const MAX_REFUSALS: usize = 100;

/// A proxy's config as named, versioned resources.
pub type Resources = Arc<BTreeMap<String, Resource>>;

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

/// A stream weftd refused, and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Refused {
    /// RFC 3339, UTC.
    pub time: String,
    pub peer: String,
    /// The node id the proxy claimed (empty when it sent none).
    pub id: String,
    /// The gRPC code the proxy got.
    pub code: String,
    pub reason: String,
}

#[derive(Default)]
struct Proxy {
    status: ProxyStatus,
    /// The whole config the proxy should hold (shared, not a copy).
    sent: Option<Arc<EncodedSet>>,
}

#[derive(Default)]
pub struct StatusBoard {
    proxies: RwLock<BTreeMap<String, Proxy>>,
    refused: RwLock<VecDeque<Refused>>,
    /// The registered workloads the latest mesh build saw.
    workloads: RwLock<Arc<Vec<Workload>>>,
}

impl std::fmt::Debug for StatusBoard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatusBoard")
            .field("proxies", &self.list())
            .finish_non_exhaustive()
    }
}

impl StatusBoard {
    /// Creates the entry if needed, then lets `change` edit it.
    pub fn update(&self, id: &str, change: impl FnOnce(&mut ProxyStatus)) {
        let mut proxies = self.proxies.write().unwrap_or_else(|p| p.into_inner());
        let entry = proxies.entry(id.to_string()).or_insert_with(|| Proxy {
            status: ProxyStatus {
                id: id.to_string(),
                ..ProxyStatus::default()
            },
            sent: None,
        });
        change(&mut entry.status);
    }

    /// Records what weftd gave a proxy: the whole config it should hold
    /// (pushed, or already held).
    pub fn record_sent(&self, id: &str, config: Arc<EncodedSet>) {
        let mut proxies = self.proxies.write().unwrap_or_else(|p| p.into_inner());
        if let Some(proxy) = proxies.get_mut(id) {
            proxy.sent = Some(config);
        }
    }

    /// The version and resources last given to proxy `id`, decoded (the
    /// board keeps them encoded, as they were pushed).
    pub fn last_sent(&self, id: &str) -> Option<(String, Resources)> {
        let sent = {
            let proxies = self.proxies.read().unwrap_or_else(|p| p.into_inner());
            proxies.get(id).and_then(|proxy| proxy.sent.clone())?
        };
        match sent.decode() {
            Ok(resources) => Some((sent.version.clone(), Arc::new(resources))),
            Err(err) => {
                // weftd encoded these bytes itself: only a bug gets here.
                tracing::error!(node = %id, "the config last pushed does not decode: {err}");
                None
            }
        }
    }

    /// Forgets proxy `id`: its registration is gone.
    pub fn remove(&self, id: &str) {
        let mut proxies = self.proxies.write().unwrap_or_else(|p| p.into_inner());
        proxies.remove(id);
    }

    /// Every registered proxy, by id.
    pub fn list(&self) -> Vec<ProxyStatus> {
        let proxies = self.proxies.read().unwrap_or_else(|p| p.into_inner());
        proxies.values().map(|proxy| proxy.status.clone()).collect()
    }

    /// Remembers a refused stream, dropping the oldest beyond
    /// [`MAX_REFUSALS`].
    pub fn refuse(&self, peer: Option<SocketAddr>, id: &str, code: tonic::Code, reason: &str) {
        let refused = Refused {
            time: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            peer: peer.map(|p| p.to_string()).unwrap_or_default(),
            id: id.to_string(),
            code: format!("{code:?}"),
            reason: reason.to_string(),
        };
        let mut all = self.refused.write().unwrap_or_else(|p| p.into_inner());
        if all.len() >= MAX_REFUSALS {
            all.pop_front();
        }
        all.push_back(refused);
    }

    /// The refusals kept, oldest first.
    pub fn refusals(&self) -> Vec<Refused> {
        let all = self.refused.read().unwrap_or_else(|p| p.into_inner());
        all.iter().cloned().collect()
    }

    /// Set by each mesh build: the registered workloads it included.
    pub fn set_workloads(&self, workloads: Vec<Workload>) {
        *self.workloads.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(workloads);
    }

    /// The registered workloads the latest build saw (for `describe` and
    /// `analyze`, which serve from the store and cannot see the streams).
    pub fn workloads(&self) -> Arc<Vec<Workload>> {
        self.workloads
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_bounded_and_proxies_forgotten() {
        let board = StatusBoard::default();
        for n in 0..(MAX_REFUSALS + 5) {
            board.refuse(None, &format!("p{n}"), tonic::Code::PermissionDenied, "no");
        }
        let kept = board.refusals();
        assert_eq!(kept.len(), MAX_REFUSALS);
        assert_eq!(kept[0].id, "p5", "the oldest went first");
        assert_eq!(kept[0].code, "PermissionDenied");

        board.update("a", |status| status.connected = true);
        board.record_sent("a", Arc::default());
        assert!(board.last_sent("a").is_some());
        board.remove("a");
        assert!(board.list().is_empty());
        assert!(board.last_sent("a").is_none());
    }
}
