//! weftd's certificate authority (Istio's Citadel).
//!
//! Two ways to get a signing certificate:
//! - **self-signed** (default): on first start an ECDSA P-256 root is made
//!   and kept in `<state-dir>/ca/` (`root-cert.pem`, `root-key.pem`, the
//!   key readable by its owner only), so a restart keeps the trust chain;
//! - **plug-in** (`--cacerts DIR`): Istio's `cacerts` layout, `ca-cert.pem`
//!   and `ca-key.pem` (the signing certificate and key, usually an
//!   intermediate), `root-cert.pem` (the trust anchor) and `cert-chain.pem`
//!   (from `ca-cert.pem` up to the root), handed to workloads after their
//!   own certificate.
//!
//! Workload certificates carry one URI SAN, the SPIFFE identity the
//! caller proves (a bootstrap token, [`token`], or the certificate being
//! renewed), and the binding ([`binding`]: WorkloadGroup and address) that
//! proof carried; whatever else a CSR asks for is ignored, the lifetime
//! included (weftd's `--workload-cert-ttl`). The CSR's key is used, never
//! seen otherwise: private keys stay with the proxies.
//!
//! weftd's own serving certificate for discovery and signing
//! ([`listener`]) comes from the same issuer, so a proxy that holds the
//! root verifies weftd with it.
//!
//! Files: `<state-dir>/ca/` is 0700, keys 0600, every write fsync'd
//! ([`crate::durable`]); the root is also written to
//! `<state-dir>/root-cert.pem` (0644) for out-of-band distribution.

pub mod binding;
pub mod caller;
pub mod kube;
pub mod listener;
pub mod service;
pub mod token;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};

use crate::durable::{self, Mode};
use caller::ProvenIdentity;
pub use token::{TokenClaims, TokenSigner};

/// Istio's defaults (`DefaultWorkloadCertTTL`, `DefaultMaxWorkloadCertTTL`).
pub const DEFAULT_WORKLOAD_TTL: Duration = Duration::from_secs(24 * 3600);
pub const MAX_WORKLOAD_TTL: Duration = Duration::from_secs(90 * 24 * 3600);
/// The self-signed root's lifetime: ten years, as Istio's current default.
const ROOT_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// weftd's serving certificate: re-issued at every start and renewed at
/// half-life by the listener, so a year is only an upper bound.
pub const SERVING_TTL: Duration = Duration::from_secs(365 * 24 * 3600);
/// Certificates start a little in the past so that a peer whose clock is
/// slightly behind still accepts them.
const CLOCK_SKEW: Duration = Duration::from_secs(60);

/// CA settings from weftd's flags.
#[derive(Debug, Clone)]
pub struct CaOptions {
    pub state_dir: PathBuf,
    /// Istio `cacerts` directory; none: self-signed root in the state dir.
    pub cacerts: Option<PathBuf>,
    pub trust_domain: String,
    pub workload_ttl: Duration,
}

/// A SPIFFE workload identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpiffeId {
    pub trust_domain: String,
    pub namespace: String,
    pub service_account: String,
}

impl SpiffeId {
    pub fn uri(&self) -> String {
        format!(
            "spiffe://{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service_account
        )
    }
}

pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    /// Certificates sent after the workload's own: the signing certificate
    /// and its chain up to (not always including) the root.
    chain_pem: String,
    roots_pem: String,
    trust_domain: String,
    workload_ttl: Duration,
    tokens: TokenSigner,
}

