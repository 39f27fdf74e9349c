//! Getting and renewing the workload certificate from weftd.
//!
//! The key is made here and never leaves the process: weftd gets a CSR over
//! TLS ([`crate::identity::control_plane`]). The first certificate is asked for
//! without a client certificate, with the bootstrap token (read from its
//! file on every attempt, so replacing the file is enough to fix a bad
//! one); renewals present the current certificate instead (mutual TLS) and
//! send no token, until it has expired. The lifetime is weftd's choice.
//! A certificate is renewed at half
//! its remaining life, ±1% jitter (Istio's `SECRET_GRACE_PERIOD_RATIO` and
//! its jitter) so proxies started together do not renew together. Failures
//! retry with backoff, and the current certificate keeps serving meanwhile.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use rcgen::{CertificateParams, DistinguishedName, KeyPair, SanType};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use weft_proto::discovery::v1::SignRequest;
use weft_proto::discovery::v1::certificates_client::CertificatesClient;

use super::{Identity, WorkloadCert};
use crate::identity::control_plane::ControlPlane;

const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Never renew more often than this, whatever the lifetime.
const MIN_RENEWAL: Duration = Duration::from_millis(500);

pub struct FetchOptions {
    /// weftd's TLS port and how to verify it.
    pub ca: ControlPlane,
    pub token_file: PathBuf,
}

/// Runs forever: get a certificate, sleep until renewal, repeat.
pub async fn run(options: FetchOptions, identity: Arc<Identity>) {
    let mut backoff = FIRST_BACKOFF;
    // After a failed renewal the token is tried (weftd may have a new CA
    // that no longer accepts the current certificate).
    let mut renewal_failed = false;
    loop {
        let started = Instant::now();
        match request(&options, &identity, !renewal_failed).await {
            Ok(cert) => {
                renewal_failed = false;
                let renew_in = renewal_delay(&cert);
                tracing::info!(
                    identity = %identity.spiffe,
                    serial = %cert.serial,
                    "workload certificate issued in {:?}, valid for {:?}, renewing in {renew_in:?}",
                    started.elapsed(),
                    cert.not_after.duration_since(SystemTime::now()).unwrap_or_default(),
                );
                identity.install(cert);
                backoff = FIRST_BACKOFF;
                renewal_due(&identity, renew_in).await;
            }
            Err(err) => {
                renewal_failed = identity.current().is_some();
                let message = format!("{err:#}");
                tracing::error!(
                    identity = %identity.spiffe,
                    "cannot get a workload certificate from weftd at {}: {message}; retrying in {backoff:?}",
                    options.ca.address
                );
                identity.set_error(Some(message));
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// Waits `renew_in`, or less when weftd's roots change under the current
/// certificate (a new CA): peers would no longer accept it.
async fn renewal_due(identity: &Identity, renew_in: Duration) {
    let issued_under = identity.roots().pem.clone();
    let mut changes = identity.subscribe();
    let deadline = tokio::time::sleep(renew_in);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            () = &mut deadline => return,
            changed = changes.changed() => {
                if changed.is_err() {
                    return deadline.await;
                }
                if identity.roots().pem != issued_under {
                    tracing::info!("trust bundle changed: renewing the workload certificate now");
                    return;
                }
            }
        }
    }
}

/// Half of what is left of the certificate's life, ±1%.
fn renewal_delay(cert: &WorkloadCert) -> Duration {
    let left = cert
        .not_after
        .duration_since(cert.issued_at)
        .unwrap_or_default();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    // 0.49 ..= 0.51
    let ratio = 0.49 + f64::from(nanos % 1000) / 50_000.0;
    left.mul_f64(ratio).max(MIN_RENEWAL)
}

async fn request(
    options: &FetchOptions,
    identity: &Identity,
    renew_with_certificate: bool,
) -> anyhow::Result<WorkloadCert> {
    // A valid certificate renews itself; the token is for the first one
    // (and after a restart, a failed renewal, or once it has expired).
    let presented = identity
        .current()
        .filter(|_| renew_with_certificate)
        .filter(|cert| cert.not_after > SystemTime::now() + Duration::from_secs(5));
    let token = match &presented {
        Some(_) => String::new(),
        None => std::fs::read_to_string(&options.token_file).with_context(|| {
            format!(
                "cannot read the token file {}",
                options.token_file.display()
            )
        })?,
    };
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names =
        vec![SanType::URI(identity.spiffe.clone().try_into().map_err(
            |_| anyhow::anyhow!("identity {:?} is not ASCII", identity.spiffe),
        )?)];
    let csr_pem = params.serialize_request(&key)?.pem()?;

    let channel = options
        .ca
        .channel(presented.map(|cert| cert.key.clone()), Some(CALL_TIMEOUT))
        .await?;
    let issued_at = SystemTime::now();
    let response = CertificatesClient::new(channel)
        .sign(SignRequest {
            token: token.trim().to_string(),
            csr_pem,
            // weftd's choice (`--workload-cert-ttl`).
            ttl: None,
        })
        .await
        .map_err(|status| anyhow::anyhow!("{} ({:?})", status.message(), status.code()))?
        .into_inner();

    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(response.cert_chain_pem.as_bytes())
            .collect::<Result<_, _>>()
            .context("weftd sent an unreadable certificate chain")?;
    let Some(leaf) = chain.first() else {
        bail!("weftd sent an empty certificate chain");
    };
    if !super::spiffe_ids(leaf).contains(&identity.spiffe) {
        bail!("weftd signed a certificate without {}", identity.spiffe);
    }
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf)
        .map_err(|err| anyhow::anyhow!("weftd sent an unreadable certificate: {err}"))?;
    let at = |seconds: i64| UNIX_EPOCH + Duration::from_secs(u64::try_from(seconds).unwrap_or(0));
    let not_before = at(parsed.validity().not_before.timestamp());
    let not_after = at(parsed.validity().not_after.timestamp());
    let serial = parsed.raw_serial_as_string();
    let private = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let certified = CertifiedKey::from_der(chain, private, &provider)
        .context("the certificate does not match the key")?;
    // A bundle the held root does not vouch for is refused (and shown on
    // /certs); the certificate itself came over TLS verified with it.
    if let Err(err) = identity.set_roots(&response.root_bundle_pem) {
        tracing::error!("{err}");
    }
    Ok(WorkloadCert {
        key: Arc::new(certified),
        chain_pem: response.cert_chain_pem,
        serial,
        not_before,
        not_after,
        issued_at,
    })
}
