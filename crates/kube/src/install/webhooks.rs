//! The two webhook configurations, pointing at the `weftd` Service's
//! 15017. Both ship without `caBundle` (weftd writes its root there) and
//! with `failurePolicy: Fail`: an Istio resource or a pod meant for the
//! mesh is refused rather than let through unchecked or uninjected while
//! weftd is away.
//!
//! Injection uses Istio's four selector pairs, so the API server calls the
//! webhook exactly for the pods Istio's precedence would inject (namespace
//! `istio-injection=enabled`, namespace `istio.io/rev=default`, or the pod
//! label `sidecar.istio.io/inject=true` in an unlabelled namespace), and
//! never for a pod labelled `sidecar.istio.io/inject=false`.

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhook, MutatingWebhookConfiguration, RuleWithOperations, ServiceReference,
    ValidatingWebhook, ValidatingWebhookConfiguration, WebhookClientConfig,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use serde_json::Value;

use super::{NAMESPACE, WEBHOOK_PORT, WEFTD, meta, to_value};
use crate::inject::policy::{INJECT, NAMESPACE_INJECTION, REVISION};
use crate::webhook::{INJECT_PATH, INJECTOR_NAME, VALIDATE_PATH, VALIDATOR_NAME};

fn client(path: &str) -> WebhookClientConfig {
    WebhookClientConfig {
        service: Some(ServiceReference {
            name: WEFTD.into(),
            namespace: NAMESPACE.into(),
            path: Some(path.into()),
            port: Some(WEBHOOK_PORT),
        }),
        ..WebhookClientConfig::default()
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn requirement(key: &str, operator: &str, values: &[&str]) -> LabelSelectorRequirement {
    LabelSelectorRequirement {
        key: key.into(),
        operator: operator.into(),
        values: (!values.is_empty()).then(|| strings(values)),
    }
}

fn selector(requirements: Vec<LabelSelectorRequirement>) -> Option<LabelSelector> {
    Some(LabelSelector {
        match_expressions: Some(requirements),
        ..LabelSelector::default()
    })
}

pub fn objects() -> Result<Vec<Value>, String> {
    Ok(vec![
        to_value(&validating())?,
        to_value(&mutating("default"))?,
    ])
}

pub fn validating() -> ValidatingWebhookConfiguration {
    ValidatingWebhookConfiguration {
        metadata: meta(VALIDATOR_NAME, None),
        webhooks: Some(vec![ValidatingWebhook {
            name: "validation.weft.io".into(),
            client_config: client(VALIDATE_PATH),
            rules: Some(vec![RuleWithOperations {
                api_groups: Some(strings(&[
                    "networking.istio.io",
                    "security.istio.io",
                    "telemetry.istio.io",
                    "weft.io",
                ])),
                api_versions: Some(strings(&["*"])),
                operations: Some(strings(&["CREATE", "UPDATE"])),
                resources: Some(strings(&["*"])),
                scope: Some("*".into()),
            }]),
            failure_policy: Some("Fail".into()),
            side_effects: "None".into(),
            admission_review_versions: strings(&["v1"]),
            timeout_seconds: Some(10),
            ..ValidatingWebhook::default()
        }]),
    }
}

pub fn mutating(revision: &str) -> MutatingWebhookConfiguration {
    let not_false = || requirement(INJECT, "NotIn", &["false"]);
    let entry = |name: &str, namespace: Vec<LabelSelectorRequirement>, object| MutatingWebhook {
        name: format!("{name}.sidecar-injector.weft.io"),
        client_config: client(INJECT_PATH),
        rules: Some(vec![RuleWithOperations {
            api_groups: Some(strings(&[""])),
            api_versions: Some(strings(&["v1"])),
            operations: Some(strings(&["CREATE"])),
            resources: Some(strings(&["pods"])),
            scope: Some("*".into()),
        }]),
        namespace_selector: selector(namespace),
        object_selector: selector(object),
        failure_policy: Some("Fail".into()),
        side_effects: "None".into(),
        admission_review_versions: strings(&["v1"]),
        reinvocation_policy: Some("Never".into()),
        timeout_seconds: Some(10),
        ..MutatingWebhook::default()
    };
    MutatingWebhookConfiguration {
        metadata: meta(INJECTOR_NAME, None),
        webhooks: Some(vec![
            entry(
                "rev.namespace",
                vec![
                    requirement(REVISION, "In", &[revision]),
                    requirement(NAMESPACE_INJECTION, "DoesNotExist", &[]),
                ],
                vec![not_false()],
            ),
            entry(
                "rev.object",
                vec![
                    requirement(REVISION, "DoesNotExist", &[]),
                    requirement(NAMESPACE_INJECTION, "DoesNotExist", &[]),
                ],
                vec![not_false(), requirement(REVISION, "In", &[revision])],
            ),
            entry(
                "namespace",
                vec![requirement(NAMESPACE_INJECTION, "In", &["enabled"])],
                vec![not_false()],
            ),
            entry(
                "object",
                vec![
                    requirement(NAMESPACE_INJECTION, "DoesNotExist", &[]),
                    requirement(REVISION, "DoesNotExist", &[]),
                ],
                vec![
                    requirement(INJECT, "In", &["true"]),
                    requirement(REVISION, "DoesNotExist", &[]),
                ],
            ),
        ]),
    }
}
