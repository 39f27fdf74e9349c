//! Tracing: which MeshConfig provider each proxy exports spans to, and the
//! Telemetry `tracing` fields beyond sampling (`providers`, `customTags`,
//! `match.mode`).
//!
//! A proxy's provider is the one its Telemetry names (by workload, else
//! namespace, else root namespace; the first provider of the first
//! `tracing` entry, as Istio uses one), else MeshConfig `defaultProviders.tracing[0]`. A
//! `zipkin` or `opentelemetry` provider becomes `Telemetry.tracing_provider`
//! with its service port's cluster added to the proxy's clusters (whatever
//! its Sidecar scope says, as for ext_authz). Any other kind, or a name
//! MeshConfig does not define, is pushed as UNSUPPORTED: the proxy reports
//! no spans rather than send them to its `--otlp` fallback; apply and
//! `weft analyze` warn. `customTags` merge by tag name down the hierarchy
//! (the more specific level wins a name); `match.mode` is per level.
//!
//! MeshConfig `defaultConfig.tracing.sampling` is the sampling rate where
//! no Telemetry sets `randomSamplingPercentage`, as in Istio.

use std::collections::BTreeMap;

use weft_api::Resource;
use weft_api::mesh::MeshConfig;

use super::ProviderWarning;
use weft_api::mesh::tracing::{OTLP_HTTP_DEFAULT_PATH, ZIPKIN_DEFAULT_PATH};
use weft_api::telemetry::{CustomTag, Telemetry, WorkloadMode};
use weft_proto::proxy::v1::custom_tag::Value as TagValue;
use weft_proto::proxy::v1::telemetry::TraceMode;
use weft_proto::proxy::v1::tracing_provider::Protocol;
use weft_proto::proxy::v1::{self as pb};

use super::ext_authz::{add_cluster, service_host};
use super::ports::cluster_name;
use crate::registry::namespace_or_default;

/// A MeshConfig provider as a tracing provider.
#[derive(Debug, Clone, PartialEq)]
enum Provider {
    Export {
        protocol: Protocol,
        /// The cluster of the provider's service port.
        cluster: String,
        path: String,
    },
    /// A kind Weft does not export to (its YAML key).
    Unsupported(&'static str),
}

/// MeshConfig's tracing settings, computed once per build.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MeshTracing {
    providers: BTreeMap<String, Provider>,
    /// `defaultProviders.tracing[0]`.
    default: Option<String>,
    /// `defaultConfig.tracing.sampling`.
    sampling: Option<f64>,
}

impl From<&MeshConfig> for MeshTracing {
    fn from(mesh: &MeshConfig) -> Self {
        let root = mesh.root_namespace();
        let mut providers = BTreeMap::new();
        for provider in &mesh.extension_providers {
            let Some(kind) = provider.kind().filter(|k| k.is_tracing()) else {
                continue;
            };
            let entry = if let Some(zipkin) = &provider.zipkin {
                Provider::Export {
                    protocol: Protocol::Zipkin,
                    cluster: cluster_name(zipkin.port, "", &service_host(&zipkin.service, root)),
                    path: path_or(zipkin.path.as_deref(), ZIPKIN_DEFAULT_PATH),
                }
            } else if let Some(otel) = &provider.opentelemetry {
                let cluster = cluster_name(otel.port, "", &service_host(&otel.service, root));
                match &otel.http {
                    Some(http) => Provider::Export {
                        protocol: Protocol::OtlpHttp,
                        cluster,
                        path: path_or(Some(http.path.as_str()), OTLP_HTTP_DEFAULT_PATH),
                    },
                    None => Provider::Export {
                        protocol: Protocol::OtlpGrpc,
                        cluster,
                        path: String::new(),
                    },
                }
            } else {
                Provider::Unsupported(kind.key())
            };
            // The first of two providers with one name wins (weft-api
            // reports duplicates when the MeshConfig loads).
            providers.entry(provider.name.clone()).or_insert(entry);
        }
        Self {
            providers,
            default: mesh
                .default_providers
                .as_ref()
                .and_then(|d| d.tracing.first().cloned()),
            sampling: mesh
                .default_config
                .as_ref()
                .and_then(|d| d.trace_sampling()),
        }
    }
}

/// `/api/v2/spans` and `api/v2/spans` alike; empty: the default.
fn path_or(path: Option<&str>, default: &str) -> String {
    match path.map(str::trim).filter(|p| !p.is_empty()) {
        Some(path) if path.starts_with('/') => path.to_string(),
        Some(path) => format!("/{path}"),
        None => default.to_string(),
    }
}

