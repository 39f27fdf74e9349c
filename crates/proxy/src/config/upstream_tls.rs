//! How a connection to each upstream endpoint is secured, decided once per
//! config snapshot (plain data; `tls::upstream` carries it out).
//!
//! The decision is per endpoint address, from the cluster's `tls`
//! (DestinationRule) and the endpoint's `identity` (auto-mTLS). Clusters
//! may reach the same address with different settings (external hosts
//! behind one address, as DNS answers for virtual hosting give): each
//! keeps its own decision ([`Decisions::cluster`]); the first cluster in
//! name order decides for the address alone (passthrough traffic).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use weft_proto::proxy::v1::{self as pb, client_tls::Mode};

/// How connections to one endpoint are secured.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum UpstreamTls {
    #[default]
    Plain,
    /// Mesh mTLS; the server must present `identity` (empty: any mesh id).
    /// `sni`: the DestinationRule's `sni` with ISTIO_MUTUAL, sent so a
    /// gateway can pick its server by it (Istio's egress pattern); None:
    /// no SNI, as between sidecars.
    Mesh {
        identity: Arc<str>,
        sni: Option<Arc<str>>,
    },
    /// TLS origination (DestinationRule SIMPLE or MUTUAL).
    Originate(Arc<Origination>),
}

#[derive(Debug, PartialEq)]
pub struct Origination {
    pub settings: pb::ClientTls,
    /// Server name to send and verify: `sni`, else the service host.
    pub server_name: String,
    /// The settings and server name as bytes, made once per snapshot: the
    /// key of the proxy's cache of rustls configs, so a new upstream
    /// connection looks its config up without formatting the (possibly
    /// pushed PEM) settings. Exact, not a digest: two settings share a
    /// config only when they are equal.
    pub cache_key: Arc<[u8]>,
}

impl Origination {
    fn new(settings: &pb::ClientTls, server_name: String) -> Self {
        // ClientTls has no map fields, so prost's encoding is deterministic.
        let mut key = prost::Message::encode_to_vec(settings);
        key.push(0);
        key.extend_from_slice(server_name.as_bytes());
        Self {
            settings: settings.clone(),
            server_name,
            cache_key: key.into(),
        }
    }
}

/// Every endpoint's decision under one config.
#[derive(Default)]
pub(super) struct Decisions {
    /// By address: the first cluster's (in name order).
    by_addr: HashMap<SocketAddr, UpstreamTls>,
    /// The decisions of clusters that differ from `by_addr`'s for the
    /// same address.
    by_cluster: HashMap<String, HashMap<SocketAddr, UpstreamTls>>,
}

impl Decisions {
    /// How a connection of `cluster` to `addr` is secured.
    pub(super) fn cluster(&self, cluster: &str, addr: SocketAddr) -> UpstreamTls {
        self.by_cluster
            .get(cluster)
            .and_then(|own| own.get(&addr))
            .or_else(|| self.by_addr.get(&addr))
            .cloned()
            .unwrap_or_default()
    }
}

/// Every endpoint's decision under `config`.
pub(super) fn decisions(config: &pb::ProxyConfig) -> Decisions {
    let mut table = HashMap::new();
    let mut by_cluster: HashMap<String, HashMap<SocketAddr, UpstreamTls>> = HashMap::new();
    let mut clusters: Vec<&pb::Cluster> = config.clusters.iter().collect();
    clusters.sort_by(|a, b| a.name.cmp(&b.name));
    for cluster in clusters {
        let mode = cluster.tls.as_ref().map_or(Mode::Auto, |t| t.mode());
        let origination = match (&cluster.tls, mode) {
            (Some(settings), Mode::Simple | Mode::Mutual) => {
                let server_name = if settings.sni.is_empty() {
                    cluster.service.clone()
                } else {
                    settings.sni.clone()
                };
                Some(Arc::new(Origination::new(settings, server_name)))
            }
            _ => None,
        };
        let mesh_sni: Option<Arc<str>> = cluster
            .tls
            .as_ref()
            .filter(|t| !t.sni.is_empty())
            .map(|t| Arc::from(t.sni.as_str()));
        for endpoint in &cluster.endpoints {
            let Ok(addr) = endpoint.address.parse::<SocketAddr>() else {
                continue;
            };
            let decided = match (mode, &origination) {
                (_, Some(origination)) => UpstreamTls::Originate(origination.clone()),
                (Mode::IstioMutual, _) => UpstreamTls::Mesh {
                    identity: Arc::from(endpoint.identity.as_str()),
                    sni: mesh_sni.clone(),
                },
                (Mode::Auto, _) if !endpoint.identity.is_empty() => UpstreamTls::Mesh {
                    identity: Arc::from(endpoint.identity.as_str()),
                    sni: None,
                },
                _ => UpstreamTls::Plain,
            };
            match table.entry(addr) {
                std::collections::hash_map::Entry::Vacant(vacant) => {
                    vacant.insert(decided);
                }
                std::collections::hash_map::Entry::Occupied(first) if *first.get() != decided => {
                    by_cluster
                        .entry(cluster.name.clone())
                        .or_default()
                        .insert(addr, decided);
                }
                std::collections::hash_map::Entry::Occupied(_) => {}
            }
        }
    }
    Decisions {
        by_addr: table,
        by_cluster,
    }
}
