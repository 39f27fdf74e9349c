//! Mesh TLS in the compiled config: the DestinationRule `tls` of each
//! cluster, and per endpoint the two facts auto-mTLS needs — where mesh
//! callers reach the workload (its proxy's inbound listener, when it runs
//! without interception) and which SPIFFE identity its proxy presents.
//!
//! Auto-mTLS: a caller uses mTLS to an endpoint whose proxy holds a Weft
//! certificate (`Node.mtls`) unless that port's PeerAuthentication is
//! DISABLE or the DestinationRule says otherwise (`DISABLE`, `SIMPLE`,
//! `MUTUAL`). An explicit `ISTIO_MUTUAL` always asks for mTLS.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};

use weft_api::networking::{ClientTlsMode, ClientTlsSettings, TrafficPolicy};
use weft_api::security::peer_authentication::MtlsMode;
use weft_proto::discovery::v1::Node;
use weft_proto::proxy::v1 as pb;

use super::peer_authentication::PeerPolicies;
use crate::registry::namespace_or_default;
use crate::store::credentials::CredentialSource;

/// What weftd knows of the connected proxies' mesh TLS, by the workload
/// address and port their endpoints carry.
#[derive(Debug, Default, Clone)]
pub struct MeshPeers {
    pub trust_domain: String,
    /// MeshConfig `enableAutoMtls: false`: callers use mTLS only where a
    /// DestinationRule asks for ISTIO_MUTUAL.
    pub auto_mtls_off: bool,
    by_endpoint: HashMap<(IpAddr, u32), Peer>,
}

#[derive(Debug, Clone)]
struct Peer {
    namespace: String,
    labels: BTreeMap<String, String>,
    /// SPIFFE URI; None: a plaintext-only workload.
    identity: Option<String>,
    /// Workload port → inbound listener address for mesh callers.
    inbound: BTreeMap<u32, String>,
    /// A gateway proxy: it speaks mesh mTLS only on ISTIO_MUTUAL servers,
    /// so callers use it when a DestinationRule asks, never by auto-mTLS
    /// (Istio's gateways carry no sidecar either).
    router: bool,
}

impl MeshPeers {
    pub fn new(trust_domain: &str, nodes: &[Node]) -> Self {
        let mut by_endpoint = HashMap::new();
        for node in nodes {
            let Ok(address) = node.address.parse::<IpAddr>() else {
                continue;
            };
            let namespace = namespace_or_default(&node.namespace).to_string();
            let account = if node.service_account.is_empty() {
                "default"
            } else {
                &node.service_account
            };
            let peer = Peer {
                identity: node.mtls.then(|| {
                    crate::ca::SpiffeId {
                        trust_domain: trust_domain.to_string(),
                        namespace: namespace.clone(),
                        service_account: account.to_string(),
                    }
                    .uri()
                }),
                namespace,
                router: node.router,
                labels: node.labels.clone(),
                inbound: node
                    .inbound_listeners
                    .iter()
                    .filter(|l| l.address.parse::<SocketAddr>().is_ok())
                    .map(|l| (l.port, l.address.clone()))
                    .collect(),
            };
            for port in &node.ports {
                by_endpoint.insert((address, port.port), peer.clone());
            }
        }
        Self {
            trust_domain: trust_domain.to_string(),
            auto_mtls_off: false,
            by_endpoint,
        }
    }
}

/// The first `tls` set, most specific policy first (subset, then the
/// rule), each checking its `portLevelSettings` for `port` first.
pub(super) fn client_tls(policies: &[Option<&TrafficPolicy>], port: u32) -> Option<pb::ClientTls> {
    let settings = policies.iter().flatten().find_map(|policy| {
        policy
            .port_level_settings
            .iter()
            .filter(|p| p.port.as_ref().is_some_and(|s| s.number == port))
            .find_map(|p| p.tls.as_ref())
            .or(policy.tls.as_ref())
    })?;
    Some(to_pb(settings))
}

fn to_pb(settings: &ClientTlsSettings) -> pb::ClientTls {
    let mode = match settings.mode {
        ClientTlsMode::Disable => pb::client_tls::Mode::Disable,
        ClientTlsMode::Simple => pb::client_tls::Mode::Simple,
        ClientTlsMode::Mutual => pb::client_tls::Mode::Mutual,
        ClientTlsMode::IstioMutual => pb::client_tls::Mode::IstioMutual,
    };
    pb::ClientTls {
        mode: mode as i32,
        ca_certificates: settings.ca_certificates.clone(),
        client_certificate: settings.client_certificate.clone(),
        private_key: settings.private_key.clone(),
        sni: settings.sni.clone(),
        subject_alt_names: settings.subject_alt_names.clone(),
        insecure_skip_verify: settings.insecure_skip_verify.unwrap_or(false),
        credential_name: settings.credential_name.clone(),
        ..Default::default()
    }
}

