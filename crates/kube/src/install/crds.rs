//! The CustomResourceDefinitions `weft install` applies, from
//! `manifests/crds/` (written with the Kubernetes source, not here).
//!
//! None are shipped in this build yet: `manifests/crds/` does not exist on
//! this branch. Until it does, `weft install` says so, and a cluster that
//! already has Istio's CRDs (or gets them from Istio's `base` chart) works
//! unchanged. When the files land, list each here with `include_str!`.

/// `(path, YAML)` of each CRD manifest.
pub const CRDS: &[(&str, &str)] = &[];
