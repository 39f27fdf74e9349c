//! Kubernetes mode's bootstrap credential: a pod's projected
//! service-account token, checked with the API server's TokenReview
//! (weft-kube's [`TokenReviewer`]) and tied to the pod it is bound to.
//!
//! The identity is `spiffe://<trust domain>/ns/<ns>/sa/<sa>` from the
//! reviewed token, never from the CSR or the proxy; the certificate is
//! bound to the pod's IP and to the WorkloadGroup `pod/<name>` (the store's
//! cluster layer answers it with the pod's labels and account), so
//! admission gives the proxy its pod's facts and nothing it claims.
//! The pod must be the one the token names (same uid: a pod recreated
//! under the same name does not inherit old tokens) and must have an IP.

use std::net::SocketAddr;
use std::sync::Arc;

use tonic::Status;
use weft_kube::identity::{ReviewError, TokenReviewer};

use super::SpiffeId;
use super::caller::ProvenIdentity;
use crate::store::{POD_GROUP_PREFIX, Store};

pub struct KubeIdentity {
    reviewer: TokenReviewer,
    store: Arc<Store>,
    trust_domain: String,
}

impl KubeIdentity {
    pub fn new(reviewer: TokenReviewer, store: Arc<Store>, trust_domain: String) -> Self {
        Self {
            reviewer,
            store,
            trust_domain,
        }
    }

    /// What `token` proves, or why it proves nothing.
    pub async fn prove(&self, token: &str, peer: SocketAddr) -> Result<ProvenIdentity, Status> {
        let reviewed = self.reviewer.review(token).await.map_err(|err| {
            tracing::warn!(%peer, "certificate refused: {err}");
            match err {
                ReviewError::Refused(why) => {
                    Status::unauthenticated(format!("service-account token refused: {why}"))
                }
                ReviewError::Unavailable(_) => Status::unavailable(err.to_string()),
            }
        })?;
        let (namespace, name) = (&reviewed.namespace, &reviewed.pod_name);
        let Some(pod) = self.store.cluster_pod(namespace, name) else {
            // Usually weftd's watch is a moment behind the kubelet.
            return Err(Status::unavailable(format!(
                "pod {namespace}/{name}, which the token is bound to, is not known to weftd \
                 with an IP yet; retry"
            )));
        };
        if pod.uid != reviewed.pod_uid {
            return Err(Status::permission_denied(format!(
                "the token is bound to pod {namespace}/{name} uid {}, the pod of that name \
                 now has uid {}",
                reviewed.pod_uid, pod.uid
            )));
        }
        if pod.service_account != reviewed.service_account {
            return Err(Status::permission_denied(format!(
                "the token is for service account {namespace}/{}, pod {namespace}/{name} runs \
                 as {}",
                reviewed.service_account, pod.service_account
            )));
        }
        Ok(ProvenIdentity {
            spiffe: SpiffeId {
                trust_domain: self.trust_domain.clone(),
                namespace: reviewed.namespace,
                service_account: reviewed.service_account,
            },
            workload_group: Some(format!("{POD_GROUP_PREFIX}{name}")),
            address: Some(pod.address),
        })
    }
}
