//! What `weft install` applies (and `--dry-run` prints), as Kubernetes
//! objects rendered here, in apply order: the `weft-system` namespace, the
//! CRDs, weftd's least-privilege RBAC, its Deployment and Service, the two
//! webhook configurations, and an ingress gateway. The Helm chart in
//! `charts/weft/` carries the same content (a test compares them).
//!
//! The webhooks ship without a `caBundle`: weftd writes its root there at
//! start (`webhook::ca_bundle`), as istiod does, because the root is made
//! by weftd after install.

mod control;
mod crds;
mod gateway;
pub mod helm;
mod webhooks;

use serde_json::Value;

pub use control::API_ROLE;
pub use crds::CRDS;

pub const NAMESPACE: &str = "weft-system";
pub const WEFTD: &str = "weftd";
pub const GATEWAY: &str = "weft-ingressgateway";
/// weftd's ports (Istio's numbers).
pub const XDS_PORT: i32 = 15012;
pub const API_PORT: i32 = 15014;
pub const WEBHOOK_PORT: i32 = 15017;
/// The API port's name on the Service: `weft --kubeconfig` reaches weftd
/// through the API server's proxy by this name.
pub const API_PORT_NAME: &str = "http-api";

/// The name `weft --kubeconfig` gives the Service in the API server's
/// proxy path (`services/<this>/proxy/...`): scheme, Service and port. RBAC
/// checks `services/proxy` against this whole name, so the Role
/// `weftd-api` grants exactly it.
pub fn api_proxy_name() -> String {
    format!("http:{WEFTD}:{API_PORT_NAME}")
}
/// The field manager of `weft install`'s server-side apply.
pub const FIELD_MANAGER: &str = "weft-install";

/// What the install is rendered for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallOptions {
    /// The image with weftd, weft-proxy and weft (the repository's Dockerfile).
    pub image: String,
    /// The API server's version (`MAJOR.MINOR`), passed to weftd so it
    /// injects native sidecars only where they run; `None`: native.
    pub kube_version: Option<String>,
    pub trust_domain: String,
    /// weftd replicas; more than one needs a shared CA (`plugin_ca`).
    pub replicas: i32,
    /// Mount the `cacerts` Secret (Istio's plug-in CA layout) as weftd's
    /// `--cacerts`; the Secret must exist before weftd starts.
    pub plugin_ca: bool,
    pub ingress_gateway: bool,
}

impl Default for InstallOptions {
    fn default() -> Self {
        Self {
            image: crate::inject::default_image(),
            kube_version: None,
            trust_domain: "cluster.local".into(),
            replicas: 1,
            plugin_ca: false,
            ingress_gateway: true,
        }
    }
}

/// Every object, in the order they must be applied (deleted in reverse).
pub fn render(options: &InstallOptions) -> Result<Vec<Value>, String> {
    let mut objects = vec![namespace()?];
    for (path, text) in CRDS {
        let documents = weft_api::decode::parse_documents(text)
            .map_err(|err| format!("{path}: not YAML: {err}"))?;
        objects.extend(documents.into_iter().filter(|d| !d.is_null()));
    }
    objects.extend(control::objects(options)?);
    objects.extend(webhooks::objects()?);
    if options.ingress_gateway {
        objects.extend(gateway::objects(options)?);
    }
    Ok(objects)
}

/// The objects as one multi-document YAML (what `--dry-run` prints).
pub fn to_yaml(objects: &[Value]) -> Result<String, String> {
    let mut out = String::new();
    for object in objects {
        out.push_str("---\n");
        out.push_str(&serde_saphyr::to_string(object).map_err(|err| err.to_string())?);
    }
    Ok(out)
}

/// Plural resource name and whether the kind is namespaced, for the kinds
/// `render` produces (apply and delete address them by these).
pub fn resource_of(kind: &str) -> Option<(&'static str, bool)> {
    Some(match kind {
        "Namespace" => ("namespaces", false),
        "CustomResourceDefinition" => ("customresourcedefinitions", false),
        "ServiceAccount" => ("serviceaccounts", true),
        "ClusterRole" => ("clusterroles", false),
        "ClusterRoleBinding" => ("clusterrolebindings", false),
        "Role" => ("roles", true),
        "RoleBinding" => ("rolebindings", true),
        "ConfigMap" => ("configmaps", true),
        "Deployment" => ("deployments", true),
        "Service" => ("services", true),
        "ValidatingWebhookConfiguration" => ("validatingwebhookconfigurations", false),
        "MutatingWebhookConfiguration" => ("mutatingwebhookconfigurations", false),
        _ => return None,
    })
}

fn namespace() -> Result<Value, String> {
    to_value(&k8s_openapi::api::core::v1::Namespace {
        metadata: meta(NAMESPACE, None),
        ..Default::default()
    })
}

/// `ObjectMeta` with Weft's labels.
fn meta(
    name: &str,
    namespace: Option<&str>,
) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
    k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        name: Some(name.into()),
        namespace: namespace.map(String::from),
        labels: Some(
            [
                ("app.kubernetes.io/part-of", "weft"),
                ("app.kubernetes.io/managed-by", FIELD_MANAGER),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ),
        ..Default::default()
    }
}

/// [`meta`] with the workload's own `labels` added (what its selector
/// matches).
fn labelled_meta(
    name: &str,
    namespace: &str,
    labels: std::collections::BTreeMap<String, String>,
) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
    let mut metadata = meta(name, Some(namespace));
    metadata
        .labels
        .get_or_insert_with(Default::default)
        .extend(labels);
    metadata
}

fn to_value<T: serde::Serialize>(object: &T) -> Result<Value, String> {
    serde_json::to_value(object).map_err(|err| err.to_string())
}

#[cfg(test)]
mod tests;
