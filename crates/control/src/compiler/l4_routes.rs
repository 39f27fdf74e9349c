//! VirtualService `tcp[]` and `tls[]` → the proxy's TCP and TLS routes.
//!
//! Each entry becomes one [`L4Rule`]; on a service port, each of its
//! applicable match blocks (OR-ed) becomes one proxy route. `sourceLabels`
//! and `sourceNamespace` limit a route to some calling proxies, which only
//! get it in their config (as for HTTP routes). `sourceSubnet` would need
//! the proxy to match the client's address: such entries are skipped with
//! a warning rather than widened.

use std::collections::BTreeMap;

use weft_api::networking::{Destination, VirtualService};
use weft_proto::proxy::v1 as pb;

use super::CompiledVs;
use crate::compiler::hosts::HostIndex;
use crate::compiler::http_rule::{MESH_GATEWAY, Source, Target};
use crate::compiler::ports;
use crate::registry::{ServiceDef, ServicePortDef};

pub(in crate::compiler) struct L4Rule {
    name: String,
    tls: bool,
    /// Empty: every connection (TCP only; TLS needs SNI hosts).
    matches: Vec<L4Match>,
    targets: Vec<Target>,
}

struct L4Match {
    port: Option<u32>,
    subnets: Vec<String>,
    sni_hosts: Vec<String>,
    source: Option<Source>,
}

/// Whether `gateways` of a match block include sidecars.
pub(in crate::compiler) fn for_mesh(gateways: &[String]) -> bool {
    gateways.is_empty() || gateways.iter().any(|g| g == MESH_GATEWAY)
}

/// The `tcp` and `tls` rules of `spec`, in order (TCP first; the proxy
/// keeps them apart anyway). `label` names the VirtualService in warnings;
/// `admits` says whether a match block's `gateways` include the audience
/// ([`for_mesh`] for sidecars).
pub(in crate::compiler) fn rules(
    spec: &VirtualService,
    vs_name: &str,
    label: &str,
    admits: &dyn Fn(&[String]) -> bool,
    warnings: &mut Vec<String>,
) -> Vec<L4Rule> {
    let mut rules = Vec::new();
    for (index, tcp) in spec.tcp.iter().enumerate() {
        let at = format!("{label}: tcp[{index}]");
        let mut matches = Vec::new();
        let mut skip = None;
        for (m_index, m) in tcp.matches.iter().enumerate() {
            if !admits(&m.gateways) {
                continue;
            }
            if !m.source_subnet.is_empty() {
                skip = Some(format!(
                    "match[{m_index}] matches on the caller's subnet (sourceSubnet), which TCP routes cannot express yet"
                ));
                break;
            }
            matches.push(L4Match {
                port: m.port.filter(|p| *p > 0),
                subnets: m.destination_subnets.clone(),
                sni_hosts: Vec::new(),
                source: Source::new(&m.source_labels, &m.source_namespace),
            });
        }
        let never = !tcp.matches.is_empty() && matches.is_empty();
        let name = format!("{vs_name}.tcp.{index}");
        push(
            &mut rules,
            &at,
            name,
            false,
            matches,
            targets(tcp.route.iter().map(|r| (&r.destination, r.weight))),
            skip,
            never,
            warnings,
        );
    }
    for (index, tls) in spec.tls.iter().enumerate() {
        let at = format!("{label}: tls[{index}]");
        let mut matches = Vec::new();
        let mut skip = tls
            .matches
            .is_empty()
            .then(|| "no match: sniHosts are required".to_string());
        for (m_index, m) in tls.matches.iter().enumerate() {
            if !admits(&m.gateways) {
                continue;
            }
            if m.sni_hosts.is_empty() || m.sni_hosts.iter().any(String::is_empty) {
                skip = Some(format!("match[{m_index}].sniHosts is required"));
                break;
            }
            matches.push(L4Match {
                port: m.port.filter(|p| *p > 0),
                subnets: m.destination_subnets.clone(),
                sni_hosts: m.sni_hosts.clone(),
                source: Source::new(&m.source_labels, &m.source_namespace),
            });
        }
        let never = !tls.matches.is_empty() && matches.is_empty();
        let name = format!("{vs_name}.tls.{index}");
        push(
            &mut rules,
            &at,
            name,
            true,
            matches,
            targets(tls.route.iter().map(|r| (&r.destination, r.weight))),
            skip,
            never,
            warnings,
        );
    }
    rules
}

