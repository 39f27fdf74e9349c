//! The name table of one proxy's DNS server (Istio's DNS proxying,
//! `ISTIO_META_DNS_CAPTURE`): which names it answers itself and with which
//! addresses.
//!
//! Contract: built from the services the proxy already sees (its Sidecar
//! scope and `exportTo` applied by [`super::MeshIndex::compile`]), so a
//! proxy answers exactly the hosts it can route. A host is answered when it
//! has addresses: a Kubernetes Service's cluster IP, a ServiceEntry's
//! `addresses` (single IPs; CIDR ranges name no one address), the VIP
//! `weft up` gives a service. Left out, and so forwarded upstream by the
//! proxy: wildcard hosts (no one name to answer), hosts without addresses
//! (headless services, `resolution: DNS` entries without `addresses`:
//! automatic VIP allocation is not implemented, see docs/dns.md).
//!
//! Names are the full host and, for `name.ns.svc.cluster.local`, the short
//! forms a pod's resolver search path produces: `name.ns.svc`, `name.ns`,
//! and `name` alone in the proxy's own namespace.

use std::collections::BTreeSet;
use std::net::IpAddr;

use weft_proto::proxy::v1 as pb;

use super::hosts::kube_parts;

/// The DNS hosts for a proxy in `namespace` that sees `services`, in the
/// services' order. A name claimed by an earlier host is not given to a
/// later one (the proxy answers one set of addresses per name).
pub(super) fn dns_hosts(services: &[pb::Service], namespace: &str) -> Vec<pb::DnsHost> {
    let mut claimed = BTreeSet::new();
    let mut hosts = Vec::new();
    for service in services {
        let full = service.name.trim_end_matches('.').to_ascii_lowercase();
        if full.is_empty() || full.contains('*') {
            continue;
        }
        let addresses: Vec<String> = service
            .vips
            .iter()
            .filter_map(|vip| vip.parse::<IpAddr>().ok())
            .filter(|ip| !ip.is_unspecified())
            .map(|ip| ip.to_string())
            .collect();
        if addresses.is_empty() {
            continue;
        }
        let names: Vec<String> = names_for(&full, namespace)
            .into_iter()
            .filter(|name| claimed.insert(name.clone()))
            .collect();
        if names.is_empty() {
            continue;
        }
        hosts.push(pb::DnsHost { names, addresses });
    }
    hosts
}

/// `full` and its short forms as seen from `namespace`.
fn names_for(full: &str, namespace: &str) -> Vec<String> {
    let mut names = vec![full.to_string()];
    if let Some((name, service_namespace)) = kube_parts(full) {
        names.push(format!("{name}.{service_namespace}.svc"));
        names.push(format!("{name}.{service_namespace}"));
        if service_namespace == namespace {
            names.push(name.to_string());
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(name: &str, vips: &[&str]) -> pb::Service {
        pb::Service {
            name: name.into(),
            vips: vips.iter().map(|v| v.to_string()).collect(),
            ..Default::default()
        }
    }

    fn table(services: &[pb::Service], namespace: &str) -> Vec<(Vec<String>, Vec<String>)> {
        dns_hosts(services, namespace)
            .into_iter()
            .map(|h| (h.names, h.addresses))
            .collect()
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_mesh_service_gets_the_short_names_of_the_callers_search_path() {
        let reviews = service("reviews.default.svc.cluster.local", &["240.240.0.3"]);
        assert_eq!(
            table(std::slice::from_ref(&reviews), "default"),
            vec![(
                strings(&[
                    "reviews.default.svc.cluster.local",
                    "reviews.default.svc",
                    "reviews.default",
                    "reviews",
                ]),
                strings(&["240.240.0.3"]),
            )]
        );
        // From another namespace the bare name means that namespace's
        // service, so it is not claimed for this one.
        let names = &table(&[reviews], "shop")[0].0;
        assert!(!names.contains(&"reviews".to_string()), "{names:?}");
        assert!(names.contains(&"reviews.default".to_string()), "{names:?}");
    }

    #[test]
    fn service_entry_hosts_are_answered_by_their_addresses_only() {
        let services = [
            service("api.example.com", &["203.0.113.7", "2001:db8::7"]),
            // No single address: nothing to answer, the name goes upstream.
            service("db.example.com", &[]),
            service("*.wild.example.com", &["203.0.113.9"]),
            service("bad.example.com", &["not-an-ip"]),
        ];
        assert_eq!(
            table(&services, "default"),
            vec![(
                strings(&["api.example.com"]),
                strings(&["203.0.113.7", "2001:db8::7"]),
            )]
        );
    }

    #[test]
    fn names_are_lower_case_without_the_root_dot_and_claimed_once() {
        let services = [
            service("API.Example.com.", &["203.0.113.7"]),
            service("api.example.com", &["203.0.113.8"]),
        ];
        assert_eq!(
            table(&services, "default"),
            vec![(strings(&["api.example.com"]), strings(&["203.0.113.7"]))]
        );
    }
}
