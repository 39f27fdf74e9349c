//! The name table of one proxy's DNS server (Istio's DNS proxying,
//! `ISTIO_META_DNS_CAPTURE`): which names it answers itself and with which
//! addresses.
//!
//! Contract: built from the services the proxy already sees (its Sidecar
//! scope and `exportTo` applied by [`super::MeshIndex::compile`]), so a
//! proxy answers exactly the hosts it can route. A host is answered with
//! its single-IP addresses ([`answerable`]): a Kubernetes Service's cluster
//! IP, a ServiceEntry's `addresses` (CIDR ranges name no one address), the
//! VIP `weft up` gives a service, or the VIP weftd allocated in
//! 240.240.0.0/16 for a host that declared none — as Istio 1.25+ does
//! (`PILOT_ENABLE_IP_AUTOALLOCATE`), and only where that VIP can be routed:
//! not for `resolution: NONE` (the proxy would forward to the VIP itself)
//! nor a headless Service. Left out, and so forwarded upstream by the
//! proxy: those, and wildcard hosts (no one name to answer).
//!
//! Names are the full host and, for `name.ns.svc.cluster.local`, the short
//! forms a pod's resolver search path produces: `name.ns.svc`, `name.ns`,
//! and `name` alone in the proxy's own namespace.

use std::collections::BTreeSet;
use std::net::IpAddr;

use weft_proto::proxy::v1 as pb;

use super::hosts::kube_parts;
use crate::registry::{Resolution, ServiceDef};

/// The addresses DNS proxying may answer for `service` (empty: none).
pub(super) fn answerable(service: &ServiceDef) -> Vec<String> {
    if service.is_wildcard() || (service.auto_vip && service.resolution == Resolution::None) {
        return Vec::new();
    }
    service
        .vips
        .iter()
        .filter(|ip| !ip.is_unspecified())
        .map(ToString::to_string)
        .collect()
}

/// The DNS hosts for a proxy in `namespace` that sees `services` (host
/// name, answerable addresses), in that order. A name claimed by an
/// earlier host is not given to a later one (the proxy answers one set of
/// addresses per name).
pub(super) fn dns_hosts<'a>(
    services: impl IntoIterator<Item = (&'a str, &'a [String])>,
    namespace: &str,
) -> Vec<pb::DnsHost> {
    let mut claimed = BTreeSet::new();
    let mut hosts = Vec::new();
    for (name, addresses) in services {
        let full = name.trim_end_matches('.').to_ascii_lowercase();
        if full.is_empty() || full.contains('*') {
            continue;
        }
        let addresses: Vec<String> = addresses
            .iter()
            .filter(|text| text.parse::<IpAddr>().is_ok())
            .cloned()
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

    fn service(name: &str, vips: &[&str]) -> (String, Vec<String>) {
        (
            name.to_string(),
            vips.iter().map(|v| v.to_string()).collect(),
        )
    }

    fn table(
        services: &[(String, Vec<String>)],
        namespace: &str,
    ) -> Vec<(Vec<String>, Vec<String>)> {
        let pairs = services.iter().map(|(n, a)| (n.as_str(), a.as_slice()));
        dns_hosts(pairs, namespace)
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
    fn only_a_proxy_that_captures_dns_gets_the_hosts_it_can_see() {
        let yaml = "
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: db, namespace: app}
spec:
  hosts: [db]
  addresses: [10.1.2.3]
  resolution: STATIC
  endpoints: [{address: 10.9.9.9}]
  ports: [{number: 5432, name: tcp, protocol: TCP}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: api, namespace: app}
spec:
  hosts: [api.example.com]
  resolution: DNS
  ports: [{number: 443, name: tls, protocol: TLS}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: passthrough, namespace: app}
spec:
  hosts: [none.example.com]
  resolution: NONE
  ports: [{number: 443, name: tls, protocol: TLS}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews, namespace: app}
spec:
  hosts: [reviews.app.svc.cluster.local]
  addresses: [10.1.2.5]
  resolution: STATIC
  endpoints: [{address: 10.9.9.7}]
  ports: [{number: 9080, name: http, protocol: HTTP}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: private, namespace: other}
spec:
  hosts: [private.example.com]
  addresses: [10.1.2.4]
  exportTo: [\".\"]
  resolution: STATIC
  endpoints: [{address: 10.9.9.8}]
  ports: [{number: 80, name: http, protocol: HTTP}]
";
        let index = crate::compiler::tests::mesh(yaml, &[]);
        let mut captured = crate::compiler::tests::node("app", &[]);
        captured.dns_capture = true;
        let config = crate::compiler::tests::config(&index, &captured);
        let hosts: Vec<(Vec<String>, Vec<String>)> = config
            .dns_hosts
            .into_iter()
            .map(|h| (h.names, h.addresses))
            .collect();
        // The DNS entry without addresses: the VIP weftd allocated (and
        // routes); the NONE one: nothing (its VIP would be dialled as the
        // destination itself); the other namespace's private one: unseen.
        let auto = crate::registry::auto_vip("api.example.com").to_string();
        assert_eq!(
            hosts,
            vec![
                (strings(&["api.example.com"]), vec![auto]),
                (strings(&["db"]), strings(&["10.1.2.3"])),
                (
                    strings(&[
                        "reviews.app.svc.cluster.local",
                        "reviews.app.svc",
                        "reviews.app",
                        "reviews",
                    ]),
                    strings(&["10.1.2.5"]),
                ),
            ]
        );
        let plain = crate::compiler::tests::node("app", &[]);
        assert!(
            crate::compiler::tests::config(&index, &plain)
                .dns_hosts
                .is_empty()
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
