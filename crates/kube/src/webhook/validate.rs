//! `/validate`: an Istio resource created or updated through the API
//! server is decoded and validated by `weft_api` exactly as `weft validate`
//! does it; problems deny the request with their field paths, fields Weft
//! accepts but does not honour come back as warnings (`kubectl` prints
//! them). Kinds Weft does not use are allowed untouched.

use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};

pub fn review(review: AdmissionReview<DynamicObject>) -> AdmissionReview<DynamicObject> {
    let request: AdmissionRequest<DynamicObject> = match review.try_into() {
        Ok(request) => request,
        Err(_) => return super::no_request(),
    };
    respond(&request).into_review()
}

pub fn respond(request: &AdmissionRequest<DynamicObject>) -> AdmissionResponse {
    let response = AdmissionResponse::from(request);
    let object = match (&request.operation, &request.object) {
        (Operation::Create | Operation::Update, Some(object)) => object,
        // Deletes and connects carry nothing to check.
        _ => return response,
    };
    let value = match serde_json::to_value(object) {
        Ok(value) => value,
        Err(err) => return response.deny(format!("cannot read the object: {err}")),
    };
    // The object as the API server sends it: namespace filled in. "admission"
    // stands where `weft validate` names the file.
    let decoded = weft_api::decode::decode_document(value, "admission", 1);
    let mut response = response;
    if !decoded.warnings.is_empty() {
        response.warnings = Some(
            decoded
                .warnings
                .iter()
                .map(|w| format!("{}: {}: {}", w.resource, w.field, w.message))
                .collect(),
        );
    }
    if decoded.problems.is_empty() {
        return response;
    }
    let lines: Vec<String> = decoded
        .problems
        .iter()
        .map(|problem| match &problem.resource {
            Some(resource) => format!("{resource}: {}", problem.error),
            None => problem.error.to_string(),
        })
        .collect();
    response.deny(format!("weft validation failed: {}", lines.join("; ")))
}