impl Ca {
    /// Loads the plug-in CA, or the self-signed root (made on first start).
    pub fn open(options: &CaOptions) -> anyhow::Result<Self> {
        if options.workload_ttl.is_zero() || options.workload_ttl > MAX_WORKLOAD_TTL {
            bail!(
                "--workload-cert-ttl {:?}: must be above zero and at most 90 days",
                options.workload_ttl
            );
        }
        durable::private_dir(&options.state_dir).with_context(|| {
            format!(
                "cannot create the state directory {}",
                options.state_dir.display()
            )
        })?;
        let dir = options.state_dir.join("ca");
        durable::private_dir(&dir)
            .with_context(|| format!("cannot create the CA directory {}", dir.display()))?;
        let (issuer, chain_pem, roots_pem) = match &options.cacerts {
            Some(cacerts) => plug_in(cacerts)?,
            None => self_signed(&dir, &options.trust_domain)?,
        };
        let source = options.cacerts.clone().unwrap_or_else(|| dir.clone());
        self_check(&issuer, &chain_pem, &roots_pem).map_err(|err| {
            anyhow::anyhow!(
                "CA files in {}: a certificate signed with them does not verify against the roots \
                 ({err}); check that ca-key.pem belongs to ca-cert.pem and that cert-chain.pem \
                 leads to root-cert.pem",
                source.display()
            )
        })?;
        let published = options.state_dir.join("root-cert.pem");
        durable::write(&published, roots_pem.as_bytes(), Mode::Public)
            .with_context(|| format!("cannot write {}", published.display()))?;
        Ok(Self {
            issuer,
            chain_pem,
            roots_pem,
            trust_domain: options.trust_domain.clone(),
            workload_ttl: options.workload_ttl,
            tokens: TokenSigner::open(&dir, &options.trust_domain)?,
        })
    }

    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// The trust anchors every proxy verifies peers against, PEM.
    pub fn roots_pem(&self) -> &str {
        &self.roots_pem
    }

    pub fn tokens(&self) -> &TokenSigner {
        &self.tokens
    }

    /// weftd's certificate lifetime for workloads (`--workload-cert-ttl`).
    pub fn workload_ttl(&self) -> Duration {
        self.workload_ttl
    }

    /// Signs `csr_pem` for `proven`: the CSR must ask for exactly its
    /// SPIFFE URI (and no other name). The certificate carries the binding
    /// and lives `--workload-cert-ttl`, whatever the caller asked for.
    /// Returns the chain, workload first.
    pub fn sign(&self, csr_pem: &str, proven: &ProvenIdentity) -> Result<String, SignError> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|err| SignError::BadCsr(err.to_string()))?;
        let wanted = proven.spiffe.uri();
        let asked: Vec<String> = csr
            .params
            .subject_alt_names
            .iter()
            .map(|san| match san {
                SanType::URI(uri) => uri.as_str().to_string(),
                other => format!("{other:?}"),
            })
            .collect();
        if asked != [wanted.clone()] {
            return Err(SignError::NotAllowed(format!(
                "the credential proves {wanted}, the CSR asks for {asked:?}"
            )));
        }
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        set_validity(&mut params, self.workload_ttl.min(MAX_WORKLOAD_TTL));
        params.subject_alt_names =
            vec![SanType::URI(wanted.clone().try_into().map_err(|_| {
                SignError::NotAllowed(format!("{wanted:?} is not ASCII"))
            })?)];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.custom_extensions = vec![binding::extension(
            proven.workload_group.as_deref(),
            proven.address,
        )];
        params.use_authority_key_identifier_extension = true;
        let request = CertificateSigningRequestParams {
            params,
            public_key: csr.public_key,
        };
        let certificate = request
            .signed_by(&self.issuer)
            .map_err(|err| SignError::Internal(err.to_string()))?;
        Ok(format!("{}{}", certificate.pem(), self.chain_pem))
    }

    /// A server certificate for weftd itself (the discovery/CA listener)
    /// with `names` as SANs (DNS names or IPs): the chain PEM, leaf first,
    /// and the new key. The key is made here and only kept in memory.
    pub fn issue_serving(&self, names: &[SanType]) -> anyhow::Result<(String, KeyPair)> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        let mut subject = DistinguishedName::new();
        subject.push(DnType::CommonName, "weftd");
        params.distinguished_name = subject;
        set_validity(&mut params, SERVING_TTL);
        params.subject_alt_names = names.to_vec();
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        // Server auth only: this certificate cannot pose as a workload.
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok((format!("{}{}", cert.pem(), self.chain_pem), key))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("the CSR cannot be read: {0}")]
    BadCsr(String),
    #[error("refused: {0}")]
    NotAllowed(String),
    #[error("signing failed: {0}")]
    Internal(String),
}

/// Valid from a little before now for `ttl` (rcgen's dates are built from
/// the epoch, so weftd needs no date crate of its own).
fn set_validity(params: &mut CertificateParams, ttl: Duration) {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let now = rcgen::date_time_ymd(1970, 1, 1) + since_epoch;
    params.not_before = now - CLOCK_SKEW;
    params.not_after = now + ttl;
}

