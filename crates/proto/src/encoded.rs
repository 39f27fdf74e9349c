//! Resources encoded once, pushed to many proxies without copying.
//!
//! weftd encodes each distinct resource once as a `Push.resources` entry
//! (field 3: tag, length, the `Resource` message) and hands the same bytes
//! to every stream that sends it; a push on the wire is then a short head
//! (nonce, version), those shared entries, and a short tail (removed names,
//! trust bundle). Protobuf lets fields come in any order and repeated
//! fields accumulate, so what a proxy decodes is exactly the [`Push`] it
//! would get from prost — `weft-proxy` is unchanged. The bytes of a
//! resource equal prost's own encoding of the same [`Resource`] (tested
//! below), and versions are [`crate::resources::split`]'s.

use std::collections::BTreeMap;
use std::sync::Arc;

use prost::Message;
use prost::bytes::{BufMut, Bytes, BytesMut};
use prost::encoding::{
    WireType, decode_varint, encode_key, encode_varint, encoded_len_varint, string,
};

use crate::discovery::v1::{Resource, resource::Body};
use crate::resources::{set_version, version_of};

/// `Push` field numbers (discovery.proto).
const PUSH_NONCE: u32 = 1;
const PUSH_VERSION: u32 = 2;
const PUSH_RESOURCES: u32 = 3;
const PUSH_REMOVED: u32 = 4;
const PUSH_TRUST_BUNDLE: u32 = 5;
/// gRPC's message prefix: a compression flag and a 4-byte length.
pub const GRPC_PREFIX: usize = 5;

/// One resource, versioned and encoded as a `Push.resources` entry.
#[derive(Debug, PartialEq, Eq)]
pub struct Encoded {
    pub name: String,
    pub version: String,
    /// Tag 3, the length, then the `Resource` message.
    pub field: Bytes,
}

impl Encoded {
    /// Versions and encodes `body` under `name`.
    pub fn new(name: String, body: &Body) -> Self {
        let body = encode_body(body);
        let version = version_of(&body);
        Self::from_encoded_body(name, version, &body)
    }

    /// From a body already encoded (`Body::encode`) and versioned
    /// ([`version_of`]): weftd hashes first and encodes only what it has
    /// not seen.
    pub fn from_encoded_body(name: String, version: String, body: &[u8]) -> Self {
        let message_len =
            string::encoded_len(1, &name) + string::encoded_len(2, &version) + body.len();
        let mut field =
            BytesMut::with_capacity(1 + encoded_len_varint(message_len as u64) + message_len);
        encode_key(PUSH_RESOURCES, WireType::LengthDelimited, &mut field);
        encode_varint(message_len as u64, &mut field);
        string::encode(1, &name, &mut field);
        string::encode(2, &version, &mut field);
        field.put_slice(body);
        Self {
            name,
            version,
            field: field.freeze(),
        }
    }

    /// The resource back as a message (for inspection, not for pushing).
    pub fn decode(&self) -> Result<Resource, prost::DecodeError> {
        // Past the one-byte tag and the length: the message itself.
        let mut message = self.field.slice(1..);
        decode_varint(&mut message)?;
        Resource::decode(message)
    }
}

/// `Body::encode`'s output: the oneof field, tag included.
pub fn encode_body(body: &Body) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(body.encoded_len());
    body.encode(&mut bytes);
    bytes
}

/// A proxy's whole config as encoded resources, and its set version (the
/// [`set_version`] of the names and versions, as the proxy computes it).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct EncodedSet {
    pub version: String,
    pub resources: BTreeMap<String, Arc<Encoded>>,
}

impl EncodedSet {
    pub fn new(resources: BTreeMap<String, Arc<Encoded>>) -> Self {
        let version = set_version(resources.iter().map(|(name, r)| (name, &r.version)));
        Self { version, resources }
    }

    /// The resources as messages, by name (for inspection).
    pub fn decode(&self) -> Result<BTreeMap<String, Resource>, prost::DecodeError> {
        self.resources
            .iter()
            .map(|(name, encoded)| Ok((name.clone(), encoded.decode()?)))
            .collect()
    }
}

