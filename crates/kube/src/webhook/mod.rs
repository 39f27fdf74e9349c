//! The admission webhooks weftd serves, as pure functions from an
//! AdmissionReview (v1) body to the answer's body: [`validate`] (Galley's
//! job: Istio resources checked exactly as `weft validate` checks them) and
//! [`inject`] (the sidecar injector, answering with a JSONPatch).
//!
//! The HTTP server around them (TLS, paths, limits) is weftd's
//! (`weft_control::webhook`); nothing here does I/O except [`ca_bundle`],
//! which writes weftd's root into the webhook configurations.

pub mod ca_bundle;
pub mod inject;
pub mod validate;

use kube::core::DynamicObject;
use kube::core::admission::{AdmissionResponse, AdmissionReview};

use crate::inject::Settings;

pub const VALIDATE_PATH: &str = "/validate";
pub const INJECT_PATH: &str = "/inject";
/// The ValidatingWebhookConfiguration `weft install` makes.
pub const VALIDATOR_NAME: &str = "weft-validator";
/// The MutatingWebhookConfiguration `weft install` makes.
pub const INJECTOR_NAME: &str = "weft-sidecar-injector";

/// A request that is not an AdmissionReview: the HTTP status to answer
/// and why (the API server logs it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRequest {
    pub status: u16,
    pub message: String,
}

/// Routes one POST body by path; the answer is an AdmissionReview body.
pub fn answer(path: &str, body: &[u8], settings: &Settings) -> Result<Vec<u8>, BadRequest> {
    let review = match path {
        VALIDATE_PATH => validate::review(parse(body)?),
        INJECT_PATH => inject::review(parse(body)?, settings),
        other => {
            return Err(BadRequest {
                status: 404,
                message: format!(
                    "no webhook at {other}: weftd serves {VALIDATE_PATH} and {INJECT_PATH}"
                ),
            });
        }
    };
    serde_json::to_vec(&review).map_err(|err| BadRequest {
        status: 500,
        message: format!("cannot encode the AdmissionReview answer: {err}"),
    })
}

fn parse<T>(body: &[u8]) -> Result<AdmissionReview<T>, BadRequest>
where
    T: kube::core::Resource + serde::de::DeserializeOwned,
{
    serde_json::from_slice(body).map_err(|err| BadRequest {
        status: 400,
        message: format!("the body is not an admission.k8s.io/v1 AdmissionReview: {err}"),
    })
}

/// The answer when the review carries no request at all.
fn no_request() -> AdmissionReview<DynamicObject> {
    AdmissionResponse::invalid("the AdmissionReview has no request").into_review()
}

#[cfg(test)]
mod tests;
