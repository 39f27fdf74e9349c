//! The held root: the trust anchor this proxy got out of band
//! (`--ca-root FILE`), never from weftd itself.
//!
//! Contract:
//! - weftd's serving certificate is verified against the held root only
//!   ([`crate::identity::control_plane`]);
//! - a trust bundle weftd sends (with a certificate, or pushed on the
//!   stream) is accepted only if every certificate in it is a held root or
//!   is signed by one ([`HeldRoot::check_bundle`]): a weftd, or anyone
//!   posing as one, cannot swap the mesh's anchors;
//! - the file is re-read every few seconds ([`HeldRoot::watch`]), so an
//!   operator rotates the anchor out of band by replacing it; a file that
//!   becomes unreadable or empty keeps the last good anchor (logged).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::RootCertStore;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use x509_parser::prelude::{FromDer, X509Certificate};

/// How often `--ca-root` is checked for a new anchor.
pub const POLL_INTERVAL: Duration = Duration::from_secs(5);

/// One version of the held root file.
pub struct Anchors {
    pub pem: String,
    pub ders: Vec<CertificateDer<'static>>,
    pub store: Arc<RootCertStore>,
}

impl Anchors {
    fn parse(pem: &str, source: &Path) -> Result<Self, String> {
        let ders: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|err| format!("{}: not PEM certificates: {err}", source.display()))?;
        let mut store = RootCertStore::empty();
        for der in &ders {
            store
                .add(der.clone())
                .map_err(|err| format!("{}: not a usable root: {err}", source.display()))?;
        }
        if store.is_empty() {
            return Err(format!("{}: holds no certificate", source.display()));
        }
        Ok(Self {
            pem: pem.to_string(),
            ders,
            store: Arc::new(store),
        })
    }
}

pub struct HeldRoot {
    path: PathBuf,
    current: ArcSwap<Anchors>,
}

impl HeldRoot {
    /// Reads `path`; a missing or unusable file is an error at start.
    pub fn load(path: &Path) -> anyhow::Result<Arc<Self>> {
        let pem = std::fs::read_to_string(path).map_err(|err| {
            anyhow::anyhow!(
                "--ca-root {}: cannot read the held root: {err} (copy weftd's \
                 <state-dir>/root-cert.pem here)",
                path.display()
            )
        })?;
        let anchors = Anchors::parse(&pem, path).map_err(anyhow::Error::msg)?;
        Ok(Arc::new(Self {
            path: path.to_path_buf(),
            current: ArcSwap::from_pointee(anchors),
        }))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn anchors(&self) -> Arc<Anchors> {
        self.current.load_full()
    }

    /// Accepts `bundle_pem` only if each certificate in it is a held root
    /// or is signed by one. The error names the certificate refused.
    pub fn check_bundle(&self, bundle_pem: &str) -> Result<(), String> {
        let anchors = self.anchors();
        let bundle: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(bundle_pem.as_bytes())
                .collect::<Result<_, _>>()
                .map_err(|err| format!("the trust bundle is not PEM certificates: {err}"))?;
        if bundle.is_empty() {
            return Err("the trust bundle holds no certificate".into());
        }
        for der in &bundle {
            if anchors.ders.contains(der) {
                continue;
            }
            let (_, cert) = X509Certificate::from_der(der)
                .map_err(|err| format!("a trust bundle certificate cannot be read: {err}"))?;
            let signed_by_held = anchors.ders.iter().any(|held| {
                X509Certificate::from_der(held)
                    .is_ok_and(|(_, held)| cert.verify_signature(Some(held.public_key())).is_ok())
            });
            if !signed_by_held {
                return Err(format!(
                    "the trust bundle holds {:?}, which is neither the held root ({}) nor signed \
                     by it",
                    cert.subject().to_string(),
                    self.path.display()
                ));
            }
        }
        Ok(())
    }

    /// Polls the file forever; `on_change` runs after each new anchor.
    pub async fn watch(self: Arc<Self>, interval: Duration, on_change: impl Fn()) {
        loop {
            tokio::time::sleep(interval).await;
            let pem = match std::fs::read_to_string(&self.path) {
                Ok(pem) => pem,
                Err(err) => {
                    tracing::error!(
                        "--ca-root {}: cannot read ({err}); keeping the held root",
                        self.path.display()
                    );
                    continue;
                }
            };
            if pem == self.anchors().pem {
                continue;
            }
            match Anchors::parse(&pem, &self.path) {
                Ok(anchors) => {
                    self.current.store(Arc::new(anchors));
                    tracing::info!("--ca-root {}: new held root", self.path.display());
                    on_change();
                }
                Err(err) => tracing::error!("{err}; keeping the held root"),
            }
        }
    }
}

impl std::fmt::Debug for HeldRoot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeldRoot")
            .field("path", &self.path)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

    fn ca(name: &str) -> (String, Issuer<'static, KeyPair>) {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).expect("self-signed");
        (cert.pem(), Issuer::new(params, key))
    }

    #[test]
    fn bundles_hold_only_the_held_root_or_what_it_signed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (held_pem, held) = ca("held");
        let path = dir.path().join("root.pem");
        std::fs::write(&path, &held_pem).expect("write");
        let root = HeldRoot::load(&path).expect("load");

        assert!(root.check_bundle(&held_pem).is_ok(), "the held root itself");
        // A new root signed by the held one (a rotation announced in band).
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let next = params.signed_by(&key, &held).expect("signed");
        assert!(
            root.check_bundle(&format!("{held_pem}{}", next.pem()))
                .is_ok()
        );

        let (foreign_pem, _) = ca("foreign");
        let err = root
            .check_bundle(&format!("{held_pem}{foreign_pem}"))
            .expect_err("foreign root");
        assert!(err.contains("foreign"), "{err}");
        assert!(root.check_bundle("").is_err());
    }

    #[test]
    fn an_unusable_file_is_refused_at_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("root.pem");
        assert!(HeldRoot::load(&path).is_err(), "missing");
        std::fs::write(&path, "not pem").expect("write");
        let err = HeldRoot::load(&path).expect_err("garbage").to_string();
        assert!(err.contains("root.pem"), "{err}");
    }
}
