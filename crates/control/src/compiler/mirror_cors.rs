//! An `http[]` entry's `mirror`/`mirrorPercentage`/`mirrorPercent`,
//! `mirrors[]` and `corsPolicy` in the proxy model's terms. Mirror
//! destinations stay [`Target`]s here; [`routes`](super::super::routes)
//! turns them into cluster names (`outbound|<port>|<subset>|<host>`) as it
//! does route destinations, so the mirror cluster is emitted too.

use http::HeaderValue;
use weft_api::networking::{Destination, HttpRoute, StringMatch};
use weft_proto::proxy::v1 as pb;

use super::Target;

/// One mirror: where copies go, and the share of requests copied.
pub(in crate::compiler) struct MirrorRule {
    pub(in crate::compiler) target: Target,
    /// `None`: every request (Istio's default, 100%).
    pub(in crate::compiler) percentage: Option<f64>,
}

impl MirrorRule {
    pub(in crate::compiler) fn to_pb(&self, cluster: String) -> pb::Mirror {
        pb::Mirror {
            cluster,
            percentage: self.percentage.unwrap_or(0.0),
            has_percentage: self.percentage.is_some(),
        }
    }
}

/// The entry's mirrors: `mirror` with `mirrorPercentage` (or the deprecated
/// integer `mirrorPercent`, which `mirrorPercentage` overrides, as in
/// Istio), or each of `mirrors[]` with its own percentage. weft-api's
/// validation already refuses both forms on one entry.
pub(super) fn mirrors(http: &HttpRoute) -> Vec<MirrorRule> {
    let mut rules = Vec::new();
    if let Some(destination) = &http.mirror {
        let percentage = http
            .mirror_percentage
            .as_ref()
            .map(|p| p.value)
            .or(http.mirror_percent.map(f64::from));
        rules.push(MirrorRule {
            target: target(destination),
            percentage,
        });
    }
    rules.extend(http.mirrors.iter().map(|m| MirrorRule {
        target: target(&m.destination),
        percentage: m.percentage.as_ref().map(|p| p.value),
    }));
    rules
}

fn target(destination: &Destination) -> Target {
    Target {
        host: destination.host.clone(),
        subset: destination.subset.clone(),
        port: destination
            .port
            .as_ref()
            .map(|p| p.number)
            .filter(|n| *n > 0),
        // Unused for mirrors: every sampled request gets a copy.
        weight: 0,
        request_headers: None,
        response_headers: None,
    }
}

/// The entry's `corsPolicy`, or `Err` with why the proxy would refuse it.
/// `allowOrigins` wins over the deprecated `allowOrigin` (exact origins),
/// as in Istio. Only Istio's default `unmatchedPreflights: FORWARD` exists
/// in the proxy; `IGNORE` is reported by the caller as a warning.
pub(super) fn cors(http: &HttpRoute) -> Option<Result<pb::CorsPolicy, String>> {
    use pb::string_match::Kind;
    let policy = http.cors_policy.as_ref()?;
    let allow_origins = if policy.allow_origins.is_empty() {
        policy
            .allow_origin
            .iter()
            .map(|o| pb_match(Kind::Exact(o.clone())))
            .collect()
    } else {
        let mut origins = Vec::new();
        for (index, origin) in policy.allow_origins.iter().enumerate() {
            match origin_kind(origin) {
                Some(kind) => origins.push(pb_match(kind)),
                None => {
                    return Some(Err(format!(
                        "corsPolicy.allowOrigins[{index}] needs exact, prefix or regex"
                    )));
                }
            }
        }
        origins
    };
    for (field, values) in [
        ("allowMethods", &policy.allow_methods),
        ("allowHeaders", &policy.allow_headers),
        ("exposeHeaders", &policy.expose_headers),
    ] {
        if HeaderValue::try_from(values.join(",")).is_err() {
            return Some(Err(format!(
                "corsPolicy.{field} is not a valid header value"
            )));
        }
    }
    let max_age = if policy.max_age.is_empty() {
        None
    } else {
        match weft_api::field::parse_duration(&policy.max_age) {
            Some(age) => Some(age.into()),
            None => {
                return Some(Err(format!(
                    "corsPolicy.maxAge {:?} is not a duration",
                    policy.max_age
                )));
            }
        }
    };
    Some(Ok(pb::CorsPolicy {
        allow_origins,
        allow_methods: policy.allow_methods.clone(),
        allow_headers: policy.allow_headers.clone(),
        expose_headers: policy.expose_headers.clone(),
        max_age,
        allow_credentials: policy.allow_credentials.unwrap_or(false),
    }))
}

