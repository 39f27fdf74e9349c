//! Pushes built once and shared: resources encoded once for every proxy
//! and build ([`Interner`]), each distinct change from one config to
//! another computed once ([`Delta`]), and a push on the wire made of those
//! shared bytes plus a few bytes of its own ([`Frame`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, Weak};

use bytes::Bytes;
use weft_proto::discovery::v1::resource::Body;
use weft_proto::encoded::{
    Encoded, EncodedSet, encode_body, push_head, removed_fields, trust_bundle_field,
};
use weft_proto::proxy::v1::ProxyConfig;
use weft_proto::resources::{pieces, set_version, version_of};

/// A proxy's whole config, encoded; shared by every proxy of its shape.
pub type Config = Arc<EncodedSet>;

/// Every resource any live config holds, once: configs of different
/// shapes and builds hold the same service or cluster as one `Arc`. Kept by
/// the build loop for weftd's life; entries no config holds any more are
/// dropped by [`Interner::prune`].
#[derive(Default)]
pub struct Interner {
    known: Mutex<HashMap<(String, String), Weak<Encoded>>>,
}

impl Interner {
    /// `config` as shared encoded resources.
    pub fn encode(&self, config: ProxyConfig) -> Config {
        Arc::new(EncodedSet::new(
            self.intern(pieces(config), BTreeMap::new()),
        ))
    }

    /// `base` with the resources `replaced` (name, body) put in: a proxy
    /// shape's config patched for a change that touched only these.
    pub fn replace(&self, base: &Config, replaced: Vec<(String, Body)>) -> Config {
        Arc::new(EncodedSet::new(
            self.intern(replaced, base.resources.clone()),
        ))
    }

    /// `bodies` encoded and interned, added to `out`.
    fn intern(
        &self,
        bodies: Vec<(String, Body)>,
        mut out: BTreeMap<String, Arc<Encoded>>,
    ) -> BTreeMap<String, Arc<Encoded>> {
        // Encoded (and hashed) outside the lock; only the lookups inside.
        let bodies: Vec<(String, String, Vec<u8>)> = bodies
            .into_iter()
            .map(|(name, body)| {
                let bytes = encode_body(&body);
                (name, version_of(&bytes), bytes)
            })
            .collect();
        let mut known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        for (name, version, bytes) in bodies {
            let key = (name, version);
            let shared = match known.get(&key).and_then(Weak::upgrade) {
                Some(shared) => shared,
                None => {
                    let fresh = Arc::new(Encoded::from_encoded_body(
                        key.0.clone(),
                        key.1.clone(),
                        &bytes,
                    ));
                    known.insert(key.clone(), Arc::downgrade(&fresh));
                    fresh
                }
            };
            out.insert(key.0, shared);
        }
        out
    }

    /// Forgets resources no config holds any more (after each build).
    pub fn prune(&self) {
        let mut known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        known.retain(|_, weak| weak.strong_count() > 0);
    }

