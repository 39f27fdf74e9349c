//! The `Certificates.Sign` gRPC call, served on weftd's TLS port only.
//!
//! Who may get what ([`Caller`], decided by the listener):
//! - a caller without a client certificate ([`Caller::Anonymous`]) gets its
//!   first certificate with a valid bootstrap token: the identity and the
//!   binding (WorkloadGroup, address) are the token's;
//! - a caller presenting its workload certificate ([`Caller::Workload`])
//!   renews it: the same identity and binding, no token needed;
//! - the plaintext port ([`Caller::Plaintext`]) proves nothing: refused.
//!
//! The lifetime a caller asks for is ignored: weftd's `--workload-cert-ttl`.

use std::sync::Arc;
use std::time::Instant;

use tonic::{Request, Response, Status};
use weft_proto::discovery::v1::certificates_server::Certificates;
pub use weft_proto::discovery::v1::certificates_server::CertificatesServer;
use weft_proto::discovery::v1::{SignRequest, SignResponse};

use super::caller::{Caller, ProvenIdentity};
use super::kube::KubeIdentity;
use super::{Ca, SignError};

pub struct CertificateService {
    ca: Arc<Ca>,
    /// Kubernetes mode: service-account tokens (TokenReview) as well.
    kube: Option<KubeIdentity>,
}

impl CertificateService {
    pub fn new(ca: Arc<Ca>) -> Self {
        Self { ca, kube: None }
    }

    /// Also accepts pods' projected service-account tokens (ca/kube.rs).
    pub fn with_kubernetes(mut self, kube: KubeIdentity) -> Self {
        self.kube = Some(kube);
        self
    }

    /// What the caller proves, or why it proves nothing.
    #[allow(clippy::result_large_err)]
    fn prove(&self, caller: Option<Caller>, token: &str) -> Result<ProvenIdentity, Status> {
        match caller {
            Some(Caller::Workload { identity, .. }) => Ok(identity),
            Some(Caller::Anonymous { peer }) => {
                if token.trim().is_empty() {
                    return Err(Status::unauthenticated(format!(
                        "a first certificate needs a bootstrap token and {peer} sent none: start \
                         weft-proxy with --token-file (`weft token create`)"
                    )));
                }
                let claims = self.ca.tokens().verify(token).map_err(|err| {
                    // In Kubernetes mode the token is usually a pod's:
                    // said only if TokenReview refuses it too.
                    if self.kube.is_none() {
                        tracing::warn!(%peer, "certificate refused: bad bootstrap token: {err}");
                    }
                    Status::unauthenticated(format!("bootstrap token refused: {err}"))
                })?;
                // `verify` refused a token without a group or for another
                // trust domain: the claims are the identity as they stand.
                Ok(ProvenIdentity {
                    spiffe: claims.identity(),
                    address: claims.address,
                    workload_group: Some(claims.workload_group),
                })
            }
            Some(Caller::Plaintext { peer }) => {
                tracing::warn!(%peer, "certificate refused: asked on the plaintext port");
                Err(Status::permission_denied(
                    "certificates are signed only on weftd's TLS port (--xds): the plaintext \
                     port proves nothing about its callers",
                ))
            }
            None => Err(Status::internal(
                "the connection's caller is unknown (not served by weftd's listener)",
            )),
        }
    }
}

#[tonic::async_trait]
impl Certificates for CertificateService {
    async fn sign(&self, request: Request<SignRequest>) -> Result<Response<SignResponse>, Status> {
        let started = Instant::now();
        let caller = request.extensions().get::<Caller>().cloned();
        let renewal = matches!(caller, Some(Caller::Workload { .. }));
        let request = request.into_inner();
        let proven = match (
            self.prove(caller.clone(), &request.token),
            &self.kube,
            &caller,
        ) {
            (Ok(proven), _, _) => proven,
            // Not one of weftd's own tokens: a pod's service-account token?
            (Err(status), Some(kube), Some(Caller::Anonymous { peer }))
                if status.code() == tonic::Code::Unauthenticated
                    && !request.token.trim().is_empty() =>
            {
                kube.prove(&request.token, *peer).await?
            }
            (Err(status), _, _) => return Err(status),
        };
        if let (Some(kube), true) = (&self.kube, renewal) {
            kube.check_renewal(&proven)?;
        }
        if let Some(asked) = request.ttl {
            tracing::debug!(
                "the caller asked for a lifetime of {asked:?}; weftd issues {:?}",
                self.ca.workload_ttl()
            );
        }
        let uri = proven.spiffe.uri();
        let ca = self.ca.clone();
        let csr = request.csr_pem;
        // Signing is CPU work: keep it off the async workers.
        let signed = tokio::task::spawn_blocking(move || ca.sign(&csr, &proven))
            .await
            .map_err(|err| Status::internal(format!("signing task failed: {err}")))?;
        match signed {
            Ok(chain) => {
                tracing::info!(
                    identity = %uri,
                    renewal,
                    "certificate issued in {:?}",
                    started.elapsed()
                );
                Ok(Response::new(SignResponse {
                    cert_chain_pem: chain,
                    root_bundle_pem: self.ca.roots_pem().to_string(),
                }))
            }
            Err(err) => {
                tracing::warn!(identity = %uri, "certificate refused: {err}");
                Err(match err {
                    SignError::BadCsr(_) => Status::invalid_argument(err.to_string()),
                    SignError::NotAllowed(_) => Status::permission_denied(err.to_string()),
                    SignError::Internal(_) => Status::internal(err.to_string()),
                })
            }
        }
    }
}
