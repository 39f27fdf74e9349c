//! Test-only helpers for Weft's integration tests: real backends (HTTP/1,
//! HTTP/2, gRPC, WebSocket, TCP echo), small clients, a handle on a running
//! `weft-proxy` process, and network namespaces for interception tests.

pub mod backend;
pub mod client;
pub mod grpc;
pub mod netns;
pub mod proxy;

use std::net::{SocketAddr, TcpListener};

/// A loopback address with a port that was free a moment ago.
pub fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .unwrap_or_else(|err| panic!("no free loopback port: {err}"))
}

/// A loopback address nothing listens on (connections are refused).
pub fn dead_addr() -> SocketAddr {
    free_addr()
}
