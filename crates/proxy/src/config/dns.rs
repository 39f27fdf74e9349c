//! The names the proxy's DNS server answers itself ([`pb::DnsHost`], pushed
//! by weftd when DNS capture is on), compiled into one lookup table.
//!
//! Contract: a name is looked up lower case without the root dot; a name in
//! the table has at least one address (weftd leaves out hosts without one).
//! The table is plain data: the server (`crate::dns`) decides what a lookup
//! means for each query type.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use weft_proto::proxy::v1 as pb;

use super::snapshot::Problems;

/// The addresses of one host, by family (A and AAAA answers).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostAddresses {
    pub v4: Vec<Ipv4Addr>,
    pub v6: Vec<Ipv6Addr>,
}

/// Name → addresses, for every name of every pushed host.
#[derive(Debug, Clone, Default)]
pub struct NameTable {
    names: HashMap<String, Arc<HostAddresses>>,
}

impl NameTable {
    /// The addresses of `name` (any case, with or without the root dot);
    /// None when the proxy does not know the name.
    pub fn lookup(&self, name: &str) -> Option<&Arc<HostAddresses>> {
        let name = name.strip_suffix('.').unwrap_or(name);
        if name.bytes().any(|b| b.is_ascii_uppercase()) {
            return self.names.get(&name.to_ascii_lowercase());
        }
        self.names.get(name)
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }
}

/// Compiles `dnsHosts`; a bad address or a host without names is a problem
/// named by its index, a name given twice keeps its first host.
pub(super) fn compile_names(hosts: &[pb::DnsHost], problems: &mut Problems) -> NameTable {
    let mut table = NameTable::default();
    for (index, host) in hosts.iter().enumerate() {
        let path = format!("dnsHosts[{index}]");
        let mut addresses = HostAddresses::default();
        for (at, text) in host.addresses.iter().enumerate() {
            match text.parse::<IpAddr>() {
                Ok(IpAddr::V4(ip)) => addresses.v4.push(ip),
                Ok(IpAddr::V6(ip)) => addresses.v6.push(ip),
                Err(_) => problems.push(
                    format!("{path}.addresses[{at}]"),
                    format!("{text:?} is not an IP address"),
                ),
            }
        }
        if host.names.is_empty() || host.addresses.is_empty() {
            problems.push(&path, "a DNS host needs at least one name and one address");
            continue;
        }
        let addresses = Arc::new(addresses);
        for name in &host.names {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            table.names.entry(name).or_insert_with(|| addresses.clone());
        }
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(names: &[&str], addresses: &[&str]) -> pb::DnsHost {
        pb::DnsHost {
            names: names.iter().map(|s| s.to_string()).collect(),
            addresses: addresses.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn names_are_found_in_any_case_with_or_without_the_root_dot() {
        let mut problems = Problems::default();
        let table = compile_names(
            &[host(
                &["reviews.default.svc.cluster.local", "reviews"],
                &["240.240.0.3", "fd00::3"],
            )],
            &mut problems,
        );
        assert!(problems.0.is_empty(), "{:?}", problems.0);
        let found = table.lookup("Reviews.").expect("short name");
        assert_eq!(found.v4, vec![Ipv4Addr::new(240, 240, 0, 3)]);
        assert_eq!(found.v6, vec!["fd00::3".parse::<Ipv6Addr>().expect("v6")]);
        assert!(table.lookup("reviews.default.svc.cluster.local").is_some());
        assert!(table.lookup("ratings").is_none());
    }

    #[test]
    fn bad_hosts_are_reported_with_their_path() {
        let mut problems = Problems::default();
        compile_names(
            &[host(&["a.example.com"], &["nope"]), host(&[], &["1.2.3.4"])],
            &mut problems,
        );
        assert!(
            problems.0[0].starts_with("dnsHosts[0].addresses[0]"),
            "{:?}",
            problems.0
        );
        assert!(problems.0[1].starts_with("dnsHosts[1]"), "{:?}", problems.0);
    }
}
