//! What the init container intercepts: Istio's `traffic.sidecar.istio.io/*`
//! annotations as data, parsed the same way by the injector (which warns at
//! admission) and by `weft intercept` (which installs the rules).
//!
//! Interception is IPv4 only (`iptables`, as `weft up`): an IPv6 range cannot
//! be captured, so one in an include list is refused; one in an exclude list
//! is already outside the capture and is reported, never dropped in silence.

use std::fmt;

use ipnet::{IpNet, Ipv4Net};

/// The sidecar's own ports: never redirected inbound (Istio always adds
/// 15090, 15021 and 15020 to `excludeInboundPorts`; 15000/15001/15006 are
/// the proxy's admin and capture listeners).
pub const PROXY_PORTS: [u16; 6] = [15000, 15001, 15006, 15020, 15021, 15090];
/// Traffic from this UID/GID (the sidecar's) is never captured outbound.
pub const PROXY_UID: u32 = 1337;
/// Where captured outbound traffic goes (the proxy's outbound listener).
pub const OUTBOUND_PORT: u16 = 15001;
/// Where captured inbound traffic goes (the proxy's inbound listener).
pub const INBOUND_PORT: u16 = 15006;
/// Where the app's DNS queries go with DNS capture (the proxy's DNS server,
/// Istio's 15053).
pub const DNS_PORT: u16 = 15053;

/// A set of ports: `*` (all) or a list (empty: none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ports {
    All,
    Only(Vec<u16>),
}

/// A set of IPv4 ranges: `*` (all) or a list (empty: none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ranges {
    All,
    Only(Vec<Ipv4Net>),
}

/// Everything the interception rules depend on. `Default` is what `weft up`
/// installs and what Istio installs without annotations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capture {
    pub include_inbound_ports: Ports,
    pub exclude_inbound_ports: Vec<u16>,
    pub include_outbound_ranges: Ranges,
    pub exclude_outbound_ranges: Vec<Ipv4Net>,
    pub exclude_outbound_ports: Vec<u16>,
    pub proxy_uid: u32,
    /// DNS capture (Istio's `ISTIO_META_DNS_CAPTURE`): the app's port-53
    /// traffic, UDP and TCP, goes to the proxy's DNS server.
    pub dns: bool,
}

impl Default for Capture {
    fn default() -> Self {
        Self {
            include_inbound_ports: Ports::All,
            exclude_inbound_ports: Vec::new(),
            include_outbound_ranges: Ranges::All,
            exclude_outbound_ranges: Vec::new(),
            exclude_outbound_ports: Vec::new(),
            proxy_uid: PROXY_UID,
            dns: false,
        }
    }
}

/// One annotation value that could not be used, with why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureError(pub String);

impl fmt::Display for CaptureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CaptureError {}

fn items(text: &str) -> impl Iterator<Item = &str> {
    text.split(',').map(str::trim).filter(|s| !s.is_empty())
}

/// `*`, or a comma-separated list of ports (empty: none).
pub fn parse_ports(what: &str, text: &str) -> Result<Ports, CaptureError> {
    if text.trim() == "*" {
        return Ok(Ports::All);
    }
    parse_port_list(what, text).map(Ports::Only)
}

/// A comma-separated list of ports 1..65535.
pub fn parse_port_list(what: &str, text: &str) -> Result<Vec<u16>, CaptureError> {
    items(text)
        .map(|item| match item.parse::<u16>() {
            Ok(port) if port > 0 => Ok(port),
            _ => Err(CaptureError(format!(
                "{what}: {item:?} is not a port (1..65535)"
            ))),
        })
        .collect()
}

/// `*`, or a comma-separated list of IPv4 CIDRs (empty: none). An IPv6
/// range is refused: it cannot be captured.
pub fn parse_ranges(what: &str, text: &str) -> Result<Ranges, CaptureError> {
    if text.trim() == "*" {
        return Ok(Ranges::All);
    }
    let (v4, v6) = parse_range_list(what, text)?;
    if let Some(first) = v6.first() {
        return Err(CaptureError(format!(
            "{what}: {first} is an IPv6 range; interception is IPv4 only, so it cannot be captured"
        )));
    }
    Ok(Ranges::Only(v4))
}

/// A comma-separated list of CIDRs (a bare address is a /32), split into
/// the IPv4 ranges and the IPv6 ones (which the caller reports).
pub fn parse_range_list(
    what: &str,
    text: &str,
) -> Result<(Vec<Ipv4Net>, Vec<IpNet>), CaptureError> {
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    for item in items(text) {
        let net = match item.parse::<IpNet>() {
            Ok(net) => net,
            Err(_) => match item.parse::<std::net::IpAddr>() {
                Ok(ip) => IpNet::from(ip),
                Err(_) => {
                    return Err(CaptureError(format!(
                        "{what}: {item:?} is not a CIDR range (e.g. 10.0.0.0/8)"
                    )));
                }
            },
        };
        match net {
            IpNet::V4(net) => v4.push(net.trunc()),
            IpNet::V6(_) => v6.push(net),
        }
    }
    Ok((v4, v6))
}

