//! Workload metadata and its exchange between proxies (`x-weft-peer`).
//!
//! Istio's metadata-exchange filter lets each side of a call learn who the
//! other is without the application's help; Weft does the same with one
//! header:
//!
//! - the source proxy removes any `x-weft-peer` the application sent (so it
//!   cannot be spoofed) and adds its own workload's metadata;
//! - the destination proxy reads and removes it (the application never sees
//!   it), and answers with its own metadata in the same header on the
//!   response, which the source proxy reads and removes.
//!
//! `x-weft-service` goes along with requests, naming the service the source
//! proxy routed to, so both reporters agree on `destination_service`.
//!
//! The value is a compact `key=value;key=value` list, values percent-escaped
//! where they hold `;`, `=`, `%` or non-printable bytes. Decoded values are
//! cached by the header's bytes: a busy proxy sees the same few peers over
//! and over, so the hot path allocates nothing for them after the first.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use http::HeaderValue;

use crate::workload::Workload;

/// The header carrying workload metadata both ways.
pub const PEER_HEADER: http::HeaderName = http::HeaderName::from_static("x-weft-peer");
/// The service the source proxy routed a request to, for the destination
/// proxy's `destination_service` (stripped and set like [`PEER_HEADER`]).
pub const SERVICE_HEADER: http::HeaderName = http::HeaderName::from_static("x-weft-service");
/// Removes peer metadata from a request about to leave for an endpoint
/// that is not a Weft proxy (an external host, a passthrough, an app).
pub fn strip(headers: &mut http::HeaderMap) {
    headers.remove(PEER_HEADER);
    headers.remove(SERVICE_HEADER);
}

/// Decoded peers kept at most; the cache starts afresh when full.
const CACHE_LIMIT: usize = 1024;

/// Decoded `x-weft-peer` values by their raw bytes.
#[derive(Default)]
pub struct PeerCache {
    peers: RwLock<HashMap<Bytes, Arc<Workload>>>,
}

impl PeerCache {
    /// The workload a header value describes; `None` when malformed.
    pub fn get(&self, value: &HeaderValue) -> Option<Arc<Workload>> {
        let key = value.as_bytes();
        if let Some(found) = self
            .peers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
        {
            return Some(found.clone());
        }
        let decoded = Arc::new(Workload::decode(value.to_str().ok()?)?);
        let mut peers = self.peers.write().unwrap_or_else(|p| p.into_inner());
        if peers.len() >= CACHE_LIMIT {
            peers.clear();
        }
        peers.insert(Bytes::copy_from_slice(key), decoded.clone());
        Some(decoded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_round_trips_through_the_header() {
        let labels = vec![
            ("app".to_string(), "reviews".to_string()),
            ("version".to_string(), "v2".to_string()),
        ];
        let local = Workload::local("reviews-v2", "bookinfo", &labels, "a;b=%c d", "Kubernetes");
        assert_eq!(local.canonical_service.as_deref(), Some("reviews"));
        assert_eq!(local.canonical_revision.as_deref(), Some("v2"));
        let encoded = local.encode();
        assert!(!encoded.contains(' '), "{encoded}");
        assert!(HeaderValue::from_str(&encoded).is_ok());
        assert_eq!(Workload::decode(&encoded), Some(local));
        assert_eq!(Workload::decode("n=x;bad"), None);
        assert_eq!(Workload::decode("n=%G1"), None);
    }

    #[test]
    fn the_cache_answers_the_same_workload() {
        let cache = PeerCache::default();
        let value = HeaderValue::from_static("n=a;ns=b");
        let first = cache.get(&value).expect("decoded");
        let second = cache.get(&value).expect("cached");
        assert!(Arc::ptr_eq(&first, &second));
        assert_eq!(first.namespace.as_deref(), Some("b"));
    }
}
