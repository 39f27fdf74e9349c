//! The proxies registered in the mesh, by node id: who owns each id, which
//! stream serves it now, and how long one whose stream ended is kept.
//!
//! Contract:
//! - A node id belongs to one [`Owner`]. A stream from another owner under
//!   that id is refused while the registration exists (connected, or kept
//!   for the grace period); the same owner reconnecting replaces its own
//!   older stream, which is told to end.
//! - A stream that ends keeps its registration (and the workload's
//!   endpoints) for the grace period, Istio's auto-registration cleanup
//!   grace: a proxy that reconnects within it changes nothing for anyone.
//!   A goodbye ends it at once. Only the stream that holds an id can end it.
//! - Registrations restored at start (see [`Registrations::restore`]) count
//!   as just disconnected: their proxies have the grace period from start
//!   to come back, and until then every push keeps their endpoints.
//! - At most `limit` streams are connected per proven identity.
//! - A connected registration keeps what its proxy proved and claimed
//!   ([`Claim`]), so [`Registrations::readmit`] can admit it again when its
//!   WorkloadGroup changes: a node that changed is updated (its stream is
//!   told, the next build uses it), a refused one is removed at once (no
//!   grace) and its stream is told why, to end with that refusal.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::{oneshot, watch};
use weft_proto::discovery::v1::Node;

use super::admission::{Admitted, Owner, Refusal};
use crate::ca::caller::Caller;
use crate::durable;

/// Istio's `PILOT_WORKLOAD_ENTRY_GRACE_PERIOD`.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(10);
/// Streams one proven identity (SPIFFE id, group and address) may hold.
pub const DEFAULT_STREAMS_PER_IDENTITY: usize = 4;
/// The file registrations are kept in, under weftd's state directory.
pub const FILE_NAME: &str = "registrations.json";

/// Why a registration was refused; maps to the gRPC code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Conflict {
    /// Another owner holds the node id (FAILED_PRECONDITION).
    NodeIdTaken(String),
    /// The owner has its limit of streams (RESOURCE_EXHAUSTED).
    TooManyStreams(String),
}

impl Conflict {
    pub fn message(&self) -> &str {
        match self {
            Conflict::NodeIdTaken(why) | Conflict::TooManyStreams(why) => why,
        }
    }
}

/// A stream's hold on its node id.
pub struct Registered {
    /// Passed back to [`Registrations::leave`]: only this stream can end
    /// this registration.
    pub session: u64,
    /// The registration sequence a mesh build must include to know it.
    pub sequence: u64,
    /// Resolves when a newer stream of the same owner replaced this one.
    pub replaced: oneshot::Receiver<()>,
    /// The node as last admitted; a refusal when re-admission refused it
    /// (the registration is gone then). See [`Registrations::readmit`].
    pub admitted: watch::Receiver<Result<Node, Refusal>>,
}

/// What a stream proved and claimed when it was admitted: enough to admit
/// it again when its WorkloadGroup changes.
#[derive(Debug, Clone)]
pub struct Claim {
    pub caller: Caller,
    pub claimed: Node,
}

/// How a stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leaving {
    /// The stream broke: keep the registration for the grace period.
    Lost,
    /// The proxy said goodbye: remove it now.
    Goodbye,
}

enum State {
    Connected {
        session: u64,
        /// Dropping it tells the stream it was replaced.
        _replace: oneshot::Sender<()>,
        /// Tells the stream what re-admission decided.
        admitted: watch::Sender<Result<Node, Refusal>>,
        /// Boxed: the caller's identity is large, and away entries
        /// carry none.
        claim: Option<Box<Claim>>,
    },
    /// No stream since `since` (lost, or restored at start).
    Away { since: Instant },
}

struct Entry {
    owner: Owner,
    node: Node,
    state: State,
}

/// What the registrations file holds: the registrations, not their streams.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Saved {
    pub owner: Owner,
    pub node: Node,
}

pub struct Registrations {
    entries: Mutex<BTreeMap<String, Entry>>,
    sessions: std::sync::atomic::AtomicU64,
    /// Bumped whenever the registered workloads change.
    changes: watch::Sender<u64>,
    /// Wakes the expiry loop when a registration starts its grace period.
    away: tokio::sync::Notify,
    grace: Duration,
    limit: usize,
}

impl Default for Registrations {
    fn default() -> Self {
        Self::new(DEFAULT_GRACE, DEFAULT_STREAMS_PER_IDENTITY)
    }
}

