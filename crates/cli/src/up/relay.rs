//! TCP relays across the node boundary: the node namespace has no route to
//! the host, so the runner carries the two flows that must cross it.
//! - discovery: a listener on the bridge address (made inside the node
//!   namespace) whose connections go to weftd's `--xds` on the host's
//!   loopback (TLS end to end: the relay carries bytes it cannot read);
//! - ingress: a listener on a host address whose upstream sockets are made
//!   inside the node namespace and go to the gateway pod.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use super::network::NsSockets;

/// Where a relay's connections go.
#[derive(Clone)]
pub enum Upstream {
    /// An address in the runner's own (host) namespace.
    Host(SocketAddr),
    /// An address reached from inside a namespace.
    Namespace(Arc<NsSockets>, SocketAddr),
}

impl Upstream {
    async fn connect(&self) -> std::io::Result<TcpStream> {
        match self {
            Upstream::Host(address) => TcpStream::connect(address).await,
            Upstream::Namespace(sockets, address) => sockets.connect(*address).await,
        }
    }

    fn address(&self) -> SocketAddr {
        match self {
            Upstream::Host(address) | Upstream::Namespace(_, address) => *address,
        }
    }
}

/// Accepts forever, copying each connection both ways to `upstream`.
/// Aborting the returned task closes the listener.
pub fn spawn(listener: TcpListener, upstream: Upstream, name: &'static str) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let (mut downstream, _) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors and the like: pass, retry.
                    note!("weft up: {name} relay: accept failed: {err}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let upstream = upstream.clone();
            tokio::spawn(async move {
                match upstream.connect().await {
                    Ok(mut stream) => {
                        let _ = downstream.set_nodelay(true);
                        let _ = stream.set_nodelay(true);
                        let _ = tokio::io::copy_bidirectional(&mut downstream, &mut stream).await;
                    }
                    Err(err) => note!(
                        "weft up: {name} relay: cannot reach {}: {err}",
                        upstream.address()
                    ),
                }
            });
        }
    })
}
