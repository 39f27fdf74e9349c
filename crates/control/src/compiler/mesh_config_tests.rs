//! MeshConfig defaults as the compiled proxy config shows them: each
//! applies where no resource says, and a resource that says wins.

use std::time::Duration;

use weft_proto::proxy::v1::{self as pb, telemetry::AccessLog};

use super::tests::{REVIEWS, REVIEWS_HOST, compile, mesh_with_config, node};
use super::{BuildInputs, MeshIndex};

fn reviews_cluster(config: &pb::ProxyConfig) -> &pb::Cluster {
    config
        .clusters
        .iter()
        .find(|c| c.name == format!("outbound|9080||{REVIEWS_HOST}"))
        .expect("the reviews cluster")
}

const SIDECAR_ALLOW_ANY_IN_SHOP: &str = "
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: shop}
spec:
  outboundTrafficPolicy: {mode: ALLOW_ANY}
";

#[test]
fn outbound_traffic_policy_is_the_mesh_default_under_a_sidecars() {
    let yaml = format!("{REVIEWS}{SIDECAR_ALLOW_ANY_IN_SHOP}");
    let index = mesh_with_config(&yaml, "outboundTrafficPolicy: {mode: REGISTRY_ONLY}");
    let elsewhere = compile(&index, &node("default", &[])).config;
    assert_eq!(
        elsewhere.outbound_traffic_policy,
        pb::OutboundTrafficPolicy::RegistryOnly as i32
    );
    let shop = compile(&index, &node("shop", &[])).config;
    assert_eq!(
        shop.outbound_traffic_policy,
        pb::OutboundTrafficPolicy::AllowAny as i32,
        "the Sidecar's wins"
    );
    let istio = mesh_with_config(&yaml, "");
    let default = compile(&istio, &node("default", &[])).config;
    assert_eq!(
        default.outbound_traffic_policy,
        pb::OutboundTrafficPolicy::AllowAny as i32
    );
}

#[test]
fn timeouts_normalization_and_access_log_defaults_reach_the_proxy() {
    let dr = "
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: shop}
spec:
  host: reviews.shop.svc.cluster.local
  trafficPolicy: {connectionPool: {tcp: {connectTimeout: 7s}}}
";
    let mesh = "connectTimeout: 2s\nprotocolDetectionTimeout: 250ms\n\
                pathNormalization: {normalization: DECODE_AND_MERGE_SLASHES}\n\
                accessLogFile: /dev/stdout\n\
                localityLbSetting: {failover: [{from: us-east, to: eu-west}]}";
    let plain = compile(&mesh_with_config(REVIEWS, mesh), &node("default", &[])).config;
    let cluster = reviews_cluster(&plain);
    assert_eq!(cluster.connect_timeout, Some(Duration::from_secs(2).into()));
    let locality = cluster
        .load_balancer
        .as_ref()
        .and_then(|lb| lb.locality.as_ref())
        .expect("the mesh's localityLbSetting");
    assert_eq!(locality.failover[0].to, "eu-west");
    assert_eq!(
        plain.protocol_detection_timeout,
        Some(Duration::from_millis(250).into())
    );
    assert_eq!(
        plain.path_normalization,
        pb::PathNormalization::DecodeAndMergeSlashes as i32
    );
    assert_eq!(
        plain.telemetry.map(|t| t.access_log),
        Some(AccessLog::Enabled as i32)
    );
    let with_rule = compile(
        &mesh_with_config(&format!("{REVIEWS}{dr}"), mesh),
        &node("default", &[]),
    );
    assert_eq!(
        reviews_cluster(&with_rule.config).connect_timeout,
        Some(Duration::from_secs(7).into()),
        "the DestinationRule's wins"
    );
    let istio = compile(&mesh_with_config(REVIEWS, ""), &node("default", &[])).config;
    assert_eq!(
        reviews_cluster(&istio).connect_timeout,
        Some(Duration::from_secs(10).into())
    );
    assert_eq!(istio.telemetry, None, "no access log unless asked");
}

#[test]
fn root_namespace_decides_which_namespace_speaks_for_the_mesh() {
    let policies = "
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-all, namespace: mesh-admin}
spec: {}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: mesh-admin}
spec:
  outboundTrafficPolicy: {mode: REGISTRY_ONLY}
