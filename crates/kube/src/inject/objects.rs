//! Injection of whole manifests, as `weft kube-inject` does it offline: the
//! pod template of a Deployment, StatefulSet, DaemonSet, ReplicaSet, Job or
//! CronJob, or a Pod itself, edited in place in the document's JSON so
//! every other field is kept exactly. Other kinds pass through unchanged.

use k8s_openapi::api::core::v1::{PodSpec, PodTemplateSpec};
use serde_json::Value;

use super::policy::{self, Decision, Namespace};
use super::{Settings, inject_template};

/// What happened to one object, for the user (stderr).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    Injected {
        object: String,
        warnings: Vec<String>,
    },
    Skipped {
        object: String,
        why: String,
    },
}

/// Injects `document` (one parsed YAML/JSON document, a `List` too) in
/// place. Errors name the object and the annotation refused.
pub fn inject_document(document: &mut Value, settings: &Settings) -> Result<Vec<Note>, String> {
    let mut notes = Vec::new();
    if document.get("kind").and_then(Value::as_str) == Some("List") {
        if let Some(Value::Array(items)) = document.get_mut("items") {
            for item in items {
                notes.extend(inject_document(item, settings)?);
            }
        }
        return Ok(notes);
    }
    let kind = document
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let meta = |field: &str| {
        document
            .pointer(&format!("/metadata/{field}"))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let (name, namespace) = (meta("name"), meta("namespace"));
    let namespace = if namespace.is_empty() {
        "default".to_string()
    } else {
        namespace
    };
    let object = format!("{kind} {namespace}/{name}");
    let pointer = match kind.as_str() {
        "Pod" => "",
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => "/spec/template",
        "CronJob" => "/spec/jobTemplate/spec/template",
        _ => return Ok(notes),
    };
    let Some(template) = document.pointer_mut(pointer) else {
        return Err(format!("{object}: no pod template at {pointer}"));
    };
    let mut pod: PodTemplateSpec = serde_json::from_value(template.clone())
        .map_err(|err| format!("{object}: the pod template does not decode: {err}"))?;
    let mut meta = pod.metadata.take().unwrap_or_default();
    let mut spec: PodSpec = pod.spec.take().unwrap_or_default();
    let host_network = spec.host_network.unwrap_or(false);
    match policy::decide(
        &namespace,
        Namespace::Selected,
        &meta,
        host_network,
        &settings.revision,
    ) {
        Decision::Skip(why) => notes.push(Note::Skipped { object, why }),
        Decision::Inject => {
            let workload = if kind == "Pod" {
                super::workload_name(&meta)
            } else {
                name.clone()
            };
            let warnings = inject_template(&workload, &mut meta, &mut spec, settings)
                .map_err(|err| format!("{object}: {err}"))?;
            // Only metadata and spec are written back: a Pod's other fields
            // (status, apiVersion, kind) stay as they were.
            let (meta, spec) = match (serde_json::to_value(&meta), serde_json::to_value(&spec)) {
                (Ok(meta), Ok(spec)) => (meta, spec),
                (Err(err), _) | (_, Err(err)) => return Err(format!("{object}: {err}")),
            };
            if let Value::Object(fields) = template {
                fields.insert("metadata".into(), meta);
                fields.insert("spec".into(), spec);
            }
            notes.push(Note::Injected { object, warnings });
        }
    }
    Ok(notes)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn workload_templates_are_injected_and_the_rest_is_kept() {
        let mut deployment = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "details-v1", "namespace": "shop", "labels": {"app": "details"}},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "details"}},
                "template": {
                    "metadata": {"labels": {"app": "details", "version": "v1"}},
                    "spec": {"containers": [{"name": "details", "image": "details:1"}]}
                }
            }
        });
        let notes = inject_document(&mut deployment, &Settings::default()).expect("injects");
        assert!(
            matches!(&notes[..], [Note::Injected { object, .. }] if object == "Deployment shop/details-v1")
        );
        assert_eq!(deployment["spec"]["replicas"], 2);
        assert_eq!(deployment["metadata"]["labels"], json!({"app": "details"}));
        let template = &deployment["spec"]["template"];
        assert_eq!(template["spec"]["initContainers"][0]["name"], "weft-init");
        let args = template["spec"]["initContainers"][1]["args"].to_string();
        assert!(args.contains("\"--workload\",\"details-v1\""), "{args}");
        assert_eq!(
            template["metadata"]["labels"]["security.istio.io/tlsMode"],
            "istio"
        );

        let mut cron = json!({
            "apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "report"},
            "spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": {
                "spec": {"restartPolicy": "Never", "containers": [{"name": "r", "image": "r"}]}}}}}
        });
        inject_document(&mut cron, &Settings::default()).expect("injects");
        assert!(
            cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["initContainers"].is_array()
        );

        let mut service =
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"}, "spec": {}});
        let before = service.clone();
        assert!(
            inject_document(&mut service, &Settings::default())
                .expect("ok")
                .is_empty()
        );
        assert_eq!(service, before);
    }

    #[test]
    fn opted_out_templates_are_skipped_with_the_reason() {
        let mut list = json!({"apiVersion": "v1", "kind": "List", "items": [{
            "apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "agent"},
            "spec": {"template": {"spec": {"hostNetwork": true, "containers": [{"name": "a"}]}}}
        }, {
            "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "migrate"},
            "spec": {"template": {"metadata": {"labels": {"sidecar.istio.io/inject": "false"}},
                                  "spec": {"containers": [{"name": "m"}]}}}
        }]});
        let notes = inject_document(&mut list, &Settings::default()).expect("ok");
        assert_eq!(notes.len(), 2);
        assert!(matches!(&notes[0], Note::Skipped { why, .. } if why.contains("hostNetwork")));
        assert!(matches!(&notes[1], Note::Skipped { why, .. } if why.contains("\"false\"")));
        assert!(list["items"][0]["spec"]["template"]["spec"]["initContainers"].is_null());
    }
}
