//! Whether a pod gets a sidecar: Istio's precedence, as its injection docs
//! ("Controlling the injection policy") and `injectRequired` state it.
//!
//! 1. Never: pods on the host network, pods in `kube-system`/`kube-public`/
//!    `kube-node-lease`, pods that already carry `sidecar.istio.io/status`
//!    (injection is done once).
//! 2. The pod's `sidecar.istio.io/inject` label (the current API) or, when
//!    no label, the annotation (deprecated): false-ish → no; true-ish → yes
//!    (unless the namespace says `istio-injection=disabled`: "if either is
//!    disabled, the pod is not injected").
//! 3. The namespace: `istio-injection=enabled|disabled`, which wins over
//!    `istio.io/rev`; `istio.io/rev=<our revision>` enables.
//! 4. Otherwise no (Istio's `enableNamespacesByDefault` is off).
//!
//! The webhook is not told the namespace's labels: its configuration's
//! namespace and object selectors already made step 3's choice, so it asks
//! with [`Namespace::Selected`]. `weft kube-inject` works offline and asks
//! the same way (the user named the file to inject).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

pub const INJECT: &str = "sidecar.istio.io/inject";
pub const STATUS: &str = "sidecar.istio.io/status";
pub const NAMESPACE_INJECTION: &str = "istio-injection";
pub const REVISION: &str = "istio.io/rev";
/// Namespaces Istio never injects into.
pub const IGNORED_NAMESPACES: [&str; 3] = ["kube-system", "kube-public", "kube-node-lease"];

/// What is known of the pod's namespace.
#[derive(Debug, Clone, Copy)]
pub enum Namespace<'a> {
    /// Its labels (a caller that read the Namespace object).
    Labels(&'a BTreeMap<String, String>),
    /// Chosen already by the webhook's selectors (or by the user, offline).
    Selected,
}

/// The answer, with the reason (shown by `kube-inject`, logged by weftd).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Inject,
    Skip(String),
}

/// Yaml's true and false words, as Istio reads them.
fn truth(value: &str) -> Option<bool> {
    match value.to_ascii_lowercase().as_str() {
        "y" | "yes" | "true" | "on" => Some(true),
        "n" | "no" | "false" | "off" => Some(false),
        _ => None,
    }
}

