//! One Gateway server → how its port carries traffic (plaintext HTTP,
//! HTTPS, TLS passed through or terminated, TCP) and, when TLS ends at the
//! gateway, the proxy's `ServerTls` for it. Anything that cannot be served
//! is a warning naming the server, and the server is left out.

use weft_api::networking::gateway_tls::{rustls_cipher_suites, rustls_version};
use weft_api::networking::{Server, ServerTlsMode, ServerTlsSettings};
use weft_proto::proxy::v1 as pb;
use weft_proto::proxy::v1::GatewayMode;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::registry::{PortProtocol, ServicePortDef};
use crate::store::credentials::CredentialSource;

/// What one server puts on its port.
pub(super) struct ServerPlan {
    pub(super) mode: GatewayMode,
    /// The port as routes see it (HTTP for HTTPS servers: TLS has ended).
    pub(super) port: ServicePortDef,
    pub(super) tls: Option<PendingTls>,
    /// `httpsRedirect`: every host of the server answers 301 to https.
    pub(super) https_redirect: bool,
    /// AUTO_PASSTHROUGH: routed by `outbound_.PORT_.SUBSET_.HOST` SNI
    /// (`gateway_auto.rs`), not by VirtualServices.
    pub(super) auto_passthrough: bool,
}

/// A terminating server's settings; with `credentialName`, the PEM is
/// filled in per gateway proxy from its namespace's credential.
#[derive(Debug, Clone)]
pub(super) struct PendingTls {
    pub(super) tls: pb::ServerTls,
    pub(super) credential: Option<String>,
}

impl PendingTls {
    /// The settings for a proxy in `namespace`: None (with a warning) when
    /// the credential is missing or unusable.
    pub(super) fn resolve(
        &self,
        namespace: &str,
        credentials: &dyn CredentialSource,
        warnings: &mut Vec<String>,
    ) -> Option<pb::ServerTls> {
        let Some(name) = &self.credential else {
            return Some(self.tls.clone());
        };
        let at = &self.tls.origin;
        let mut left_out = |why: String| {
            warnings.push(format!(
                "{at}: credentialName {name:?} for gateway proxies in namespace {namespace}: {why}; server left out"
            ));
            None
        };
        let found = match credentials.lookup(namespace, name) {
            Ok(found) => found,
            Err(why) => return left_out(why),
        };
        let mut tls = self.tls.clone();
        tls.certificate_pem = found.certificate;
        tls.private_key_pem = found.private_key;
        if tls.mode != pb::server_tls::Mode::Simple as i32 {
            tls.ca_certificates_pem = if found.ca_certificates.is_empty() {
                // Istio's convention: the CA in a `<name>-cacert` credential.
                match credentials.lookup(namespace, &format!("{name}-cacert")) {
                    Ok(ca) => ca.ca_certificates,
                    Err(why) => {
                        return left_out(format!(
                            "MUTUAL needs a CA (ca.crt in the credential or in {name}-cacert): {why}"
                        ));
                    }
                }
            } else {
                found.ca_certificates
            };
        }
        // The proxy refuses a whole config with unusable PEM: check here so
        // one bad credential only leaves its server out.
        let certs = CertificateDer::pem_slice_iter(tls.certificate_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>();
        if !matches!(certs, Ok(ref list) if !list.is_empty()) {
            return left_out("tls.crt holds no PEM certificate".into());
        }
        if PrivateKeyDer::from_pem_slice(tls.private_key_pem.as_bytes()).is_err() {
            return left_out("tls.key holds no PEM private key".into());
        }
        Some(tls)
    }
}

/// Istio's gateway-protocol names for a mode, in warnings.
pub(super) fn mode_name(mode: GatewayMode) -> &'static str {
    match mode {
        GatewayMode::GatewayHttp => "HTTP",
        GatewayMode::GatewayHttps => "HTTPS (TLS terminated)",
        GatewayMode::GatewayTlsPassthrough => "TLS PASSTHROUGH",
        GatewayMode::GatewayTlsTerminate => "TLS (terminated, then TCP)",
        GatewayMode::GatewayTcp => "TCP",
    }
}