";
    let yaml = format!("{REVIEWS}{policies}");
    let mut proxy = node("default", &[]);
    proxy.ports = vec![weft_proto::discovery::v1::WorkloadPort {
        port: 8080,
        protocol: 0,
        name: "http".into(),
    }];
    let istio = compile(&mesh_with_config(&yaml, ""), &proxy).config;
    assert_eq!(
        istio.outbound_traffic_policy,
        pb::OutboundTrafficPolicy::AllowAny as i32,
        "mesh-admin is an ordinary namespace under Istio's root"
    );
    assert!(istio.inbound_ports[0].security.is_none());
    let rooted = compile(
        &mesh_with_config(&yaml, "rootNamespace: mesh-admin"),
        &proxy,
    )
    .config;
    assert_eq!(
        rooted.outbound_traffic_policy,
        pb::OutboundTrafficPolicy::RegistryOnly as i32
    );
    let security = rooted.inbound_ports[0].security.as_ref().expect("policies");
    assert_eq!(security.policies[0].name, "mesh-admin/deny-all");
}

#[test]
fn gateways_take_the_mesh_num_trusted_proxies_unless_told() {
    let mesh = "defaultConfig: {gatewayTopology: {numTrustedProxies: 2}}";
    let index = mesh_with_config(REVIEWS, mesh);
    let mut gateway = node("istio-system", &[("istio", "ingressgateway")]);
    gateway.router = true;
    assert_eq!(compile(&index, &gateway).config.num_trusted_proxies, 2);
    gateway.num_trusted_proxies = 1;
    assert_eq!(compile(&index, &gateway).config.num_trusted_proxies, 1);
}

#[test]
fn trust_domain_aliases_widen_policy_principals() {
    let policy = "
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: from-web, namespace: default}
spec:
  rules: [{from: [{source: {principals: [cluster.local/ns/web/sa/web]}}]}]
";
    let yaml = format!("{REVIEWS}{policy}");
    let mut proxy = node("default", &[]);
    proxy.ports = vec![weft_proto::discovery::v1::WorkloadPort {
        port: 8080,
        protocol: 0,
        name: "http".into(),
    }];
    let mesh = "trustDomain: new.org\ntrustDomainAliases: [old.org]";
    let config = compile(&mesh_with_config(&yaml, mesh), &proxy).config;
    let security = config.inbound_ports[0].security.as_ref().expect("policy");
    let condition = &security.policies[0].rules[0].from[0].conditions[0];
    assert_eq!(
        condition.values,
        ["new.org/ns/web/sa/web", "old.org/ns/web/sa/web"]
    );
}

/// `enableAutoMtls: false`: a caller secures an endpoint with a proxy
/// only where a DestinationRule asks for ISTIO_MUTUAL.
#[test]
fn auto_mtls_off_leaves_mesh_endpoints_plaintext_unless_istio_mutual() {
    use weft_proto::discovery::v1::{Node, WorkloadPort};
    let yaml = "
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: db, namespace: data}
spec:
  hosts: [db.data.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 5432, name: tcp, protocol: TCP}]
  endpoints: [{address: 10.1.0.6}]
";
    let istio_mutual = "
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: db, namespace: data}
spec:
  host: db.data.svc.cluster.local
  trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}
";
    let pod = Node {
        id: "db".into(),
        namespace: "data".into(),
        service_account: "db".into(),
        address: "10.1.0.6".into(),
        ports: vec![WorkloadPort {
            port: 5432,
            ..Default::default()
        }],
        mtls: true,
        ..Default::default()
    };
    let identity = |yaml: &str, mesh: &str| {
        let decoded = weft_api::decode_str(yaml, "test.yaml");
        let config = weft_api::mesh::parse(mesh).expect("valid").config;
        let mut peers = super::tls::MeshPeers::new("cluster.local", std::slice::from_ref(&pod));
        peers.auto_mtls_off = !config.auto_mtls();
        let inputs = BuildInputs {
            cluster: &Default::default(),
            workloads: &[],
            peers: &peers,
            credentials: std::sync::Arc::new(crate::store::credentials::NoCredentials),
        };
        let index = MeshIndex::build_with_mesh(&decoded.resources, inputs, &config);
        let proxy = compile(&index, &node("front", &[])).config;
        let cluster = proxy
            .clusters
            .iter()
            .find(|c| c.name == "outbound|5432||db.data.svc.cluster.local")
            .expect("db cluster")
            .clone();
        cluster.endpoints[0].identity.clone()
    };
    let spiffe = "spiffe://cluster.local/ns/data/sa/db";
    assert_eq!(identity(yaml, ""), spiffe, "auto-mTLS by default");
    assert_eq!(identity(yaml, "enableAutoMtls: false"), "");
    let with_rule = format!("{yaml}{istio_mutual}");
    assert_eq!(identity(&with_rule, "enableAutoMtls: false"), spiffe);
}

