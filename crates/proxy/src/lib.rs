//! weft-proxy: Weft's data plane.
//!
//! Follow one connection from accept to upstream:
//! [`listeners`] accepts → [`connection`] picks the side ([`inbound`] or
//! [`outbound`]) and [`detect`]s its protocol → [`http`] (server → entry →
//! policy → route → rewrite → fault → retry/balance) or [`tcp`] →
//! [`upstream`] (connect, pool). [`config`] turns a config file
//! into the [`config::Snapshot`] every step reads; [`state`] holds it.

pub mod admin;
pub mod balance;
pub mod body;
pub mod config;
pub mod flags;
pub mod http;
pub mod identity;
pub mod inbound;
pub mod listener;
pub mod outbound;
pub mod own_port;
pub mod policy;
pub mod proxy;
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
