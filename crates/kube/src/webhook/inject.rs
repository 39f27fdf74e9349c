//! `/inject`: a Pod being created is injected ([`crate::inject`]) and the
//! answer carries the difference as an RFC 6902 JSONPatch. A pod that is
//! not to be injected is allowed unchanged; annotations Weft cannot use
//! deny it with the annotation named; unsupported ones and unrewritten
//! probes come back as warnings.

use k8s_openapi::api::core::v1::Pod;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};

use crate::inject::{self, Namespace, Outcome, Settings};

pub fn review(review: AdmissionReview<Pod>, settings: &Settings) -> AdmissionReview<DynamicObject> {
    let request: AdmissionRequest<Pod> = match review.try_into() {
        Ok(request) => request,
        Err(_) => return super::no_request(),
    };
    respond(&request, settings).into_review()
}

pub fn respond(request: &AdmissionRequest<Pod>, settings: &Settings) -> AdmissionResponse {
    let response = AdmissionResponse::from(request);
    let pod = match (&request.operation, &request.object) {
        (Operation::Create, Some(pod)) => pod,
        _ => return response,
    };
    let namespace = request
        .namespace
        .clone()
        .or_else(|| pod.metadata.namespace.clone())
        .unwrap_or_else(|| "default".into());
    let (injected, warnings) =
        match inject::inject_pod(pod, &namespace, Namespace::Selected, settings) {
            Ok(Outcome::Skipped(why)) => {
                tracing::debug!(namespace, "pod not injected: {why}");
                return response;
            }
            Ok(Outcome::Injected { pod, warnings }) => (pod, warnings),
            Err(why) => {
                return response.deny(format!(
                    "weft sidecar injection refused pod {}: {why}",
                    pod_label(pod, &namespace)
                ));
            }
        };
    let patch = match (serde_json::to_value(pod), serde_json::to_value(&injected)) {
        (Ok(before), Ok(after)) => json_patch::diff(&before, &after),
        (Err(err), _) | (_, Err(err)) => {
            return response.deny(format!("cannot encode the pod: {err}"));
        }
    };
    let mut response = match response.with_patch(patch) {
        Ok(response) => response,
        Err(err) => {
            return AdmissionResponse::from(request)
                .deny(format!("cannot encode the injection patch: {err}"));
        }
    };
    if !warnings.is_empty() {
        response.warnings = Some(warnings);
    }
    response
}

fn pod_label(pod: &Pod, namespace: &str) -> String {
    let name = pod
        .metadata
        .name
        .clone()
        .or_else(|| pod.metadata.generate_name.as_ref().map(|g| format!("{g}*")))
        .unwrap_or_default();
    format!("{namespace}/{name}")
}
