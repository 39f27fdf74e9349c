//! VirtualService `http` routes in the full proxy model: matches, redirects,
//! direct responses, rewrites, header changes, per-port and per-caller
//! routes, delegates. Every config is checked against the proxy's own
//! validation (`tests::compile`).

use weft_proto::proxy::v1::{self as pb, ProxyConfig};

use super::MeshIndex;
use super::tests::{REVIEWS, REVIEWS_HOST, compile, config, mesh, node, service};

/// REVIEWS with subsets v1 and v2, plus `vs` (VirtualService specs in
/// namespace shop, each a YAML document body after `spec:`).
fn reviews_mesh(virtual_services: &[(&str, &str)]) -> MeshIndex {
    let mut yaml = format!(
        "{REVIEWS}---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: reviews, namespace: shop}}
spec:
  host: reviews
  subsets: [{{name: v1, labels: {{version: v1}}}}, {{name: v2, labels: {{version: v2}}}}]
"
    );
    for (name, spec) in virtual_services {
        yaml.push_str(&format!(
            "---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {name}, namespace: shop}}
spec:
{spec}"
        ));
    }
    mesh(&yaml, &[])
}

fn routes(config: &ProxyConfig) -> &[pb::Route] {
    &service(config, REVIEWS_HOST).expect("reviews").ports[0].routes
}

fn clusters(route: &pb::Route) -> Vec<&str> {
    route.clusters.iter().map(|c| c.cluster.as_str()).collect()
}

fn exact(value: &str) -> Option<pb::StringMatch> {
    Some(pb::StringMatch {
        kind: Some(pb::string_match::Kind::Exact(value.into())),
    })
}

const V1: &str = "outbound|9080|v1|reviews.shop.svc.cluster.local";
const V2: &str = "outbound|9080|v2|reviews.shop.svc.cluster.local";

