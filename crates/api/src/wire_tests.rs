use serde_json::json;

use super::*;

#[test]
fn a_proxies_answer_round_trips_and_keeps_its_wire_names() {
    let reply = ProxiesReply {
        proxies: vec![ProxyStatus {
            id: "reviews-v1.default".into(),
            workload: "reviews-v1".into(),
            namespace: "default".into(),
            connected: true,
            sent_version: "7".into(),
            acked_version: "6".into(),
            error: None,
            synced: false,
        }],
        refused: vec![Refusal {
            time: "2026-12-07T16:00:00Z".into(),
            peer: "127.0.0.1:4000".into(),
            id: "x".into(),
            code: "PermissionDenied".into(),
            reason: "node id held by another proxy".into(),
        }],
    };
    let value = to_value(&reply);
    // The names `weft proxy-status` of older releases read.
    assert_eq!(value["proxies"][0]["sentVersion"], "7");
    assert_eq!(value["proxies"][0]["ackedVersion"], "6");
    assert_eq!(value["proxies"][0]["error"], Value::Null);
    assert_eq!(
        value["refused"][0]["reason"],
        "node id held by another proxy"
    );
    let decoded: ProxiesReply = decode("weftd's proxy list", &value).expect("decodes");
    assert_eq!(decoded, reply);
    assert_eq!(decoded.proxies[0].sync(), Sync::Stale);
}

#[test]
fn token_answers_round_trip() {
    let minted = TokenMinted {
        token: "weft1.abc".into(),
        id: "t-1".into(),
        identity: "spiffe://cluster.local/ns/default/sa/vm".into(),
        workload_group: "vms".into(),
        address: Some("127.0.0.9".parse().expect("ip")),
        expires: 1_800_000_000,
    };
    let value = to_value(&minted);
    assert_eq!(value["workloadGroup"], "vms");
    assert_eq!(value["address"], "127.0.0.9");
    assert_eq!(
        decode::<TokenMinted>("minted", &value).expect("decodes"),
        minted
    );

    // A request without the optional fields sends none (weftd denies
    // unknown fields, and null is not an IP).
    let request = TokenRequest {
        namespace: "default".into(),
        workload_group: "vms".into(),
        address: None,
        ttl: None,
    };
    assert_eq!(
        to_value(&request),
        json!({"namespace": "default", "workloadGroup": "vms"})
    );
    let unknown = json!({"namespace": "default", "workloadGroup": "vms", "group": "x"});
    let err = decode::<TokenRequest>("the token request", &unknown).expect_err("unknown field");
    assert!(err.to_string().contains("unknown field `group`"), "{err}");
}

#[test]
fn a_malformed_answer_names_the_field() {
    let body = json!({"proxies": [
        {"id": "a", "workload": "a", "namespace": "default", "connected": true,
         "sentVersion": "1", "ackedVersion": "1", "error": null},
        {"id": "b", "workload": "b", "namespace": "default", "connected": "yes",
         "sentVersion": "1", "ackedVersion": "1"}
    ]});
    let err = decode::<ProxiesReply>("weftd's proxy list", &body).expect_err("a string bool");
    assert_eq!(err.path(), "field proxies[1].connected");
    let text = err.to_string();
    assert!(
        text.starts_with("weftd's proxy list is not understood: field proxies[1].connected: invalid type: string \"yes\", expected a boolean"),
        "{text}"
    );

    let missing = json!({"applied": [{"kind": "VirtualService", "namespace": "default", "name": "r", "change": "created"}]});
    let err = decode::<ApplyReply>("weftd's apply reply", &missing).expect_err("no version");
    assert!(
        err.to_string()
            .contains("field applied[0]: missing field `resourceVersion`"),
        "{err}"
    );

    let err = decode::<ListReply>("weftd's list", &json!("not found")).expect_err("not an object");
    assert!(err.to_string().contains("the body: invalid type"), "{err}");
}
