//! Service-account tokens as a workload's bootstrap credential: the
//! TokenReview call and the checks on its answer (Istio's `kube_jwt.go`).
//!
//! A token proves `namespace/service account` when the API server says it
//! is authenticated for one of weftd's audiences (default `istio-ca`, what
//! Istio's sidecars ask for), its user is `system:serviceaccount:<ns>:<sa>`
//! and it is in the group `system:serviceaccounts`. weftd also needs the pod
//! the token is bound to (a projected token carries
//! `authentication.kubernetes.io/pod-name` and `pod-uid`): the pod gives the
//! workload's address and labels. A token bound to no pod (a legacy Secret
//! token, or a TokenRequest without a bound object) is refused, saying so.

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, TokenReviewStatus};
use kube::Client;
use kube::api::{Api, PostParams};

/// Istio's default token audience.
pub const DEFAULT_AUDIENCE: &str = "istio-ca";

const POD_NAME: &str = "authentication.kubernetes.io/pod-name";
const POD_UID: &str = "authentication.kubernetes.io/pod-uid";

/// What a reviewed token proves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReviewedToken {
    pub namespace: String,
    pub service_account: String,
    pub pod_name: String,
    pub pod_uid: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReviewError {
    /// The token proves nothing weftd accepts; the text says why.
    #[error("{0}")]
    Refused(String),
    /// The API server could not be asked (retry later).
    #[error("TokenReview could not be done: {0}")]
    Unavailable(String),
}

/// Asks the API server about tokens.
#[derive(Clone)]
pub struct TokenReviewer {
    client: Client,
    audiences: Vec<String>,
}

impl TokenReviewer {
    /// `audiences` empty means [`DEFAULT_AUDIENCE`].
    pub fn new(client: Client, audiences: Vec<String>) -> Self {
        let audiences = if audiences.is_empty() {
            vec![DEFAULT_AUDIENCE.to_string()]
        } else {
            audiences
        };
        Self { client, audiences }
    }

    pub fn audiences(&self) -> &[String] {
        &self.audiences
    }

    pub async fn review(&self, token: &str) -> Result<ReviewedToken, ReviewError> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: token.trim().to_string(),
                audiences: Some(self.audiences.clone()),
            },
            ..TokenReview::default()
        };
        let answered = Api::<TokenReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(|err| ReviewError::Unavailable(err.to_string()))?;
        check(answered.status.as_ref(), &self.audiences)
    }
}

