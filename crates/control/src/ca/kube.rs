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

    /// A renewal by a certificate bound to a pod (`pod/<name>`): the pod
    /// must still exist at the bound address, or a certificate would
    /// outlive its pod by renewing itself. Other certificates pass.
    pub fn check_renewal(&self, identity: &ProvenIdentity) -> Result<(), Status> {
        let Some(name) = identity
            .workload_group
            .as_deref()
            .and_then(|group| group.strip_prefix(POD_GROUP_PREFIX))
        else {
            return Ok(());
        };
        let namespace = &identity.spiffe.namespace;
        match self.store.cluster_pod(namespace, name) {
            Some(pod)
                if Some(pod.address) == identity.address
                    && pod.service_account == identity.spiffe.service_account =>
            {
                Ok(())
            }
            Some(pod) => Err(Status::permission_denied(format!(
                "the certificate is bound to pod {namespace}/{name} at {:?} as {}, the pod is \
                 now at {} as {}: get a new one with the pod's token",
                identity.address, identity.spiffe.service_account, pod.address, pod.service_account
            ))),
            None => Err(Status::permission_denied(format!(
                "the certificate is bound to pod {namespace}/{name}, which is gone"
            ))),
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

#[cfg(test)]
mod tests {
    use weft_kube::convert::{ClusterSnapshot, PodInfo};

    use super::*;

    fn identity(group: Option<&str>, address: &str) -> ProvenIdentity {
        ProvenIdentity {
            spiffe: SpiffeId {
                trust_domain: "cluster.local".into(),
                namespace: "shop".into(),
                service_account: "cart".into(),
            },
            workload_group: group.map(str::to_string),
            address: Some(address.parse().expect("ip")),
        }
    }

    #[tokio::test]
    async fn a_pod_bound_certificate_renews_only_while_its_pod_is_there() {
        let store = Arc::new(Store::in_memory());
        let pod = PodInfo {
            name: "cart-1".into(),
            namespace: "shop".into(),
            uid: "u1".into(),
            labels: Default::default(),
            service_account: "cart".into(),
            address: "10.1.0.7".parse().expect("ip"),
            node: String::new(),
            locality: String::new(),
            terminating: false,
            ready: true,
        };
        let cluster = |pods| {
            Arc::new(ClusterSnapshot {
                credentials: Default::default(),
                services: Vec::new(),
                pods,
            })
        };
        store.replace_cluster(Vec::new(), cluster(vec![pod.clone()]));
        // A client that is never used: no server is needed to check.
        let config = weft_kube::kube::Config::new("https://127.0.0.1:1".parse().expect("url"));
        let client = weft_kube::kube::Client::try_from(config).expect("client");
        let kube = KubeIdentity::new(
            TokenReviewer::new(client, Vec::new()),
            store.clone(),
            "cluster.local".into(),
        );
        assert!(
            kube.check_renewal(&identity(Some("pod/cart-1"), "10.1.0.7"))
                .is_ok()
        );
        assert!(
            kube.check_renewal(&identity(Some("vm-group"), "10.9.0.1"))
                .is_ok(),
            "not a pod's certificate"
        );
        let moved = kube
            .check_renewal(&identity(Some("pod/cart-1"), "10.1.0.8"))
            .expect_err("another address");
        assert_eq!(moved.code(), tonic::Code::PermissionDenied);
        store.replace_cluster(Vec::new(), cluster(Vec::new()));
        let gone = kube
            .check_renewal(&identity(Some("pod/cart-1"), "10.1.0.7"))
            .expect_err("pod gone");
        assert!(gone.message().contains("gone"), "{}", gone.message());
    }
}
