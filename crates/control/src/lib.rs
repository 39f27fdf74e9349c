//! weftd, Weft's control plane (Istio's istiod).
//!
//! One direction of flow: [`store`] (validated Istio resources) and
//! [`registry`] (workloads and services) feed the [`compiler`], which turns
//! the mesh into each proxy's config; [`push`] streams it to the proxies
//! and records their ACK/NACK in [`status`]; [`api`] serves `weft apply`,
//! `get`, `delete` and `proxy-status`; [`analyze`] finds likely mistakes
//! in Istio resources (`weft analyze`); [`webhook`] serves Kubernetes
//! admission (validation and sidecar injection) on `--webhook`.

pub mod analyze;
pub mod api;
pub mod ca;
pub mod compiler;
pub mod durable;
pub mod meshconfig;
pub mod push;
pub mod registry;
pub mod status;
pub mod store;
pub mod webhook;
