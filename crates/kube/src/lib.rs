//! Kubernetes mode: a cluster's objects as one more source of Weft's registry and
//! config, the admission webhooks weftd serves (validation and sidecar injection),
//! and the manifests `weft install` applies.
//!
//! This crate knows Kubernetes; it does not know weftd's internals. It turns
//! cluster objects into plain data the control plane consumes, so weftd depends on
//! it and never the other way round.

pub mod api_token;
pub mod convert;
pub mod identity;
pub mod inject;
pub mod install;
pub mod leader;
pub mod mesh_config;
pub mod source;
pub mod webhook;

// The client crates, for weftd and the tests: one version everywhere.
pub use k8s_openapi;
pub use kube;
