//! Pushing config to proxies.
//!
//! [`mesh::build_loop`] rebuilds the [`MeshIndex`](crate::compiler::MeshIndex)
//! after changes (debounced) and publishes it; each proxy's stream
//! ([`session`]) takes that proxy's config from the latest build (compiled
//! once per proxy shape) and sends only the resources the proxy does not
//! hold. Resources are encoded once and shared by every config, build and
//! stream that holds them; the change from one config to another is
//! computed once for all proxies making it ([`shared`]), and the wire
//! ([`wire`]) sends those shared bytes without a per-stream copy.
//! One push is in flight per proxy; its ACK or NACK lands on the
//! [`StatusBoard`](crate::status::StatusBoard).
//!
//! A stream is served only once its proxy is admitted ([`admission`]: what
//! it may register as, from its credential and WorkloadGroup) and
//! registered ([`registrations`]: one owner per node id, a grace period
//! after a lost stream, restored after a restart). Every refusal goes back
//! to the proxy as a gRPC error with the reason, and onto the board.
//! [`readmit_loop`] admits connected proxies again after store changes,
//! so a WorkloadGroup's edits (or deletion) reach its proxies' registrations.

pub mod admission;
mod incremental;
pub mod mesh;
pub mod registrations;
mod session;
pub mod shared;
pub mod wire;

use std::net::SocketAddr;
use std::sync::Arc;

pub use crate::ca::service::{CertificateService, CertificatesServer};
use tokio::sync::{mpsc, watch};
use tonic::{Request, Status, Streaming};
use weft_proto::discovery::v1::{ProxyMessage, proxy_message};

use crate::ca::caller::Caller;
use crate::status::StatusBoard;
use crate::store::Store;
use mesh::Mesh;
use registrations::{Conflict, Registrations};
use shared::Frame;
pub use wire::DiscoveryServer;

/// The bytes of large pushes (a proxy's first, full config) sent and not
/// yet ACKed, in KiB permits. Each stream's HTTP/2 send buffer holds up to
/// 400 KiB of a push its proxy has not read yet: 5,000 proxies syncing at
/// once would hold 2 GB. A push takes as many permits as it weighs (at
/// most all of them, [`session::LARGE_PUSH_BUDGET_KIB`]), so the bound is
/// on bytes: a count of pushes (32 before) meant 32 × 8.7 MB when every
/// proxy sees 10,000 services.
const LARGE_PUSHES_IN_FLIGHT: usize = session::LARGE_PUSH_BUDGET_KIB as usize;

/// How long a new stream may take to send its Hello.
const HELLO_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// The gRPC service each proxy streams from.
pub struct DiscoveryService {
    mesh: watch::Receiver<Arc<Mesh>>,
    store: Arc<Store>,
    registrations: Arc<Registrations>,
    status: Arc<StatusBoard>,
    trust_bundle: Option<Arc<str>>,
    large_pushes: Arc<tokio::sync::Semaphore>,
}

impl DiscoveryService {
    pub fn new(
        mesh: watch::Receiver<Arc<Mesh>>,
        store: Arc<Store>,
        registrations: Arc<Registrations>,
        status: Arc<StatusBoard>,
    ) -> Self {
        Self {
            mesh,
            store,
            registrations,
            status,
            trust_bundle: None,
            large_pushes: Arc::new(tokio::sync::Semaphore::new(LARGE_PUSHES_IN_FLIGHT)),
        }
    }

    /// Refuses a stream: the proxy gets `status`, the board keeps why.
    fn refuse(&self, peer: Option<SocketAddr>, id: &str, status: Status) -> Status {
        tracing::warn!(node = %id, peer = ?peer, "stream refused: {}", status.message());
        self.status
            .refuse(peer, id, status.code(), status.message());
        status
    }

    /// Every stream's first push carries these trust anchors (PEM).
    pub fn with_trust_bundle(mut self, pem: &str) -> Self {
        self.trust_bundle = Some(Arc::from(pem));
        self
    }
}