impl fmt::Display for Ports {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::All => f.write_str("*"),
            Self::Only(ports) => f.write_str(&join(ports)),
        }
    }
}

impl fmt::Display for Ranges {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::All => f.write_str("*"),
            Self::Only(ranges) => f.write_str(&join(ranges)),
        }
    }
}

pub fn join<T: fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

impl Capture {
    /// The flags of `weft intercept` that reproduce this capture.
    pub fn to_args(&self) -> Vec<String> {
        let mut args = vec!["intercept".to_string()];
        let mut flag = |name: &str, value: String| {
            args.push(format!("--{name}"));
            args.push(value);
        };
        flag("proxy-uid", self.proxy_uid.to_string());
        flag(
            "include-inbound-ports",
            self.include_inbound_ports.to_string(),
        );
        flag("exclude-inbound-ports", join(&self.exclude_inbound_ports));
        flag(
            "include-outbound-ip-ranges",
            self.include_outbound_ranges.to_string(),
        );
        flag(
            "exclude-outbound-ip-ranges",
            join(&self.exclude_outbound_ranges),
        );
        flag("exclude-outbound-ports", join(&self.exclude_outbound_ports));
        if self.dns {
            args.push("--capture-dns".into());
        }
        args
    }

    /// The `iptables-restore` input (nat table) that installs this capture,
    /// all rules or none. Exclusions come before each chain's redirect.
    pub fn rules(&self) -> String {
        let mut rules = String::from(
            "*nat\n\
             :ISTIO_INBOUND - [0:0]\n\
             :ISTIO_IN_REDIRECT - [0:0]\n\
             :ISTIO_OUTPUT - [0:0]\n\
             :ISTIO_REDIRECT - [0:0]\n\
             -A PREROUTING -p tcp -j ISTIO_INBOUND\n",
        );
        let mut line = |text: String| {
            rules.push_str(&text);
            rules.push('\n');
        };
        match &self.include_inbound_ports {
            Ports::All => {
                for port in PROXY_PORTS.iter().chain(&self.exclude_inbound_ports) {
                    line(format!("-A ISTIO_INBOUND -p tcp --dport {port} -j RETURN"));
                }
                line("-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT".into());
            }
            Ports::Only(ports) => {
                for port in ports.iter().filter(|port| {
                    !PROXY_PORTS.contains(port) && !self.exclude_inbound_ports.contains(port)
                }) {
                    line(format!(
                        "-A ISTIO_INBOUND -p tcp --dport {port} -j ISTIO_IN_REDIRECT"
                    ));
                }
            }
        }
        line(format!(
            "-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports {INBOUND_PORT}"
        ));
        let uid = self.proxy_uid;
        if self.dns {
            // UDP DNS from anyone but the proxy (whose own lookups and
            // forwarded queries must reach the real resolvers: no loop),
            // whatever resolver the app names, loopback included.
            for owner in ["uid", "gid"] {
                line(format!(
                    "-A OUTPUT -p udp --dport 53 -m owner --{owner}-owner {uid} -j RETURN"
                ));
            }
            line(format!(
                "-A OUTPUT -p udp --dport 53 -j REDIRECT --to-ports {DNS_PORT}"
            ));
        }
        line("-A OUTPUT -p tcp -j ISTIO_OUTPUT".into());
        line(format!(
            "-A ISTIO_OUTPUT -m owner --uid-owner {uid} -j RETURN"
        ));
        line(format!(
            "-A ISTIO_OUTPUT -m owner --gid-owner {uid} -j RETURN"
        ));
        if self.dns {
            // TCP DNS (a retry after a truncated answer): after the
            // proxy's exemption, before loopback is let through.
            line(format!(
                "-A ISTIO_OUTPUT -p tcp --dport 53 -j REDIRECT --to-ports {DNS_PORT}"
            ));
        }
        line("-A ISTIO_OUTPUT -d 127.0.0.0/8 -j RETURN".into());
        for port in &self.exclude_outbound_ports {
            line(format!("-A ISTIO_OUTPUT -p tcp --dport {port} -j RETURN"));
        }
        for range in &self.exclude_outbound_ranges {
            line(format!("-A ISTIO_OUTPUT -d {range} -j RETURN"));
        }
        match &self.include_outbound_ranges {
            Ranges::All => line("-A ISTIO_OUTPUT -j ISTIO_REDIRECT".into()),
            Ranges::Only(ranges) => {
                for range in ranges {
                    line(format!("-A ISTIO_OUTPUT -d {range} -j ISTIO_REDIRECT"));
                }
            }
        }
        line(format!(
            "-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports {OUTBOUND_PORT}"
        ));
        line("COMMIT".into());
        rules
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(rules: &str, needle: &str) -> usize {
        rules
            .find(needle)
            .unwrap_or_else(|| panic!("{needle:?} missing from\n{rules}"))
    }

    #[test]
    fn default_capture_leaves_the_proxy_and_loopback_alone() {
        let rules = Capture::default().rules();
        let redirect = at(&rules, "-A ISTIO_OUTPUT -j ISTIO_REDIRECT");
        assert!(at(&rules, "--uid-owner 1337 -j RETURN") < redirect);
        assert!(at(&rules, "-d 127.0.0.0/8 -j RETURN") < redirect);
        assert!(
            at(&rules, "--dport 15021 -j RETURN")
                < at(&rules, "-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT")
        );
        assert!(rules.ends_with("COMMIT\n"));
    }

    #[test]
    fn annotations_narrow_what_is_captured() {
        let capture = Capture {
            include_inbound_ports: parse_ports("in", "9080, 15021").expect("ports"),
            exclude_inbound_ports: parse_port_list("ex", "9443").expect("ports"),
            include_outbound_ranges: parse_ranges("out", "10.96.0.0/12,10.1.2.3").expect("ranges"),
            exclude_outbound_ranges: parse_range_list("exr", "10.96.0.10/32").expect("ranges").0,
            exclude_outbound_ports: parse_port_list("exp", "5432").expect("ports"),
            proxy_uid: 1337,
            dns: false,
        };
        let rules = capture.rules();
        assert!(rules.contains("-A ISTIO_INBOUND -p tcp --dport 9080 -j ISTIO_IN_REDIRECT"));
        // The proxy's own health port is never redirected, even when listed.
        assert!(!rules.contains("--dport 15021 -j ISTIO_IN_REDIRECT"));
        assert!(!rules.contains("-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT"));
        assert!(!rules.contains("-A ISTIO_OUTPUT -j ISTIO_REDIRECT"));
        let first_redirect = at(&rules, "-d 10.96.0.0/12 -j ISTIO_REDIRECT");
        assert!(at(&rules, "-d 10.96.0.10/32 -j RETURN") < first_redirect);
        assert!(at(&rules, "--dport 5432 -j RETURN") < first_redirect);
        assert!(rules.contains("-d 10.1.2.3/32 -j ISTIO_REDIRECT"));
    }

    #[test]
    fn bad_values_are_refused_with_the_annotation_named() {
        let err = parse_ports("traffic.sidecar.istio.io/includeInboundPorts", "80,http")
            .expect_err("not a port");
        assert!(err.0.contains("includeInboundPorts") && err.0.contains("\"http\""));
        assert!(parse_port_list("x", "0").is_err());
        let err = parse_ranges("x", "fd00::/8").expect_err("v6");
        assert!(err.0.contains("IPv4 only"), "{err}");
        assert!(parse_ranges("x", "10.0.0.0/33").is_err());
        assert_eq!(parse_ranges("x", "").expect("empty"), Ranges::Only(vec![]));
    }

    #[test]
    fn dns_capture_redirects_port_53_except_the_proxys_own() {
        assert!(!Capture::default().rules().contains("15053"));
        let capture = Capture {
            dns: true,
            ..Capture::default()
        };
        let rules = capture.rules();
        let udp = at(
            &rules,
            "-A OUTPUT -p udp --dport 53 -j REDIRECT --to-ports 15053",
        );
        assert!(
            at(
                &rules,
                "-p udp --dport 53 -m owner --uid-owner 1337 -j RETURN"
            ) < udp
        );
        assert!(
            at(
                &rules,
                "-p udp --dport 53 -m owner --gid-owner 1337 -j RETURN"
            ) < udp
        );
        let tcp = at(
            &rules,
            "-A ISTIO_OUTPUT -p tcp --dport 53 -j REDIRECT --to-ports 15053",
        );
        assert!(
            at(
                &rules,
                "-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN"
            ) < tcp
        );
        // A resolver on loopback (127.0.0.53) is captured too.
        assert!(tcp < at(&rules, "-A ISTIO_OUTPUT -d 127.0.0.0/8 -j RETURN"));
        assert!(capture.to_args().contains(&"--capture-dns".to_string()));
        assert!(
            !Capture::default()
                .to_args()
                .contains(&"--capture-dns".to_string())
        );
    }

    #[test]
    fn flags_round_trip() {
        let capture = Capture {
            include_outbound_ranges: Ranges::Only(vec!["10.0.0.0/8".parse().expect("net")]),
            exclude_outbound_ports: vec![25, 587],
            ..Capture::default()
        };
        let args = capture.to_args();
        let value = |flag: &str| {
            let i = args.iter().position(|a| a == flag).expect("flag");
            args[i + 1].clone()
        };
        assert_eq!(value("--include-outbound-ip-ranges"), "10.0.0.0/8");
        assert_eq!(value("--exclude-outbound-ports"), "25,587");
        assert_eq!(value("--include-inbound-ports"), "*");
        assert_eq!(value("--proxy-uid"), "1337");
    }
}
