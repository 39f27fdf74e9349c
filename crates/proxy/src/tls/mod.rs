//! TLS for the mesh (rustls, aws-lc-rs): mTLS between sidecars and TLS
//! origination to external servers (DestinationRule SIMPLE / MUTUAL).
//!
//! Between two Weft proxies: TLS 1.3 only, both sides present their
//! workload certificate, both verify the other's chain against the mesh
//! roots, and the client also checks the server's SPIFFE URI SAN against
//! the identity weftd says the endpoint runs as. ALPN says what the
//! connection carries, as in Istio: `istio-h2` (HTTP/2, whatever the app
//! spoke), `istio-http/1.1` (HTTP/1.1, for upgrades such as WebSocket) or
//! `istio` (TCP bytes).
//!
//! One [`MeshTls`] is made at start and handed down (the proxy state
//! holds it; the pool and the inbound path get it from there). Configs are cached and
//! rebuilt only when the roots change; the certificate itself is looked up
//! per handshake, so a rotation needs no rebuild and never touches
//! established connections.

/// The handshake-signature half of `ServerCertVerifier`, checked with the
/// algorithms of the `CryptoProvider` at `self.$provider`: the same for
/// every verifier here, whatever each decides about the certificate.
macro_rules! signatures_checked_by_provider {
    ($provider:tt) => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            rustls::crypto::verify_tls12_signature(
                message,
                cert,
                dss,
                &self.$provider.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            rustls::crypto::verify_tls13_signature(
                message,
                cert,
                dss,
                &self.$provider.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.$provider
                .signature_verification_algorithms
                .supported_schemes()
        }
    };
}

mod origination;
pub mod upstream;

pub(crate) use origination::AcceptAny;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, Resumption};
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ParsedCertificate, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, Error, RootCertStore, ServerConfig,
    SignatureScheme,
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use crate::identity::{Identity, Roots, spiffe_ids};

/// ALPN between Weft proxies.
pub const ALPN_H2: &[u8] = b"istio-h2";
pub const ALPN_HTTP1: &[u8] = b"istio-http/1.1";
pub const ALPN_TCP: &[u8] = b"istio";
/// Set by the calling proxy on mesh requests whose app spoke HTTP/1.x
/// (carried over `istio-h2`), so the serving proxy answers its app in kind.
/// A client never sets it: `http/entry.rs` removes it unless a mesh peer sent it.
pub const CLIENT_PROTOCOL_HEADER: http::HeaderName =
    http::HeaderName::from_static("x-weft-client-protocol");

/// Whether a ClientHello's ALPN list marks mesh mTLS (Istio's convention:
/// every mesh protocol id starts with `istio`).
pub fn is_mesh_alpn(protocols: &[Vec<u8>]) -> bool {
    protocols.iter().any(|p| p.starts_with(b"istio"))
}

pub struct MeshTls {
    /// None: a plaintext-only workload (started without `--token-file`).
    pub identity: Option<Arc<Identity>>,
    provider: Arc<CryptoProvider>,
    server: Mutex<Option<(Arc<Roots>, Arc<ServerConfig>)>>,
    /// Client configs for the roots they were built with.
    clients: Mutex<(Option<Arc<Roots>>, ClientConfigs)>,
    pub(crate) origination: origination::Cache,
}

