//! Who is at the other end of a discovery or signing call, as its
//! credential proves it — never as it describes itself.
//!
//! The listener that accepted the connection decides this once (TLS with a
//! workload certificate weftd issued, TLS without one, or the opt-in
//! plaintext port) and puts a [`Caller`] in every request's extensions.
//! Discovery and the CA read it from there; nothing else is trusted.

use std::net::{IpAddr, SocketAddr};

use super::SpiffeId;

/// What a workload certificate proves about its holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvenIdentity {
    /// `spiffe://<trust domain>/ns/<namespace>/sa/<service account>`.
    pub spiffe: SpiffeId,
    /// The WorkloadGroup (in `spiffe.namespace`) the credential was bound
    /// to when weftd issued it: the proxy's labels and ports come from it.
    pub workload_group: Option<String>,
    /// The instance address the credential was bound to, if any; else the
    /// proxy's address is the one it connects from.
    pub address: Option<IpAddr>,
}

/// The peer of one connection to weftd's discovery/CA ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// Mutual TLS with a workload certificate that chains to weftd's roots.
    Workload {
        identity: ProvenIdentity,
        peer: SocketAddr,
    },
    /// TLS without a client certificate: may only ask for its first
    /// certificate, with a bootstrap token.
    Anonymous { peer: SocketAddr },
    /// The opt-in plaintext port (`--plaintext-grpc`, Istio's 15010):
    /// nothing is proven; see docs/security.md for when that is acceptable.
    Plaintext { peer: SocketAddr },
}

impl Caller {
    pub fn peer(&self) -> SocketAddr {
        match self {
            Caller::Workload { peer, .. }
            | Caller::Anonymous { peer }
            | Caller::Plaintext { peer } => *peer,
        }
    }

    /// The proven identity, if the connection carried one.
    pub fn identity(&self) -> Option<&ProvenIdentity> {
        match self {
            Caller::Workload { identity, .. } => Some(identity),
            _ => None,
        }
    }
}
