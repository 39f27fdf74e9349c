//! Admission: what a proxy may register as, bounded by its credential.
//!
//! [`admit`] turns who the connection proved to be ([`Caller`]), what the
//! proxy claims about itself (`Hello.node`) and the WorkloadGroups weftd
//! stores into the [`Node`] that is registered, or a [`Refusal`] naming
//! what was refused and why. It is pure: no I/O, no clock.
//!
//! Contract (Istio's auto-registration, without its merging of the proxy's
//! own labels: a claim never widens what the credential allows):
//! - `Caller::Workload`: namespace and service account are the
//!   certificate's; the workload is the WorkloadGroup the certificate is
//!   bound to, which must exist in that namespace and name that service
//!   account; labels are the group's (`metadata.labels` over
//!   `template.labels`), ports the group's `template.ports`, the address the
//!   bound one or else the connection's. A claim that differs from any of
//!   these is refused, not corrected, so a misconfigured proxy is noticed.
//! - `Caller::Plaintext`: the operator opted in (`--plaintext-grpc`); the
//!   node is taken at its word.
//! - `Caller::Anonymous` (TLS without a certificate): refused.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};
use weft_api::Object;
use weft_api::networking::WorkloadGroup;
use weft_proto::discovery::v1::{Node, WorkloadPort};
use weft_proto::proxy::v1::Protocol;

use crate::ca::caller::{Caller, ProvenIdentity};
use crate::registry::{PortProtocol, namespace_or_default};

/// Who a registration belongs to: a second stream under the same node id
/// must be the same owner, and streams are limited per owner.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum Owner {
    /// Proven by a workload certificate: identity, group and address.
    Workload {
        spiffe: String,
        group: String,
        address: IpAddr,
    },
    /// The plaintext port: what the proxy claimed (nothing is proven).
    Plaintext {
        namespace: String,
        service_account: String,
        address: String,
    },
}

impl Owner {
    /// Streams are limited per proven identity only: a plaintext claim
    /// costs nothing to change, so a limit on it would bound nothing.
    pub fn is_proven(&self) -> bool {
        matches!(self, Owner::Workload { .. })
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Owner::Workload {
                spiffe,
                group,
                address,
            } => write!(f, "{spiffe} (WorkloadGroup {group}, address {address})"),
            Owner::Plaintext {
                namespace,
                service_account,
                address,
            } => write!(
                f,
                "plaintext proxy claiming {namespace}/{service_account} at {address:?}"
            ),
        }
    }
}

/// A node weftd registers, and whose it is.
#[derive(Debug, Clone, PartialEq)]
pub struct Admitted {
    pub node: Node,
    pub owner: Owner,
}

/// Why a stream was refused, in a sentence for the proxy's log and
/// `weft proxy-status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal(pub String);

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Admits `claimed` for `caller`, finding WorkloadGroups with
/// `group(namespace, name)`. See the module contract.
pub fn admit(
    caller: &Caller,
    claimed: Node,
    group: impl Fn(&str, &str) -> Option<Object<WorkloadGroup>>,
) -> Result<Admitted, Refusal> {
    if claimed.id.is_empty() {
        return Err(Refusal("Hello.node.id is required".into()));
    }
    match caller {
        Caller::Plaintext { peer } => Ok(plaintext(claimed, *peer)),
        Caller::Anonymous { peer } => Err(Refusal(format!(
            "node {:?} from {peer}: discovery needs a workload certificate (mutual TLS); \
             get one with a bootstrap token first (Certificates.Sign)",
            claimed.id
        ))),
        Caller::Workload { identity, peer } => workload(identity, *peer, claimed, group),
    }
}

/// The plaintext port: today's behaviour, the node as claimed; what it
/// leaves out is the default namespace and service account, and the
/// address it connects from.
fn plaintext(mut node: Node, peer: SocketAddr) -> Admitted {
    if node.address.is_empty() {
        node.address = peer.ip().to_canonical().to_string();
    }
    node.namespace = namespace_or_default(&node.namespace).to_string();
    if node.service_account.is_empty() {
        node.service_account = "default".into();
    }
    let owner = Owner::Plaintext {
        namespace: node.namespace.clone(),
        service_account: node.service_account.clone(),
        address: node.address.clone(),
    };
    Admitted { node, owner }
}