/// Whether the entry asks for `unmatchedPreflights: IGNORE`, which the
/// proxy does not do (it forwards them, Istio's default).
pub(super) fn ignores_unmatched_preflights(http: &HttpRoute) -> bool {
    http.cors_policy
        .as_ref()
        .and_then(|p| p.unmatched_preflights)
        // weft-api does not export the enum's type; its variant name is
        // what is compared.
        .is_some_and(|u| format!("{u:?}") == "Ignore")
}

/// Unlike route matches, an empty prefix is kept: it allows every origin.
fn origin_kind(m: &StringMatch) -> Option<pb::string_match::Kind> {
    use pb::string_match::Kind;
    match (&m.exact, &m.prefix, &m.regex) {
        (Some(exact), _, _) => Some(Kind::Exact(exact.clone())),
        (None, Some(prefix), _) => Some(Kind::Prefix(prefix.clone())),
        (None, None, Some(regex)) => Some(Kind::Regex(regex.clone())),
        _ => None,
    }
}

fn pb_match(kind: pb::string_match::Kind) -> pb::StringMatch {
    pb::StringMatch { kind: Some(kind) }
}

#[cfg(test)]
mod tests {
    use weft_proto::proxy::v1::{self as pb, ProxyConfig};

    use crate::compiler::MeshIndex;
    use crate::compiler::tests::{
        REVIEWS, REVIEWS_HOST, config as proxy_config, mesh, node, service,
    };

