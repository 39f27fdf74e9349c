//! A [`ProxyConfig`] as named, versioned pieces for the push stream, and
//! back. weftd splits; the proxy assembles what it holds. Both sides use
//! these two functions, so they agree on names and versions by construction.

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};

use crate::discovery::v1::{Resource, Settings, resource::Body};
use crate::proxy::v1::ProxyConfig;

pub const SETTINGS: &str = "settings";

/// Splits a config into resources keyed by name, each versioned by a hash of
/// its content (so an unchanged piece keeps its version across rebuilds and
/// weftd restarts).
pub fn split(config: ProxyConfig) -> BTreeMap<String, Resource> {
    pieces(config)
        .into_iter()
        .map(|(name, body)| {
            let version = content_version(&body);
            let resource = Resource {
                name: name.clone(),
                version,
                body: Some(body),
            };
            (name, resource)
        })
        .collect()
}

/// A config's resources as (name, body), unversioned: what [`split`] and
/// weftd's encoded pushes ([`crate::encoded`]) are made of.
pub fn pieces(config: ProxyConfig) -> Vec<(String, Body)> {
    let mut out = Vec::new();
    let mut add = |name: String, body: Body| out.push((name, body));
    for listener in config.listeners {
        add(
            format!("listener/{}", listener.name),
            Body::Listener(listener),
        );
    }
    for service in config.services {
        add(format!("service/{}", service.name), Body::Service(service));
    }
    for cluster in config.clusters {
        add(format!("cluster/{}", cluster.name), Body::Cluster(cluster));
    }
    for inbound in config.inbound_ports {
        add(
            format!("inbound/{}", inbound.port),
            Body::InboundPort(inbound),
        );
    }
    for host in config.dns_hosts {
        let name = host.names.first().cloned().unwrap_or_default();
        add(format!("dns/{name}"), Body::DnsHost(host));
    }
    add(
        SETTINGS.to_string(),
        Body::Settings(Settings {
            outbound_traffic_policy: config.outbound_traffic_policy,
            protocol_detection_timeout: config.protocol_detection_timeout,
            gateway_security: config.gateway_security,
            num_trusted_proxies: config.num_trusted_proxies,
            telemetry: config.telemetry,
            rate_limits: config.rate_limits,
            ext_authz_providers: config.ext_authz_providers,
        }),
    );
    out
}

/// The config made of `resources`, in name order.
pub fn assemble<'a>(
    resources: impl IntoIterator<Item = &'a Resource>,
    version: &str,
) -> ProxyConfig {
    let mut config = ProxyConfig {
        version: version.to_string(),
        ..ProxyConfig::default()
    };
    for resource in resources {
        match resource.body.clone() {
            Some(Body::Listener(listener)) => config.listeners.push(listener),
            Some(Body::Service(service)) => config.services.push(service),
            Some(Body::Cluster(cluster)) => config.clusters.push(cluster),
            Some(Body::InboundPort(inbound)) => config.inbound_ports.push(inbound),
            Some(Body::Settings(settings)) => {
                config.outbound_traffic_policy = settings.outbound_traffic_policy;
                config.protocol_detection_timeout = settings.protocol_detection_timeout;
                config.gateway_security = settings.gateway_security;
                config.num_trusted_proxies = settings.num_trusted_proxies;
                config.telemetry = settings.telemetry;
                config.rate_limits = settings.rate_limits;
                config.ext_authz_providers = settings.ext_authz_providers;
            }
            Some(Body::DnsHost(host)) => config.dns_hosts.push(host),
            None => {}
        }
    }
    config
}

/// One version for a whole set of resource versions.
pub fn set_version<'a>(versions: impl IntoIterator<Item = (&'a String, &'a String)>) -> String {
    let mut hasher = DefaultHasher::new();
    for (name, version) in versions {
        name.hash(&mut hasher);
        version.hash(&mut hasher);
    }
    format!("{:016x}", hasher.finish())
}

fn content_version(body: &Body) -> String {
    let mut bytes = Vec::new();
    body.encode(&mut bytes);
    version_of(&bytes)
}

/// The version of a body from its encoding (`Body::encode`).
pub fn version_of(encoded_body: &[u8]) -> String {
    let mut hasher = DefaultHasher::new();
    encoded_body.hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::v1::{Cluster, Listener};

    fn sample() -> ProxyConfig {
        ProxyConfig {
            version: "v".into(),
            listeners: vec![Listener {
                name: "l".into(),
                address: "127.0.0.1:1".into(),
                kind: 3,
                ..Listener::default()
            }],
            clusters: vec![Cluster {
                name: "c".into(),
                ..Cluster::default()
            }],
            // Settings carry the rate limits and ext_authz providers too.
            ext_authz_providers: vec![crate::proxy::v1::ExtAuthzProvider {
                name: "authz".into(),
                ..Default::default()
            }],
            rate_limits: Some(crate::proxy::v1::RateLimits {
                rules: vec![crate::proxy::v1::RateLimitRule {
                    name: "r".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..ProxyConfig::default()
        }
    }

    #[test]
    fn split_then_assemble_round_trips() {
        let resources = split(sample());
        assert_eq!(
            resources.keys().collect::<Vec<_>>(),
            ["cluster/c", "listener/l", "settings"]
        );
        assert_eq!(assemble(resources.values(), "v"), sample());
    }

    #[test]
    fn versions_follow_content_only() {
        let before = split(sample());
        let mut changed = sample();
        changed.clusters[0].service = "s".into();
        let after = split(changed);
        assert_eq!(before["listener/l"].version, after["listener/l"].version);
        assert_ne!(before["cluster/c"].version, after["cluster/c"].version);
    }
}