fn read(dir: &Path, name: &str) -> anyhow::Result<String> {
    let path = dir.join(name);
    std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))
}

fn plug_in(dir: &Path) -> anyhow::Result<(Issuer<'static, KeyPair>, String, String)> {
    let ca_cert = read(dir, "ca-cert.pem")?;
    let ca_key = read(dir, "ca-key.pem")?;
    let root = read(dir, "root-cert.pem")?;
    let chain = read(dir, "cert-chain.pem")?;
    let key = KeyPair::from_pem(&ca_key).with_context(|| {
        format!(
            "{}: not a usable private key",
            dir.join("ca-key.pem").display()
        )
    })?;
    let issuer = Issuer::from_ca_cert_pem(&ca_cert, key).with_context(|| {
        format!(
            "{}: not a usable CA certificate",
            dir.join("ca-cert.pem").display()
        )
    })?;
    tracing::info!("CA: plug-in certificates from {}", dir.display());
    Ok((issuer, ensure_newline(chain), ensure_newline(root)))
}

fn self_signed(
    dir: &Path,
    trust_domain: &str,
) -> anyhow::Result<(Issuer<'static, KeyPair>, String, String)> {
    let cert_path = dir.join("root-cert.pem");
    let key_path = dir.join("root-key.pem");
    if cert_path.exists() && key_path.exists() {
        let cert = read(dir, "root-cert.pem")?;
        let key = KeyPair::from_pem(&read(dir, "root-key.pem")?)
            .with_context(|| format!("{}: not a usable private key", key_path.display()))?;
        let issuer = Issuer::from_ca_cert_pem(&cert, key)
            .with_context(|| format!("{}: not a usable CA certificate", cert_path.display()))?;
        tracing::info!("CA: self-signed root from {}", cert_path.display());
        return Ok((issuer, String::new(), cert));
    }
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::OrganizationName, trust_domain);
    name.push(DnType::CommonName, "Weft root CA");
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    set_validity(&mut params, ROOT_TTL);
    let cert = params.self_signed(&key)?;
    write_private(&key_path, &key.serialize_pem())?;
    durable::write(&cert_path, cert.pem().as_bytes(), Mode::Public)
        .with_context(|| format!("cannot write {}", cert_path.display()))?;
    tracing::info!("CA: new self-signed root in {}", cert_path.display());
    Ok((Issuer::new(params, key), String::new(), cert.pem()))
}

/// Signs a throwaway workload certificate and verifies it as a peer would:
/// a key that does not match its certificate, or a chain that does not
/// reach the roots, is found at start-up rather than at the first handshake.
fn self_check(
    issuer: &Issuer<'static, KeyPair>,
    chain_pem: &str,
    roots_pem: &str,
) -> anyhow::Result<()> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, UnixTime};

    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    set_validity(&mut params, Duration::from_secs(300));
    params.subject_alt_names = vec![SanType::URI(
        "spiffe://weft.invalid/ns/weft/sa/ca-self-check".try_into()?,
    )];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let leaf = params.signed_by(&key, issuer)?;
    let roots: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(roots_pem.as_bytes()).collect::<Result<_, _>>()?;
    let anchors = roots
        .iter()
        .map(|der| webpki::anchor_from_trusted_cert(der).map(|a| a.to_owned()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| anyhow::anyhow!("root-cert.pem: {err}"))?;
    let intermediates: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(chain_pem.as_bytes()).collect::<Result<_, _>>()?;
    let end_entity =
        webpki::EndEntityCert::try_from(leaf.der()).map_err(|err| anyhow::anyhow!("{err}"))?;
    end_entity
        .verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &anchors,
            &intermediates,
            UnixTime::now(),
            webpki::KeyUsage::client_auth(),
            None,
            None,
        )
        .map_err(|err| anyhow::anyhow!("{err}"))?;
    Ok(())
}

/// Writes a file only its owner can read (a private key), durably.
pub(crate) fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    durable::write(path, text.as_bytes(), Mode::Private)
        .with_context(|| format!("cannot write {}", path.display()))
}

fn ensure_newline(mut text: String) -> String {
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests;