/// Checks a TokenReview's answer (pure: unit-tested on canned answers).
pub fn check(
    status: Option<&TokenReviewStatus>,
    audiences: &[String],
) -> Result<ReviewedToken, ReviewError> {
    let refuse = |why: String| Err(ReviewError::Refused(why));
    let Some(status) = status else {
        return refuse("the API server's TokenReview answer has no status".into());
    };
    if status.authenticated != Some(true) {
        let error = status.error.as_deref().unwrap_or("no reason given");
        return refuse(format!(
            "the API server does not authenticate the token for audience(s) {audiences:?}: \
             {error} (project it with `audience: {}`)",
            audiences.first().map_or(DEFAULT_AUDIENCE, String::as_str)
        ));
    }
    // An API server that does not check audiences answers none; one that
    // does answers those the token is valid for, which must be ours.
    if let Some(valid) = &status.audiences
        && !valid.is_empty()
        && !valid.iter().any(|a| audiences.contains(a))
    {
        return refuse(format!(
            "the token is for audience(s) {valid:?}, weftd accepts {audiences:?}"
        ));
    }
    let user = status.user.clone().unwrap_or_default();
    let username = user.username.unwrap_or_default();
    let Some((namespace, account)) = username
        .strip_prefix("system:serviceaccount:")
        .and_then(|rest| rest.split_once(':'))
        .filter(|(ns, sa)| !ns.is_empty() && !sa.is_empty() && !sa.contains(':'))
    else {
        return refuse(format!(
            "the token is for user {username:?}, not a service account \
             (system:serviceaccount:<namespace>:<name>)"
        ));
    };
    if !user
        .groups
        .unwrap_or_default()
        .iter()
        .any(|g| g == "system:serviceaccounts")
    {
        return refuse(format!(
            "{username} is not in the group system:serviceaccounts"
        ));
    }
    let extra = user.extra.unwrap_or_default();
    let one = |key: &str| match extra.get(key).map(Vec::as_slice) {
        Some([value]) if !value.is_empty() => Some(value.clone()),
        _ => None,
    };
    let (Some(pod_name), Some(pod_uid)) = (one(POD_NAME), one(POD_UID)) else {
        return refuse(format!(
            "the token of {username} is bound to no pod: weftd takes the workload's address \
             and labels from its pod, so give the sidecar a projected service-account token \
             (what injection mounts), not a Secret's"
        ));
    };
    Ok(ReviewedToken {
        namespace: namespace.to_string(),
        service_account: account.to_string(),
        pod_name,
        pod_uid,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(value: serde_json::Value) -> TokenReviewStatus {
        serde_json::from_value(value).expect("status")
    }

    fn audiences() -> Vec<String> {
        vec![DEFAULT_AUDIENCE.to_string()]
    }

    /// What kube-apiserver 1.36 answers for a pod-bound projected token.
    fn bound() -> serde_json::Value {
        serde_json::json!({
            "authenticated": true,
            "audiences": ["istio-ca"],
            "user": {
                "username": "system:serviceaccount:shop:cart",
                "uid": "6b1e",
                "groups": ["system:serviceaccounts", "system:serviceaccounts:shop",
                           "system:authenticated"],
                "extra": {
                    "authentication.kubernetes.io/credential-id": ["JTI=1"],
                    "authentication.kubernetes.io/node-name": ["node-a"],
                    "authentication.kubernetes.io/pod-name": ["cart-1"],
                    "authentication.kubernetes.io/pod-uid": ["0d2c"]
                }
            }
        })
    }

    #[test]
    fn a_pod_bound_token_proves_its_account_and_pod() {
        let reviewed = check(Some(&status(bound())), &audiences()).expect("accepted");
        assert_eq!(
            reviewed,
            ReviewedToken {
                namespace: "shop".into(),
                service_account: "cart".into(),
                pod_name: "cart-1".into(),
                pod_uid: "0d2c".into(),
            }
        );
    }

    #[test]
    fn unauthenticated_tokens_are_refused_with_the_servers_reason() {
        let answer = status(serde_json::json!({
            "authenticated": false, "error": "[invalid bearer token, token audiences [\"x\"] is invalid for the target audiences [\"istio-ca\"]]"
        }));
        let err = check(Some(&answer), &audiences()).expect_err("refused");
        assert!(err.to_string().contains("token audiences"), "{err}");
        assert!(err.to_string().contains("audience: istio-ca"), "{err}");
        assert!(check(None, &audiences()).is_err());
    }

    #[test]
    fn other_audiences_users_and_unbound_tokens_are_refused() {
        let mut other = bound();
        other["audiences"] = serde_json::json!(["https://kubernetes.default.svc"]);
        let err = check(Some(&status(other)), &audiences()).expect_err("audience");
        assert!(err.to_string().contains("weftd accepts"), "{err}");

        let mut person = bound();
        person["user"]["username"] = serde_json::json!("alice");
        let err = check(Some(&status(person)), &audiences()).expect_err("user");
        assert!(err.to_string().contains("not a service account"), "{err}");

        let mut groupless = bound();
        groupless["user"]["groups"] = serde_json::json!(["system:authenticated"]);
        assert!(check(Some(&status(groupless)), &audiences()).is_err());

        let mut unbound = bound();
        unbound["user"]["extra"] = serde_json::json!({});
        let err = check(Some(&status(unbound)), &audiences()).expect_err("unbound");
        assert!(err.to_string().contains("bound to no pod"), "{err}");
    }
}
