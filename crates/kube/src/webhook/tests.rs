//! The webhooks answering AdmissionReview bodies written here, as the API
//! server sends them.

use serde_json::{Value, json};

use super::*;

fn review(
    resource: (&str, &str, &str),
    kind: (&str, &str, &str),
    op: &str,
    object: Value,
) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": {"group": kind.0, "version": kind.1, "kind": kind.2},
            "resource": {"group": resource.0, "version": resource.1, "resource": resource.2},
            "namespace": "bookinfo",
            "operation": op,
            "userInfo": {"username": "admin"},
            "object": object,
            "dryRun": false
        }
    }))
    .expect("body")
}

fn answer_of(path: &str, body: &[u8]) -> Value {
    let out = answer(path, body, &Settings::default()).expect("answered");
    serde_json::from_slice(&out).expect("json answer")
}

fn virtual_service(spec: Value) -> Vec<u8> {
    review(
        ("networking.istio.io", "v1", "virtualservices"),
        ("networking.istio.io", "v1", "VirtualService"),
        "CREATE",
        json!({
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": {"name": "reviews", "namespace": "bookinfo", "uid": "x", "generation": 1},
            "spec": spec
        }),
    )
}

#[test]
fn invalid_istio_resources_are_denied_with_their_field_paths() {
    let body = virtual_service(json!({
        "hosts": ["reviews"],
        "http": [{"route": [{"destination": {"subset": "v1"}, "weight": 120}]}]
    }));
    let answer = answer_of(VALIDATE_PATH, &body);
    let response = &answer["response"];
    assert_eq!(answer["kind"], "AdmissionReview");
    assert_eq!(response["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
    assert_eq!(response["allowed"], false);
    let message = response["status"]["message"].as_str().expect("message");
    assert!(
        message.contains(
            "VirtualService bookinfo/reviews: spec.http[0].route[0].destination.host: Required value"
        ),
        "{message}"
    );
    assert!(
        message.contains("spec.http[0].route[0].weight: must be 0..100"),
        "{message}"
    );
}

#[test]
fn valid_resources_pass_and_unhonoured_fields_warn() {
    let ok = virtual_service(json!({
        "hosts": ["reviews"],
        "http": [{"route": [{"destination": {"host": "reviews", "subset": "v1"}}]}]
    }));
    let answer = answer_of(VALIDATE_PATH, &ok);
    assert_eq!(answer["response"]["allowed"], true);
    assert!(answer["response"].get("patch").is_none());

    let dr = review(
        ("networking.istio.io", "v1", "destinationrules"),
        ("networking.istio.io", "v1", "DestinationRule"),
        "UPDATE",
        json!({
            "apiVersion": "networking.istio.io/v1",
            "kind": "DestinationRule",
            "metadata": {"name": "reviews", "namespace": "bookinfo"},
            "spec": {"host": "reviews", "trafficPolicy": {"proxyProtocol": {"version": "V1"}}}
        }),
    );
    let answer = answer_of(VALIDATE_PATH, &dr);
    assert_eq!(answer["response"]["allowed"], true);
    let warnings = answer["response"]["warnings"].to_string();
    assert!(
        warnings.contains("spec.trafficPolicy.proxyProtocol"),
        "{warnings}"
    );

    // A kind Weft does not use, and a delete: allowed as they are.
    let other = review(
        ("networking.istio.io", "v1alpha3", "envoyfilters"),
        ("networking.istio.io", "v1alpha3", "EnvoyFilter"),
        "CREATE",
        json!({"apiVersion": "networking.istio.io/v1alpha3", "kind": "EnvoyFilter",
               "metadata": {"name": "f", "namespace": "bookinfo"}, "spec": {}}),
    );
    assert_eq!(
        answer_of(VALIDATE_PATH, &other)["response"]["allowed"],
        true
    );
}

fn pod_review(annotations: Value) -> Vec<u8> {
    review(
        ("", "v1", "pods"),
        ("", "v1", "Pod"),
        "CREATE",
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"generateName": "productpage-v1-6b746f74dc-", "namespace": "bookinfo",
                         "labels": {"app": "productpage", "version": "v1"},
                         "annotations": annotations},
            "spec": {"containers": [{"name": "productpage", "image": "productpage:1",
                                     "ports": [{"containerPort": 9080}]}]}
        }),
    )
}

#[test]
fn pods_get_a_json_patch_that_injects_the_sidecar() {
    let body = pod_review(json!({"sidecar.istio.io/statsHistogramBuckets": "{}"}));
    let answer = answer_of(INJECT_PATH, &body);
    let response = &answer["response"];
    assert_eq!(response["allowed"], true);
    assert_eq!(response["patchType"], "JSONPatch");
    // kube writes the patch's bytes as a JSON array of numbers, which the
    // API server's decoder reads into its []byte as well as base64.
    let patch_bytes: Vec<u8> = serde_json::from_value(response["patch"].clone()).expect("bytes");
    let patch: json_patch::Patch = serde_json::from_slice(&patch_bytes).expect("patch json");
    let request: Value = serde_json::from_slice(&body).expect("body");
    let mut pod = request["request"]["object"].clone();
    json_patch::patch(&mut pod, &patch).expect("patch applies");
    assert_eq!(pod["spec"]["initContainers"][0]["name"], "weft-init");
    assert_eq!(pod["spec"]["initContainers"][1]["name"], "weft-proxy");
    assert_eq!(pod["spec"]["initContainers"][1]["restartPolicy"], "Always");
    assert_eq!(
        pod["metadata"]["labels"]["security.istio.io/tlsMode"],
        "istio"
    );
    assert!(pod["metadata"]["annotations"]["sidecar.istio.io/status"].is_string());
    let warnings = response["warnings"].to_string();
    assert!(warnings.contains("statsHistogramBuckets"), "{warnings}");
}

#[test]
fn pods_that_opt_out_pass_unchanged_and_bad_annotations_are_denied() {
    let body = pod_review(json!({"sidecar.istio.io/inject": "false"}));
    let response = &answer_of(INJECT_PATH, &body)["response"];
    assert_eq!(response["allowed"], true);
    assert!(response.get("patch").is_none());

    let body = pod_review(json!({"traffic.sidecar.istio.io/excludeOutboundIPRanges": "nope"}));
    let response = &answer_of(INJECT_PATH, &body)["response"];
    assert_eq!(response["allowed"], false);
    let message = response["status"]["message"].as_str().expect("message");
    assert!(
        message.contains("bookinfo/productpage-v1-6b746f74dc-*")
            && message.contains("excludeOutboundIPRanges"),
        "{message}"
    );
}

#[test]
fn bodies_that_are_not_reviews_and_unknown_paths_are_refused() {
    let err = answer(VALIDATE_PATH, b"{not json", &Settings::default()).expect_err("bad body");
    assert_eq!(err.status, 400);
    let err = answer("/mutate", b"{}", &Settings::default()).expect_err("bad path");
    assert_eq!(err.status, 404);
    assert!(err.message.contains("/inject"));
}