impl Registrations {
    pub fn new(grace: Duration, limit: usize) -> Self {
        Self {
            entries: Mutex::default(),
            sessions: std::sync::atomic::AtomicU64::new(0),
            changes: watch::Sender::new(0),
            away: tokio::sync::Notify::new(),
            grace,
            limit,
        }
    }

    pub fn grace(&self) -> Duration {
        self.grace
    }

    /// Registers an admitted node for a new stream, or says why not. It is
    /// not re-admitted when its group changes (see
    /// [`register_claimed`](Self::register_claimed)).
    pub fn register(&self, admitted: Admitted) -> Result<Registered, Conflict> {
        self.register_claimed(admitted, None)
    }

    /// Registers an admitted node for a new stream, keeping `claim` to
    /// admit it again when its WorkloadGroup changes.
    pub fn register_claimed(
        &self,
        admitted: Admitted,
        claim: Option<Claim>,
    ) -> Result<Registered, Conflict> {
        let Admitted { node, owner } = admitted;
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(existing) = entries.get(&node.id)
            && existing.owner != owner
        {
            let held = match existing.state {
                State::Connected { .. } => "is connected",
                State::Away { .. } => "is within its grace period after disconnecting",
            };
            return Err(Conflict::NodeIdTaken(format!(
                "node id {:?} is registered to {} (its proxy {held}); refused for {owner}: \
                 give each proxy its own --node-id",
                node.id, existing.owner
            )));
        }
        if owner.is_proven() {
            let streams = entries
                .iter()
                .filter(|(id, entry)| {
                    **id != node.id
                        && entry.owner == owner
                        && matches!(entry.state, State::Connected { .. })
                })
                .count();
            if streams >= self.limit {
                return Err(Conflict::TooManyStreams(format!(
                    "{owner} already has {streams} streams open (at most {}); node {:?} refused",
                    self.limit, node.id
                )));
            }
        }
        let session = self
            .sessions
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        let (replace, replaced) = oneshot::channel();
        let (admitted_tx, admitted) = watch::channel(Ok(node.clone()));
        let same = entries.get(&node.id).is_some_and(|e| e.node == node);
        // Replacing drops the older stream's sender: it ends.
        entries.insert(
            node.id.clone(),
            Entry {
                owner,
                node,
                state: State::Connected {
                    session,
                    _replace: replace,
                    admitted: admitted_tx,
                    claim: claim.map(Box::new),
                },
            },
        );
        if !same {
            self.changes.send_modify(|n| *n += 1);
        }
        Ok(Registered {
            session,
            sequence: *self.changes.borrow(),
            replaced,
            admitted,
        })
    }

    /// Admits every connected, claimed registration again with `admit`
    /// (run when the store changed: a WorkloadGroup may have). A node that
    /// changed replaces the registered one; a refused registration is
    /// removed at once and its stream told why. Returns the refused node
    /// ids with their refusals.
    pub fn readmit(
        &self,
        admit: impl Fn(&Caller, Node) -> Result<Admitted, Refusal>,
    ) -> Vec<(String, Refusal)> {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let mut changed = false;
        let mut gone = Vec::new();
        for (id, entry) in entries.iter_mut() {
            let State::Connected {
                admitted: tell,
                claim: Some(claim),
                ..
            } = &entry.state
            else {
                continue;
            };
            let verdict = admit(&claim.caller, claim.claimed.clone()).and_then(|again| {
                // The owner comes from the certificate, so it cannot change;
                // if it ever did, the stream no longer is what registered.
                if again.owner == entry.owner {
                    Ok(again.node)
                } else {
                    Err(Refusal(format!(
                        "node {id:?}: re-admitted as {}, but registered as {}",
                        again.owner, entry.owner
                    )))
                }
            });
            match verdict {
                Ok(node) if node == entry.node => {}
                Ok(node) => {
                    let _previous = tell.send_replace(Ok(node.clone()));
                    entry.node = node;
                    changed = true;
                }
                Err(refusal) => {
                    let _previous = tell.send_replace(Err(refusal.clone()));
                    gone.push((id.clone(), refusal));
                }
            }
        }
        for (id, refusal) in &gone {
            entries.remove(id);
            tracing::debug!(node = %id, "re-admission refused: {refusal}");
            changed = true;
        }
        if changed {
            self.changes.send_modify(|n| *n += 1);
        }
        gone
    }

