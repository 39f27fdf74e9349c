//! TLS terminated at a gateway port (Istio Gateway servers with `tls.mode`
//! SIMPLE, MUTUAL, OPTIONAL_MUTUAL or ISTIO_MUTUAL): the servers of one
//! port, the one a ClientHello's SNI picks, and its rustls `ServerConfig`
//! (or, for ISTIO_MUTUAL, word that the mesh's own mTLS server config is
//! to be used: this plain-data module holds no workload certificate).
//!
//! Certificates from files are re-read when a file changes: each handshake
//! compares the files' metadata with what was loaded (a few `stat`s, far
//! cheaper than the handshake) and builds a new config when they differ.
//! Open connections keep the config they were made with, so a renewal
//! drops nothing. A half-written renewal (a key that does not match its
//! certificate, an unparsable file) keeps the previous config and is
//! retried at the next handshake.

use std::fs::Metadata;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::sign::CertifiedKey;
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, Error, RootCertStore, ServerConfig,
    SignatureScheme, SupportedProtocolVersion,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use weft_proto::proxy::v1 as pb;
use weft_proto::proxy::v1::server_tls::Mode;

use super::tcp_route::sni_matches;

/// ALPN offered on HTTPS servers: HTTP/2 (and so gRPC) or HTTP/1.1.
const ALPN_HTTPS: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// How the server a ClientHello picked terminates it.
pub enum Terminator {
    /// With the server's own certificate (SIMPLE, MUTUAL, OPTIONAL_MUTUAL).
    Own(Arc<ServerConfig>),
    /// With the proxy's workload certificate, requiring a mesh client
    /// certificate (ISTIO_MUTUAL): the caller uses its mesh TLS context.
    Mesh,
}

/// The TLS servers of one gateway port.
pub struct GatewayTls {
    servers: Vec<TlsServer>,
}

struct TlsServer {
    sni_hosts: Vec<String>,
    mode: Mode,
    source: Source,
    subject_alt_names: Vec<String>,
    versions: Vec<&'static SupportedProtocolVersion>,
    provider: Arc<CryptoProvider>,
    alpn: Vec<Vec<u8>>,
    origin: String,
    loaded: Mutex<Option<Loaded>>,
}

enum Source {
    Files {
        cert: String,
        key: String,
        ca: String,
    },
    /// PEM pushed by weftd (credentialName): fixed for the config's life.
    Inline {
        cert: String,
        key: String,
        ca: String,
    },
    /// ISTIO_MUTUAL: the proxy's workload certificate, held elsewhere.
    Mesh,
}

struct Loaded {
    /// What the files looked like when read (empty for inline PEM).
    stamps: Vec<Stamp>,
    config: Arc<ServerConfig>,
}

/// A file's identity and version: inode, size and modification time.
#[derive(PartialEq, Eq)]
struct Stamp(u64, u64, Option<SystemTime>);

impl Stamp {
    fn of(path: &str) -> Option<Self> {
        use std::os::unix::fs::MetadataExt;
        let meta: Metadata = std::fs::metadata(path).ok()?;
        Some(Self(meta.ino(), meta.len(), meta.modified().ok()))
    }
}

impl GatewayTls {
    /// Checks `servers` (versions, suites, inline PEM); `http` offers ALPN
    /// h2 and http/1.1. Problems are `(field, message)` pairs.
    pub fn compile(
        servers: &[pb::ServerTls],
        http: bool,
        problems: &mut Vec<(String, String)>,
    ) -> Option<Arc<Self>> {
        let mut out = Vec::new();
        for (index, server) in servers.iter().enumerate() {
            let at = format!("tlsServers[{index}]");
            match TlsServer::compile(server, http) {
                Ok(compiled) => out.push(compiled),
                Err((field, message)) => problems.push((format!("{at}.{field}"), message)),
            }
        }
        (!out.is_empty() && out.len() == servers.len()).then(|| Arc::new(Self { servers: out }))
    }

    /// The config for a ClientHello with `sni`: the server listing that
    /// exact name, else the longest `*.suffix` covering it, else one listing
    /// `*`. Without SNI (clients dialling an IP address): the `*` server,
    /// else the port's first server. None: no server for that name.
    pub fn config_for(&self, sni: Option<&str>) -> Result<Terminator, String> {
        let server = match sni {
            Some(name) => self.by_name(name),
            None => self.catch_all().or(self.servers.first()),
        }
        .ok_or_else(|| format!("no TLS server on this port for SNI {sni:?}"))?;
        match server.source {
            Source::Mesh => Ok(Terminator::Mesh),
            _ => server.current().map(Terminator::Own),
        }
    }

