//! weftd's admin token for callers that reach weftd's API through the
//! Kubernetes API server (`weft proxy-status --kubeconfig`, ...).
//!
//! A laptop cannot reach pod IPs, so `weft` goes through the API server's
//! service proxy (`/api/v1/namespaces/<ns>/services/http:weftd:http-api/proxy/...`).
//! The API server authenticates the caller there and then deletes their
//! `Authorization` header before proxying, so weftd learns nothing about
//! who called: it must check a credential of its own. That credential is a
//! random token weftd keeps in the Secret [`SECRET`] of its namespace,
//! created by the first replica to start (create is atomic on the API
//! server, so replicas agree on one token). The CLI reads it with the
//! user's kubeconfig and sends it in [`HEADER`], which the API server
//! passes through unchanged. So Kubernetes RBAC decides who may use weftd's
//! API (whoever may `get` that Secret and the `services/proxy` subresource
//! of `weftd`), and weftd still verifies every request itself.

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use kube::{Client, Error};

/// The Secret holding the token, in weftd's namespace.
pub const SECRET: &str = "weftd-admin-token";
/// The key of the token in the Secret's data.
pub const KEY: &str = "token";
/// The header carrying the token through the API server's proxy
/// (`Authorization` does not survive it).
pub const HEADER: &str = "x-weft-admin-token";

/// The token in `namespace`'s [`SECRET`], created with `candidate` if there
/// is none yet. Another replica creating it first is fine: its token wins.
pub async fn ensure(client: Client, namespace: &str, candidate: &str) -> anyhow::Result<String> {
    let secrets: Api<Secret> = Api::namespaced(client, namespace);
    if let Some(token) = read(&secrets, namespace).await? {
        return Ok(token);
    }
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(SECRET.into()),
            namespace: Some(namespace.into()),
            labels: Some([("app.kubernetes.io/part-of".to_string(), "weft".to_string())].into()),
            ..Default::default()
        },
        data: Some([(KEY.to_string(), ByteString(candidate.as_bytes().to_vec()))].into()),
        type_: Some("Opaque".into()),
        ..Default::default()
    };
    match secrets.create(&PostParams::default(), &secret).await {
        Ok(_) => Ok(candidate.to_string()),
        Err(Error::Api(status)) if status.code == 409 => read(&secrets, namespace)
            .await?
            .ok_or_else(|| anyhow::anyhow!("Secret {namespace}/{SECRET} vanished while made")),
        Err(err) => Err(anyhow::anyhow!(
            "cannot create the Secret {namespace}/{SECRET}: {err}"
        )),
    }
}

async fn read(secrets: &Api<Secret>, namespace: &str) -> anyhow::Result<Option<String>> {
    let secret = secrets
        .get_opt(SECRET)
        .await
        .map_err(|err| anyhow::anyhow!("cannot read the Secret {namespace}/{SECRET}: {err}"))?;
    let Some(secret) = secret else {
        return Ok(None);
    };
    token_of(&secret)
        .map(Some)
        .map_err(|why| anyhow::anyhow!("Secret {namespace}/{SECRET}: {why}"))
}

/// The token in a Secret's data, or why there is none.
pub fn token_of(secret: &Secret) -> Result<String, String> {
    let bytes = secret
        .data
        .as_ref()
        .and_then(|data| data.get(KEY))
        .ok_or_else(|| format!("has no data key {KEY:?}"))?;
    let token = std::str::from_utf8(&bytes.0)
        .map_err(|_| format!("data key {KEY:?} is not text"))?
        .trim();
    if token.is_empty() {
        return Err(format!("data key {KEY:?} is empty"));
    }
    Ok(token.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(data: Option<&[u8]>) -> Secret {
        Secret {
            data: data.map(|bytes| [(KEY.to_string(), ByteString(bytes.to_vec()))].into()),
            ..Default::default()
        }
    }

    #[test]
    fn the_token_is_the_trimmed_text_of_its_key() {
        assert_eq!(token_of(&secret(Some(b"abc\n"))).as_deref(), Ok("abc"));
        assert_eq!(
            token_of(&secret(None)),
            Err("has no data key \"token\"".to_string())
        );
        assert_eq!(
            token_of(&secret(Some(b"  "))),
            Err("data key \"token\" is empty".to_string())
        );
        assert_eq!(
            token_of(&secret(Some(&[0xff, 0xfe]))),
            Err("data key \"token\" is not text".to_string())
        );
    }
}
