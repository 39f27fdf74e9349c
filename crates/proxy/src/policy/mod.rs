//! Inbound policy: what a workload lets in. [`jwt`] verifies request
//! tokens (RequestAuthentication), [`authz`] decides on requests and
//! connections (AuthorizationPolicy). Both are compiled into each inbound
//! port's guard when the snapshot is built.

pub mod authz;
pub mod jwt;