#[allow(clippy::too_many_arguments)] // One call site per kind, all local.
fn push(
    rules: &mut Vec<L4Rule>,
    at: &str,
    name: String,
    tls: bool,
    matches: Vec<L4Match>,
    targets: Vec<Target>,
    skip: Option<String>,
    never: bool,
    warnings: &mut Vec<String>,
) {
    let skip = skip.or_else(|| {
        targets
            .is_empty()
            .then(|| "no route destinations".to_string())
    });
    if let Some(why) = skip {
        warnings.push(format!("{at} skipped: {why}"));
        return;
    }
    // Every block is for gateways only: nothing applies to sidecars.
    if never {
        return;
    }
    rules.push(L4Rule {
        name,
        tls,
        matches,
        targets,
    });
}

/// `route[]` as `(destination, weight)` pairs: the TCP and TLS entries
/// share that shape, though weft-api exports no type for it.
fn targets<'a>(route: impl Iterator<Item = (&'a Destination, Option<i32>)>) -> Vec<Target> {
    let mut targets: Vec<Target> = route
        .map(|(destination, weight)| Target {
            host: destination.host.clone(),
            subset: destination.subset.clone(),
            port: destination
                .port
                .as_ref()
                .map(|p| p.number)
                .filter(|n| *n > 0),
            weight: weight.unwrap_or(0).max(0) as u32,
            request_headers: None,
            response_headers: None,
        })
        .collect();
    // Several destinations without weights: an even split rather than a
    // route the proxy would reject for weights adding up to 0.
    if targets.len() > 1 && targets.iter().all(|t| t.weight == 0) {
        targets.iter_mut().for_each(|t| t.weight = 1);
    }
    targets
}

/// Whether opaque or TLS traffic can reach this port: anything not
/// declared HTTP (undeclared ports may carry either).
fn carries_opaque(port: &ServicePortDef) -> bool {
    !matches!(
        ports::protocol(port.protocol),
        pb::Protocol::Http | pb::Protocol::Http2 | pb::Protocol::Grpc
    ) || ports::is_server_first(port.number, port.protocol)
}

/// TCP and TLS routes, each with the callers it is limited to.
type L4Routes = (
    Vec<(pb::TcpRoute, Option<Source>)>,
    Vec<(pb::TlsRoute, Option<Source>)>,
);

impl CompiledVs {
    /// The TCP and TLS routes of this VirtualService on one port. Like
    /// HTTP routes, destinations missing from `clusters` are added empty.
    pub(in crate::compiler) fn l4_routes(
        &self,
        port: &ServicePortDef,
        services: &[ServiceDef],
        hosts: &HostIndex,
        clusters: &mut BTreeMap<String, pb::Cluster>,
        warnings: &mut Vec<String>,
    ) -> L4Routes {
        let (mut tcp, mut tls) = (Vec::new(), Vec::new());
        if !carries_opaque(port) {
            return (tcp, tls);
        }
        for rule in &self.l4 {
            let applicable: Vec<&L4Match> = rule
                .matches
                .iter()
                .filter(|m| m.port.is_none_or(|p| p == port.number))
                .collect();
            if !rule.matches.is_empty() && applicable.is_empty() {
                continue;
            }
            let weighted: Vec<pb::WeightedCluster> = rule
                .targets
                .iter()
                .map(|t| pb::WeightedCluster {
                    cluster: self.target_cluster(t, port, services, hosts, clusters, warnings),
                    weight: t.weight,
                    ..Default::default()
                })
                .collect();
            if rule.matches.is_empty() {
                let route = pb::TcpRoute {
                    name: rule.name.clone(),
                    destination_subnets: Vec::new(),
                    clusters: weighted,
                };
                tcp.push((route, None));
                continue;
            }
            for m in applicable {
                if rule.tls {
                    let route = pb::TlsRoute {
                        name: rule.name.clone(),
                        sni_hosts: m.sni_hosts.clone(),
                        destination_subnets: m.subnets.clone(),
                        clusters: weighted.clone(),
                    };
                    tls.push((route, m.source.clone()));
                } else {
                    let route = pb::TcpRoute {
                        name: rule.name.clone(),
                        destination_subnets: m.subnets.clone(),
                        clusters: weighted.clone(),
                    };
                    tcp.push((route, m.source.clone()));
                }
            }
        }
        (tcp, tls)
    }
}

#[cfg(test)]
#[path = "l4_route_tests.rs"]
mod tests;
