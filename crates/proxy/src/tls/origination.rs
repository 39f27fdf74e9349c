//! TLS origination to servers outside the mesh (DestinationRule `tls`
//! SIMPLE and MUTUAL): certificates and keys are files on the proxy's
//! side, read when a setting is first used (a change of the files needs a
//! config change or a restart to be seen), or PEM weftd pushes from a
//! `credentialName` (a renewed credential arrives as a new config).

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::{ClientConfig, DigitallySignedStruct, Error, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use weft_proto::proxy::v1::client_tls::Mode;

use super::MeshTls;
use super::upstream::{Carries, Origination};

/// Where Debian-like systems keep the public roots, used by SIMPLE when no
/// `caCertificates` is given (as Envoy uses the system's).
const SYSTEM_ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";

/// `Origination::cache_key` and the ALPN protocol offered.
type CacheKey = (Arc<[u8]>, &'static str);

#[derive(Default)]
pub(crate) struct Cache {
    configs: Mutex<HashMap<CacheKey, Arc<ClientConfig>>>,
}

impl MeshTls {
    pub(crate) fn origination_config(
        &self,
        origination: &Origination,
        carries: Carries,
    ) -> io::Result<Arc<ClientConfig>> {
        let alpn = match carries {
            Carries::Tcp => "",
            Carries::Http1 => "http/1.1",
            Carries::Http2 => "h2",
        };
        let key = (origination.cache_key.clone(), alpn);
        let mut configs = self
            .origination
            .configs
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(config) = configs.get(&key) {
            return Ok(config.clone());
        }
        let config = Arc::new(build(self, origination, alpn).map_err(|message| {
            io::Error::other(format!(
                "TLS origination to {:?}: {message}",
                origination.server_name
            ))
        })?);
        configs.insert(key, config.clone());
        Ok(config)
    }
}

fn build(context: &MeshTls, origination: &Origination, alpn: &str) -> Result<ClientConfig, String> {
    let settings = &origination.settings;
    let provider = context.provider.clone();
    let verifier: Arc<dyn ServerCertVerifier> = if settings.insecure_skip_verify {
        Arc::new(AcceptAny(provider.clone()))
    } else {
        // Pushed PEM (credentialName) first, then the file, then the system.
        let source = if !settings.ca_certificates_pem.is_empty() {
            Source::Pushed(&settings.ca_certificates_pem, &settings.credential_name)
        } else if settings.ca_certificates.is_empty() {
            Source::File(SYSTEM_ROOTS)
        } else {
            Source::File(&settings.ca_certificates)
        };
        let mut roots = RootCertStore::empty();
        for der in certificates("caCertificates", &source)? {
            roots
                .add(der)
                .map_err(|err| format!("caCertificates {source}: {err}"))?;
        }
        let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|err| format!("caCertificates {source}: {err}"))?;
        if settings.subject_alt_names.is_empty() {
            inner
        } else {
            Arc::new(AnyOfNames {
                inner,
                names: settings.subject_alt_names.clone(),
            })
        }
    };
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|err| err.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = if settings.mode() == Mode::Mutual {
        let (chain, key) = if settings.certificate_pem.is_empty() {
            let source = Source::File(&settings.client_certificate);
            let key = PrivateKeyDer::from_pem_file(&settings.private_key)
                .map_err(|err| format!("privateKey {}: {err}", settings.private_key))?;
            (certificates("clientCertificate", &source)?, key)
        } else {
            let source = Source::Pushed(&settings.certificate_pem, &settings.credential_name);
            let key = PrivateKeyDer::from_pem_slice(settings.private_key_pem.as_bytes())
                .map_err(|err| format!("privateKey {source}: {err}"))?;
            (certificates("clientCertificate", &source)?, key)
        };
        builder
            .with_client_auth_cert(chain, key)
            .map_err(|err| format!("clientCertificate/privateKey: {err}"))?
    } else {
        builder.with_no_client_auth()
    };
    if !alpn.is_empty() {
        config.alpn_protocols = vec![alpn.as_bytes().to_vec()];
    }
    Ok(config)
}

/// Where PEM comes from: a file on the proxy's side, or pushed by weftd
/// from a credential (PEM, credential name).
enum Source<'a> {
    File(&'a str),
    Pushed(&'a str, &'a str),
}

impl std::fmt::Display for Source<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File(path) => f.write_str(path),
            Self::Pushed(_, name) => write!(f, "from credentialName {name:?}"),
        }
    }
}

/// Every certificate in `source`; an error names the setting `field` and
/// where the PEM came from.
fn certificates(field: &str, source: &Source<'_>) -> Result<Vec<CertificateDer<'static>>, String> {
    let found = match source {
        Source::File(path) => CertificateDer::pem_file_iter(path).and_then(|certs| certs.collect()),
        Source::Pushed(pem, _) => CertificateDer::pem_slice_iter(pem.as_bytes()).collect(),
    };
    found.map_err(|err| format!("{field} {source}: {err}"))
}

/// `subjectAltNames`: the server is accepted when its certificate is valid
/// for any one of them.
#[derive(Debug)]
struct AnyOfNames {
    inner: Arc<WebPkiServerVerifier>,
    names: Vec<String>,
}

impl ServerCertVerifier for AnyOfNames {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let mut last = Error::General("no subjectAltNames".into());
        for name in &self.names {
            let Ok(name) = ServerName::try_from(name.as_str()) else {
                continue;
            };
            match self.inner.verify_server_cert(
                end_entity,
                intermediates,
                &name,
                ocsp_response,
                now,
            ) {
                Ok(verified) => return Ok(verified),
                Err(err) => last = err,
            }
        }
        Err(last)
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

/// `insecureSkipVerify: true`: any certificate (signatures still checked).
/// Also the app probes' HTTPS, which verifies nothing as the kubelet's.
#[derive(Debug)]
pub(crate) struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);

impl AcceptAny {
    pub(crate) fn new(provider: Arc<rustls::crypto::CryptoProvider>) -> Self {
        Self(provider)
    }
}

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        Ok(ServerCertVerified::assertion())
    }

    signatures_checked_by_provider!(0);
}
