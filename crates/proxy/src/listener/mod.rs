//! Accepting connections: the set of bound listeners, reconciled with each
//! new config, each handing what it accepts to a [`Serve`] (the proxy's
//! dispatch, `proxy.rs`). [`detect`] reads a connection's first bytes,
//! [`classify`] turns them into how it is carried, [`drain`] stops it all.
//!
//! Listeners are keyed by address only: a config change that keeps an
//! address keeps its socket (and its accepted connections); what a listener
//! does is read from the current snapshot for each new connection.
//! Binding is all-or-nothing, so a config whose address is taken is
//! rejected whole and the old listeners keep serving.

pub mod classify;
pub mod detect;
pub mod drain;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use socket2::{Domain, Socket, Type};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

use self::drain::Drain;
use crate::config::ListenerSpec;

/// Accept backlog: bursts of new connections wait here, not in SYN retries.
const BACKLOG: i32 = 1024;

/// What a listener hands its connections to.
pub trait Serve: Send + Sync + 'static {
    /// Carries one accepted connection on the listener bound at `address`.
    fn connection(
        self: &Arc<Self>,
        stream: TcpStream,
        address: SocketAddr,
    ) -> impl Future<Output = ()> + Send + 'static;
    /// How many connections one listener may hold open now (the current
    /// config's `maxConnectionsPerListener`).
    fn connection_limit(&self) -> usize;
    /// Stops accepting when draining starts, and tracks every connection.
    fn drain(&self) -> &Drain;
}

#[derive(Default)]
pub struct Listeners {
    active: HashMap<SocketAddr, CancellationToken>,
}

/// Sockets bound for a new config, not yet accepting.
pub struct Bound(Vec<(SocketAddr, std::net::TcpListener)>);

impl Listeners {
    /// Binds each wanted address that is not bound yet.
    pub fn bind_new(&self, wanted: &[ListenerSpec]) -> Result<Bound, String> {
        let mut bound = Vec::new();
        for spec in wanted {
            if self.active.contains_key(&spec.address) {
                continue;
            }
            let socket = bind(spec.address).map_err(|err| {
                format!(
                    "listener {:?}: cannot listen on {}: {err}",
                    spec.name, spec.address
                )
            })?;
            bound.push((spec.address, socket));
        }
        Ok(Bound(bound))
    }

    /// Starts accepting on newly bound sockets and closes listeners whose
    /// address is no longer wanted (their open connections carry on).
    pub fn reconcile<S: Serve>(
        &mut self,
        bound: Bound,
        wanted: &[ListenerSpec],
        serve: &Arc<S>,
        runtime: &Handle,
    ) {
        self.active.retain(|address, stop| {
            let keep = wanted.iter().any(|spec| spec.address == *address);
            if !keep {
                tracing::info!(%address, "listener removed");
                stop.cancel();
            }
            keep
        });
        for (address, socket) in bound.0 {
            let stop = CancellationToken::new();
            self.active.insert(address, stop.clone());
            runtime.spawn(accept_loop(socket, address, serve.clone(), stop));
            tracing::info!(%address, "listening");
        }
    }
}

fn bind(address: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(address), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    if address.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.bind(&address.into())?;
    socket.listen(BACKLOG)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

async fn accept_loop<S: Serve>(
    socket: std::net::TcpListener,
    address: SocketAddr,
    serve: Arc<S>,
    stop: CancellationToken,
) {
    let listener = match TcpListener::from_std(socket) {
        Ok(listener) => listener,
        Err(err) => {
            tracing::error!(%address, "cannot register listener: {err}");
            return;
        }
    };
    let open = Arc::new(AtomicUsize::new(0));
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            _ = serve.drain().signaled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                let limit = serve.connection_limit();
                let Some(slot) = OpenSlot::take(&open, limit) else {
                    // Closed at once: a flood cannot hold more sockets,
                    // and the client learns now rather than after a timeout.
                    tracing::info!(
                        %address,
                        %peer,
                        "closing a new connection: the listener holds its limit of {limit}"
                    );
                    drop(stream);
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let handling = serve.connection(stream, address);
                serve.drain().spawn_connection(async move {
                    handling.await;
                    drop(slot);
                });
            }
            Err(err) => {
                // Usually out of file descriptors: back off instead of spinning.
                tracing::warn!(%address, "accept failed: {err}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

/// One of a listener's open connections, counted until dropped.
struct OpenSlot(Arc<AtomicUsize>);

impl OpenSlot {
    /// A slot when fewer than `limit` connections are open.
    fn take(open: &Arc<AtomicUsize>, limit: usize) -> Option<Self> {
        open.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < limit).then_some(n + 1)
        })
        .ok()?;
        Some(Self(open.clone()))
    }
}

impl Drop for OpenSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}
