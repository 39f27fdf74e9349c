//! The Istio kinds weftd reads from a cluster, found by group and kind
//! (whichever CRDs define them: Weft's `manifests/crds` or Istio's own), and
//! cluster objects decoded with weft-api's decoder, so a bad object gets the
//! same message `weft validate` gives for a file.

use kube::core::DynamicObject;
use serde_json::Value;
use weft_api::{Problem, Resource};

/// (API group, kind) of every Istio kind Weft serves.
pub const KINDS: &[(&str, &str)] = &[
    ("networking.istio.io", "VirtualService"),
    ("networking.istio.io", "DestinationRule"),
    ("networking.istio.io", "Gateway"),
    ("networking.istio.io", "ServiceEntry"),
    ("networking.istio.io", "Sidecar"),
    ("networking.istio.io", "WorkloadEntry"),
    ("networking.istio.io", "WorkloadGroup"),
    ("security.istio.io", "AuthorizationPolicy"),
    ("security.istio.io", "PeerAuthentication"),
    ("security.istio.io", "RequestAuthentication"),
    ("telemetry.istio.io", "Telemetry"),
    ("weft.io", "RateLimit"),
];

/// Annotations that only tools read; kept out so that `kubectl apply`
/// bookkeeping is not a change.
const TOOL_ANNOTATIONS: &[&str] = &["kubectl.kubernetes.io/last-applied-configuration"];

/// What one cluster object became.
#[derive(Debug)]
pub enum Decoded {
    Resource(Box<Resource>, Vec<weft_api::FieldWarning>),
    /// Invalid (the validating webhook would have refused it): skipped.
    Invalid(Vec<Problem>),
    /// Not an object weft-api knows (cannot happen for [`KINDS`]).
    Other,
}

/// Decodes `object`, read as `api_version`/`kind`, keeping only what a
/// user wrote: name, namespace, labels, annotations (without tool
/// bookkeeping) and spec. Server-set metadata (resourceVersion, uid,
/// managedFields, ...) and `status` are dropped, so an update that touches
/// only them decodes to an equal [`Resource`].
pub fn decode(object: &DynamicObject, api_version: &str, kind: &str) -> Decoded {
    let meta = &object.metadata;
    let name = meta.name.clone().unwrap_or_default();
    let namespace = meta.namespace.clone().unwrap_or_default();
    let mut annotations = meta.annotations.clone().unwrap_or_default();
    for key in TOOL_ANNOTATIONS {
        annotations.remove(*key);
    }
    let mut metadata = serde_json::Map::new();
    metadata.insert("name".into(), Value::String(name.clone()));
    metadata.insert("namespace".into(), Value::String(namespace.clone()));
    if let Some(labels) = meta.labels.as_ref().filter(|l| !l.is_empty()) {
        metadata.insert("labels".into(), serde_json::json!(labels));
    }
    if !annotations.is_empty() {
        metadata.insert("annotations".into(), serde_json::json!(annotations));
    }
    let mut value = serde_json::Map::new();
    value.insert("apiVersion".into(), Value::String(api_version.to_string()));
    value.insert("kind".into(), Value::String(kind.to_string()));
    value.insert("metadata".into(), Value::Object(metadata));
    if let Some(spec) = object.data.get("spec") {
        value.insert("spec".into(), spec.clone());
    }
    // Errors name the object as the cluster holds it.
    let file = format!("cluster {kind} {namespace}/{name}");
    let mut decoded = weft_api::decode::decode_document(Value::Object(value), &file, 0);
    if !decoded.problems.is_empty() {
        return Decoded::Invalid(decoded.problems);
    }
    match decoded.resources.pop() {
        Some(resource) => Decoded::Resource(Box::new(resource), decoded.warnings),
        None => Decoded::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dynamic(value: Value) -> DynamicObject {
        serde_json::from_value(value).expect("object")
    }

    #[test]
    fn every_kind_weft_stores_is_read_from_the_cluster() {
        let read: Vec<&str> = KINDS.iter().map(|(_, kind)| *kind).collect();
        for kind in weft_api::resource::KINDS {
            assert!(read.contains(kind), "{kind} is not read from clusters");
        }
    }

    #[test]
    fn server_metadata_and_status_are_not_part_of_the_resource() {
        let object = |version: &str, status: &str| {
            dynamic(serde_json::json!({
                "apiVersion": "networking.istio.io/v1beta1", "kind": "VirtualService",
                "metadata": {"name": "r", "namespace": "shop", "resourceVersion": version,
                             "uid": "u1", "generation": 3, "managedFields": [{"manager": "kubectl"}],
                             "annotations": {"kubectl.kubernetes.io/last-applied-configuration": version,
                                             "team": "a"}},
                "spec": {"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews"}}]}]},
                "status": {"observedGeneration": status}
            }))
        };
        let first = decode(
            &object("10", "1"),
            "networking.istio.io/v1",
            "VirtualService",
        );
        let second = decode(
            &object("11", "2"),
            "networking.istio.io/v1",
            "VirtualService",
        );
        let (Decoded::Resource(first, _), Decoded::Resource(second, _)) = (first, second) else {
            panic!("both decode");
        };
        assert_eq!(first, second);
        assert_eq!(first.metadata().key(), "shop/r");
        assert_eq!(first.metadata().annotations.len(), 1, "team only");
    }

    #[test]
    fn invalid_cluster_objects_get_the_file_validation_message() {
        let object = dynamic(serde_json::json!({
            "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": "bad", "namespace": "shop"},
            "spec": {"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews"}, "weight": -1}]}]}
        }));
        let Decoded::Invalid(problems) =
            decode(&object, "networking.istio.io/v1", "VirtualService")
        else {
            panic!("refused");
        };
        let text = problems[0].to_string();
        assert!(text.contains("cluster VirtualService shop/bad"), "{text}");
        assert!(text.contains("spec.http[0].route[0].weight"), "{text}");
    }
}