    fn by_name(&self, name: &str) -> Option<&TlsServer> {
        let exact = self
            .servers
            .iter()
            .find(|s| s.sni_hosts.iter().any(|h| h.eq_ignore_ascii_case(name)));
        let wildcard = || {
            self.servers
                .iter()
                .flat_map(|s| s.sni_hosts.iter().map(move |h| (h, s)))
                .filter(|(h, _)| h.starts_with("*.") && sni_matches(h, name))
                .max_by_key(|(h, _)| h.len())
                .map(|(_, s)| s)
        };
        exact.or_else(wildcard).or_else(|| self.catch_all())
    }

    fn catch_all(&self) -> Option<&TlsServer> {
        self.servers
            .iter()
            .find(|s| s.sni_hosts.iter().any(|h| h == "*"))
    }
}

impl TlsServer {
    fn compile(server: &pb::ServerTls, http: bool) -> Result<Self, (String, String)> {
        let mode = Mode::try_from(server.mode)
            .map_err(|_| ("mode".to_string(), format!("unknown mode {}", server.mode)))?;
        let source = if mode == Mode::IstioMutual {
            Source::Mesh
        } else if !server.certificate_pem.is_empty() {
            Source::Inline {
                cert: server.certificate_pem.clone(),
                key: server.private_key_pem.clone(),
                ca: server.ca_certificates_pem.clone(),
            }
        } else {
            Source::Files {
                cert: server.certificate_file.clone(),
                key: server.private_key_file.clone(),
                ca: server.ca_certificates_file.clone(),
            }
        };
        let versions = versions(&server.min_version, &server.max_version)?;
        let provider = Arc::new(provider(&server.cipher_suites)?);
        let compiled = Self {
            sni_hosts: server
                .sni_hosts
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
            mode,
            source,
            subject_alt_names: server.subject_alt_names.clone(),
            versions,
            provider,
            alpn: if http {
                ALPN_HTTPS.iter().map(|p| p.to_vec()).collect()
            } else {
                Vec::new()
            },
            origin: server.origin.clone(),
            loaded: Mutex::new(None),
        };
        if let Source::Inline { .. } = compiled.source {
            // Inline PEM cannot change: check it now, so bad credentials
            // reject the config instead of failing every handshake.
            let config = compiled
                .build()
                .map_err(|why| ("certificatePem".to_string(), why))?;
            *compiled.loaded.lock().unwrap_or_else(|p| p.into_inner()) = Some(Loaded {
                stamps: Vec::new(),
                config,
            });
        }
        Ok(compiled)
    }

    /// The config to hand this handshake: re-built when the files changed.
    fn current(&self) -> Result<Arc<ServerConfig>, String> {
        let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        let stamps = match &self.source {
            Source::Inline { .. } | Source::Mesh => Vec::new(),
            Source::Files { cert, key, ca } => [cert, key, ca]
                .iter()
                .filter(|p| !p.is_empty())
                .filter_map(|p| Stamp::of(p))
                .collect(),
        };
        if let Some(held) = loaded.as_ref()
            && held.stamps == stamps
        {
            return Ok(held.config.clone());
        }
        match self.build() {
            Ok(config) => {
                if loaded.is_some() {
                    tracing::info!(server = %self.origin, "gateway TLS: certificate files changed; new handshakes use them");
                }
                *loaded = Some(Loaded {
                    stamps,
                    config: config.clone(),
                });
                Ok(config)
            }
            Err(why) => match loaded.as_ref() {
                Some(held) => {
                    tracing::warn!(server = %self.origin, "gateway TLS: keeping the previous certificate: {why}");
                    Ok(held.config.clone())
                }
                None => Err(format!("{}: {why}", self.origin)),
            },
        }
    }

