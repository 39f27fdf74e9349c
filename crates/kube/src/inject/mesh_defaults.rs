//! MeshConfig `defaultConfig` at injection. Istio's injector starts from
//! the mesh's default ProxyConfig and lets a pod's `proxy.istio.io/config`
//! override it field by field (and `proxyMetadata` entry by entry). The
//! webhook passes the MeshConfig in force when the pod is admitted;
//! `weft kube-inject --mesh-config FILE` passes that file's.
//!
//! Applied here: `concurrency`, `terminationDrainDuration`,
//! `holdApplicationUntilProxyStarts`, `proxyMetadata` and
//! `gatewayTopology.numTrustedProxies`. The other fields were named in
//! MeshConfig's own warnings when it was loaded; injection does not repeat
//! them on every pod.

use serde_json::Value;
use weft_api::mesh::ProxyDefaults;

use super::annotations::{Options, duration_ms};

/// Where errors and warnings about these values point.
const ORIGIN: &str = "MeshConfig defaultConfig";

/// Sets `options` from the mesh's defaults, before the pod's annotations
/// are read over them.
pub(super) fn apply(
    defaults: &ProxyDefaults,
    options: &mut Options,
    warnings: &mut Vec<String>,
) -> Result<(), String> {
    if let Some(concurrency) = defaults.concurrency {
        options.concurrency = Some(concurrency);
    }
    if let Some(text) = &defaults.termination_drain_duration {
        // MeshConfig validated it when it was loaded; a form this reader
        // does not know is still refused rather than dropped.
        options.drain = Some(duration_ms(text).ok_or_else(|| {
            format!("{ORIGIN}.terminationDrainDuration: {text:?} is not a duration like \"5s\"")
        })?);
    }
    if let Some(hold) = defaults.hold_application_until_proxy_starts {
        options.hold_application = hold;
    }
    if !defaults.proxy_metadata.is_empty() {
        let entries = defaults
            .proxy_metadata
            .iter()
            .map(|(name, value)| (name.clone(), Value::String(value.clone())))
            .collect();
        let at = format!("{ORIGIN}.proxyMetadata");
        super::proxy_metadata::read(&Value::Object(entries), &at, options, warnings)?;
    }
    if let Some(n) = defaults
        .gateway_topology
        .as_ref()
        .and_then(|t| t.num_trusted_proxies)
    {
        options.num_trusted_proxies = Some(n);
    }
    Ok(())
}