#[test]
fn bookinfo_header_match_routes_jason_to_v2() {
    let index = reviews_mesh(&[(
        "reviews",
        "  hosts: [reviews]
  http:
  - match: [{headers: {end-user: {exact: jason}}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - route: [{destination: {host: reviews, subset: v1}}]
",
    )]);
    assert!(index.warnings().is_empty(), "{:?}", index.warnings());
    let config = config(&index, &node("shop", &[]));
    let routes = routes(&config);
    assert_eq!(routes.len(), 2);
    let first = routes[0].r#match.as_ref().expect("a match");
    assert_eq!(
        first.headers,
        [pb::HeaderMatch {
            claim: Vec::new(),
            name: "end-user".into(),
            value: exact("jason"),
            invert: false,
        }]
    );
    assert_eq!(first.path, None);
    assert_eq!(clusters(&routes[0]), [V2]);
    assert!(routes[1].r#match.is_none());
    assert_eq!(clusters(&routes[1]), [V1]);
}

#[test]
fn match_conditions_map_one_to_one() {
    let index = reviews_mesh(&[(
        "reviews",
        "  hosts: [reviews]
  http:
  - match:
    - uri: {regex: '/api/v[0-9]+/.*'}
      withoutHeaders: {x-debug: {}, x-canary: {prefix: 'no'}}
      queryParams: {user: {exact: ann}, trace: {}}
      method: {exact: GET}
      authority: {prefix: reviews}
      scheme: {exact: http}
    - uri: {prefix: /Legacy}
      ignoreUriCase: true
      headers: {x-tenant: {regex: 'a|b'}, x-present: {}}
    route: [{destination: {host: reviews, subset: v2}}]
",
    )]);
    assert!(index.warnings().is_empty(), "{:?}", index.warnings());
    let config = config(&index, &node("shop", &[]));
    let routes = routes(&config);
    assert_eq!(routes.len(), 2);
    let regex = routes[0].r#match.as_ref().expect("a match");
    assert_eq!(
        regex.path,
        Some(pb::route_match::Path::PathRegex("/api/v[0-9]+/.*".into()))
    );
    assert!(!regex.ignore_uri_case);
    let without: Vec<(&str, bool, bool)> = regex
        .headers
        .iter()
        .map(|h| (h.name.as_str(), h.value.is_some(), h.invert))
        .collect();
    assert_eq!(
        without,
        [("x-canary", true, true), ("x-debug", false, true)]
    );
    let params: Vec<(&str, Option<pb::StringMatch>)> = regex
        .query_params
        .iter()
        .map(|q| (q.name.as_str(), q.value.clone()))
        .collect();
    assert_eq!(params, [("trace", None), ("user", exact("ann"))]);
    assert_eq!(regex.method, exact("GET"));
    assert_eq!(
        regex.authority,
        Some(pb::StringMatch {
            kind: Some(pb::string_match::Kind::Prefix("reviews".into()))
        })
    );
    assert_eq!(regex.scheme, exact("http"));

    let legacy = routes[1].r#match.as_ref().expect("a match");
    assert_eq!(
        legacy.path,
        Some(pb::route_match::Path::PathPrefix("/Legacy".into()))
    );
    assert!(legacy.ignore_uri_case);
    let headers: Vec<(&str, bool)> = legacy
        .headers
        .iter()
        .map(|h| (h.name.as_str(), h.value.is_some()))
        .collect();
    // `{}` means present.
    assert_eq!(headers, [("x-present", false), ("x-tenant", true)]);
}

#[test]
fn redirect_direct_response_and_rewrite() {
    let index = reviews_mesh(&[(
        "reviews",
        "  hosts: [reviews]
  http:
  - match: [{uri: {exact: /old}}]
    redirect: {uri: /new, authority: example.com, scheme: https, port: 8443, redirectCode: 308}
  - match: [{uri: {prefix: /moved}}]
    redirect: {uri: /here}
  - match: [{uri: {exact: /ping}}]
    directResponse: {status: 200, body: {string: pong}}
  - match: [{uri: {exact: /bytes}}]
    directResponse: {status: 503, body: {bytes: b2sh}}
  - match: [{uri: {prefix: /v1/}}]
    rewrite: {uri: /, authority: internal.reviews}
    timeout: 3s
    route: [{destination: {host: reviews, subset: v1}}]
  - rewrite: {uriRegexRewrite: {match: '^/a/(.*)$', rewrite: '/b/\\1'}}
    route: [{destination: {host: reviews, subset: v2}}]
",
    )]);
    assert!(index.warnings().is_empty(), "{:?}", index.warnings());
    let config = config(&index, &node("shop", &[]));
    let routes = routes(&config);
    assert_eq!(routes.len(), 6);
    assert_eq!(
        routes[0].redirect,
        Some(pb::Redirect {
            uri: "/new".into(),
            authority: "example.com".into(),
            code: 308,
            scheme: "https".into(),
            port: 8443,
            derive_port: 0,
        })
    );
    assert!(routes[0].clusters.is_empty() && routes[0].direct_response.is_none());
    assert_eq!(routes[1].redirect.as_ref().map(|r| r.code), Some(301));
    let responses: Vec<Option<(u32, &str)>> = routes[2..4]
        .iter()
        .map(|r| {
            r.direct_response
                .as_ref()
                .map(|d| (d.status, d.body.as_str()))
        })
        .collect();
    assert_eq!(responses, [Some((200, "pong")), Some((503, "ok!"))]);
    assert!(routes[2].clusters.is_empty() && routes[2].redirect.is_none());
    assert_eq!(
        routes[4].rewrite,
        Some(pb::Rewrite {
            uri: "/".into(),
            authority: "internal.reviews".into(),
            ..Default::default()
        })
    );
    assert_eq!(routes[4].timeout.as_ref().map(|t| t.seconds), Some(3));
    assert_eq!(clusters(&routes[4]), [V1]);
    let regex = routes[5].rewrite.as_ref().expect("a rewrite");
    assert_eq!(
        (
            regex.uri_regex_pattern.as_str(),
            regex.uri_regex_substitution.as_str()
        ),
        ("^/a/(.*)$", "/b/\\1")
    );
}

#[test]
fn header_operations_at_route_and_destination_level() {
    let index = reviews_mesh(&[(
        "reviews",
        "  hosts: [reviews]
  http:
  - headers:
      request: {set: {X-Route: r, host: reviews.internal}, remove: [X-Secret]}
      response: {add: {x-served-by: weft}}
    route:
    - destination: {host: reviews, subset: v1}
      weight: 80
      headers: {request: {set: {x-version: v1}}, response: {remove: [server]}}
    - destination: {host: reviews, subset: v2}
      weight: 20
",
    )]);
    assert!(index.warnings().is_empty(), "{:?}", index.warnings());
    let config = config(&index, &node("shop", &[]));
    let route = &routes(&config)[0];
    let request = route.request_headers.as_ref().expect("request ops");
    assert_eq!(
        request.set.iter().collect::<Vec<_>>(),
        [(&"x-route".to_string(), &"r".to_string())]
    );
    assert_eq!(request.remove, ["x-secret"]);
    // As in Istio, setting `host` rewrites the authority.
    assert_eq!(
        route.rewrite.as_ref().map(|r| r.authority.as_str()),
        Some("reviews.internal")
    );
    let response = route.response_headers.as_ref().expect("response ops");
    assert_eq!(
        response.add.get("x-served-by").map(String::as_str),
        Some("weft")
    );
    let v1 = &route.clusters[0];
    assert_eq!((v1.cluster.as_str(), v1.weight), (V1, 80));
    assert_eq!(
        v1.request_headers
            .as_ref()
            .and_then(|o| o.set.get("x-version"))
            .map(String::as_str),
        Some("v1")
    );
    assert_eq!(
        v1.response_headers.as_ref().map(|o| o.remove.clone()),
        Some(vec!["server".to_string()])
    );
    let v2 = &route.clusters[1];
    assert!(v2.request_headers.is_none() && v2.response_headers.is_none());
}

#[test]
fn match_port_restricts_the_route_to_that_port() {
    let yaml = "
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: api, namespace: shop}
spec:
  hosts: [api.shop.svc.cluster.local]
  ports: [{number: 80, name: http, protocol: HTTP}, {number: 8080, name: http-admin, protocol: HTTP}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api, namespace: shop}
spec:
  hosts: [api]
  http:
  - match: [{port: 8080, uri: {prefix: /admin}}]
    directResponse: {status: 403}
  - route: [{destination: {host: api, port: {number: 80}}}]
";
    let index = mesh(yaml, &[]);
    assert!(index.warnings().is_empty(), "{:?}", index.warnings());
    let config = config(&index, &node("shop", &[]));
    let api = service(&config, "api.shop.svc.cluster.local").expect("api");
    let per_port: Vec<(u32, Vec<&str>)> = api
        .ports
        .iter()
        .map(|p| (p.port, p.routes.iter().map(|r| r.name.as_str()).collect()))
        .collect();
    assert_eq!(
        per_port,
        [(80, vec!["api.1"]), (8080, vec!["api.0", "api.1"])]
    );
}

#[test]
fn source_labels_and_namespace_select_calling_proxies() {
    let index = reviews_mesh(&[(
        "reviews",
        "  hosts: [reviews]
  http:
  - match: [{sourceLabels: {app: productpage}, headers: {end-user: {exact: jason}}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - match: [{sourceNamespace: qa}, {sourceLabels: {app: tester}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - route: [{destination: {host: reviews, subset: v1}}]
",
    )]);
    assert!(index.warnings().is_empty(), "{:?}", index.warnings());
    let names = |namespace: &str, labels: &[(&str, &str)]| -> Vec<String> {
        let config = compile(&index, &node(namespace, labels)).config;
        routes(&config).iter().map(|r| r.name.clone()).collect()
    };
    assert_eq!(
        names("shop", &[("app", "productpage"), ("version", "v1")]),
        ["reviews.0", "reviews.2"]
    );
    assert_eq!(names("shop", &[("app", "ratings")]), ["reviews.2"]);
    assert_eq!(names("qa", &[]), ["reviews.1", "reviews.2"]);
    // Both blocks admit a tester in qa: one route each, as for any OR.
    assert_eq!(
        names("qa", &[("app", "tester")]),
        ["reviews.1", "reviews.1", "reviews.2"]
    );
}

#[test]
fn delegate_routes_are_inlined_under_the_root_match() {
    let index = reviews_mesh(&[
        (
            "reviews",
            "  hosts: [reviews]
  http:
  - name: api
    match: [{uri: {prefix: /api}, headers: {x-team: {exact: a}}}]
    timeout: 5s
    delegate: {name: reviews-api}
  - route: [{destination: {host: reviews, subset: v1}}]
",
        ),
        (
            "reviews-api",
            "  http:
  - name: v2
    match: [{uri: {prefix: /api/v2}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - match: [{uri: {prefix: /other}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - route: [{destination: {host: reviews, subset: v1}}]
",
        ),
    ]);
    assert!(
        index
            .warnings()
            .iter()
            .any(|w| w.contains("http[0] (delegate shop/reviews-api http[1]) skipped")),
        "{:?}",
        index.warnings()
    );
    assert_eq!(index.warnings().len(), 1, "{:?}", index.warnings());
    let config = config(&index, &node("shop", &[]));
    let routes = routes(&config);
    let names: Vec<&str> = routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["api-v2", "api", "reviews.1"]);
    let header = [pb::HeaderMatch {
        claim: Vec::new(),
        name: "x-team".into(),
        value: exact("a"),
        invert: false,
    }];
    // The delegate's narrower path, AND the root's header.
    let v2 = routes[0].r#match.as_ref().expect("a match");
    assert_eq!(
        v2.path,
        Some(pb::route_match::Path::PathPrefix("/api/v2".into()))
    );
    assert_eq!(v2.headers, header);
    assert_eq!(clusters(&routes[0]), [V2]);
    // The root's timeout, where the delegate sets none.
    assert_eq!(routes[0].timeout.as_ref().map(|t| t.seconds), Some(5));
    // A delegate route without match gets the root's.
    let rest = routes[1].r#match.as_ref().expect("a match");
    assert_eq!(
        rest.path,
        Some(pb::route_match::Path::PathPrefix("/api".into()))
    );
    assert_eq!(rest.headers, header);
    assert_eq!(clusters(&routes[1]), [V1]);
}

#[test]
fn missing_delegate_and_unexpressible_rules_are_skipped_with_warnings() {
    let index = reviews_mesh(&[(
        "reviews",
        "  hosts: [reviews]
  http:
  - match: [{uri: {prefix: /a}}]
    delegate: {name: nowhere}
  - match: [{uri: {prefix: /b}}]
    redirect: {authority: b.example.com, derivePort: FROM_REQUEST_PORT}
  - match: [{uri: {prefix: /c}}]
    mirror: {host: reviews, subset: v1}
    route: [{destination: {host: reviews, subset: v2}}]
  - match: [{uri: {prefix: /d}}]
    redirect: {uri: /x, redirectCode: 300}
  - match: [{uri: {prefix: /e}}]
    rewrite: {uri: relative}
    route: [{destination: {host: reviews, subset: v1}}]
  - match: [{uri: {prefix: /f}}]
    route:
    - {destination: {host: reviews, subset: v1}, weight: 50, headers: {request: {set: {host: a}}}}
    - {destination: {host: reviews, subset: v2}, weight: 50}
  - route: [{destination: {host: reviews, subset: v1}}]
",
    )]);
    let warnings = index.warnings();
    let has = |needle: &str| warnings.iter().any(|w| w.contains(needle));
    assert!(
        has("http[0] skipped: delegate VirtualService shop/nowhere is not defined"),
        "{warnings:?}"
    );
    // derivePort compiles now.
    assert!(!has("http[1]"), "{warnings:?}");
    // Mirrors compile now (see `mirror_cors`): nothing to warn about.
    assert!(!has("http[2]"), "{warnings:?}");
    // What the proxy would refuse costs the rule, not the whole config.
    assert!(has("http[3] skipped: redirectCode 300"), "{warnings:?}");
    assert!(
        has("http[4] skipped: rewrite.uri \"relative\""),
        "{warnings:?}"
    );
    assert!(
        has("http[5] skipped: route[0].headers sets the authority"),
        "{warnings:?}"
    );
    let config = config(&index, &node("shop", &[]));
    let names: Vec<&str> = routes(&config).iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["reviews.1", "reviews.2", "reviews.6"]);
}

#[test]
fn retries_default_explicit_and_disabled() {
    let index = reviews_mesh(&[(
        "reviews",
        "  hosts: [reviews]
  http:
  - match: [{uri: {prefix: /default}}]
    route: [{destination: {host: reviews, subset: v1}}]
  - match: [{uri: {prefix: /explicit}}]
    retries: {attempts: 3, perTryTimeout: 2s, retryOn: 'gateway-error, 409,connect-failure,503,retriable-headers', backoff: 50ms, retryRemoteLocalities: true}
    route: [{destination: {host: reviews, subset: v1}}]
  - match: [{uri: {prefix: /none}}]
    retries: {attempts: 0}
    route: [{destination: {host: reviews, subset: v1}}]
  - match: [{uri: {prefix: /moved}}]
    redirect: {uri: /x}
",
    )]);
    let config = config(&index, &node("shop", &[]));
    let routes = routes(&config);
    let default = routes[0].retries.as_ref().expect("default policy");
    assert_eq!(default.attempts, 2);
    assert_eq!(
        default.retry_on,
        [
            "connect-failure",
            "refused-stream",
            "unavailable",
            "cancelled",
            "retriable-status-codes"
        ]
    );
    assert!(
        default.retriable_status_codes.is_empty(),
        "Istio ≥1.24: no 503"
    );
    let explicit = routes[1].retries.as_ref().expect("explicit policy");
    assert_eq!(explicit.attempts, 3);
    assert_eq!(
        explicit.retry_on,
        ["gateway-error", "retriable-status-codes", "connect-failure"]
    );
    assert_eq!(explicit.retriable_status_codes, [409, 503]);
    assert_eq!(
        explicit.per_try_timeout,
        Some(std::time::Duration::from_secs(2).into())
    );
    assert_eq!(
        explicit.backoff,
        Some(std::time::Duration::from_millis(50).into())
    );
    assert!(explicit.retry_remote_localities);
    assert!(!default.retry_remote_localities);
    assert!(routes[2].retries.is_none(), "attempts: 0 disables retries");
    assert!(
        routes[3].retries.is_none(),
        "a redirect makes no upstream call"
    );
    assert!(
        index
            .warnings()
            .iter()
            .any(|w| w.contains("retryOn retriable-headers not supported yet")),
        "{:?}",
        index.warnings()
    );
}

#[test]
fn faults_are_mapped() {
    let index = reviews_mesh(&[(
        "reviews",
        "  hosts: [reviews]
  http:
  - match: [{uri: {prefix: /delay}}]
    fault: {delay: {fixedDelay: 5s, percentage: {value: 12.5}}}
    route: [{destination: {host: reviews, subset: v1}}]
  - match: [{uri: {prefix: /old}}]
    fault: {delay: {fixedDelay: 1s, percent: 30}, abort: {httpStatus: 503, percentage: {value: 100}}}
    route: [{destination: {host: reviews, subset: v1}}]
  - fault: {abort: {grpcStatus: UNAVAILABLE, percentage: {value: 50}}}
    route: [{destination: {host: reviews, subset: v1}}]
",
    )]);
    let config = config(&index, &node("shop", &[]));
    let routes = routes(&config);
    let fault = routes[0].fault.expect("fault");
    let delay = fault.delay.expect("delay");
    assert_eq!(
        delay.fixed_delay,
        Some(std::time::Duration::from_secs(5).into())
    );
    assert_eq!(delay.percentage, 12.5);
    assert!(fault.abort.is_none());
    let fault = routes[1].fault.expect("fault");
    assert_eq!(fault.delay.expect("delay").percentage, 30.0);
    let abort = fault.abort.expect("abort");
    assert_eq!((abort.http_status, abort.percentage), (503, 100.0));
    let abort = routes[2].fault.and_then(|f| f.abort).expect("abort");
    assert_eq!((abort.grpc_status, abort.percentage), (14, 50.0));
    assert!(
        !index.warnings().iter().any(|w| w.contains("fault")),
        "{:?}",
        index.warnings()
    );
}