    /// Distinct resources held (for tests and logs).
    pub fn len(&self) -> usize {
        self.known.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What a proxy holds: a config it ACKed, or (until its first ACK on
/// this stream) the versions its Hello reported.
#[derive(Debug, Clone)]
pub enum Held {
    Acked(Config),
    Reported {
        version: String,
        versions: Arc<BTreeMap<String, String>>,
    },
}

impl Held {
    pub fn reported(versions: BTreeMap<String, String>) -> Self {
        Self::Reported {
            version: set_version(&versions),
            versions: Arc::new(versions),
        }
    }

    /// The set version: two proxies with the same one hold the same.
    pub fn version(&self) -> &str {
        match self {
            Self::Acked(config) => &config.version,
            Self::Reported { version, .. } => version,
        }
    }

    fn holds(&self, name: &str, version: &str) -> bool {
        match self {
            Self::Acked(config) => config
                .resources
                .get(name)
                .is_some_and(|held| held.version == version),
            Self::Reported { versions, .. } => {
                versions.get(name).is_some_and(|held| held == version)
            }
        }
    }

    fn names(&self) -> Box<dyn Iterator<Item = &String> + '_> {
        match self {
            Self::Acked(config) => Box::new(config.resources.keys()),
            Self::Reported { versions, .. } => Box::new(versions.keys()),
        }
    }
}

/// From a held config to `to`: the resources to send and the names to
/// drop. The same for every proxy holding the same set, so computed once.
#[derive(Debug)]
pub struct Delta {
    pub to: Config,
    pub changed: Vec<Arc<Encoded>>,
    /// `Push.removed` entries, encoded.
    pub removed: Bytes,
    /// Bytes of `changed` and `removed`: what follows a push's head.
    len: usize,
}

impl Delta {
    pub fn between(held: &Held, to: &Config) -> Self {
        let changed = to
            .resources
            .values()
            .filter(|resource| !held.holds(&resource.name, &resource.version))
            .cloned()
            .collect::<Vec<_>>();
        let removed = removed_fields(
            held.names()
                .filter(|name| !to.resources.contains_key(*name)),
        );
        let len = changed.iter().map(|r| r.field.len()).sum::<usize>() + removed.len();
        Self {
            to: to.clone(),
            changed,
            removed,
            len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.changed.is_empty() && self.removed.is_empty()
    }

    /// Bytes after the push's head.
    pub fn len(&self) -> usize {
        self.len
    }
}

/// One push on the wire: gRPC's prefix, nonce and version (this stream's
/// own bytes), the shared delta, and the trust bundle when sent.
pub struct Frame {
    head: Bytes,
    delta: Arc<Delta>,
    tail: Bytes,
}

impl Frame {
    pub fn new(nonce: &str, delta: Arc<Delta>, trust_bundle_pem: &str) -> Self {
        let tail = trust_bundle_field(trust_bundle_pem);
        let head = push_head(nonce, &delta.to.version, delta.len() + tail.len());
        Self { head, delta, tail }
    }

    /// The `index`th piece of the message, `None` past the end.
    pub fn chunk(&self, index: usize) -> Option<Bytes> {
        let changed = self.delta.changed.len();
        match index {
            0 => Some(self.head.clone()),
            i if i <= changed => Some(self.delta.changed[i - 1].field.clone()),
            i if i == changed + 1 => Some(self.delta.removed.clone()),
            i if i == changed + 2 => Some(self.tail.clone()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;
    use weft_proto::discovery::v1::Push;
    use weft_proto::proxy::v1::Cluster;
    use weft_proto::resources::split;

    fn config(clusters: &[(&str, &str)]) -> ProxyConfig {
        ProxyConfig {
            clusters: clusters
                .iter()
                .map(|(name, service)| Cluster {
                    name: name.to_string(),
                    service: service.to_string(),
                    ..Cluster::default()
                })
                .collect(),
            ..ProxyConfig::default()
        }
    }

    fn wire(frame: &Frame) -> Push {
        let mut bytes = Vec::new();
        let mut index = 0;
        while let Some(chunk) = frame.chunk(index) {
            bytes.extend_from_slice(&chunk);
            index += 1;
        }
        Push::decode(&bytes[5..]).expect("a push")
    }

    #[test]
    fn configs_share_resources_and_deltas_send_only_what_changed() {
        let interner = Interner::default();
        let before = interner.encode(config(&[("a", "x"), ("b", "y")]));
        let same = interner.encode(config(&[("a", "x"), ("b", "y")]));
        assert!(Arc::ptr_eq(
            &before.resources["cluster/a"],
            &same.resources["cluster/a"]
        ));
        let after = interner.encode(config(&[("a", "x"), ("c", "z")]));
        assert!(Arc::ptr_eq(
            &before.resources["cluster/a"],
            &after.resources["cluster/a"]
        ));

        let delta = Arc::new(Delta::between(&Held::Acked(before.clone()), &after));
        let push = wire(&Frame::new("3", delta, ""));
        assert_eq!(push.nonce, "3");
        assert_eq!(push.version, after.version);
        let sent: Vec<_> = push.resources.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            sent,
            ["cluster/c"],
            "settings and cluster/a are held already"
        );
        assert_eq!(push.removed, ["cluster/b"]);
        assert_eq!(push.resources[0], split(config(&[("c", "z")]))["cluster/c"]);

        // A proxy that reported what it holds gets the same delta.
        let reported = Held::reported(
            before
                .resources
                .iter()
                .map(|(name, r)| (name.clone(), r.version.clone()))
                .collect(),
        );
        assert_eq!(reported.version(), before.version);
        let first = wire(&Frame::new(
            "1",
            Arc::new(Delta::between(&reported, &after)),
            "PEM",
        ));
        assert_eq!(
            (first.resources, first.removed),
            (push.resources, push.removed)
        );
        assert_eq!(first.trust_bundle_pem, "PEM");

        drop((before, same, after));
        interner.prune();
        assert!(interner.is_empty(), "nothing held, nothing kept");
    }
}