    /// REVIEWS with subset v2, a `ratings` service and one VirtualService
    /// for reviews whose single `http` entry is `http` (YAML, indented as
    /// a list item under `http:`).
    fn reviews_mesh(http: &str) -> MeshIndex {
        mesh(
            &format!(
                "{REVIEWS}---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: reviews, namespace: shop}}
spec:
  host: reviews
  subsets: [{{name: v2, labels: {{version: v2}}}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: ratings, namespace: shop}}
spec:
  hosts: [ratings.shop.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 9080, name: http, protocol: HTTP}}]
  endpoints: [{{address: 10.0.0.7}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews, namespace: shop}}
spec:
  hosts: [reviews]
  http:
{http}"
            ),
            &[],
        )
    }

    fn route(config: &ProxyConfig) -> &pb::Route {
        &service(config, REVIEWS_HOST).expect("reviews").ports[0].routes[0]
    }

    const V2: &str = "outbound|9080|v2|reviews.shop.svc.cluster.local";
    const RATINGS: &str = "outbound|9080||ratings.shop.svc.cluster.local";

    fn mirror(cluster: &str, percentage: Option<f64>) -> pb::Mirror {
        pb::Mirror {
            cluster: cluster.into(),
            percentage: percentage.unwrap_or(0.0),
            has_percentage: percentage.is_some(),
        }
    }

    #[test]
    fn mirror_with_percentage_names_the_mirror_cluster_and_ships_it() {
        let index = reviews_mesh(
            "  - route: [{destination: {host: reviews}}]
    mirror: {host: reviews, subset: v2}
    mirrorPercentage: {value: 12.5}
",
        );
        assert!(index.warnings().is_empty(), "{:?}", index.warnings());
        let config = proxy_config(&index, &node("shop", &[]));
        assert_eq!(route(&config).mirrors, [mirror(V2, Some(12.5))]);
        assert!(config.clusters.iter().any(|c| c.name == V2));
    }

    #[test]
    fn deprecated_mirror_percent_and_mirrors_list() {
        let index = reviews_mesh(
            "  - route: [{destination: {host: reviews}}]
    mirror: {host: ratings.shop.svc.cluster.local}
    mirrorPercent: 30
",
        );
        let config = proxy_config(&index, &node("shop", &[]));
        assert_eq!(route(&config).mirrors, [mirror(RATINGS, Some(30.0))]);
        assert!(config.clusters.iter().any(|c| c.name == RATINGS));

        let index = reviews_mesh(
            "  - route: [{destination: {host: reviews}}]
    mirrors:
    - destination: {host: ratings.shop.svc.cluster.local}
    - destination: {host: reviews, subset: v2}
      percentage: {value: 0}
",
        );
        assert!(index.warnings().is_empty(), "{:?}", index.warnings());
        let config = proxy_config(&index, &node("shop", &[]));
        assert_eq!(
            route(&config).mirrors,
            [mirror(RATINGS, None), mirror(V2, Some(0.0))]
        );
    }

    #[test]
    fn an_undefined_mirror_is_shipped_empty_with_a_warning() {
        let index = reviews_mesh(
            "  - route: [{destination: {host: reviews}}]
    mirror: {host: reviews, subset: nope}
",
        );
        let name = "outbound|9080|nope|reviews.shop.svc.cluster.local";
        assert!(
            index.warnings().iter().any(|w| w.contains(name)),
            "{:?}",
            index.warnings()
        );
        let config = proxy_config(&index, &node("shop", &[]));
        assert_eq!(route(&config).mirrors, [mirror(name, None)]);
        assert!(config.clusters.iter().any(|c| c.name == name));
    }

    #[test]
    fn cors_policy_maps_every_field() {
        use pb::string_match::Kind;
        let index = reviews_mesh(
            "  - route: [{destination: {host: reviews}}]
    corsPolicy:
      allowOrigins: [{exact: 'https://a.example'}, {prefix: 'https://b.'}, {regex: '.*\\.c\\.example'}]
      allowMethods: [GET, POST]
      allowHeaders: [x-a]
      exposeHeaders: [x-b]
      maxAge: 24h
      allowCredentials: true
",
        );
        assert!(index.warnings().is_empty(), "{:?}", index.warnings());
        let config = proxy_config(&index, &node("shop", &[]));
        let cors = route(&config).cors.clone().expect("cors");
        let origins: Vec<_> = cors
            .allow_origins
            .into_iter()
            .filter_map(|m| m.kind)
            .collect();
        assert_eq!(
            origins,
            [
                Kind::Exact("https://a.example".into()),
                Kind::Prefix("https://b.".into()),
                Kind::Regex(r".*\.c\.example".into()),
            ]
        );
        assert_eq!(cors.allow_methods, ["GET", "POST"]);
        assert_eq!(cors.allow_headers, ["x-a"]);
        assert_eq!(cors.expose_headers, ["x-b"]);
        assert_eq!(cors.max_age.map(|d| d.seconds), Some(86400));
        assert!(cors.allow_credentials);
    }

    #[test]
    fn deprecated_allow_origin_is_exact() {
        let index = reviews_mesh(
            "  - route: [{destination: {host: reviews}}]
    corsPolicy: {allowOrigin: ['https://a.example']}
",
        );
        let config = proxy_config(&index, &node("shop", &[]));
        let cors = route(&config).cors.clone().expect("cors");
        assert_eq!(
            cors.allow_origins,
            [pb::StringMatch {
                kind: Some(pb::string_match::Kind::Exact("https://a.example".into()))
            }]
        );
        assert!(!cors.allow_credentials);
        assert_eq!(cors.max_age, None);
    }

    #[test]
    fn not_forwarded_rules_drop_mirror_and_cors_with_a_warning() {
        let index = reviews_mesh(
            "  - directResponse: {status: 204}
    mirror: {host: reviews, subset: v2}
    corsPolicy: {allowOrigin: ['https://a.example']}
",
        );
        assert!(
            index
                .warnings()
                .iter()
                .any(|w| w.contains("mirror, corsPolicy only applies to forwarded requests")),
            "{:?}",
            index.warnings()
        );
        let config = proxy_config(&index, &node("shop", &[]));
        assert!(route(&config).mirrors.is_empty());
        assert_eq!(route(&config).cors, None);
    }
}
