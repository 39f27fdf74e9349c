//! Clusters: per service port one with every endpoint, and one per
//! DestinationRule subset with the endpoints carrying the subset's labels.
//! Connection-pool limits and outlier detection are mapped in [`limits`],
//! the load balancer in [`balancer`].

mod balancer;
mod limits;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use weft_api::networking::{DestinationRule, TrafficPolicy};
use weft_api::{Object, Resource};
use weft_proto::proxy::v1 as pb;

use super::hosts::HostIndex;
use super::ports::{cluster_name, upstream_protocol};
use crate::registry::{
    EndpointDef, Registry, ServiceDef, ServicePortDef, labels_match, namespace_or_default,
};

/// Istio's `connectionPool.tcp.connectTimeout` default.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Every cluster of every service, by name.
pub(super) fn build(
    registry: &Registry,
    hosts: &HostIndex,
    resources: &[Resource],
    warnings: &mut Vec<String>,
) -> BTreeMap<String, pb::Cluster> {
    let rules = destination_rules(registry.services(), hosts, resources, warnings);
    let mut clusters = BTreeMap::new();
    for (index, service) in registry.services().iter().enumerate() {
        let endpoints = registry.endpoints(&service.id());
        let rule = rules.get(&index).map(|r| &r.spec);
        let top = rule.and_then(|r| r.traffic_policy.as_deref());
        for port in &service.ports {
            let all = cluster(service, port, "", endpoints, &[top], warnings);
            clusters.insert(all.name.clone(), all);
            for subset in rule.map_or(&[][..], |r| r.subsets.as_slice()) {
                let selected: Vec<EndpointDef> = endpoints
                    .iter()
                    .filter(|e| labels_match(&subset.labels, &e.labels))
                    .cloned()
                    .collect();
                let policies = [subset.traffic_policy.as_deref(), top];
                let subset = cluster(service, port, &subset.name, &selected, &policies, warnings);
                clusters.insert(subset.name.clone(), subset);
            }
        }
    }
    clusters
}

/// The DestinationRule that applies to each service (by index). Istio uses
/// one rule per host: exact host over wildcard, then the rule in the
/// service's own namespace, then the first by namespace and name.
fn destination_rules<'a>(
    services: &[ServiceDef],
    hosts: &HostIndex,
    resources: &'a [Resource],
    warnings: &mut Vec<String>,
) -> BTreeMap<usize, &'a Object<DestinationRule>> {
    type Rank<'b> = (bool, bool, &'b str, &'b str);
    let mut best: BTreeMap<usize, (Rank<'a>, &'a Object<DestinationRule>)> = BTreeMap::new();
    for resource in resources {
        let Resource::DestinationRule(rule) = resource else {
            continue;
        };
        let namespace = namespace_or_default(&rule.metadata.namespace);
        if rule.spec.workload_selector.is_some() {
            // It applies to selected client workloads only; applying it to
            // everyone would change other proxies' traffic.
            warnings.push(format!(
                "{}: workloadSelector is not supported yet; rule ignored",
                resource.label()
            ));
            continue;
        }
        for (index, wildcard) in hosts.matching(&rule.spec.host, namespace) {
            let rank = (
                wildcard,
                services[index].namespace != namespace,
                namespace,
                rule.metadata.name.as_str(),
            );
            if best.get(&index).is_none_or(|(held, _)| rank < *held) {
                best.insert(index, (rank, rule));
            }
        }
    }
    best.into_iter().map(|(i, (_, rule))| (i, rule)).collect()
}

fn cluster(
    service: &ServiceDef,
    port: &ServicePortDef,
    subset: &str,
    endpoints: &[EndpointDef],
    policies: &[Option<&TrafficPolicy>],
    warnings: &mut Vec<String>,
) -> pb::Cluster {
    let name = cluster_name(port.number, subset, &service.hostname);
    let endpoints = endpoints
        .iter()
        .filter_map(|e| {
            let number = u16::try_from(e.port_for(port)).ok()?;
            Some(pb::Endpoint {
                address: SocketAddr::new(e.address, number).to_string(),
                labels: e.labels.clone(),
                weight: e.weight,
                priority: 0,
                locality: e.locality.clone(),
                identity: String::new(),
                mesh: false,
            })
        })
        .collect();
    pb::Cluster {
        load_balancer: balancer::load_balancer(policies, port.number, &name, warnings),
        name,
        upstream_protocol: upstream_protocol(port.protocol) as i32,
        connect_timeout: Some(connect_timeout(policies, port.number).into()),
        endpoints,
        service: service.hostname.clone(),
        subset: subset.to_string(),
        connection_pool: limits::connection_pool(policies, port.number),
        outlier_detection: limits::outlier_detection(policies, port.number),
        tls: super::tls::client_tls(policies, port.number),
    }
}

/// An empty cluster for a route destination nothing defines: requests to it
/// fail (no healthy upstream) rather than going somewhere else.
pub(super) fn empty(name: &str, host: &str, subset: &str) -> pb::Cluster {
    pb::Cluster {
        name: name.to_string(),
        connect_timeout: Some(DEFAULT_CONNECT_TIMEOUT.into()),
        service: host.to_string(),
        subset: subset.to_string(),
        ..Default::default()
    }
}

/// The first `connectTimeout` set, most specific policy first (subset, then
/// the rule), each checking its `portLevelSettings` for `port` before its
/// top level.
fn connect_timeout(policies: &[Option<&TrafficPolicy>], port: u32) -> Duration {
    policies
        .iter()
        .flatten()
        .find_map(|policy| {
            let port_level = policy
                .port_level_settings
                .iter()
                .filter(|p| p.port.as_ref().is_some_and(|s| s.number == port))
                .find_map(|p| p.connection_pool.as_ref());
            [port_level, policy.connection_pool.as_ref()]
                .into_iter()
                .flatten()
                .find_map(|pool| {
                    let tcp = pool.tcp.as_ref()?;
                    weft_api::field::parse_duration(&tcp.connect_timeout)
                })
        })
        .unwrap_or(DEFAULT_CONNECT_TIMEOUT)
}
