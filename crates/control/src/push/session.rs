//! One proxy's stream: compile, diff against what the proxy holds, push,
//! wait for the ACK or NACK, repeat when the mesh changes.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tonic::{Status, Streaming};
use weft_proto::discovery::v1::{Node, ProxyMessage, proxy_message};

use super::mesh::Mesh;
use super::registrations::{Leaving, Registered, Registrations};
use super::shared::{Config, Frame, Held};
use super::wire::Outbound;
use crate::status::StatusBoard;

/// How long a new proxy's first push waits for a mesh that includes it.
const FIRST_BUILD_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// A push this large waits for one of the large-push permits
/// (`LARGE_PUSHES_IN_FLIGHT` in the module above) and holds it until its
/// ACK.
const LARGE_PUSH: usize = 256 * 1024;
/// The bytes (in KiB) of large pushes sent and not yet ACKed, all streams
/// together; a push larger than the whole budget waits for all of it.
/// 288 MiB is what the earlier count of 32 permits allowed for the largest
/// first pushes measured (~9 MB at 10,000 services): a 48 MiB budget
/// halved the mass sync's speed without lowering weftd's peak
/// (bench/RESULTS.md), while smaller pushes now share the same bound.
pub(super) const LARGE_PUSH_BUDGET_KIB: u32 = 288 * 1024;
/// How long a large push waits for a permit; then it goes without one (a
/// few proxies that never ACK must not stop everyone's first push).
const PERMIT_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Resource name → version.
type Versions = BTreeMap<String, String>;

struct InFlight {
    nonce: String,
    config: Config,
    /// Held until the ACK (or the stream's end) for a large push.
    _permit: Option<OwnedSemaphorePermit>,
}

pub struct Session {
    /// The node as admitted (not as claimed).
    node: Node,
    /// What the proxy holds and serves (its last ACKed set): shared with
    /// every proxy that holds the same, never a copy of its own.
    held: Held,
    registrations: Arc<Registrations>,
    registered: Registered,
    status: Arc<StatusBoard>,
    pushes: u64,
    /// The mesh's trust anchors, sent with the first push of the stream.
    trust_bundle: Option<Arc<str>>,
    /// Permits for large pushes, shared by every stream.
    large_pushes: Arc<Semaphore>,
}

impl Session {
    /// A session for a stream whose node is already registered.
    pub fn new(
        node: Node,
        held: Versions,
        registrations: Arc<Registrations>,
        registered: Registered,
        status: Arc<StatusBoard>,
    ) -> Self {
        Self {
            node,
            held: Held::reported(held),
            registrations,
            registered,
            status,
            pushes: 0,
            trust_bundle: None,
            large_pushes: Arc::new(Semaphore::new(Semaphore::MAX_PERMITS)),
        }
    }

    /// Sends `pem` with the first push (weftd's roots change only with a
    /// restart, which starts a new stream).
    pub fn with_trust_bundle(mut self, pem: Option<Arc<str>>) -> Self {
        self.trust_bundle = pem;
        self
    }

    /// Large pushes take their size in KiB of `permits` until their ACK.
    pub fn with_large_pushes(mut self, permits: Arc<Semaphore>) -> Self {
        self.large_pushes = permits;
        self
    }

