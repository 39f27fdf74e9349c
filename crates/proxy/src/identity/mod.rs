//! The proxy's workload identity: its SPIFFE id, the certificate weftd
//! signed for it, and the mesh's trust anchors.
//!
//! Contract: [`Identity::certified_key`] is whatever certificate is current;
//! a rotation swaps it atomically, so new handshakes use the new one while
//! established connections keep the session they negotiated. The mesh's
//! roots start as the held root ([`trust`], `--ca-root`) and change only
//! through [`Identity::set_roots`] (the CSR answer, or a push), which
//! accepts a bundle only if the held root vouches for every certificate in
//! it; a refused bundle is logged and shown on `/certs`.

pub mod control_plane;
pub mod fetch;
pub mod trust;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::{ArcSwap, ArcSwapOption};
use rustls::RootCertStore;
use rustls::sign::CertifiedKey;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tokio::sync::watch;
use trust::HeldRoot;
use x509_parser::extensions::GeneralName;

/// One issued certificate with its key, ready for rustls.
pub struct WorkloadCert {
    pub key: Arc<CertifiedKey>,
    pub chain_pem: String,
    pub serial: String,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    pub issued_at: SystemTime,
}

impl WorkloadCert {
    pub fn lifetime(&self) -> Duration {
        self.not_after
            .duration_since(self.not_before)
            .unwrap_or_default()
    }
}

/// The mesh's trust anchors.
pub struct Roots {
    pub pem: String,
    pub store: Arc<RootCertStore>,
}

pub struct Identity {
    /// `spiffe://<trust domain>/ns/<namespace>/sa/<service account>`.
    pub spiffe: String,
    /// The anchor from `--ca-root`: what every new bundle is checked against.
    held: Arc<HeldRoot>,
    /// Why the last bundle weftd sent was refused, for `/certs`.
    rejected_bundle: std::sync::Mutex<Option<String>>,
    current: ArcSwapOption<WorkloadCert>,
    roots: ArcSwap<Roots>,
    /// Bumped on every certificate or root change.
    changes: watch::Sender<u64>,
    /// The last failure to get a certificate, for `/certs` and readiness.
    last_error: std::sync::Mutex<Option<String>>,
}

impl Identity {
    /// An identity without a certificate yet, trusting `held` alone.
    pub fn new(spiffe: String, held: Arc<HeldRoot>) -> Arc<Self> {
        let anchors = held.anchors();
        Arc::new(Self {
            spiffe,
            held,
            rejected_bundle: std::sync::Mutex::new(None),
            current: ArcSwapOption::empty(),
            roots: ArcSwap::from_pointee(Roots {
                pem: anchors.pem.clone(),
                store: anchors.store.clone(),
            }),
            changes: watch::channel(0).0,
            last_error: std::sync::Mutex::new(None),
        })
    }

    /// The principal form (no `spiffe://`), as policies write it.
    pub fn principal(&self) -> &str {
        self.spiffe
            .strip_prefix("spiffe://")
            .unwrap_or(&self.spiffe)
    }

    pub fn current(&self) -> Option<Arc<WorkloadCert>> {
        self.current.load_full()
    }

    pub fn certified_key(&self) -> Option<Arc<CertifiedKey>> {
        self.current.load().as_ref().map(|c| c.key.clone())
    }

    pub fn roots(&self) -> Arc<Roots> {
        self.roots.load_full()
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(crate) fn set_error(&self, error: Option<String>) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = error;
    }

    pub fn install(&self, cert: WorkloadCert) {
        self.current.store(Some(Arc::new(cert)));
        self.set_error(None);
        self.changes.send_modify(|n| *n += 1);
    }

    pub fn held_root(&self) -> &Arc<HeldRoot> {
        &self.held
    }

    /// Replaces the trust anchors when `pem` differs from the current ones
    /// and the held root vouches for each of its certificates.
    pub fn set_roots(&self, pem: &str) -> Result<(), String> {
        if pem.is_empty() || self.roots.load().pem == pem {
            return Ok(());
        }
        if let Err(why) = self.held.check_bundle(pem) {
            let why = format!("trust bundle from weftd refused: {why}");
            *self
                .rejected_bundle
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = Some(why.clone());
            return Err(why);
        }
        let mut store = RootCertStore::empty();
        for der in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            let der = der.map_err(|err| format!("trust bundle: {err}"))?;
            store
                .add(der)
                .map_err(|err| format!("trust bundle: {err}"))?;
        }
        if store.is_empty() {
            return Err("trust bundle: no certificate in it".into());
        }
        self.roots.store(Arc::new(Roots {
            pem: pem.to_string(),
            store: Arc::new(store),
        }));
        tracing::info!("trust bundle updated");
        self.changes.send_modify(|n| *n += 1);
        Ok(())
    }

    /// After the operator replaced `--ca-root`: roots the new anchor does
    /// not vouch for are dropped for the anchor itself (weftd sends its
    /// bundle again with the next certificate or stream).
    pub fn held_root_changed(&self) {
        if self.held.check_bundle(&self.roots.load().pem).is_ok() {
            return;
        }
        let anchors = self.held.anchors();
        self.roots.store(Arc::new(Roots {
            pem: anchors.pem.clone(),
            store: anchors.store.clone(),
        }));
        tracing::warn!("the new held root does not vouch for the current trust bundle: replaced");
        self.changes.send_modify(|n| *n += 1);
    }

    /// What `/certs` shows.
    pub fn describe(&self) -> serde_json::Value {
        let seconds = |t: SystemTime| t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let certificate = self.current().map(|cert| {
            serde_json::json!({
                "serialNumber": cert.serial,
                "validFrom": seconds(cert.not_before),
                "expirationTime": seconds(cert.not_after),
                "issuedAt": seconds(cert.issued_at),
                "certChain": cert.chain_pem,
            })
        });
        serde_json::json!({
            "identity": self.spiffe,
            "certificate": certificate,
            "rootCertificates": self.roots().pem,
            "heldRoot": self.held.path().display().to_string(),
            "rejectedBundle": self
                .rejected_bundle
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            "lastError": self.last_error(),
        })
    }
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("spiffe", &self.spiffe)
            .finish()
    }
}

/// The SPIFFE URI SANs of a DER certificate (URI SANs only: a DNS or
/// email SAN spelled like a SPIFFE id is not one).
pub fn spiffe_ids(der: &[u8]) -> Vec<String> {
    sans(der, |name| match name {
        GeneralName::URI(uri) if uri.starts_with("spiffe://") => Some(uri.to_string()),
        _ => None,
    })
}

/// Every DNS, URI, email and IP SAN of a certificate, as text.
pub fn subject_alt_names(der: &[u8]) -> Vec<String> {
    sans(der, |name| match name {
        GeneralName::DNSName(n) | GeneralName::URI(n) | GeneralName::RFC822Name(n) => {
            Some(n.to_string())
        }
        GeneralName::IPAddress(bytes) => match bytes.len() {
            4 => <[u8; 4]>::try_from(*bytes)
                .ok()
                .map(|b| std::net::IpAddr::from(b).to_string()),
            16 => <[u8; 16]>::try_from(*bytes)
                .ok()
                .map(|b| std::net::IpAddr::from(b).to_string()),
            _ => None,
        },
        _ => None,
    })
}

/// The SANs of a DER certificate that `pick` turns into text; none when the
/// certificate does not parse.
fn sans(der: &[u8], pick: impl Fn(&GeneralName<'_>) -> Option<String>) -> Vec<String> {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return Vec::new();
    };
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value.general_names.iter().filter_map(pick).collect()
}