/// DestinationRule `tls.credentialName`: the client certificate, key and
/// CA of the credential of that name in the calling proxy's namespace (as
/// Istio looks the Secret up beside the proxy), pushed with the cluster.
/// Istio honours it at gateways, and at sidecars only when the rule has a
/// `workloadSelector` (`selected`); other sidecars keep the file paths.
/// A missing credential leaves the files too, with a warning: connections
/// then fail the way a missing Secret makes them fail in Istio.
pub(super) fn attach_credential(
    cluster: &mut pb::Cluster,
    namespace: &str,
    router: bool,
    selected: bool,
    credentials: &dyn CredentialSource,
    warnings: &mut Vec<String>,
) {
    let Some(tls) = cluster.tls.as_mut() else {
        return;
    };
    let name = tls.credential_name.clone();
    if name.is_empty() {
        return;
    }
    if !router && !selected {
        warnings.push(format!(
            "cluster {}: DestinationRule tls.credentialName {name:?} applies at sidecars only with a workloadSelector (as in Istio); the certificate files are used",
            cluster.name
        ));
        return;
    }
    let mut missing = |why: String| {
        warnings.push(format!(
            "cluster {}: tls.credentialName {name:?} in namespace {namespace}: {why}",
            cluster.name
        ));
    };
    // Istio's convention: the CA may sit in a `<name>-cacert` credential.
    let companion_ca = || {
        credentials
            .lookup(namespace, &format!("{name}-cacert"))
            .map(|ca| ca.ca_certificates)
            .ok()
            .filter(|ca| !ca.is_empty())
    };
    let found = credentials.lookup(namespace, &name);
    if tls.mode == pb::client_tls::Mode::Mutual as i32 {
        let found = match found {
            Ok(found) if !found.certificate.is_empty() && !found.private_key.is_empty() => found,
            Ok(_) => return missing("MUTUAL needs tls.crt and tls.key".to_string()),
            Err(why) => return missing(why),
        };
        tls.certificate_pem = found.certificate;
        tls.private_key_pem = found.private_key;
        // No CA anywhere: the server is verified against the system roots.
        tls.ca_certificates_pem = Some(found.ca_certificates)
            .filter(|ca| !ca.is_empty())
            .or_else(companion_ca)
            .unwrap_or_default();
        return;
    }
    // SIMPLE: the credential only says which CA verifies the server.
    let ca = match found {
        Ok(found) if !found.ca_certificates.is_empty() => Some(found.ca_certificates),
        _ => companion_ca(),
    };
    match ca {
        Some(ca) => tls.ca_certificates_pem = ca,
        None => missing(format!("no ca.crt in it or in {name}-cacert")),
    }
}

/// Points mesh endpoints at their proxies' inbound listeners and marks
/// those that auto-mTLS (or ISTIO_MUTUAL) secures with their identity.
pub(super) fn secure_endpoints(
    clusters: &mut BTreeMap<String, pb::Cluster>,
    peers: &MeshPeers,
    policies: &PeerPolicies,
) {
    if peers.by_endpoint.is_empty() {
        return;
    }
    for cluster in clusters.values_mut() {
        let mode = cluster
            .tls
            .as_ref()
            .map_or(pb::client_tls::Mode::Auto, |t| t.mode());
        for endpoint in &mut cluster.endpoints {
            let Ok(address) = endpoint.address.parse::<SocketAddr>() else {
                continue;
            };
            let port = u32::from(address.port());
            let Some(peer) = peers.by_endpoint.get(&(address.ip(), port)) else {
                continue;
            };
            // A workload with a proxy: peer metadata may go to it.
            endpoint.mesh = true;
            if let Some(inbound) = peer.inbound.get(&port) {
                // Kept so a passthrough (headless) cluster can still tell
                // which endpoint a client dialled.
                endpoint.dialled = std::mem::replace(&mut endpoint.address, inbound.clone());
            }
            let Some(identity) = &peer.identity else {
                continue;
            };
            let secured = match mode {
                pb::client_tls::Mode::IstioMutual => true,
                pb::client_tls::Mode::Auto => {
                    !peers.auto_mtls_off
                        && !peer.router
                        && policies.mode(&peer.namespace, &peer.labels, port) != MtlsMode::Disable
                }
                _ => false,
            };
            if secured {
                endpoint.identity.clone_from(identity);
            }
        }
    }
}

impl super::MeshIndex {
    /// A proxy's own side of mesh TLS: its inbound listeners (without
    /// interception) and, when it holds a certificate, each inbound port's
    /// PeerAuthentication mode.
    pub(super) fn secure_inbound(
        &self,
        node: &Node,
        listeners: &mut Vec<pb::Listener>,
        inbound_ports: &mut [pb::InboundPort],
        warnings: &mut Vec<String>,
    ) {
        for inbound in &node.inbound_listeners {
            let problem = if inbound.address.parse::<SocketAddr>().is_err() {
                Some("not an ip:port address")
            } else if !inbound_ports.iter().any(|p| p.port == inbound.port) {
                Some("the workload declares no such port")
            } else if listeners.iter().any(|l| l.address == inbound.address) {
                Some("address already used by another listener")
            } else {
                None
            };
            if let Some(problem) = problem {
                warnings.push(format!(
                    "inbound listener {} for port {}: {problem}; left out",
                    inbound.address, inbound.port
                ));
                continue;
            }
            listeners.push(pb::Listener {
                name: format!("inbound|{}", inbound.port),
                address: inbound.address.clone(),
                kind: pb::ListenerKind::InboundCapture as i32,
                service: String::new(),
                service_port: 0,
                inbound_port: inbound.port,
                mtls_mode: 0,
                ..Default::default()
            });
        }
        if !node.mtls {
            // No certificate: the proxy cannot terminate mTLS, so its
            // ports stay plaintext whatever the policy says.
            return;
        }
        let namespace = namespace_or_default(&node.namespace);
        // Undeclared ports get the workload's mode (no port-level entry
        // can name them).
        let workload_mode = self.peer_policies.mode(namespace, &node.labels, 0);
        for listener in listeners.iter_mut() {
            if listener.kind == pb::ListenerKind::InboundCapture as i32
                && listener.inbound_port == 0
            {
                listener.mtls_mode = super::peer_authentication::to_pb(workload_mode) as i32;
            }
        }
        for port in inbound_ports {
            let mode = self.peer_policies.mode(namespace, &node.labels, port.port);
            port.mtls_mode = super::peer_authentication::to_pb(mode) as i32;
        }
    }
}