/// The start of a push on the wire: gRPC's prefix for a message of
/// `len(head) + rest` bytes, then the nonce and version fields. `rest` is
/// the length of everything sent after the head.
pub fn push_head(nonce: &str, version: &str, rest: usize) -> Bytes {
    let fields = string::encoded_len(PUSH_NONCE, &nonce.to_string())
        + string::encoded_len(PUSH_VERSION, &version.to_string());
    let mut head = BytesMut::with_capacity(GRPC_PREFIX + fields);
    head.put_u8(0); // not compressed
    // A push over 4 GiB cannot be framed; weftd's configs are far smaller,
    // and the length saturates so the proxy refuses it rather than misreads.
    head.put_u32(u32::try_from(fields + rest).unwrap_or(u32::MAX));
    string::encode(PUSH_NONCE, &nonce.to_string(), &mut head);
    string::encode(PUSH_VERSION, &version.to_string(), &mut head);
    head.freeze()
}

/// `Push.removed` entries for `names`.
pub fn removed_fields<'a>(names: impl IntoIterator<Item = &'a String>) -> Bytes {
    let mut out = BytesMut::new();
    for name in names {
        string::encode(PUSH_REMOVED, name, &mut out);
    }
    out.freeze()
}

/// The `Push.trust_bundle_pem` field (nothing for an empty bundle).
pub fn trust_bundle_field(pem: &str) -> Bytes {
    let mut out = BytesMut::new();
    if !pem.is_empty() {
        string::encode(PUSH_TRUST_BUNDLE, &pem.to_string(), &mut out);
    }
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::v1::Push;
    use crate::proxy::v1::{Cluster, Listener, ProxyConfig};
    use crate::resources::{pieces, split};

    fn sample() -> ProxyConfig {
        ProxyConfig {
            listeners: vec![Listener {
                name: "l".into(),
                address: "127.0.0.1:1".into(),
                kind: 3,
                ..Listener::default()
            }],
            clusters: vec![Cluster {
                name: "c".into(),
                service: "s".into(),
                ..Cluster::default()
            }],
            ..ProxyConfig::default()
        }
    }

    /// A push assembled from shared pieces decodes, with prost, to the
    /// same `Push` prost would have encoded: the proxy cannot tell.
    #[test]
    fn assembled_push_decodes_as_the_prost_push() {
        let split = split(sample());
        let encoded: BTreeMap<String, Arc<Encoded>> = pieces(sample())
            .into_iter()
            .map(|(name, body)| (name.clone(), Arc::new(Encoded::new(name, &body))))
            .collect();
        for (name, one) in &encoded {
            assert_eq!(
                one.version, split[name].version,
                "{name}: same version as split"
            );
            assert_eq!(one.decode().ok().as_ref(), Some(&split[name]));
            // Byte for byte what prost writes for the field.
            let mut expected = Vec::new();
            prost::encoding::message::encode(3, &split[name], &mut expected);
            assert_eq!(one.field.as_ref(), expected.as_slice(), "{name}");
        }
        let removed = vec!["cluster/gone".to_string()];
        let mut rest: Vec<Bytes> = encoded.values().map(|r| r.field.clone()).collect();
        rest.push(removed_fields(&removed));
        rest.push(trust_bundle_field("PEM"));
        let rest_len = rest.iter().map(Bytes::len).sum();
        let mut wire = push_head("7", "v9", rest_len).to_vec();
        for chunk in &rest {
            wire.extend_from_slice(chunk);
        }
        let length = u32::from_be_bytes([wire[1], wire[2], wire[3], wire[4]]) as usize;
        assert_eq!((wire[0], length), (0, wire.len() - GRPC_PREFIX));
        let decoded = Push::decode(&wire[GRPC_PREFIX..]).expect("decodes");
        let expected = Push {
            nonce: "7".into(),
            version: "v9".into(),
            resources: split.into_values().collect(),
            removed,
            trust_bundle_pem: "PEM".into(),
        };
        assert_eq!(decoded, expected);
        assert_eq!(
            EncodedSet::new(encoded).version,
            set_version(expected.resources.iter().map(|r| (&r.name, &r.version)))
        );
    }
}
