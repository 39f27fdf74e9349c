//! Inbound policy: what a workload lets in. [`jwt`] verifies request
//! tokens (RequestAuthentication), [`authz`] decides on requests and
//! connections (AuthorizationPolicy), [`ext_authz`] asks a CUSTOM
//! policy's external authorizer. All are compiled into each inbound
//! port's guard when the snapshot is built.

pub mod authz;
pub mod ext_authz;
pub mod jwt;
