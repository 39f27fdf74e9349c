//! The CustomResourceDefinitions `weft install` applies: the files in
//! `manifests/crds/` (Weft's own, for the eleven Istio kinds it serves and
//! its own RateLimit,
//! written with the Kubernetes source), compiled in so the `weft` binary
//! carries them. A cluster that already has Istio's CRDs works unchanged.

/// `(path, YAML)` of each CRD manifest.
pub const CRDS: &[(&str, &str)] = &[
    (
        "manifests/crds/networking.yaml",
        include_str!("../../../../manifests/crds/networking.yaml"),
    ),
    (
        "manifests/crds/security.yaml",
        include_str!("../../../../manifests/crds/security.yaml"),
    ),
    (
        "manifests/crds/telemetry.yaml",
        include_str!("../../../../manifests/crds/telemetry.yaml"),
    ),
    (
        "manifests/crds/weft.yaml",
        include_str!("../../../../manifests/crds/weft.yaml"),
    ),
];