/// What one Telemetry resource's `tracing` says beyond sampling; `None`:
/// says nothing.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct TraceSettings {
    provider: Option<String>,
    custom_tags: Option<BTreeMap<String, pb::CustomTag>>,
    mode: Option<TraceMode>,
}

impl TraceSettings {
    pub(super) fn from_spec(spec: &Telemetry, label: &str, warnings: &mut Vec<String>) -> Self {
        if spec.tracing.len() > 1 {
            warnings.push(format!(
                "{label}: spec.tracing has {} entries; Weft applies the first only",
                spec.tracing.len()
            ));
        }
        let Some(tracing) = spec.tracing.first() else {
            return Self::default();
        };
        if tracing.providers.len() > 1 {
            warnings.push(format!(
                "{label}: spec.tracing[0].providers: spans go to the first provider only ({:?})",
                tracing.providers[0].name
            ));
        }
        if tracing.use_request_id_for_trace_sampling.is_some() {
            warnings.push(format!(
                "{label}: spec.tracing[0].useRequestIdForTraceSampling is not implemented; ignored"
            ));
        }
        if tracing.disable_context_propagation == Some(true) {
            warnings.push(format!(
                "{label}: spec.tracing[0].disableContextPropagation is not implemented; trace \
                 headers are still read and written"
            ));
        }
        for (name, tag) in &tracing.custom_tags {
            if tag.formatter.is_some() {
                warnings.push(format!(
                    "{label}: spec.tracing[0].customTags[{name:?}].formatter is not \
                     implemented; the tag is left out"
                ));
            }
        }
        Self {
            provider: tracing.providers.first().map(|p| p.name.clone()),
            custom_tags: (!tracing.custom_tags.is_empty()).then(|| {
                tracing
                    .custom_tags
                    .iter()
                    .filter_map(|(name, tag)| Some((name.clone(), custom_tag(name, tag)?)))
                    .collect()
            }),
            mode: tracing.match_.as_ref().map(|m| match m.mode {
                WorkloadMode::ClientAndServer => TraceMode::ClientAndServer,
                WorkloadMode::Client => TraceMode::Client,
                WorkloadMode::Server => TraceMode::Server,
            }),
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self == &Self::default()
    }

    /// The levels' settings merged, the most specific level first.
    pub(super) fn merge<'a>(levels: impl DoubleEndedIterator<Item = &'a Self>) -> Self {
        let mut out = Self::default();
        // From the root down, so that the specific level overwrites.
        for level in levels.rev() {
            if level.provider.is_some() {
                out.provider = level.provider.clone();
            }
            if level.mode.is_some() {
                out.mode = level.mode;
            }
            if let Some(tags) = &level.custom_tags {
                let merged = out.custom_tags.get_or_insert_with(BTreeMap::new);
                merged.extend(tags.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
        }
        out
    }

    /// Into the proxy's settings; the provider by name only (resolved by
    /// [`super::MeshIndex::attach_tracing`]).
    pub(super) fn apply(self, telemetry: &mut pb::Telemetry) {
        if let Some(name) = self.provider {
            telemetry.tracing_provider = Some(pb::TracingProvider {
                name,
                ..Default::default()
            });
        }
        telemetry.custom_tags = self.custom_tags.unwrap_or_default().into_values().collect();
        telemetry.trace_mode = self.mode.unwrap_or(TraceMode::ClientAndServer) as i32;
    }
}

/// `None` for a formatter tag (not implemented, warned).
fn custom_tag(name: &str, tag: &CustomTag) -> Option<pb::CustomTag> {
    let source = |s: &weft_api::telemetry::tracing::FromSource| pb::CustomTagSource {
        name: s.name.clone(),
        default_value: s.default_value.clone(),
    };
    let value = if let Some(literal) = &tag.literal {
        TagValue::Literal(literal.value.clone())
    } else if let Some(header) = &tag.header {
        TagValue::Header(pb::CustomTagSource {
            name: header.name.to_ascii_lowercase(),
            ..source(header)
        })
    } else if let Some(environment) = &tag.environment {
        TagValue::Environment(source(environment))
    } else {
        return None;
    };
    Some(pb::CustomTag {
        tag: name.to_string(),
        value: Some(value),
    })
}

/// Mesh-wide (apply, `weft analyze`): each Telemetry whose tracing
/// provider cannot be used.
pub(super) fn check_telemetry(
    resources: &[Resource],
    mesh: &MeshTracing,
    warnings: &mut Vec<ProviderWarning>,
) {
    for resource in resources {
        let Resource::Telemetry(object) = resource else {
            continue;
        };
        let Some(name) = object
            .spec
            .tracing
            .first()
            .and_then(|t| t.providers.first())
            .map(|p| p.name.as_str())
        else {
            continue;
        };
        if let Some(problem) = mesh.problem(name) {
            warnings.push(ProviderWarning {
                resource: resource.label(),
                field: "spec.tracing[0].providers[0]".into(),
                message: format!("{name:?} {problem}; the proxies it selects report no spans"),
            });
        }
    }
}

impl MeshTracing {
    /// Why the provider `name` cannot take spans; None when it can.
    fn problem(&self, name: &str) -> Option<String> {
        match self.providers.get(name) {
            None => Some("is not a tracing provider in MeshConfig extensionProviders".into()),
            Some(Provider::Unsupported(kind)) => Some(format!(
                "is a {kind} provider, which Weft does not implement (use opentelemetry or zipkin)"
            )),
            Some(Provider::Export { .. }) => None,
        }
    }
}

impl super::MeshIndex {
    /// Resolves the proxy's tracing provider (see the module doc) and fills
    /// the mesh's default sampling.
    pub(super) fn attach_tracing(&self, node: &super::Node, output: &mut super::ProxyOutput) {
        let mesh = &self.mesh.tracing;
        let config = &mut output.config;
        let named = config
            .telemetry
            .as_ref()
            .and_then(|t| t.tracing_provider.as_ref())
            .map(|p| p.name.clone())
            .or_else(|| mesh.default.clone());
        if let Some(sampling) = mesh.sampling {
            let telemetry = config.telemetry.get_or_insert_with(Default::default);
            if !telemetry.has_random_sampling_percentage {
                telemetry.has_random_sampling_percentage = true;
                telemetry.random_sampling_percentage = sampling;
            }
        }
        let Some(name) = named else {
            return;
        };
        let mut provider = pb::TracingProvider {
            name: name.clone(),
            ..Default::default()
        };
        if let Some(Provider::Export {
            protocol,
            cluster,
            path,
        }) = mesh.providers.get(&name)
        {
            let namespace = namespace_or_default(&node.namespace);
            match self
                .rule_clusters
                .resolve(cluster, &self.clusters, namespace, &node.labels)
            {
                Some(resolved) => {
                    add_cluster(&mut config.clusters, resolved, node);
                    provider.protocol = *protocol as i32;
                    provider.cluster = cluster.clone();
                    provider.path = path.clone();
                }
                None => output.warnings.push(format!(
                    "MeshConfig extensionProviders {name:?}: service port {cluster} is not a \
                     known service port; no spans are reported"
                )),
            }
        }
        // Anything else stays UNSUPPORTED: no spans (warned mesh-wide).
        config
            .telemetry
            .get_or_insert_with(Default::default)
            .tracing_provider = Some(provider);
    }
}

#[cfg(test)]
mod tests {
    use weft_proto::proxy::v1::telemetry::TraceMode;
    use weft_proto::proxy::v1::tracing_provider::Protocol;

    use super::super::tests::{REVIEWS, REVIEWS_HOST, compile, mesh_with_config, node};

    const MESH: &str = "extensionProviders:
- {name: otel, opentelemetry: {service: reviews.shop.svc.cluster.local, port: 9080}}
- {name: otel-http, opentelemetry: {service: shop/reviews.shop.svc.cluster.local, port: 9080, http: {path: v1/traces}}}
- {name: zipkin, zipkin: {service: reviews.shop.svc.cluster.local, port: 9080}}
- {name: sky, skywalking: {service: reviews.shop.svc.cluster.local, port: 9080}}
defaultProviders: {tracing: [zipkin]}
defaultConfig: {tracing: {sampling: 25}}
";

    const TELEMETRY: &str = "
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-default, namespace: istio-system}
spec:
  tracing:
  - customTags:
      team: {literal: {value: platform}}
      env: {environment: {name: STAGE, defaultValue: dev}}
      path: {formatter: {value: '%REQ(:PATH)%'}}
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: shop, namespace: shop}
spec:
  tracing:
  - providers: [{name: otel-http}]
    match: {mode: CLIENT}
    customTags:
      team: {literal: {value: checkout}}
      user: {header: {name: X-User}}
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: legacy, namespace: legacy}
spec:
  tracing: [{providers: [{name: sky}], randomSamplingPercentage: 5}]
