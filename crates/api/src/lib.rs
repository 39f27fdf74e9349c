//! Istio's configuration resources, as users write them: types, decoding of
//! multi-document YAML and JSON, and validation whose errors name the file,
//! the document, the resource and the field path.
//!
//! ```text
//! reviews.yaml: VirtualService default/reviews: spec.http[0].route[1].weight: must be 0..100
//! ```
//!
//! Kinds Weft does not use (EnvoyFilter, Telemetry, ordinary Kubernetes
//! objects, ...) are skipped with a notice, never an error.

pub mod analyze;
pub mod common;
pub mod decode;
pub mod field;
pub mod mesh;
pub mod meta;
pub mod networking;
pub mod ratelimit;
pub mod wire;

/// The apply types' first home; other branches still name it.
pub use wire as reply;
pub mod resource;
pub mod security;
pub mod telemetry;
pub mod unimplemented;

pub use decode::{
    Decoded, Named, Problem, config_files, decode_file, decode_str, identify_str, parse_documents,
};
pub use field::FieldErrors;
pub use meta::ObjectMeta;
pub use resource::{Object, Resource, Spec};
pub use unimplemented::FieldWarning;