    fn build(&self) -> Result<Arc<ServerConfig>, String> {
        let (chain, key, ca) = self.read()?;
        let key = self
            .provider
            .key_provider
            .load_private_key(key)
            .map_err(|err| format!("private key: {err}"))?;
        let certified = CertifiedKey::new(chain, key);
        certified
            .keys_match()
            .map_err(|err| format!("the private key does not match the certificate: {err}"))?;
        let builder = ServerConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&self.versions)
            .map_err(|err| format!("TLS versions: {err}"))?;
        let builder = match self.mode {
            Mode::Simple => builder.with_no_client_auth(),
            Mode::IstioMutual => {
                return Err("ISTIO_MUTUAL uses the workload certificate, not files".into());
            }
            Mode::Mutual | Mode::OptionalMutual => {
                let mut roots = RootCertStore::empty();
                for der in ca {
                    roots
                        .add(der)
                        .map_err(|err| format!("caCertificates: {err}"))?;
                }
                if roots.is_empty() {
                    return Err("MUTUAL needs caCertificates to verify clients".into());
                }
                let inner = WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    self.provider.clone(),
                );
                let inner = if self.mode == Mode::OptionalMutual {
                    inner.allow_unauthenticated()
                } else {
                    inner
                };
                let inner = inner
                    .build()
                    .map_err(|err| format!("caCertificates: {err}"))?;
                builder.with_client_cert_verifier(Arc::new(ClientNames {
                    inner,
                    names: self.subject_alt_names.clone(),
                }))
            }
        };
        let mut config =
            builder.with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(certified)));
        config.alpn_protocols = self.alpn.clone();
        Ok(Arc::new(config))
    }

    /// Chain, key and CA certificates as DER.
    #[allow(clippy::type_complexity)] // Three parts of one credential.
    fn read(
        &self,
    ) -> Result<
        (
            Vec<CertificateDer<'static>>,
            PrivateKeyDer<'static>,
            Vec<CertificateDer<'static>>,
        ),
        String,
    > {
        let (cert, key, ca) = match &self.source {
            Source::Files { cert, key, ca } => {
                let read = |field: &str, path: &str| {
                    std::fs::read(path).map_err(|err| format!("{field} {path}: {err}"))
                };
                let ca = if ca.is_empty() {
                    Vec::new()
                } else {
                    read("caCertificates", ca)?
                };
                (
                    read("serverCertificate", cert)?,
                    read("privateKey", key)?,
                    ca,
                )
            }
            Source::Inline { cert, key, ca } => (
                cert.as_bytes().to_vec(),
                key.as_bytes().to_vec(),
                ca.as_bytes().to_vec(),
            ),
            Source::Mesh => {
                return Err("ISTIO_MUTUAL uses the workload certificate, not files".into());
            }
        };
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert)
            .collect::<Result<_, _>>()
            .map_err(|err| format!("serverCertificate: {err}"))?;
        if chain.is_empty() {
            return Err("serverCertificate: no PEM certificate".into());
        }
        let key =
            PrivateKeyDer::from_pem_slice(&key).map_err(|err| format!("privateKey: {err}"))?;
        let ca: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&ca)
            .collect::<Result<_, _>>()
            .map_err(|err| format!("caCertificates: {err}"))?;
        Ok((chain, key, ca))
    }
}

/// `min`/`max` ("TLSv1_2", "TLSv1_3", empty: no bound) as rustls versions.
fn versions(
    min: &str,
    max: &str,
) -> Result<Vec<&'static SupportedProtocolVersion>, (String, String)> {
    let rank = |field: &str, text: &str, none: u8| match text {
        "" => Ok(none),
        "TLSv1_2" => Ok(2),
        "TLSv1_3" => Ok(3),
        other => Err((
            field.to_string(),
            format!("{other:?}: only TLSv1_2 and TLSv1_3 are supported"),
        )),
    };
    let low = rank("minVersion", min, 2)?;
    let high = rank("maxVersion", max, 3)?;
    let out: Vec<_> = [(2, &rustls::version::TLS12), (3, &rustls::version::TLS13)]
        .into_iter()
        .filter(|(rank, _)| (low..=high).contains(rank))
        .map(|(_, version)| version)
        .collect();
    if out.is_empty() {
        return Err((
            "minVersion".into(),
            format!("{min:?} is above maxVersion {max:?}"),
        ));
    }
    Ok(out)
}

/// aws-lc-rs with only the named suites (TLS 1.3 suites stay unless some
/// are named: the names restrict TLS 1.2 as Envoy's cipherSuites do).
fn provider(names: &[String]) -> Result<CryptoProvider, (String, String)> {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    if names.is_empty() {
        return Ok(provider);
    }
    let all = provider.cipher_suites.clone();
    let named = |suite: &rustls::SupportedCipherSuite| {
        let name = format!("{:?}", suite.suite());
        names.contains(&name)
    };
    for name in names {
        if !all.iter().any(|s| format!("{:?}", s.suite()) == *name) {
            return Err((
                "cipherSuites".into(),
                format!("{name:?} is not a suite rustls offers"),
            ));
        }
    }
    let tls13_named = all
        .iter()
        .any(|s| s.version() == &rustls::version::TLS13 && named(s));
    provider.cipher_suites = all
        .into_iter()
        .filter(|s| named(s) || (!tls13_named && s.version() == &rustls::version::TLS13))
        .collect();
    Ok(provider)
}

/// Web PKI client verification, then (when configured) one of the client
/// certificate's SANs must be listed (Istio's `subjectAltNames`).
#[derive(Debug)]
struct ClientNames {
    inner: Arc<dyn ClientCertVerifier>,
    names: Vec<String>,
}