";

    #[test]
    fn providers_resolve_down_the_hierarchy_with_their_cluster() {
        let index = mesh_with_config(&format!("{REVIEWS}{TELEMETRY}"), MESH);
        let cluster = format!("outbound|9080||{REVIEWS_HOST}");

        // The mesh default: zipkin at Istio's path, the mesh's sampling.
        let plain = compile(&index, &node("default", &[])).config;
        let telemetry = plain.telemetry.as_ref().expect("telemetry");
        let provider = telemetry.tracing_provider.as_ref().expect("provider");
        assert_eq!(provider.protocol(), Protocol::Zipkin);
        assert_eq!(
            (provider.cluster.as_str(), provider.path.as_str()),
            (cluster.as_str(), "/api/v2/spans")
        );
        assert!(
            plain.clusters.iter().any(|c| c.name == cluster),
            "the collector's cluster"
        );
        assert!(telemetry.has_random_sampling_percentage);
        assert_eq!(telemetry.random_sampling_percentage, 25.0);
        let tags: Vec<&str> = telemetry
            .custom_tags
            .iter()
            .map(|t| t.tag.as_str())
            .collect();
        assert_eq!(tags, ["env", "team"]);

        // The namespace's Telemetry: its provider, its mode, its tags over
        // the root's by name.
        let shop = compile(&index, &node("shop", &[])).config;
        let telemetry = shop.telemetry.as_ref().expect("telemetry");
        let provider = telemetry.tracing_provider.as_ref().expect("provider");
        assert_eq!(provider.protocol(), Protocol::OtlpHttp);
        assert_eq!(provider.path, "/v1/traces");
        assert_eq!(telemetry.trace_mode(), TraceMode::Client);
        let tags: Vec<String> = telemetry
            .custom_tags
            .iter()
            .map(|t| format!("{}={:?}", t.tag, t.value))
            .collect();
        assert_eq!(tags.len(), 3, "{tags:?}");
        assert!(tags[1].contains("checkout"), "{tags:?}");
        assert!(
            tags[2].contains("x-user"),
            "header names lower-cased: {tags:?}"
        );

        // skywalking: pushed as UNSUPPORTED (no spans), warned mesh-wide.
        let legacy = compile(&index, &node("legacy", &[])).config;
        let telemetry = legacy.telemetry.as_ref().expect("telemetry");
        assert_eq!(
            telemetry.tracing_provider.as_ref().map(|p| p.protocol()),
            Some(Protocol::Unsupported)
        );
        assert_eq!(
            telemetry.random_sampling_percentage, 5.0,
            "Telemetry over the mesh"
        );
        let warnings = index.warnings().join("\n");
        assert!(
            warnings.contains("customTags[\"path\"].formatter is not implemented"),
            "{warnings}"
        );
        assert!(
            warnings.contains(
                "legacy/legacy: spec.tracing[0].providers[0] \"sky\" is a skywalking provider"
            ),
            "{warnings}"
        );
    }

    #[test]
    fn without_providers_nothing_is_pushed_and_grpc_is_the_otel_default() {
        let index = mesh_with_config(REVIEWS, "");
        assert_eq!(
            compile(&index, &node("default", &[])).config.telemetry,
            None
        );
        let index = mesh_with_config(
            REVIEWS,
            &MESH.replace("tracing: [zipkin]", "tracing: [otel]"),
        );
        let config = compile(&index, &node("default", &[])).config;
        let provider = config
            .telemetry
            .and_then(|t| t.tracing_provider)
            .expect("provider");
        assert_eq!(provider.protocol(), Protocol::OtlpGrpc);
        let index = mesh_with_config(
            REVIEWS,
            &MESH.replace("tracing: [zipkin]", "tracing: [sky]"),
        );
        let warnings = weft_api::mesh::parse(&MESH.replace("tracing: [zipkin]", "tracing: [sky]"))
            .expect("valid")
            .warnings
            .join("\n");
        assert!(
            warnings.contains("defaultProviders.tracing[0]: \"sky\" is a skywalking provider"),
            "{warnings}"
        );
        let config = compile(&index, &node("default", &[])).config;
        assert_eq!(
            config
                .telemetry
                .and_then(|t| t.tracing_provider)
                .map(|p| p.protocol()),
            Some(Protocol::Unsupported)
        );
    }
}
