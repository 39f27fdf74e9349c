//! Opaque TCP and TLS passthrough routes of a service port (VirtualService
//! `tcp` and `tls`): match on the destination the client dialled and, for
//! TLS, the ClientHello's SNI; pick a cluster by weight. First match wins;
//! none falls back to the port's default cluster.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use weft_proto::proxy::v1 as pb;

use super::snapshot::{Cluster, Problems, ServicePort};

/// An IP network: an address and how many leading bits must match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    network: IpAddr,
    prefix: u8,
}

impl Subnet {
    /// `10.0.0.0/8`, `fd00::/16`, or a bare IP (a host route).
    pub fn parse(text: &str) -> Option<Self> {
        let (ip, prefix) = match text.split_once('/') {
            Some((ip, prefix)) => (ip.parse::<IpAddr>().ok()?, Some(prefix.parse::<u8>().ok()?)),
            None => (text.parse::<IpAddr>().ok()?, None),
        };
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        (prefix <= max).then_some(Self {
            network: ip,
            prefix,
        })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        // An IPv4 client seen through a dual-stack socket still matches a
        // v4 subnet.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.network, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => prefix_eq(
                u128::from(u32::from(net)) << 96,
                u128::from(u32::from(ip)) << 96,
                self.prefix,
            ),
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_eq(u128::from(net), u128::from(ip), self.prefix)
            }
            _ => false,
        }
    }
}

/// Whether the first `bits` bits of two left-aligned addresses agree.
fn prefix_eq(a: u128, b: u128, bits: u8) -> bool {
    if bits == 0 {
        return true;
    }
    let mask = u128::MAX << (128 - u32::from(bits));
    a & mask == b & mask
}

/// Whether `host` (from SNI) matches `pattern`: exact, or `*.suffix` for one
/// or more labels before the suffix. Case-insensitive, as DNS names are.
pub fn sni_matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix('*') {
        Some(suffix) if suffix.starts_with('.') => {
            host.len() > suffix.len()
                && host
                    .get(host.len() - suffix.len()..)
                    .is_some_and(|tail| tail.eq_ignore_ascii_case(suffix))
        }
        // A bare `*` matches every name.
        Some("") => true,
        _ => pattern.eq_ignore_ascii_case(host),
    }
}

/// One compiled `tcp` or `tls` route.
pub struct L4Route {
    pub name: String,
    /// TLS routes only; never empty for them.
    pub sni_hosts: Vec<String>,
    /// Empty: any destination.
    pub subnets: Vec<Subnet>,
    pub clusters: Vec<(Arc<Cluster>, u32)>,
    total_weight: u32,
    next: AtomicUsize,
}

impl L4Route {
    /// `dst` is the original destination IP; `None` (an explicit listener)
    /// only matches routes without subnets.
    fn matches_dst(&self, dst: Option<IpAddr>) -> bool {
        self.subnets.is_empty() || dst.is_some_and(|ip| self.subnets.iter().any(|s| s.contains(ip)))
    }

    fn matches_sni(&self, sni: Option<&str>) -> bool {
        sni.is_some_and(|host| self.sni_hosts.iter().any(|p| sni_matches(p, host)))
    }

    /// A cluster in proportion to the weights (a deterministic rotation, so
    /// small samples already follow the split).
    pub fn pick(&self) -> &Arc<Cluster> {
        let mut slot =
            (self.next.fetch_add(1, Ordering::Relaxed) % self.total_weight.max(1) as usize) as u32;
        for (cluster, weight) in &self.clusters {
            if slot < *weight {
                return cluster;
            }
            slot -= weight;
        }
        // Compilation guarantees at least one cluster with weight > 0.
        &self.clusters[0].0
    }
}

impl ServicePort {
    /// Where an opaque (non-TLS) connection to this port goes.
    pub fn tcp_target(&self, dst: Option<IpAddr>) -> Arc<Cluster> {
        self.tcp_routes
            .iter()
            .find(|r| r.matches_dst(dst))
            .map_or_else(|| self.tcp_cluster.clone(), |r| r.pick().clone())
    }

    /// Where a TLS connection with this SNI goes. Without a matching TLS
    /// route it is still opaque bytes: the TCP routes, then the default.
    pub fn tls_target(&self, sni: Option<&str>, dst: Option<IpAddr>) -> Arc<Cluster> {
        match self
            .tls_routes
            .iter()
            .find(|r| r.matches_sni(sni) && r.matches_dst(dst))
        {
            Some(route) => route.pick().clone(),
            None => self.tcp_target(dst),
        }
    }
}