pub(super) fn plan(server: &Server, at: &str, warnings: &mut Vec<String>) -> Option<ServerPlan> {
    let port = server.port.as_ref()?;
    let protocol = PortProtocol::parse(&port.protocol);
    let def = |protocol| ServicePortDef {
        number: port.number,
        name: port.name.clone(),
        protocol,
        target_port: None,
    };
    let tls = server.tls.as_ref();
    let https_redirect = tls.is_some_and(|tls| tls.https_redirect == Some(true));
    if let Some(settings) = tls
        && settings.mode == ServerTlsMode::IstioMutual
    {
        return istio_mutual(server, protocol, &def, at, warnings);
    }
    let mut terminated = |mode, inner| {
        let tls = server_tls(server, tls?, at, warnings)?;
        Some(ServerPlan {
            mode,
            port: def(inner),
            tls: Some(tls),
            https_redirect: false,
            auto_passthrough: false,
        })
    };
    match protocol {
        PortProtocol::Http | PortProtocol::Http2 | PortProtocol::Grpc => Some(ServerPlan {
            mode: GatewayMode::GatewayHttp,
            port: def(protocol),
            tls: None,
            https_redirect,
            auto_passthrough: false,
        }),
        PortProtocol::Https | PortProtocol::Tls => {
            let Some(settings) = tls else {
                warnings.push(format!(
                    "{at}: a {} server needs `tls` (mode SIMPLE, MUTUAL, OPTIONAL_MUTUAL or PASSTHROUGH); server left out",
                    port.protocol
                ));
                return None;
            };
            match settings.mode {
                ServerTlsMode::Passthrough => Some(ServerPlan {
                    mode: GatewayMode::GatewayTlsPassthrough,
                    port: def(PortProtocol::Tls),
                    tls: None,
                    https_redirect: false,
                    auto_passthrough: false,
                }),
                ServerTlsMode::Simple | ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual => {
                    if protocol == PortProtocol::Https {
                        terminated(GatewayMode::GatewayHttps, PortProtocol::Http)
                    } else {
                        terminated(GatewayMode::GatewayTlsTerminate, PortProtocol::Tcp)
                    }
                }
                ServerTlsMode::IstioMutual => None, // planned above
                // Istio takes AUTO_PASSTHROUGH on TLS servers only.
                ServerTlsMode::AutoPassthrough if protocol == PortProtocol::Tls => {
                    Some(ServerPlan {
                        mode: GatewayMode::GatewayTlsPassthrough,
                        port: def(PortProtocol::Tls),
                        tls: None,
                        https_redirect: false,
                        auto_passthrough: true,
                    })
                }
                ServerTlsMode::AutoPassthrough => {
                    warnings.push(format!(
                        "{at}: tls.mode AUTO_PASSTHROUGH needs protocol TLS (it routes by SNI without terminating); server left out"
                    ));
                    None
                }
            }
        }
        PortProtocol::Tcp => Some(ServerPlan {
            mode: GatewayMode::GatewayTcp,
            port: def(PortProtocol::Tcp),
            tls: None,
            https_redirect: false,
            auto_passthrough: false,
        }),
        _ => {
            warnings.push(format!(
                "{at}: protocol {:?} is not supported on gateways (HTTP, HTTP2, GRPC, HTTPS, TLS and TCP are); server left out",
                port.protocol
            ));
            None
        }
    }
}

