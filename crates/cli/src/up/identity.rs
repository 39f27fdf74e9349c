//! Workload identities for the mesh's sidecars: a bootstrap token per pod,
//! minted by weftd (`POST /v1/tokens`, over its API socket as root) for the
//! pod's WorkloadGroup (its workload's, applied before any pod starts, see
//! `Plan::workload_groups`) and bound to the pod's IP, handed to its
//! sidecar as `--token-file`; and the mesh root, which the sidecar holds
//! (`--ca-root`) to verify weftd. Both live in the pod's own directory
//! (`sidecar/`, UID 1337, 0400): its app and other pods cannot read them.
//! With them the sidecar gets its certificate from weftd and the mesh
//! speaks mTLS (auto-mTLS, PERMISSIVE by default as in Istio).

use std::path::Path;

use anyhow::{Context, bail};
use http::{Method, StatusCode};
use tokio::net::UnixStream;
use weft_api::wire::{self, TokenMinted, TokenRequest};

use super::plan::{Plan, Pod};
use super::pod;
use super::start::exchange;

/// Mints and writes every pod's token.
pub async fn issue_tokens(api: &Path, plan: &Plan) -> anyhow::Result<()> {
    for pod in &plan.pods {
        issue_token(api, plan, pod).await?;
    }
    Ok(())
}

/// Mints a token for `pod` and writes it into its pod directory
/// (`sidecar/token`), readable by the sidecar's UID only. Also before a
/// sidecar is restarted: a bootstrap token is short-lived (an hour), and
/// the one the sidecar started with may have expired since.
pub async fn issue_token(api: &Path, plan: &Plan, pod: &Pod) -> anyhow::Result<()> {
    // Bound to the pod's group and address: it admits this pod's sidecar
    // and nothing else, wherever it is copied to.
    let body = wire::to_value(&TokenRequest {
        namespace: pod.namespace.clone(),
        workload_group: pod.workload.clone(),
        address: Some(pod.ip.into()),
        ttl: None,
    });
    let stream = UnixStream::connect(api)
        .await
        .with_context(|| format!("connecting to weftd's API socket {}", api.display()))?;
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
    let answer: serde_json::Value = serde_json::from_slice(&answer).with_context(|| {
        format!(
            "pod {}: weftd's token answer is not JSON: {}",
            pod.name,
            String::from_utf8_lossy(&answer)
        )
    })?;
    let minted: TokenMinted =
        wire::decode(&format!("pod {}: weftd's token answer", pod.name), &answer)?;
    pod::write_sidecar_file(&plan.token_path(pod), minted.token.as_bytes())
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
