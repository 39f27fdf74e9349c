//! weft-proxy: Weft's data plane.
//!
//! Follow one connection from accept to upstream (six files:
//! `docs/architecture.md` names them): [`listener`] accepts and hands the
//! connection to [`proxy`], which picks the side by the listener's kind:
//! [`outbound`] or [`inbound`] find the service or workload port and
//! [`listener::classify`] the first bytes; HTTP goes to [`http`] (the one
//! server, then [`http::pipeline`]'s phases), opaque bytes to [`tcp`]; both
//! reach endpoints through [`balance`] (which endpoint, within which
//! limits) and [`upstream`] (connect, pool) secured by [`tls`].
//!
//! Modules build on each other one way, bottom up (`tests/module_cycles.rs`
//! fails on a cycle):
//! leaves ([`body`], [`flags`], [`reply`], [`workload`], [`identity`]) →
//! [`policy`] → [`config`] (the compiled snapshot, plain data) →
//! [`balance`] (the clusters' runtime) → [`tls`], [`telemetry`],
//! [`upstream`], [`listener`] → [`state`] (data only) → [`dns`], [`http`], [`tcp`] → [`inbound`], [`outbound`] → [`gateway`] → [`proxy`]
//! (state + listeners, applying configs) → [`xds`], [`admin`], `main.rs`.

pub mod admin;
pub mod balance;
pub mod body;
pub mod config;
pub mod dns;
pub mod flags;
pub mod gateway;
pub mod http;
pub mod identity;
pub mod inbound;
pub mod listener;
pub mod outbound;
pub mod own_port;
pub mod policy;
pub mod proxy;
pub mod ratelimit;
pub mod reply;
pub mod state;
pub mod tcp;
pub mod telemetry;
pub mod tls;
pub mod upstream;
pub mod workload;
pub mod xds;

// weft-control's tests sign tokens with the proxy's `jsonwebtoken`.
pub use policy::jwt;