/// (expected identity, ALPN) → client config.
type ClientConfigs = HashMap<(String, &'static [u8]), Arc<ClientConfig>>;

impl MeshTls {
    /// The context of a workload with `identity` (None: plaintext-only).
    pub fn new(identity: Option<Arc<Identity>>) -> Arc<Self> {
        Arc::new(Self {
            identity,
            provider: Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
            server: Mutex::default(),
            clients: Mutex::default(),
            origination: origination::Cache::default(),
        })
    }

    /// The identity when it holds a certificate (it can do mTLS now).
    pub fn ready_identity(&self) -> Option<&Arc<Identity>> {
        self.identity.as_ref().filter(|i| i.current().is_some())
    }

    /// The server side of mesh mTLS; None until a certificate is held.
    pub fn server_config(&self) -> Option<Arc<ServerConfig>> {
        let identity = self.ready_identity()?;
        let roots = identity.roots();
        let mut cached = self.server.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((held, config)) = cached.as_ref()
            && Arc::ptr_eq(held, &roots)
        {
            return Some(config.clone());
        }
        let verifier =
            WebPkiClientVerifier::builder_with_provider(roots.store.clone(), self.provider.clone())
                .build()
                .map_err(|err| tracing::error!("mTLS server: unusable trust bundle: {err}"))
                .ok()?;
        let mut config = ServerConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .ok()?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(Arc::new(CurrentCert(identity.clone())));
        config.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP1.to_vec(), ALPN_TCP.to_vec()];
        // No resumption: every connection proves the caller's current
        // certificate.
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
        let config = Arc::new(config);
        *cached = Some((roots, config.clone()));
        Some(config)
    }

    /// The client side of mesh mTLS to a server that must present
    /// `expected` (a SPIFFE URI; empty: any identity of the mesh).
    pub fn client_config(&self, expected: &str, alpn: &'static [u8]) -> Option<Arc<ClientConfig>> {
        let identity = self.ready_identity()?;
        let roots = identity.roots();
        let mut cached = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if cached
            .0
            .as_ref()
            .is_none_or(|held| !Arc::ptr_eq(held, &roots))
        {
            *cached = (Some(roots.clone()), HashMap::new());
        }
        let key = (expected.to_string(), alpn);
        if let Some(config) = cached.1.get(&key) {
            return Some(config.clone());
        }
        let verifier = Arc::new(SpiffeVerifier {
            roots: roots.store.clone(),
            expected: (!expected.is_empty()).then(|| expected.to_string()),
            provider: self.provider.clone(),
        });
        let mut config = ClientConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .ok()?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_cert_resolver(Arc::new(CurrentCert(identity.clone())));
        config.alpn_protocols = vec![alpn.to_vec()];
        config.resumption = Resumption::disabled();
        let config = Arc::new(config);
        cached.1.insert(key, config.clone());
        Some(config)
    }
}

/// Hands rustls whatever certificate is current at handshake time.
#[derive(Debug)]
struct CurrentCert(Arc<Identity>);

impl ResolvesServerCert for CurrentCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.certified_key()
    }
}

impl ResolvesClientCert for CurrentCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.0.certified_key()
    }

    fn has_certs(&self) -> bool {
        self.0.current().is_some()
    }
}

/// Chain to the mesh roots, then the SPIFFE URI SAN instead of a DNS name.
#[derive(Debug)]
struct SpiffeVerifier {
    roots: Arc<RootCertStore>,
    expected: Option<String>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for SpiffeVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let cert = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        let presented = spiffe_ids(end_entity);
        let matches = match &self.expected {
            Some(expected) => presented.contains(expected),
            None => !presented.is_empty(),
        };
        if !matches {
            return Err(Error::InvalidCertificate(CertificateError::Other(
                rustls::OtherError(Arc::new(IdentityMismatch {
                    expected: self
                        .expected
                        .clone()
                        .unwrap_or_else(|| "a SPIFFE id".into()),
                    presented,
                })),
            )));
        }
        Ok(ServerCertVerified::assertion())
    }

    signatures_checked_by_provider!(provider);
}

#[derive(Debug)]
struct IdentityMismatch {
    expected: String,
    presented: Vec<String>,
}

impl std::fmt::Display for IdentityMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the server presents {:?}, weftd says the endpoint runs as {}",
            self.presented, self.expected
        )
    }
}

impl std::error::Error for IdentityMismatch {}

/// The caller's principal (SPIFFE URI without `spiffe://`) from a verified
/// peer chain.
pub fn peer_principal(certificates: Option<&[CertificateDer<'_>]>) -> Option<Arc<str>> {
    let leaf = certificates?.first()?;
    let uri = spiffe_ids(leaf).into_iter().next()?;
    Some(Arc::from(uri.strip_prefix("spiffe://").unwrap_or(&uri)))
}