/// An ISTIO_MUTUAL server: the mesh's mutual TLS ends here with the
/// gateway proxy's own workload certificate (the egress pattern: sidecars
/// reach the gateway over mTLS). What is inside follows the protocol:
/// HTTP (HTTP, HTTP2, GRPC and HTTPS servers, as Istio's egress task
/// declares port 80 either way) routed by host, or bytes (TLS, TCP) by the
/// `tls` routes (on the handshake's SNI, which the sidecar sets from its
/// DestinationRule's `sni`) and `tcp` routes.
fn istio_mutual(
    server: &Server,
    protocol: PortProtocol,
    def: &dyn Fn(PortProtocol) -> ServicePortDef,
    at: &str,
    warnings: &mut Vec<String>,
) -> Option<ServerPlan> {
    let (mode, inner) = match protocol {
        PortProtocol::Http | PortProtocol::Http2 | PortProtocol::Grpc | PortProtocol::Https => {
            (GatewayMode::GatewayHttps, PortProtocol::Http)
        }
        PortProtocol::Tls | PortProtocol::Tcp => {
            (GatewayMode::GatewayTlsTerminate, PortProtocol::Tcp)
        }
        _ => {
            warnings.push(format!(
                "{at}: tls.mode ISTIO_MUTUAL on protocol {:?} is not supported (HTTP, HTTP2, GRPC, HTTPS, TLS and TCP are); server left out",
                server.port.as_ref().map(|p| p.protocol.as_str()).unwrap_or_default()
            ));
            return None;
        }
    };
    let tls = pb::ServerTls {
        sni_hosts: server_sni_hosts(server),
        mode: pb::server_tls::Mode::IstioMutual as i32,
        origin: at.to_string(),
        ..Default::default()
    };
    Some(ServerPlan {
        mode,
        port: def(inner),
        tls: Some(PendingTls {
            tls,
            credential: None,
        }),
        https_redirect: false,
        auto_passthrough: false,
    })
}

/// A server's hosts without their `namespace/` part, as SNI names.
fn server_sni_hosts(server: &Server) -> Vec<String> {
    server
        .hosts
        .iter()
        .map(|h| h.split_once('/').map_or(h.as_str(), |(_, host)| host))
        .map(str::to_ascii_lowercase)
        .collect()
}

/// The proxy's settings for a server that terminates TLS.
fn server_tls(
    server: &Server,
    tls: &ServerTlsSettings,
    at: &str,
    warnings: &mut Vec<String>,
) -> Option<PendingTls> {
    let mut refuse = |why: &str| {
        warnings.push(format!("{at}: {why}; server left out"));
        None
    };
    if !tls.credential_names.is_empty() || !tls.tls_certificates.is_empty() {
        return refuse("tls.credentialNames and tls.tlsCertificates are not implemented");
    }
    let credential = (!tls.credential_name.is_empty()).then(|| tls.credential_name.clone());
    if credential.is_none() && (tls.server_certificate.is_empty() || tls.private_key.is_empty()) {
        return refuse(
            "tls.serverCertificate and tls.privateKey (or tls.credentialName) are required",
        );
    }
    let mode = match tls.mode {
        ServerTlsMode::Mutual => pb::server_tls::Mode::Mutual,
        ServerTlsMode::OptionalMutual => pb::server_tls::Mode::OptionalMutual,
        _ => pb::server_tls::Mode::Simple,
    };
    if mode != pb::server_tls::Mode::Simple
        && credential.is_none()
        && tls.ca_certificates.is_empty()
    {
        return refuse("MUTUAL and OPTIONAL_MUTUAL need tls.caCertificates to verify clients");
    }
    // With a credential, weftd's PEM replaces the files.
    let file = |path: &String| {
        if credential.is_some() {
            String::new()
        } else {
            path.clone()
        }
    };
    let tls = pb::ServerTls {
        sni_hosts: server_sni_hosts(server),
        mode: mode as i32,
        certificate_file: file(&tls.server_certificate),
        private_key_file: file(&tls.private_key),
        ca_certificates_file: file(&tls.ca_certificates),
        subject_alt_names: tls.subject_alt_names.clone(),
        min_version: rustls_version(tls.min_protocol_version).to_string(),
        max_version: rustls_version(tls.max_protocol_version).to_string(),
        // Apply-time validation refused names rustls does not have.
        cipher_suites: tls
            .cipher_suites
            .iter()
            .filter_map(|entry| rustls_cipher_suites(entry))
            .flatten()
            .map(str::to_string)
            .collect(),
        origin: at.to_string(),
        ..Default::default()
    };
    Some(PendingTls { tls, credential })
}

/// The route of every host of an `httpsRedirect` server: 301 to https,
/// same host (without its port, as Envoy's `https_redirect`) and path.
pub(super) fn https_redirect_route() -> pb::Route {
    pb::Route {
        name: "https-redirect".into(),
        redirect: Some(pb::Redirect {
            scheme: "https".into(),
            code: 301,
            derive_port: pb::RedirectPort::FromProtocolDefault as i32,
            ..Default::default()
        }),
        ..Default::default()
    }
}
