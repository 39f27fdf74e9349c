use serde_json::json;

use super::*;

fn input(objects: &[Value]) -> Input {
    let mut input = Input::default();
    for (index, object) in objects.iter().enumerate() {
        input.add_document(object.clone(), "test.yaml", index + 1, "default");
    }
    input
}

#[test]
fn a_missing_subset_is_reported_in_istioctl_shape() {
    let input = input(&[
        json!({"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
               "metadata": {"name": "reviews"},
               "spec": {"hosts": ["reviews.default.svc.cluster.local"], "location": "MESH_INTERNAL",
                        "resolution": "STATIC", "ports": [{"number": 9080, "name": "http", "protocol": "HTTP"}]}}),
        json!({"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
               "metadata": {"name": "reviews"},
               "spec": {"host": "reviews", "subsets": [{"name": "v1", "labels": {"version": "v1"}}]}}),
        json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
               "metadata": {"name": "reviews"},
               "spec": {"hosts": ["reviews"], "http": [{"route": [
                   {"destination": {"host": "reviews", "subset": "v1"}, "weight": 50},
                   {"destination": {"host": "reviews", "subset": "v9"}, "weight": 50}]}]}}),
    ]);
    let messages = analyze(&input, &[]).expect("analyze");
    let lines: Vec<String> = messages.iter().map(ToString::to_string).collect();
    assert_eq!(
        lines,
        [
            "Error [IST0101] (VirtualService default/reviews) Referenced host+subset in destinationrule not found: \"reviews+v9\""
        ]
    );
}

#[test]
fn invalid_fields_are_schema_errors() {
    let input = input(&[
        json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "ratings"},
        "spec": {"hosts": ["ratings"], "http": [{"route": [{"destination": {"host": "ratings"}, "weight": 150}]}]}}),
    ]);
    let messages = analyze(&input, &["schema.ValidationAnalyzer"]).expect("analyze");
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert_eq!(messages[0].code, "IST0106");
    assert!(messages[0].text.contains("weight"), "{}", messages[0].text);
}

#[test]
fn an_unknown_analyzer_is_named() {
    let err = analyze(&Input::default(), &["nope"]).expect_err("unknown");
    assert!(err.contains("nope") && err.contains("gateway.ConflictingGatewayAnalyzer"));
}

#[test]
fn servers_of_another_kind_on_a_used_port_are_reported() {
    let input = input(&[
        json!({"apiVersion": "networking.istio.io/v1", "kind": "Gateway",
               "metadata": {"name": "edge", "namespace": "istio-system"},
               "spec": {"selector": {"istio": "ingressgateway"}, "servers": [
                   {"port": {"number": 443, "name": "https", "protocol": "HTTPS"}, "hosts": ["a.example.com"],
                    "tls": {"mode": "SIMPLE", "credentialName": "a"}},
                   {"port": {"number": 443, "name": "https-b", "protocol": "HTTPS"}, "hosts": ["b.example.com"],
                    "tls": {"mode": "MUTUAL", "credentialName": "b"}},
                   {"port": {"number": 443, "name": "tls", "protocol": "TLS"}, "hosts": ["c.example.com"],
                    "tls": {"mode": "PASSTHROUGH"}},
                   {"port": {"number": 8443, "name": "https-m", "protocol": "HTTPS"}, "hosts": ["d.example.com"],
                    "tls": {"mode": "MUTUAL", "serverCertificate": "/c", "privateKey": "/k"}}]}}),
    ]);
    let messages = analyze(&input, &["weft.GatewayServerAnalyzer"]).expect("analyze");
    let lines: Vec<String> = messages.iter().map(ToString::to_string).collect();
    assert_eq!(
        lines,
        [
            "Warning [WEFT0002] (Gateway istio-system/edge) servers[2] carries TLS passthrough on port 443, which servers[0] uses for terminated HTTPS; Weft serves one kind per port: servers[2] is left out",
            "Warning [WEFT0002] (Gateway istio-system/edge) servers[3]: MUTUAL and OPTIONAL_MUTUAL need tls.caCertificates (or a credentialName with a CA) to verify clients: the server is left out"
        ]
    );
}

#[test]
fn a_workload_sent_to_two_custom_providers_is_reported_on_both_policies() {
    let custom = |name: &str, namespace: &str, provider: &str, labels: Value| {
        json!({"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
               "metadata": {"name": name, "namespace": namespace},
               "spec": {"selector": {"matchLabels": labels}, "action": "CUSTOM",
                        "provider": {"name": provider}, "rules": [{}]}})
    };
    let input = input(&[
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": "web-1", "namespace": "shop", "labels": {"app": "web"}}}),
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": "db-1", "namespace": "shop", "labels": {"app": "db"}}}),
        custom("opa", "shop", "opa", json!({"app": "web"})),
        custom("oauth", "istio-system", "oauth2", json!({"app": "web"})),
        // Same provider twice on db: nothing to report.
        custom("db-a", "shop", "opa", json!({"app": "db"})),
        custom("db-b", "shop", "opa", json!({"app": "db"})),
    ]);
    let messages = analyze(&input, &["weft.CustomProvidersAnalyzer"]).expect("analyze");
    let lines: Vec<String> = messages.iter().map(ToString::to_string).collect();
    let text = "workload shop/web-1 is sent by CUSTOM policies to 2 providers (oauth2, opa); \
                Istio allows one provider per workload, Weft asks each policy's own";
    assert_eq!(
        lines,
        [
            format!("Warning [WEFT0003] (AuthorizationPolicy istio-system/oauth) {text}"),
            format!("Warning [WEFT0003] (AuthorizationPolicy shop/opa) {text}"),
        ]
    );
}
