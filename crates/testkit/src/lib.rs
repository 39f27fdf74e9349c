//! Test-only helpers for Weft's integration tests: real backends (HTTP/1,
//! HTTP/2, gRPC, WebSocket, TCP echo), small clients, a handle on a running
//! `weft-proxy` process, and network namespaces for interception tests.

pub mod backend;
pub mod cli;
pub mod client;
pub mod corpus;
pub mod fixtures;
pub mod grpc;
pub mod kube;
pub mod netns;
pub mod otlp;
pub mod otlp_logs;
pub mod prometheus;
pub mod proxy;
pub mod weftd;
pub mod zipkin;

use std::hash::{BuildHasher, RandomState};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};

/// A loopback address with a port that was free a moment ago.
///
/// Each call picks a random address in 127.0.0.0/8 as well as a free port:
/// tests in parallel (threads or processes) cannot be handed the same
/// address even when the kernel reuses a port number.
pub fn free_addr() -> SocketAddr {
    let random = RandomState::new().hash_one(std::process::id());
    let [a, b, c, ..] = random.to_le_bytes();
    let ip = Ipv4Addr::new(127, a.max(1), b, c.clamp(1, 254));
    TcpListener::bind((ip, 0))
        .and_then(|listener| listener.local_addr())
        .unwrap_or_else(|err| panic!("no free port on {ip}: {err}"))
}

/// A port free on every address, for a listener on `0.0.0.0` (a gateway's
/// server port).
///
/// `free_addr` ports are only free on one loopback address, and the kernel
/// hands the same number to other tests' ephemeral sockets on other
/// addresses, which then make a wildcard bind fail with "address in use".
/// So this picks below the kernel's ephemeral range (32768 and up on Linux),
/// where only explicit binds land, and checks the wildcard bind succeeds.
pub fn free_wildcard_port() -> u16 {
    let state = RandomState::new();
    for attempt in 0..200u64 {
        let offset = state.hash_one((std::process::id(), attempt)) % 12_000;
        let port = 20_000 + u16::try_from(offset).unwrap_or(0);
        if TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in 20000..32000 on 0.0.0.0 after 200 tries")
}

/// A loopback address nothing listens on (connections are refused).
pub fn dead_addr() -> SocketAddr {
    free_addr()
}