pub(super) fn compile_tcp_routes(
    routes: &[pb::TcpRoute],
    path: &str,
    clusters: &HashMap<String, Arc<Cluster>>,
    problems: &mut Problems,
) -> Vec<L4Route> {
    routes
        .iter()
        .enumerate()
        .filter_map(|(index, route)| {
            let at = format!("{path}.tcpRoutes[{index}]");
            compile(
                &route.name,
                &[],
                &route.destination_subnets,
                &route.clusters,
                &at,
                clusters,
                problems,
            )
        })
        .collect()
}

pub(super) fn compile_tls_routes(
    routes: &[pb::TlsRoute],
    path: &str,
    clusters: &HashMap<String, Arc<Cluster>>,
    problems: &mut Problems,
) -> Vec<L4Route> {
    routes
        .iter()
        .enumerate()
        .filter_map(|(index, route)| {
            let at = format!("{path}.tlsRoutes[{index}]");
            if route.sni_hosts.is_empty() {
                problems.push(format!("{at}.sniHosts"), "is required");
                return None;
            }
            if let Some(bad) = route.sni_hosts.iter().position(|h| h.is_empty()) {
                problems.push(format!("{at}.sniHosts[{bad}]"), "must not be empty");
                return None;
            }
            compile(
                &route.name,
                &route.sni_hosts,
                &route.destination_subnets,
                &route.clusters,
                &at,
                clusters,
                problems,
            )
        })
        .collect()
}

