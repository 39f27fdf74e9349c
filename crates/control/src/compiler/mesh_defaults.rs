//! MeshConfig as the compiler reads it: the mesh-wide defaults that apply
//! where no resource says otherwise (a Sidecar's outboundTrafficPolicy, a
//! DestinationRule's connectTimeout or localityLbSetting, a Telemetry's
//! access logging), and the trust-domain aliases authorization accepts.
//! Computed once per build from the MeshConfig in force; plain data.

use std::time::Duration;

use weft_api::mesh::providers::Kind;
use weft_api::mesh::{AccessLogEncoding, MeshConfig, Normalization, OutboundMode};
use weft_proto::proxy::v1::telemetry::{AccessLog, AccessLogEncoding as Encoding};
use weft_proto::proxy::v1::{self as pb};

/// The trust domain Istio's own policies are written for: a principal in
/// it means the mesh's trust domain, whatever that is.
const ISTIO_DEFAULT_TRUST_DOMAIN: &str = "cluster.local";

#[derive(Debug, Clone, PartialEq)]
pub struct MeshDefaults {
    pub root_namespace: String,
    pub outbound: pb::OutboundTrafficPolicy,
    pub path_normalization: pb::PathNormalization,
    /// `None`: the proxy's own default (MeshConfig unset or `0s`).
    pub protocol_detection_timeout: Option<Duration>,
    pub connect_timeout: Duration,
    /// Gateways whose proxy was not told a number.
    pub num_trusted_proxies: Option<u32>,
    /// Access logs on where no Telemetry says.
    pub access_log: bool,
    /// `accessLogEncoding` when the MeshConfig sets it (else each proxy's
    /// `--access-log-format`).
    pub access_log_encoding: Encoding,
    /// `accessLogFormat`: a text format, or with JSON encoding the fields.
    pub access_log_format: super::access_log_format::MeshFormat,
    /// Clusters whose DestinationRule has no localityLbSetting.
    pub locality: Option<pb::LocalityLb>,
    /// The trust domain first, then its aliases.
    pub trust_domains: Vec<String>,
    /// `extensionProviders`, as CUSTOM AuthorizationPolicies name them.
    pub ext_authz: super::ext_authz::Providers,
    /// Tracing providers, `defaultProviders.tracing`, default sampling.
    pub tracing: super::trace_providers::MeshTracing,
    /// Access-log providers and `defaultProviders.accessLogging`.
    pub logging: super::access_log_providers::MeshLogging,
    /// `defaultProviders.metrics` names no prometheus provider: proxies
    /// record no standard metrics unless a Telemetry names prometheus.
    pub metrics_off: bool,
}

impl Default for MeshDefaults {
    fn default() -> Self {
        Self::from(&MeshConfig::default())
    }
}

impl From<&MeshConfig> for MeshDefaults {
    fn from(mesh: &MeshConfig) -> Self {
        let mut trust_domains = vec![mesh.trust_domain().to_string()];
        for alias in &mesh.trust_domain_aliases {
            if !trust_domains.contains(alias) {
                trust_domains.push(alias.clone());
            }
        }
        Self {
            root_namespace: mesh.root_namespace().to_string(),
            outbound: match mesh.outbound_mode() {
                OutboundMode::AllowAny => pb::OutboundTrafficPolicy::AllowAny,
                OutboundMode::RegistryOnly => pb::OutboundTrafficPolicy::RegistryOnly,
            },
            path_normalization: match mesh.normalization() {
                Normalization::Default | Normalization::Base => pb::PathNormalization::Base,
                Normalization::None => pb::PathNormalization::None,
                Normalization::MergeSlashes => pb::PathNormalization::MergeSlashes,
                Normalization::DecodeAndMergeSlashes => {
                    pb::PathNormalization::DecodeAndMergeSlashes
                }
            },
            // Istio's 0s means "wait for ever"; Weft keeps its short bound
            // (the warning says so), so server-first protocols on
            // undeclared ports still work.
            protocol_detection_timeout: mesh.protocol_detection_timeout().filter(|d| !d.is_zero()),
            connect_timeout: mesh.connect_timeout(),
            num_trusted_proxies: mesh.num_trusted_proxies(),
            access_log: mesh.access_log_on(),
            access_log_encoding: match mesh.access_log_encoding {
                None => Encoding::Unspecified,
                Some(AccessLogEncoding::Text) => Encoding::Text,
                Some(AccessLogEncoding::Json) => Encoding::Json,
            },
            access_log_format: super::access_log_format::MeshFormat::from(mesh),
            locality: mesh
                .locality_lb_setting
                .as_ref()
                .map(super::clusters::balancer::locality_lb),
            trust_domains,
            ext_authz: super::ext_authz::Providers::from(mesh),
            tracing: super::trace_providers::MeshTracing::from(mesh),
            logging: super::access_log_providers::MeshLogging::from(mesh),
            metrics_off: mesh.default_providers.as_ref().is_some_and(|d| {
                !d.metrics.is_empty()
                    && !d
                        .metrics
                        .iter()
                        .any(|name| mesh.provider_kind(name) == Some(Kind::Prometheus))
            }),
        }
    }
}

impl MeshDefaults {
    /// Fills what no DestinationRule set: the connect timeout and the
    /// locality balancing.
    pub(super) fn fill_cluster(&self, cluster: &mut pb::Cluster) {
        cluster
            .connect_timeout
            .get_or_insert_with(|| self.connect_timeout.into());
        if let Some(locality) = &self.locality {
            let balancer = cluster.load_balancer.get_or_insert_with(Default::default);
            balancer.locality.get_or_insert_with(|| locality.clone());
        }
    }

