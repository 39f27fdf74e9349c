//! Workload identities for the mesh's sidecars: a bootstrap token per pod,
//! minted by weftd (`POST /v1/tokens`) for the pod's namespace and service
//! account, handed to its sidecar as `--token-file`. With it the sidecar
//! gets its certificate from weftd and the mesh speaks mTLS (auto-mTLS,
//! PERMISSIVE by default as in Istio).

use std::net::SocketAddr;
use std::path::Path;

use anyhow::{Context, bail};
use http::{Method, StatusCode};
use tokio::net::TcpStream;

use super::plan::{Plan, Pod};
use super::pod;
use super::start::exchange;

/// Mints and writes every pod's token.
pub async fn issue_tokens(api: SocketAddr, plan: &Plan) -> anyhow::Result<()> {
    for pod in &plan.pods {
        issue_token(api, plan, pod).await?;
    }
    Ok(())
}

/// Mints a token for `pod` and writes it into its pod directory
/// (`sidecar/token`), readable by the sidecar's UID only. Also before a
/// sidecar is restarted: a bootstrap token is short-lived, and the one the
/// sidecar started with may have expired since.
pub async fn issue_token(api: SocketAddr, plan: &Plan, pod: &Pod) -> anyhow::Result<()> {
    let body = serde_json::json!({
        "namespace": pod.namespace,
        "serviceAccount": pod.service_account,
    });
    let stream = TcpStream::connect(api)
        .await
        .context("connecting to weftd's API")?;
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
    pod::write_sidecar_file(&plan.token_path(pod), token.as_bytes())
}

/// Copies the mesh root weftd published (`<state-dir>/root-cert.pem`) into
/// every pod's sidecar directory: the root the sidecar holds out of band
/// and verifies weftd with. weftd's own copy stays where pods cannot see.
pub fn hand_out_root(plan: &Plan, published: &Path) -> anyhow::Result<()> {
    let root = std::fs::read(published)
        .with_context(|| format!("cannot read the mesh root {}", published.display()))?;
    for pod in &plan.pods {
        pod::write_sidecar_file(&plan.root_path(pod), &root)?;
    }
    Ok(())
}