fn compile(
    name: &str,
    sni_hosts: &[String],
    subnets: &[String],
    targets: &[pb::WeightedCluster],
    path: &str,
    clusters: &HashMap<String, Arc<Cluster>>,
    problems: &mut Problems,
) -> Option<L4Route> {
    let before = problems.0.len();
    let mut parsed = Vec::new();
    for (index, text) in subnets.iter().enumerate() {
        match Subnet::parse(text) {
            Some(subnet) => parsed.push(subnet),
            None => problems.push(
                format!("{path}.destinationSubnets[{index}]"),
                format!("{text:?} is not an IP address or CIDR"),
            ),
        }
    }
    if targets.is_empty() {
        problems.push(format!("{path}.clusters"), "needs at least one cluster");
    }
    // A lone destination needs no weight; among several, 0 means none.
    let single = targets.len() == 1;
    let mut picked = Vec::new();
    for (index, target) in targets.iter().enumerate() {
        let Some(cluster) = clusters.get(&target.cluster) else {
            problems.push(
                format!("{path}.clusters[{index}].cluster"),
                format!("no cluster named {:?}", target.cluster),
            );
            continue;
        };
        let weight = if single {
            target.weight.max(1)
        } else {
            target.weight
        };
        if weight > 0 {
            picked.push((cluster.clone(), weight));
        }
    }
    // Reduced by their common divisor so a 50/50 split alternates rather
    // than sending 50 connections in a row to each side.
    let divisor = picked.iter().map(|(_, w)| *w).fold(0, gcd).max(1);
    picked.iter_mut().for_each(|(_, w)| *w /= divisor);
    let total_weight: u32 = picked.iter().map(|(_, w)| *w).sum();
    if total_weight == 0 && problems.0.len() == before {
        problems.push(format!("{path}.clusters"), "weights add up to 0");
    }
    if problems.0.len() != before {
        return None;
    }
    Some(L4Route {
        name: name.to_string(),
        sni_hosts: sni_hosts.iter().map(|h| h.to_ascii_lowercase()).collect(),
        subnets: parsed,
        clusters: picked,
        total_weight,
        next: AtomicUsize::new(0),
    })
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Snapshot, parse_config};

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("ip")
    }

    #[test]
    fn subnets_parse_and_match() {
        let net = Subnet::parse("10.1.0.0/16").expect("cidr");
        assert!(net.contains(ip("10.1.200.3")));
        assert!(!net.contains(ip("10.2.0.1")));
        assert!(net.contains(ip("::ffff:10.1.0.9")));
        let host = Subnet::parse("192.168.1.5").expect("ip");
        assert!(host.contains(ip("192.168.1.5")));
        assert!(!host.contains(ip("192.168.1.6")));
        assert!(
            Subnet::parse("0.0.0.0/0")
                .expect("any")
                .contains(ip("8.8.8.8"))
        );
        let v6 = Subnet::parse("fd00::/8").expect("v6");
        assert!(v6.contains(ip("fd12::1")));
        assert!(!v6.contains(ip("10.0.0.1")));
        for bad in ["10.0.0.0/33", "nope", "10.0.0.0/x", "::/129", ""] {
            assert!(Subnet::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn sni_wildcards_match_one_or_more_labels() {
        assert!(sni_matches("a.example.com", "A.Example.com"));
        assert!(!sni_matches("a.example.com", "b.example.com"));
        assert!(sni_matches("*.example.com", "a.example.com"));
        assert!(sni_matches("*.example.com", "x.y.example.com"));
        assert!(!sni_matches("*.example.com", "example.com"));
        assert!(!sni_matches("*.example.com", "badexample.com"));
        assert!(sni_matches("*", "anything"));
    }

    const CONFIG: &str = "
services:
- name: db
  ports:
  - port: 5432
    protocol: TLS
    cluster: default
    tcpRoutes:
    - {name: near, destinationSubnets: [10.0.0.0/8], clusters: [{cluster: near}]}
    tlsRoutes:
    - {name: a, sniHosts: [a.example.com], clusters: [{cluster: a}]}
    - {name: wild, sniHosts: ['*.example.com'], destinationSubnets: [10.1.0.0/16], clusters: [{cluster: b}]}
clusters: [{name: default}, {name: near}, {name: a}, {name: b}]
";

    #[test]
    fn routes_pick_by_sni_and_destination() {
        let snapshot =
            Snapshot::compile(parse_config(CONFIG, "t").expect("parse"), "t").expect("valid");
        let port = &snapshot.service_by_host("db").expect("service").ports[0];
        let name = |c: Arc<Cluster>| c.name.clone();
        assert_eq!(name(port.tcp_target(Some(ip("10.9.9.9")))), "near");
        assert_eq!(name(port.tcp_target(Some(ip("11.0.0.1")))), "default");
        // Explicit listeners have no original destination.
        assert_eq!(name(port.tcp_target(None)), "default");
        assert_eq!(name(port.tls_target(Some("a.example.com"), None)), "a");
        assert_eq!(
            name(port.tls_target(Some("c.example.com"), Some(ip("10.1.2.3")))),
            "b"
        );
        // Wildcard route limited to 10.1/16; falls back to the tcp routes.
        assert_eq!(
            name(port.tls_target(Some("c.example.com"), Some(ip("10.2.0.1")))),
            "near"
        );
        assert_eq!(name(port.tls_target(None, None)), "default");
    }

    #[test]
    fn invalid_routes_are_reported() {
        let err = Snapshot::compile(
            parse_config(
                "
services:
- name: db
  ports:
  - port: 1
    cluster: c
    tcpRoutes: [{destinationSubnets: [10.0.0.0/99], clusters: [{cluster: gone}]}]
    tlsRoutes: [{clusters: [{cluster: c}]}, {sniHosts: [''], clusters: [{cluster: c}]}]
clusters: [{name: c}]
",
                "t",
            )
            .expect("parse"),
            "t",
        )
        .err()
        .expect("invalid")
        .to_string();
        assert!(err.contains("tcpRoutes[0].destinationSubnets[0]"), "{err}");
        assert!(
            err.contains("tcpRoutes[0].clusters[0].cluster: no cluster named \"gone\""),
            "{err}"
        );
        assert!(err.contains("tlsRoutes[0].sniHosts: is required"), "{err}");
        assert!(err.contains("tlsRoutes[1].sniHosts[0]"), "{err}");
    }

    #[test]
    fn weights_split_connections() {
        let snapshot = Snapshot::compile(
            parse_config(
                "
services:
- name: s
  ports: [{port: 1, cluster: a, tcpRoutes: [{clusters: [{cluster: a, weight: 50}, {cluster: b, weight: 50}]}]}]
clusters: [{name: a}, {name: b}]
",
                "t",
            )
            .expect("parse"),
            "t",
        )
        .expect("valid");
        let port = &snapshot.service_by_host("s").expect("service").ports[0];
        let to_a = (0..10)
            .filter(|_| port.tcp_target(None).name == "a")
            .count();
        assert_eq!(to_a, 5);
    }
}