pub fn decide(
    namespace_name: &str,
    namespace: Namespace<'_>,
    meta: &ObjectMeta,
    host_network: bool,
    revision: &str,
) -> Decision {
    if host_network {
        return Decision::Skip("the pod uses the host network (hostNetwork: true)".into());
    }
    if IGNORED_NAMESPACES.contains(&namespace_name) {
        return Decision::Skip(format!("namespace {namespace_name} is never injected"));
    }
    if meta
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(STATUS))
    {
        return Decision::Skip(format!("already injected (annotation {STATUS} is present)"));
    }
    let label = meta.labels.as_ref().and_then(|l| l.get(INJECT));
    let annotation = meta.annotations.as_ref().and_then(|a| a.get(INJECT));
    // The label is the newer API: with both, the label decides.
    let (pod_says, source) = match (label, annotation) {
        (Some(value), _) => (Some(value), "label"),
        (None, Some(value)) => (Some(value), "annotation"),
        (None, None) => (None, ""),
    };
    // An empty value means "not said" (Istio falls back to the default).
    let pod = pod_says
        .filter(|value| !value.is_empty())
        .map(|value| (truth(value), value));
    let namespace_says = match namespace {
        Namespace::Selected => Some(true),
        Namespace::Labels(labels) => match labels.get(NAMESPACE_INJECTION).map(String::as_str) {
            Some("enabled") => Some(true),
            Some("disabled") => Some(false),
            // Any other value: the label is there, rev is not consulted.
            Some(_) => None,
            None => labels.get(REVISION).map(|rev| rev == revision),
        },
    };
    match (pod, namespace_says) {
        (Some((Some(false), value)), _) => {
            Decision::Skip(format!("the pod's {INJECT} {source} is {value:?}"))
        }
        (_, Some(false)) if !matches!(namespace, Namespace::Selected) => Decision::Skip(format!(
            "namespace {namespace_name} is not enabled for revision {revision:?} or has {NAMESPACE_INJECTION}=disabled"
        )),
        (Some((Some(true), _)), _) => Decision::Inject,
        (Some((None, value)), _) => Decision::Skip(format!(
            "the pod's {INJECT} {source} {value:?} is neither true nor false"
        )),
        (None, Some(true)) => Decision::Inject,
        (None, _) => Decision::Skip(format!(
            "neither namespace {namespace_name} ({NAMESPACE_INJECTION}=enabled or {REVISION}={revision}) nor the pod ({INJECT}=true) asks for injection"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(labels: &[(&str, &str)], annotations: &[(&str, &str)]) -> ObjectMeta {
        let map = |pairs: &[(&str, &str)]| {
            Some(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<BTreeMap<_, _>>(),
            )
        };
        ObjectMeta {
            labels: map(labels),
            annotations: map(annotations),
            ..ObjectMeta::default()
        }
    }

    fn ns(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn check(namespace: &BTreeMap<String, String>, pod: &ObjectMeta) -> bool {
        decide("shop", Namespace::Labels(namespace), pod, false, "default") == Decision::Inject
    }

    #[test]
    fn istio_precedence_table() {
        let enabled = ns(&[("istio-injection", "enabled")]);
        let disabled = ns(&[("istio-injection", "disabled")]);
        let rev = ns(&[("istio.io/rev", "default")]);
        let other_rev = ns(&[("istio.io/rev", "canary")]);
        // istio-injection wins over istio.io/rev.
        let both = ns(&[("istio-injection", "disabled"), ("istio.io/rev", "default")]);
        let plain = ns(&[]);
        let none = meta(&[], &[]);
        let pod_true = meta(&[("sidecar.istio.io/inject", "true")], &[]);
        let pod_false = meta(&[("sidecar.istio.io/inject", "false")], &[]);
        let anno_false = meta(&[], &[("sidecar.istio.io/inject", "false")]);
        // The label decides when both are set.
        let label_over_anno = meta(
            &[("sidecar.istio.io/inject", "true")],
            &[("sidecar.istio.io/inject", "false")],
        );
        let cases = [
            (&enabled, &none, true),
            (&enabled, &pod_false, false),
            (&enabled, &anno_false, false),
            (&disabled, &none, false),
            (&disabled, &pod_true, false),
            (&rev, &none, true),
            (&other_rev, &none, false),
            (&both, &none, false),
            (&plain, &none, false),
            (&plain, &pod_true, true),
            (&plain, &label_over_anno, true),
        ];
        for (i, (namespace, pod, want)) in cases.iter().enumerate() {
            assert_eq!(check(namespace, pod), *want, "case {i}");
        }
    }

    #[test]
    fn never_twice_never_host_network_never_system_namespaces() {
        let injected = meta(&[], &[("sidecar.istio.io/status", "{}")]);
        let d = decide("shop", Namespace::Selected, &injected, false, "default");
        assert!(matches!(d, Decision::Skip(why) if why.contains("already injected")));
        let d = decide(
            "shop",
            Namespace::Selected,
            &meta(&[], &[]),
            true,
            "default",
        );
        assert!(matches!(d, Decision::Skip(why) if why.contains("hostNetwork")));
        let d = decide(
            "kube-system",
            Namespace::Selected,
            &meta(&[], &[]),
            false,
            "x",
        );
        assert!(matches!(d, Decision::Skip(_)));
        // Selected by the webhook: the pod may still opt out.
        let out = meta(&[("sidecar.istio.io/inject", "off")], &[]);
        assert!(matches!(
            decide("shop", Namespace::Selected, &out, false, "default"),
            Decision::Skip(_)
        ));
        assert_eq!(
            decide(
                "shop",
                Namespace::Selected,
                &meta(&[], &[]),
                false,
                "default"
            ),
            Decision::Inject
        );
    }
}
