//! Workload identities for the mesh's sidecars: a bootstrap token per pod,
//! minted by weftd (`POST /v1/tokens`, over its API socket) for a
//! WorkloadGroup `weft-up-<service account>` in the pod's namespace (made
//! here first: a token admits a proxy into a group, which names the
//! service account), handed to its sidecar as `--token-file`. With it the sidecar
//! gets its certificate from weftd and the mesh speaks mTLS (auto-mTLS,
//! PERMISSIVE by default as in Istio).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use http::{Method, StatusCode};
use nix::unistd::{Gid, Uid, chown};
use tokio::net::UnixStream;

use super::plan::{PROXY_UID, Pod};
use super::start::exchange;

/// Where the sidecar of `pod` reads its token (under the runtime dir, which
/// UID 1337 can reach).
pub fn token_path(runtime_dir: &Path, pod: &Pod) -> PathBuf {
    runtime_dir
        .join("tokens")
        .join(format!("{}.token", pod.name))
}

/// The WorkloadGroup a pod's token admits it into.
fn group_of(pod: &Pod) -> String {
    format!("weft-up-{}", pod.service_account)
}

/// Mints and writes every pod's token, readable by the sidecar's UID only.
pub async fn issue_tokens(api: &Path, runtime_dir: &Path, pods: &[Pod]) -> anyhow::Result<()> {
    let dir = runtime_dir.join("tokens");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("cannot open {} to the sidecars", dir.display()))?;
    let groups: Vec<serde_json::Value> = pods
        .iter()
        .map(|pod| {
            serde_json::json!({
                "apiVersion": "networking.istio.io/v1",
                "kind": "WorkloadGroup",
                "metadata": {"name": group_of(pod), "namespace": pod.namespace},
                "spec": {"template": {"serviceAccount": pod.service_account}},
            })
        })
        .collect();
    let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": groups});
    let stream = UnixStream::connect(api)
        .await
        .context("connecting to weftd's API socket")?;
    let (status, answer) = exchange(
        stream,
        Method::POST,
        "/v1/apply",
        Some(list.to_string().into_bytes()),
    )
    .await
    .context("registering the pods' WorkloadGroups with weftd")?;
    if status != StatusCode::OK {
        bail!(
            "weftd refused the pods' WorkloadGroups ({status}): {}",
            String::from_utf8_lossy(&answer)
        );
    }
    for pod in pods {
        let body = serde_json::json!({
            "namespace": pod.namespace,
            "workloadGroup": group_of(pod),
        });
        let stream = UnixStream::connect(api)
            .await
            .context("connecting to weftd's API socket")?;
        let (status, answer) = exchange(
            stream,
            Method::POST,
            "/v1/tokens",
            Some(body.to_string().into_bytes()),
        )
        .await
        .with_context(|| format!("pod {}: asking weftd for a token", pod.name))?;
        if status != StatusCode::OK {
            bail!(
                "pod {}: weftd refused a token ({status}): {}",
                pod.name,
                String::from_utf8_lossy(&answer)
            );
        }
        let answer: serde_json::Value = serde_json::from_slice(&answer)
            .with_context(|| format!("pod {}: weftd's token answer is not JSON", pod.name))?;
        let Some(token) = answer.get("token").and_then(|t| t.as_str()) else {
            bail!("pod {}: weftd's answer has no token: {answer}", pod.name);
        };
        let path = token_path(runtime_dir, pod);
        std::fs::write(&path, token).with_context(|| format!("cannot write {}", path.display()))?;
        let uid = Uid::from_raw(PROXY_UID);
        chown(&path, Some(uid), Some(Gid::from_raw(PROXY_UID)))
            .with_context(|| format!("cannot give {} to UID {PROXY_UID}", path.display()))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400))
            .with_context(|| format!("cannot restrict {}", path.display()))?;
    }
    Ok(())
}