impl DiscoveryService {
    /// Serves one proxy's stream: admits and registers it, then runs its
    /// session, whose pushes come out of the receiver ([`wire`] sends them).
    pub async fn open(
        &self,
        request: Request<Streaming<ProxyMessage>>,
    ) -> Result<mpsc::Receiver<Result<Frame, Status>>, Status> {
        // Who the connection proved to be, set by the listener that
        // accepted it (ca::listener); a request without one is refused.
        let caller = request.extensions().get::<Caller>().cloned();
        let peer = caller
            .as_ref()
            .map(Caller::peer)
            .or_else(|| request.remote_addr());
        let mut inbound = request.into_inner();
        // A stream that never says who it is holds nothing for long.
        let first = tokio::time::timeout(HELLO_WAIT, inbound.message())
            .await
            .unwrap_or_else(|_| Ok(None));
        let hello = match first {
            Ok(Some(ProxyMessage {
                message: Some(proxy_message::Message::Hello(hello)),
            })) => hello,
            Ok(_) => {
                return Err(self.refuse(
                    peer,
                    "",
                    Status::invalid_argument(format!(
                        "the first message must be a Hello, sent within {HELLO_WAIT:?}"
                    )),
                ));
            }
            Err(status) => return Err(status),
        };
        let claimed = hello.node.unwrap_or_default();
        let id = claimed.id.clone();
        let Some(caller) = caller else {
            return Err(self.refuse(
                peer,
                &id,
                Status::unauthenticated(format!(
                    "node {id:?}: the connection proved no identity; discovery needs mutual TLS"
                )),
            ));
        };
        let claim = registrations::Claim {
            caller: caller.clone(),
            claimed: claimed.clone(),
        };
        let admitted = admission::admit(&caller, claimed, |namespace, name| {
            self.store.workload_group(namespace, name)
        })
        .map_err(|refusal| {
            let status = if id.is_empty() {
                Status::invalid_argument(refusal.0)
            } else {
                Status::permission_denied(refusal.0)
            };
            self.refuse(peer, &id, status)
        })?;
        let node = admitted.node.clone();
        let registered = self
            .registrations
            .register_claimed(admitted, Some(claim))
            .map_err(|conflict| {
                let status = match &conflict {
                    Conflict::NodeIdTaken(why) => Status::failed_precondition(why.clone()),
                    Conflict::TooManyStreams(why) => Status::resource_exhausted(why.clone()),
                };
                self.refuse(peer, &id, status)
            })?;
        let (outbound, pushes) = mpsc::channel(4);
        let session = session::Session::new(
            node,
            hello.known_versions,
            self.registrations.clone(),
            registered,
            self.status.clone(),
        )
        .with_trust_bundle(self.trust_bundle.clone())
        .with_large_pushes(self.large_pushes.clone());
        tokio::spawn(session.run(inbound, outbound, self.mesh.clone()));
        Ok(pushes)
    }
}

/// Admits the connected proxies again after every store change, with the
/// same [`admission::admit`] and the WorkloadGroups as they are now: a
/// group's new labels or ports reach its registrations (and from them the
/// next mesh build); a proxy its group no longer admits (deleted, another
/// service account, a claim it no longer allows) loses its registration and
/// its stream ends with the refusal. Runs as long as weftd.
pub async fn readmit_loop(store: Arc<Store>, registrations: Arc<Registrations>) {
    let mut changes = store.subscribe();
    // The registrations' own changes also wake it: a proxy admitted against
    // a group that changed before it registered is admitted again.
    let mut registered = registrations.subscribe();
    loop {
        tokio::select! {
            changed = changes.changed() => if changed.is_err() { return },
            changed = registered.changed() => if changed.is_err() { return },
        }
        registered.mark_unchanged();
        let refused = registrations.readmit(|caller, claimed| {
            admission::admit(caller, claimed, |namespace, name| {
                store.workload_group(namespace, name)
            })
        });
        for (id, refusal) in refused {
            tracing::warn!(node = %id, "registration removed: {refusal}");
        }
        // What readmit itself changed needs no second pass.
        registered.mark_unchanged();
    }
}

/// Ends registrations whose proxies stayed away for the grace period, and
/// forgets their per-proxy state; runs as long as weftd.
pub async fn expire_loop(registrations: Arc<Registrations>, status: Arc<StatusBoard>) {
    loop {
        let next = registrations.next_expiry();
        tokio::select! {
            // A stream lost since may expire sooner than the one waited for.
            () = registrations.away_changed() => {}
            () = async {
                match next {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            } => {
                let expired = registrations.expire(std::time::Instant::now(), |id| status.remove(id));
                for id in expired {
                    tracing::info!(node = %id, "proxy did not come back within {:?}; registration removed", registrations.grace());
                }
            }
        }
    }
}
