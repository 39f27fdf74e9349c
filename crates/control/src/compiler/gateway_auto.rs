//! `tls.mode: AUTO_PASSTHROUGH` gateway servers (Istio's east-west
//! gateways): a connection whose SNI is `outbound_.PORT_.SUBSET_.HOST`
//! (`outbound_.PORT_._.HOST` without a subset) goes, TLS untouched, to that service's cluster,
//! without any VirtualService. The caller's mesh mTLS then ends at the
//! destination workload's proxy, not here.
//!
//! Each cluster the server's `hosts` admit becomes one `tls` route on the
//! port. The route's cluster is a copy with mesh TLS off (the bytes are
//! already the caller's mTLS; wrapping them again would break it), named
//! `auto-passthrough|PORT|SUBSET|HOST`.

use std::collections::BTreeMap;

use weft_api::networking::Server;
use weft_proto::proxy::v1 as pb;

use super::hosts::wildcard_matches;
use crate::registry::ServiceDef;

/// The `tls` routes of an AUTO_PASSTHROUGH server, adding the clusters
/// they use to `clusters`.
pub(super) fn routes(
    server: &Server,
    gateway_namespace: &str,
    services: &[ServiceDef],
    clusters: &mut BTreeMap<String, pb::Cluster>,
) -> Vec<pb::TlsRoute> {
    let wanted: Vec<(String, String, String, String)> = clusters
        .keys()
        .filter_map(|name| {
            let mut parts = name.splitn(4, '|');
            let (kind, port, subset, host) =
                (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
            (kind == "outbound").then(|| {
                (
                    name.clone(),
                    port.to_string(),
                    subset.to_string(),
                    host.to_string(),
                )
            })
        })
        .filter(|(_, _, _, host)| admits(server, gateway_namespace, services, host))
        .collect();
    let mut out = Vec::new();
    for (name, port, subset, host) in wanted {
        let copy_name = format!("auto-passthrough|{port}|{subset}|{host}");
        if !clusters.contains_key(&copy_name)
            && let Some(original) = clusters.get(&name)
        {
            let mut copy = original.clone();
            copy.name.clone_from(&copy_name);
            copy.tls = Some(pb::ClientTls {
                mode: pb::client_tls::Mode::Disable as i32,
                ..Default::default()
            });
            for endpoint in &mut copy.endpoints {
                endpoint.identity.clear();
            }
            clusters.insert(copy_name.clone(), copy);
        }
        // Istio's form: `outbound_.9080_._.reviews...` without a subset,
        // `outbound_.9080_.v1_.reviews...` with one.
        let subset = if subset.is_empty() {
            "_".to_string()
        } else {
            format!("{subset}_")
        };
        let sni = format!("outbound_.{port}_.{subset}.{host}");
        out.push(pb::TlsRoute {
            name: format!("auto-passthrough {sni}"),
            sni_hosts: vec![sni],
            clusters: vec![pb::WeightedCluster {
                cluster: copy_name,
                weight: 100,
                ..Default::default()
            }],
            ..Default::default()
        });
    }
    out
}

/// Whether one of the server's `hosts` (`namespace/host`, namespace `*`
/// or `.` or a name) admits the service `host`.
fn admits(server: &Server, gateway_namespace: &str, services: &[ServiceDef], host: &str) -> bool {
    let namespace = services
        .iter()
        .find(|s| s.hostname.eq_ignore_ascii_case(host))
        .map(|s| s.namespace.as_str());
    server.hosts.iter().any(|entry| {
        let (ns, pattern) = entry.split_once('/').unwrap_or(("*", entry));
        let ns_ok = match ns {
            "*" => true,
            "." => namespace == Some(gateway_namespace),
            other => namespace == Some(other),
        };
        ns_ok && wildcard_matches(&pattern.to_ascii_lowercase(), &host.to_ascii_lowercase())
    })
}
