//! weftd writes its root into the `caBundle` of Weft's webhook
//! configurations at start (istiod does the same), so the API server
//! trusts the webhook's serving certificate without `weft install` knowing
//! the root: the root is made by weftd, after install.

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use kube::api::{Api, PostParams};

use super::{INJECTOR_NAME, VALIDATOR_NAME};

/// Sets every webhook's `clientConfig.caBundle` to `root_pem` in both
/// configurations; one that does not exist is skipped (and said).
pub async fn patch(client: kube::Client, root_pem: &str) -> anyhow::Result<()> {
    let bundle = ByteString(root_pem.as_bytes().to_vec());
    let validating: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    match validating.get_opt(VALIDATOR_NAME).await? {
        Some(mut config) => {
            for webhook in config.webhooks.iter_mut().flatten() {
                webhook.client_config.ca_bundle = Some(bundle.clone());
            }
            validating
                .replace(VALIDATOR_NAME, &PostParams::default(), &config)
                .await
                .map_err(|e| {
                    anyhow::anyhow!("cannot write the caBundle of {VALIDATOR_NAME}: {e}")
                })?;
            tracing::info!(
                "caBundle of ValidatingWebhookConfiguration {VALIDATOR_NAME} set to weftd's root"
            );
        }
        None => tracing::warn!(
            "ValidatingWebhookConfiguration {VALIDATOR_NAME} not found: validation at kubectl apply is off (run weft install)"
        ),
    }
    let mutating: Api<MutatingWebhookConfiguration> = Api::all(client);
    match mutating.get_opt(INJECTOR_NAME).await? {
        Some(mut config) => {
            for webhook in config.webhooks.iter_mut().flatten() {
                webhook.client_config.ca_bundle = Some(bundle.clone());
            }
            mutating
                .replace(INJECTOR_NAME, &PostParams::default(), &config)
                .await
                .map_err(|e| {
                    anyhow::anyhow!("cannot write the caBundle of {INJECTOR_NAME}: {e}")
                })?;
            tracing::info!(
                "caBundle of MutatingWebhookConfiguration {INJECTOR_NAME} set to weftd's root"
            );
        }
        None => tracing::warn!(
            "MutatingWebhookConfiguration {INJECTOR_NAME} not found: sidecar injection is off (run weft install)"
        ),
    }
    Ok(())
}