impl ClientCertVerifier for ClientNames {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        if self.names.is_empty() {
            return Ok(verified);
        }
        let presented = crate::identity::subject_alt_names(end_entity);
        if presented.iter().any(|san| self.names.contains(san)) {
            Ok(verified)
        } else {
            Err(Error::InvalidCertificate(CertificateError::NotValidForName))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An inline server for `hosts` with a fresh self-signed certificate.
    fn server(hosts: &[&str]) -> pb::ServerTls {
        let key = rcgen::KeyPair::generate().expect("key");
        let names: Vec<String> = hosts
            .iter()
            .map(|h| {
                if *h == "*" {
                    "any.test".into()
                } else {
                    h.replace('*', "x")
                }
            })
            .collect();
        let cert = rcgen::CertificateParams::new(names)
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        pb::ServerTls {
            sni_hosts: hosts.iter().map(|h| h.to_string()).collect(),
            certificate_pem: cert.pem(),
            private_key_pem: key.serialize_pem(),
            ..Default::default()
        }
    }

    fn compiled(servers: &[pb::ServerTls]) -> Arc<GatewayTls> {
        let mut problems = Vec::new();
        let tls = GatewayTls::compile(servers, true, &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        tls.expect("compiles")
    }

    /// Which server (by index) a ClientHello with `sni` gets.
    fn picked(tls: &GatewayTls, sni: Option<&str>) -> Option<usize> {
        let config = match tls.config_for(sni).ok()? {
            Terminator::Own(config) => config,
            Terminator::Mesh => return None,
        };
        tls.servers
            .iter()
            .position(|s| s.current().is_ok_and(|c| Arc::ptr_eq(&c, &config)))
    }

    #[test]
    fn sni_picks_exact_then_longest_wildcard_then_catch_all() {
        let tls = compiled(&[
            server(&["*.example.com"]),
            server(&["api.example.com"]),
            server(&["*.eu.example.com"]),
            server(&["*"]),
        ]);
        assert_eq!(picked(&tls, Some("api.example.com")), Some(1));
        assert_eq!(picked(&tls, Some("API.example.com")), Some(1));
        assert_eq!(picked(&tls, Some("shop.eu.example.com")), Some(2));
        assert_eq!(picked(&tls, Some("shop.example.com")), Some(0));
        assert_eq!(picked(&tls, Some("example.org")), Some(3));
        assert_eq!(picked(&tls, None), Some(3), "no SNI: the `*` server");
        // Without a catch-all: unknown names are refused; no SNI gets the
        // port's first server.
        let tls = compiled(&[server(&["b.test"]), server(&["a.test"])]);
        assert_eq!(picked(&tls, Some("c.test")), None);
        assert_eq!(picked(&tls, None), Some(0));
    }

    #[test]
    fn bad_settings_name_their_field() {
        let mut problems = Vec::new();
        let mut bad = server(&["a.test"]);
        bad.min_version = "TLSv1_1".into();
        assert!(GatewayTls::compile(&[bad], true, &mut problems).is_none());
        let mut bad = server(&["a.test"]);
        bad.cipher_suites = vec!["RC4".into()];
        assert!(GatewayTls::compile(&[bad], true, &mut problems).is_none());
        let mut bad = server(&["a.test"]);
        bad.private_key_pem = server(&["b.test"]).private_key_pem;
        assert!(GatewayTls::compile(&[bad], true, &mut problems).is_none());
        let fields: Vec<&str> = problems.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            fields,
            [
                "tlsServers[0].minVersion",
                "tlsServers[0].cipherSuites",
                "tlsServers[0].certificatePem"
            ],
            "{problems:?}"
        );
        assert!(problems[2].1.contains("does not match"), "{problems:?}");
    }

    #[test]
    fn istio_mutual_servers_defer_to_the_mesh_context_by_sni() {
        let mesh = pb::ServerTls {
            sni_hosts: vec!["edition.example.test".into()],
            mode: Mode::IstioMutual as i32,
            ..Default::default()
        };
        // No certificate of its own is needed, and it shares the port with
        // a SIMPLE server chosen by another name.
        let tls = compiled(&[mesh, server(&["shop.example.test"])]);
        assert!(matches!(
            tls.config_for(Some("edition.example.test")),
            Ok(Terminator::Mesh)
        ));
        assert!(matches!(
            tls.config_for(Some("shop.example.test")),
            Ok(Terminator::Own(_))
        ));
        assert!(tls.config_for(Some("other.example.test")).is_err());
        assert!(matches!(tls.config_for(None), Ok(Terminator::Mesh)));
    }
}