fn workload(
    identity: &ProvenIdentity,
    peer: SocketAddr,
    claimed: Node,
    group: impl Fn(&str, &str) -> Option<Object<WorkloadGroup>>,
) -> Result<Admitted, Refusal> {
    let spiffe = identity.spiffe.uri();
    let namespace = identity.spiffe.namespace.as_str();
    let account = identity.spiffe.service_account.as_str();
    let id = &claimed.id;
    let refusal = |what: String| Refusal(format!("node {id:?} ({spiffe}): {what}"));

    if !claimed.namespace.is_empty() && claimed.namespace != namespace {
        return Err(refusal(format!(
            "claims namespace {:?}, but its certificate is for namespace {namespace:?}",
            claimed.namespace
        )));
    }
    if !claimed.service_account.is_empty() && claimed.service_account != account {
        return Err(refusal(format!(
            "claims service account {:?}, but its certificate is for {account:?}",
            claimed.service_account
        )));
    }
    let address = identity.address.unwrap_or_else(|| peer.ip()).to_canonical();
    if !claimed.address.is_empty()
        && claimed.address.parse::<IpAddr>().map(|a| a.to_canonical()) != Ok(address)
    {
        let from = if identity.address.is_some() {
            "its certificate is bound to"
        } else {
            "it connects from"
        };
        return Err(refusal(format!(
            "claims address {:?}, but {from} {address}",
            claimed.address
        )));
    }
    for listener in &claimed.explicit_listeners {
        check_listener_address(&listener.address, address, "listener").map_err(refusal)?;
    }
    for listener in &claimed.inbound_listeners {
        check_listener_address(&listener.address, address, "inbound listener").map_err(refusal)?;
    }

    let Some(group_name) = identity.workload_group.as_deref() else {
        return Err(refusal(
            "its certificate is bound to no WorkloadGroup, so weftd has no labels or ports \
             to register it with; mint its token with `weft token create --group NAME`"
                .into(),
        ));
    };
    let Some(found) = group(namespace, group_name) else {
        return Err(refusal(format!(
            "WorkloadGroup {namespace}/{group_name}, which its certificate is bound to, \
             does not exist; apply it, then the proxy registers on its next attempt"
        )));
    };
    let template = &found.spec.template;
    let group_account = found.spec.service_account();
    if group_account != account {
        return Err(refusal(format!(
            "WorkloadGroup {namespace}/{group_name} is for service account {group_account:?}, \
             not {account:?}"
        )));
    }

    // Istio's order: the group's metadata labels over its template's.
    let mut labels = template.labels.clone();
    if let Some(metadata) = &found.spec.metadata {
        labels.extend(metadata.labels.clone());
    }
    for (key, value) in &claimed.labels {
        match labels.get(key) {
            Some(own) if own == value => {}
            Some(own) => {
                return Err(refusal(format!(
                    "claims label {key}={value}, but WorkloadGroup {namespace}/{group_name} \
                     gives {key}={own}"
                )));
            }
            None => {
                return Err(refusal(format!(
                    "claims label {key}={value}, which WorkloadGroup {namespace}/{group_name} \
                     does not give"
                )));
            }
        }
    }

    let ports = ports(&template.ports, &claimed.ports, namespace, group_name).map_err(refusal)?;
    let locality = if template.locality.is_empty() {
        claimed.locality.clone()
    } else {
        template.locality.clone()
    };
    let node = Node {
        id: claimed.id.clone(),
        workload: group_name.to_string(),
        namespace: namespace.to_string(),
        labels,
        service_account: account.to_string(),
        address: address.to_string(),
        ports,
        locality,
        // Mutual TLS proved it holds a certificate for this identity.
        mtls: true,
        ..claimed
    };
    Ok(Admitted {
        node,
        owner: Owner::Workload {
            spiffe,
            group: group_name.to_string(),
            address,
        },
    })
}

/// A listener the proxy binds must be on its registration address or on
/// loopback: an inbound listener's address becomes the endpoint address
/// every caller dials, so anything else would send them elsewhere.
fn check_listener_address(text: &str, registered: IpAddr, what: &str) -> Result<(), String> {
    let Ok(bound) = text.parse::<SocketAddr>() else {
        return Err(format!("{what} {text:?} is not an ip:port address"));
    };
    let ip = bound.ip().to_canonical();
    if ip == registered || ip.is_loopback() {
        Ok(())
    } else {
        Err(format!(
            "{what} {text} is not on its registration address {registered} nor on loopback"
        ))
    }
}

/// The registration's ports: the group's `template.ports` (port name →
/// workload port, the protocol chosen by the name's prefix as Istio does:
/// `http-web` is HTTP). Claimed port numbers the group does not declare
/// are refused.
///
/// A group that declares no ports is a WorkloadEntry without `ports` in
/// Istio: callers reach each service port at the service's `targetPort`
/// (or number), and the workload is expected to serve there. Weft then
/// keeps the port numbers the proxy claims, without names: they only say
/// which protocol the proxy's own inbound side expects on its own address,
/// and cannot move any service port elsewhere (only a name could).
fn ports(
    declared: &BTreeMap<String, u32>,
    claimed: &[WorkloadPort],
    namespace: &str,
    group: &str,
) -> Result<Vec<WorkloadPort>, String> {
    if declared.is_empty() {
        return Ok(claimed
            .iter()
            .map(|port| WorkloadPort {
                name: String::new(),
                ..port.clone()
            })
            .collect());
    }
    if let Some(extra) = claimed
        .iter()
        .find(|port| !declared.values().any(|number| *number == port.port))
    {
        return Err(format!(
            "claims port {}, which WorkloadGroup {namespace}/{group} does not declare \
             (it declares {declared:?})",
            extra.port
        ));
    }
    Ok(declared
        .iter()
        .map(|(name, number)| WorkloadPort {
            port: *number,
            protocol: protocol_of_port_name(name) as i32,
            name: name.clone(),
        })
        .collect())
}

/// Istio's protocol selection by port name: the part before the first
/// `-` (`grpc-web` is gRPC, `tcp-db` TCP); anything unknown is detected.
fn protocol_of_port_name(name: &str) -> Protocol {
    let prefix = name.split('-').next().unwrap_or(name);
    match PortProtocol::parse(prefix) {
        PortProtocol::Http => Protocol::Http,
        PortProtocol::Http2 => Protocol::Http2,
        PortProtocol::Grpc | PortProtocol::GrpcWeb => Protocol::Grpc,
        PortProtocol::Tls | PortProtocol::Https => Protocol::Tls,
        PortProtocol::Tcp | PortProtocol::Mongo | PortProtocol::Mysql | PortProtocol::Redis => {
            Protocol::Tcp
        }
        PortProtocol::Udp | PortProtocol::Unknown => Protocol::Unspecified,
    }
}

#[cfg(test)]
#[path = "admission_tests.rs"]
mod tests;
