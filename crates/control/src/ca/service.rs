//! The `Certificates.Sign` gRPC call, served next to discovery.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tonic::{Request, Response, Status};
use weft_proto::discovery::v1::certificates_server::Certificates;
pub use weft_proto::discovery::v1::certificates_server::CertificatesServer;
use weft_proto::discovery::v1::{SignRequest, SignResponse};

use super::{Ca, SignError};

pub struct CertificateService {
    ca: Arc<Ca>,
}

impl CertificateService {
    pub fn new(ca: Arc<Ca>) -> Self {
        Self { ca }
    }
}

#[tonic::async_trait]
impl Certificates for CertificateService {
    async fn sign(&self, request: Request<SignRequest>) -> Result<Response<SignResponse>, Status> {
        let started = Instant::now();
        let request = request.into_inner();
        let claims = self.ca.tokens().verify(&request.token).map_err(|err| {
            tracing::warn!("certificate refused: bad bootstrap token: {err}");
            Status::unauthenticated(format!("bootstrap token refused: {err}"))
        })?;
        let identity = claims.identity();
        let ttl = request.ttl.and_then(|ttl| Duration::try_from(ttl).ok());
        let ca = self.ca.clone();
        let csr = request.csr_pem;
        let wanted = identity.clone();
        // Signing is CPU work: keep it off the async workers.
        let signed = tokio::task::spawn_blocking(move || ca.sign(&csr, &wanted, ttl))
            .await
            .map_err(|err| Status::internal(format!("signing task failed: {err}")))?;
        match signed {
            Ok(chain) => {
                tracing::info!(
                    identity = %identity.uri(),
                    "certificate issued in {:?}",
                    started.elapsed()
                );
                Ok(Response::new(SignResponse {
                    cert_chain_pem: chain,
                    root_bundle_pem: self.ca.roots_pem().to_string(),
                }))
            }
            Err(err) => {
                tracing::warn!(identity = %identity.uri(), "certificate refused: {err}");
                Err(match err {
                    SignError::BadCsr(_) => Status::invalid_argument(err.to_string()),
                    SignError::NotAllowed(_) => Status::permission_denied(err.to_string()),
                    SignError::Internal(_) => Status::internal(err.to_string()),
                })
            }
        }
    }
}