    /// Access logs on where no Telemetry resource says.
    pub(super) fn fill_telemetry(&self, telemetry: Option<pb::Telemetry>) -> Option<pb::Telemetry> {
        let encoding = self.access_log_encoding != Encoding::Unspecified;
        if !self.access_log && !encoding && self.access_log_format.is_empty() {
            return telemetry;
        }
        let mut telemetry = telemetry.unwrap_or_default();
        if self.access_log && telemetry.access_log == AccessLog::Unspecified as i32 {
            telemetry.access_log = AccessLog::Enabled as i32;
        }
        telemetry.access_log_encoding = self.access_log_encoding as i32;
        self.access_log_format.fill(&mut telemetry);
        Some(telemetry)
    }

    /// With `defaultProviders.metrics` excluding prometheus, every standard
    /// metric disabled on both sides (Istio's sidecars then have no
    /// Prometheus stats), unless a Telemetry for the proxy names
    /// prometheus.
    pub(super) fn fill_metrics(
        &self,
        telemetry: &mut Option<pb::Telemetry>,
        names_prometheus: bool,
    ) {
        if !self.metrics_off || names_prometheus {
            return;
        }
        let all = || pb::MetricOverrides {
            metrics: (1..=10)
                .map(|metric| pb::MetricOverride {
                    metric,
                    disabled: true,
                    tags: Vec::new(),
                })
                .collect(),
        };
        let telemetry = telemetry.get_or_insert_with(Default::default);
        telemetry.client_metrics = Some(all());
        telemetry.server_metrics = Some(all());
    }

    /// Istio's trust-domain aliases: a principal written in the trust
    /// domain, an alias or `cluster.local` matches the same workload in
    /// every one of them.
    pub(super) fn expand_principals(&self, policy: &mut pb::AuthzPolicy) {
        if self.trust_domains == [ISTIO_DEFAULT_TRUST_DOMAIN] {
            return;
        }
        for rule in &mut policy.rules {
            let when = rule.when.iter_mut();
            for clause in rule.from.iter_mut().chain(rule.to.iter_mut()).chain(when) {
                for condition in &mut clause.conditions {
                    if condition.attribute == pb::AuthzAttribute::SourcePrincipal as i32 {
                        condition.values = self.expand(&condition.values);
                        condition.not_values = self.expand(&condition.not_values);
                    }
                }
            }
        }
    }

    fn expand(&self, principals: &[String]) -> Vec<String> {
        let mut out: Vec<String> = Vec::with_capacity(principals.len());
        let mut add = |value: String| {
            if !out.contains(&value) {
                out.push(value);
            }
        };
        for principal in principals {
            let ours = principal.split_once('/').filter(|(domain, _)| {
                *domain == ISTIO_DEFAULT_TRUST_DOMAIN
                    || self.trust_domains.iter().any(|d| d == domain)
            });
            match ours {
                Some((_, rest)) => {
                    for domain in &self.trust_domains {
                        add(format!("{domain}/{rest}"));
                    }
                }
                None => add(principal.clone()),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults(yaml: &str) -> MeshDefaults {
        MeshDefaults::from(&weft_api::mesh::parse(yaml).expect("valid").config)
    }

    #[test]
    fn principals_in_the_trust_domain_or_an_alias_match_all_of_them() {
        let mesh = defaults("trustDomain: new.org\ntrustDomainAliases: [old.org]");
        let principals = [
            "old.org/ns/a/sa/x".to_string(),
            "cluster.local/ns/b/sa/y".to_string(),
            "other.org/ns/c/sa/z".to_string(),
            "*/ns/d/sa/w".to_string(),
        ];
        assert_eq!(
            mesh.expand(&principals),
            [
                "new.org/ns/a/sa/x",
                "old.org/ns/a/sa/x",
                "new.org/ns/b/sa/y",
                "old.org/ns/b/sa/y",
                "other.org/ns/c/sa/z",
                "*/ns/d/sa/w"
            ]
        );
        let istio = MeshDefaults::default();
        assert_eq!(istio.expand(&principals[..1]), ["old.org/ns/a/sa/x"]);
    }

    #[test]
    fn defaults_fill_only_what_resources_left_unset() {
        let mesh = defaults(
            "connectTimeout: 2s\naccessLogFile: /dev/stdout\n\
             localityLbSetting: {failover: [{from: a, to: b}]}",
        );
        let mut bare = pb::Cluster::default();
        mesh.fill_cluster(&mut bare);
        assert_eq!(bare.connect_timeout, Some(Duration::from_secs(2).into()));
        assert_eq!(
            bare.load_balancer
                .and_then(|lb| lb.locality)
                .map(|l| l.failover.len()),
            Some(1)
        );
        let mut set = pb::Cluster {
            connect_timeout: Some(Duration::from_secs(7).into()),
            ..Default::default()
        };
        mesh.fill_cluster(&mut set);
        assert_eq!(set.connect_timeout, Some(Duration::from_secs(7).into()));
        let off = pb::Telemetry {
            access_log: AccessLog::Disabled as i32,
            ..Default::default()
        };
        assert_eq!(
            mesh.fill_telemetry(Some(off.clone())),
            Some(off),
            "Telemetry wins"
        );
        assert_eq!(
            mesh.fill_telemetry(None).map(|t| t.access_log),
            Some(AccessLog::Enabled as i32)
        );
        assert_eq!(MeshDefaults::default().fill_telemetry(None), None);
        let json = defaults("accessLogEncoding: JSON").fill_telemetry(None);
        assert_eq!(
            json.map(|t| (t.access_log, t.access_log_encoding)),
            Some((AccessLog::Unspecified as i32, Encoding::Json as i32)),
            "the encoding alone does not switch logs on"
        );
        assert_eq!(
            defaults("protocolDetectionTimeout: 0s").protocol_detection_timeout,
            None
        );
    }
}