    /// The stream `session` of node `id` ended. True when it held the
    /// registration (a replaced stream ends nothing); `then` runs first,
    /// under the lock, so a newer stream's own bookkeeping cannot be
    /// overtaken by this one's.
    pub fn leave(
        &self,
        id: &str,
        session: u64,
        how: Leaving,
        now: Instant,
        then: impl FnOnce(),
    ) -> bool {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let Some(entry) = entries.get_mut(id) else {
            return false;
        };
        if !matches!(entry.state, State::Connected { session: current, .. } if current == session) {
            return false;
        }
        match how {
            Leaving::Lost => {
                entry.state = State::Away { since: now };
                self.away.notify_one();
            }
            Leaving::Goodbye => {
                entries.remove(id);
                self.changes.send_modify(|n| *n += 1);
            }
        }
        then();
        true
    }

    /// Removes registrations away for longer than the grace period; their
    /// node ids. `forget` runs for each under the lock (a proxy registering
    /// the id again right after is not forgotten).
    pub fn expire(&self, now: Instant, mut forget: impl FnMut(&str)) -> Vec<String> {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let expired: Vec<String> = entries
            .iter()
            .filter(|(_, entry)| {
                matches!(entry.state, State::Away { since } if now.saturating_duration_since(since) >= self.grace)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in &expired {
            entries.remove(id);
            forget(id);
        }
        if !expired.is_empty() {
            self.changes.send_modify(|n| *n += 1);
        }
        expired
    }

    /// When the next away registration expires, if any is away.
    pub fn next_expiry(&self) -> Option<Instant> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .values()
            .filter_map(|entry| match entry.state {
                State::Away { since } => Some(since + self.grace),
                State::Connected { .. } => None,
            })
            .min()
    }

    /// Whether node `id` has a stream now.
    pub fn is_connected(&self, id: &str) -> bool {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .get(id)
            .is_some_and(|entry| matches!(entry.state, State::Connected { .. }))
    }

    /// Every registered workload, connected or within its grace period.
    #[cfg(test)]
    pub fn workloads(&self) -> Vec<crate::registry::Workload> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .values()
            .filter_map(|entry| crate::registry::Workload::from_node(&entry.node))
            .collect()
    }

    /// Every registered node (inbound listeners and certificates for mesh
    /// TLS).
    #[cfg(test)]
    pub fn nodes(&self) -> Vec<Node> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.values().map(|entry| entry.node.clone()).collect()
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// What [`save`](Self::save) writes.
    pub fn saved(&self) -> Vec<Saved> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .values()
            .map(|entry| Saved {
                owner: entry.owner.clone(),
                node: entry.node.clone(),
            })
            .collect()
    }

    /// Takes back registrations saved by an earlier weftd, each as if its
    /// proxy had just disconnected (see the module contract). Ids already
    /// registered are kept as they are.
    pub fn restore(&self, saved: Vec<Saved>, now: Instant) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        for Saved { owner, node } in saved {
            entries.entry(node.id.clone()).or_insert(Entry {
                owner,
                node,
                state: State::Away { since: now },
            });
        }
        self.changes.send_modify(|n| *n += 1);
        self.away.notify_one();
    }

    /// Resolves after a registration started a grace period (see
    /// [`next_expiry`](Self::next_expiry)).
    pub async fn away_changed(&self) {
        self.away.notified().await;
    }
}

/// Reads `<state-dir>/registrations.json`; nothing when there is no file.
/// A file that cannot be read is reported and set aside (renamed with
/// `.bad`), so weftd starts with the rest of its state.
pub fn load(state_dir: &Path) -> (Vec<Saved>, Option<String>) {
    let path = state_dir.join(FILE_NAME);
    let text = match std::fs::read(&path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return (Vec::new(), None),
        Err(err) => return (Vec::new(), Some(format!("{}: {err}", path.display()))),
    };
    match serde_json::from_slice::<Vec<Saved>>(&text) {
        Ok(saved) => (saved, None),
        Err(err) => {
            let aside = state_dir.join(format!("{FILE_NAME}.bad"));
            let moved = std::fs::rename(&path, &aside)
                .map(|()| format!("set aside as {}", aside.display()))
                .unwrap_or_else(|e| format!("could not set it aside: {e}"));
            (
                Vec::new(),
                Some(format!(
                    "{}: not a registrations file ({err}); {moved}; starting without registrations",
                    path.display()
                )),
            )
        }
    }
}

/// Writes `saved` to `<state-dir>/registrations.json` (owner only:
/// it names every workload's address and identity).
pub fn save(state_dir: &Path, saved: &[Saved]) -> std::io::Result<()> {
    let bytes = serde_json::to_vec_pretty(saved).map_err(std::io::Error::other)?;
    durable::write(&state_dir.join(FILE_NAME), &bytes, durable::Mode::Private)
}

#[cfg(test)]
#[path = "registrations_tests.rs"]
mod tests;