/// CUSTOM policies get their MeshConfig provider with its cluster (outside
/// any Sidecar scope); unusable providers are cleared and reported, so the
/// proxy denies what those policies match.
#[test]
fn custom_policies_resolve_their_ext_authz_provider() {
    let custom = |name: &str, provider: &str| {
        format!(
            "
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: {name}, namespace: default}}
spec:
  action: CUSTOM
  provider: {{name: {provider}}}
  rules: [{{to: [{{operation: {{paths: [/{name}/*]}}}}]}}]
"
        )
    };
    let yaml = format!(
        "{REVIEWS}{}{}{}{}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{name: default, namespace: default}}
spec:
  egress: [{{hosts: [./*]}}]
",
        custom("grpc", "opa"),
        custom("http", "oauth"),
        custom("tracer", "zipkin"),
        custom("missing", "nobody"),
    );
    let mesh = "extensionProviders:
- {name: opa, envoyExtAuthzGrpc: {service: reviews.shop.svc.cluster.local, port: 9080, timeout: 2s, statusOnError: \"503\"}}
- name: oauth
  envoyExtAuthzHttp:
    service: shop/reviews.shop.svc.cluster.local
    port: 9080
    includeRequestHeadersInCheck: [X-User]
    headersToUpstreamOnAllow: [x-auth-*]
- {name: zipkin, zipkin: {service: zipkin.istio-system.svc.cluster.local, port: 9411}}
";
    let mut proxy = node("default", &[]);
    proxy.ports = vec![weft_proto::discovery::v1::WorkloadPort {
        port: 8080,
        protocol: 0,
        name: "http".into(),
    }];
    let index = mesh_with_config(&yaml, mesh);
    // Mesh-wide too (apply, `weft analyze`), before any proxy connects.
    let mesh_wide = index.warnings().join("\n");
    assert!(
        mesh_wide.contains("default/missing: spec.provider.name \"nobody\""),
        "{mesh_wide}"
    );
    assert!(!mesh_wide.contains("default/grpc"), "{mesh_wide}");
    let out = compile(&index, &proxy);
    let config = out.config;
    let cluster = format!("outbound|9080||{REVIEWS_HOST}");
    assert!(
        config.clusters.iter().any(|c| c.name == cluster),
        "the authorizer's cluster is added outside the Sidecar's scope"
    );
    let providers: Vec<_> = config.ext_authz_providers.iter().collect();
    assert_eq!(providers.len(), 2, "{providers:?}");
    let (oauth, opa) = (providers[0], providers[1]);
    assert!(opa.grpc);
    assert_eq!(opa.cluster, cluster);
    assert_eq!(opa.status_on_error, 503);
    assert_eq!(opa.authority, REVIEWS_HOST, "Istio's gRPC authority");
    assert_eq!(
        opa.timeout.as_ref().map(|t| t.seconds),
        Some(2),
        "the provider's timeout"
    );
    assert!(!oauth.grpc);
    assert_eq!(oauth.cluster, cluster);
    assert_eq!(oauth.status_on_error, 403, "Istio's default");
    assert_eq!(
        oauth.timeout.as_ref().map(|t| t.seconds),
        Some(600),
        "Istio's default timeout"
    );
    assert_eq!(oauth.include_request_headers_in_check, ["x-user"]);
    let security = config.inbound_ports[0].security.as_ref().expect("policies");
    let provider_of = |name: &str| {
        security
            .policies
            .iter()
            .find(|p| p.name == format!("default/{name}"))
            .map(|p| p.provider.as_str())
            .expect("policy")
    };
    assert_eq!(provider_of("grpc"), "opa");
    assert_eq!(provider_of("http"), "oauth");
    assert_eq!(provider_of("tracer"), "", "another kind: fails closed");
    assert_eq!(provider_of("missing"), "", "unknown: fails closed");
    let warnings = out.warnings.join("\n");
    assert!(
        warnings.contains("default/tracer: spec.provider.name \"zipkin\" is a zipkin provider"),
        "{warnings}"
    );
    assert!(
        warnings.contains(
            "default/missing: spec.provider.name \"nobody\" is not in MeshConfig extensionProviders"
        ),
        "{warnings}"
    );
}