    pub async fn run(
        mut self,
        mut inbound: Streaming<ProxyMessage>,
        outbound: Outbound,
        mut mesh: watch::Receiver<Arc<Mesh>>,
    ) {
        let registration = self.registered.sequence;
        let held_version = self.held.version().to_string();
        self.status.update(&self.node.id, |status| {
            status.workload.clone_from(&self.node.workload);
            status.namespace.clone_from(&self.node.namespace);
            status.connected = true;
            status.acked_version.clone_from(&held_version);
            status.sent_version = held_version;
            status.error = None;
        });
        tracing::info!(node = %self.node.id, "proxy connected");

        // The first push waits for a mesh that knows this proxy (and so
        // everything applied before it connected): a proxy is never made
        // ready on config older than what the user already applied.
        let fresh = mesh.wait_for(|latest| latest.registrations >= registration);
        if tokio::time::timeout(FIRST_BUILD_WAIT, fresh).await.is_err() {
            tracing::warn!(node = %self.node.id, "mesh build is slow; pushing the latest one");
        }
        let mut in_flight: Option<InFlight> = None;
        let mut recompute = true;
        let mut leaving = Leaving::Lost;
        let mut replaced = false;
        // Closed once the registration no longer is this stream's.
        let mut readmissions = true;
        let mut refused = None;
        loop {
            if in_flight.is_none() && recompute {
                recompute = false;
                let latest = mesh.borrow_and_update().clone();
                in_flight = self.next_push(&latest, &outbound).await;
                if in_flight.is_none() && outbound.is_closed() {
                    break;
                }
            }
            tokio::select! {
                _ = &mut self.registered.replaced => {
                    // A newer stream of the same proxy holds the id now.
                    replaced = true;
                    break;
                }
                changed = self.registered.admitted.changed(), if readmissions => {
                    if changed.is_err() {
                        readmissions = false;
                        continue;
                    }
                    let verdict = self.registered.admitted.borrow_and_update().clone();
                    match verdict {
                        // Its WorkloadGroup changed: the next build has the
                        // new node, and this proxy's own config follows it.
                        Ok(node) => {
                            tracing::info!(node = %self.node.id, "re-admitted after its WorkloadGroup changed");
                            self.node = node;
                            recompute = true;
                        }
                        Err(refusal) => {
                            refused = Some(refusal);
                            break;
                        }
                    }
                }
                changed = mesh.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    recompute = true;
                }
                message = inbound.message() => match message {
                    Ok(Some(ProxyMessage { message: Some(proxy_message::Message::Ack(ack)) })) => {
                        match in_flight.take() {
                            Some(pushed) if pushed.nonce == ack.nonce => self.acknowledged(pushed, ack.error),
                            other => in_flight = other, // a stale ACK: keep waiting
                        }
                    }
                    Ok(Some(ProxyMessage { message: Some(proxy_message::Message::Goodbye(goodbye)) })) => {
                        tracing::info!(node = %self.node.id, reason = %goodbye.reason, "proxy said goodbye");
                        leaving = Leaving::Goodbye;
                        break;
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(err) => {
                        tracing::debug!(node = %self.node.id, "stream error: {err}");
                        break;
                    }
                },
            }
        }
        if replaced {
            tracing::info!(node = %self.node.id, "stream replaced by a newer one from the same proxy");
            let _ = outbound
                .send(Err(Status::aborted(format!(
                    "node {:?}: replaced by a newer stream of the same proxy",
                    self.node.id
                ))))
                .await;
            return;
        }
        if let Some(refusal) = refused {
            // The registration is already gone (no grace for a refused
            // proxy); the proxy and `weft proxy-status` are told why.
            tracing::warn!(node = %self.node.id, "stream ended: {refusal}");
            self.status.remove(&self.node.id);
            self.status.refuse(
                None,
                &self.node.id,
                tonic::Code::PermissionDenied,
                &refusal.0,
            );
            let _ = outbound
                .send(Err(Status::permission_denied(refusal.0)))
                .await;
            return;
        }
        let (id, status) = (&self.node.id, &self.status);
        let held = self.registrations.leave(
            id,
            self.registered.session,
            leaving,
            std::time::Instant::now(),
            || match leaving {
                Leaving::Goodbye => status.remove(id),
                Leaving::Lost => status.update(id, |proxy| proxy.connected = false),
            },
        );
        if !held {
            return;
        }
        match leaving {
            Leaving::Goodbye => {
                tracing::info!(node = %id, "proxy left; its registration is removed");
            }
            Leaving::Lost => tracing::info!(
                node = %id,
                "proxy disconnected; its registration is kept for {:?}",
                self.registrations.grace()
            ),
        }
    }

    /// Compiles this proxy's config and pushes what differs from what it
    /// holds; `None` when there is nothing to send.
    async fn next_push(&mut self, mesh: &Mesh, outbound: &Outbound) -> Option<InFlight> {
        let config = mesh.config_for(&self.node).await;
        // What the proxy should hold from now on, pushed or already held.
        self.status.record_sent(&self.node.id, config.clone());
        let trust_bundle_pem = self.trust_bundle.take().unwrap_or_default();
        if config.version == self.held.version() && trust_bundle_pem.is_empty() {
            return None;
        }
        let delta = mesh.delta(&self.held, &config).await;
        if delta.is_empty() && trust_bundle_pem.is_empty() {
            return None;
        }
        let permit = if delta.len() >= LARGE_PUSH {
            // Weighed in KiB: the budget bounds the bytes in flight.
            let kib = u32::try_from(delta.len() / 1024)
                .unwrap_or(u32::MAX)
                .clamp(1, LARGE_PUSH_BUDGET_KIB);
            let permits = self.large_pushes.clone().acquire_many_owned(kib);
            let waited = tokio::time::timeout(PERMIT_WAIT, permits).await;
            waited.ok().and_then(Result::ok)
        } else {
            None
        };
        self.pushes += 1;
        let nonce = self.pushes.to_string();
        let frame = Frame::new(&nonce, delta, &trust_bundle_pem);
        if outbound.send(Ok(frame)).await.is_err() {
            return None;
        }
        self.status.update(&self.node.id, |status| {
            status.sent_version.clone_from(&config.version)
        });
        Some(InFlight {
            nonce,
            config,
            _permit: permit,
        })
    }

    fn acknowledged(&mut self, pushed: InFlight, error: String) {
        if error.is_empty() {
            self.status.update(&self.node.id, |status| {
                status.acked_version.clone_from(&pushed.config.version);
                status.error = None;
            });
            self.held = Held::Acked(pushed.config);
        } else {
            // The proxy keeps serving what it held; the same resources are
            // sent again with the next change, which may fix them.
            tracing::warn!(node = %self.node.id, "config refused (NACK): {error}");
            self.status
                .update(&self.node.id, |status| status.error = Some(error));
        }
    }
}
