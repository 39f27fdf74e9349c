//! VirtualService: how requests to a set of hosts are routed.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::http_route::HttpRoute;
use super::types::{Destination, check_export_to, check_wildcard_host, is_ip_or_cidr};
use crate::field::FieldErrors;
use crate::meta::ObjectMeta;
use crate::resource::{Group, Spec};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VirtualService {
    /// Empty for a delegate VirtualService, which only a root one refers to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http: Vec<HttpRoute>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tls: Vec<TlsRoute>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tcp: Vec<TcpRoute>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub export_to: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteDestination {
    #[serde(default)]
    pub destination: Destination,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<i32>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsRoute {
    #[serde(default, rename = "match")]
    pub matches: Vec<TlsMatchAttributes>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub route: Vec<RouteDestination>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsMatchAttributes {
    #[serde(default)]
    pub sni_hosts: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub destination_subnets: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub source_labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source_namespace: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpRoute {
    #[serde(default, rename = "match", skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<L4MatchAttributes>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub route: Vec<RouteDestination>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct L4MatchAttributes {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub destination_subnets: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source_subnet: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub source_labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source_namespace: String,
}

fn check_routes(path: &str, routes: &[RouteDestination], errors: &mut FieldErrors) {
    if routes.is_empty() {
        errors.push(path, "route is required");
    }
    for (i, route) in routes.iter().enumerate() {
        route
            .destination
            .validate(&format!("{path}[{i}].destination"), errors);
        if route.weight.is_some_and(|w| !(0..=100).contains(&w)) {
            errors.push(format!("{path}[{i}].weight"), "must be 0..100");
        }
    }
}

fn check_l4(path: &str, subnets: &[String], port: Option<u32>, errors: &mut FieldErrors) {
    for (i, subnet) in subnets.iter().enumerate() {
        if !is_ip_or_cidr(subnet) {
            errors.push(
                format!("{path}.destinationSubnets[{i}]"),
                format!("{subnet:?} is not a valid IP or CIDR"),
            );
        }
    }
    if let Some(port) = port {
        errors.check_port(format!("{path}.port"), port);
    }
}

impl Spec for VirtualService {
    const KIND: &'static str = "VirtualService";
    const GROUP: Group = Group::Networking;

    fn validate(&self, _meta: &ObjectMeta, errors: &mut FieldErrors) {
        let delegate = self.hosts.is_empty();
        if delegate && !self.gateways.is_empty() {
            errors.push(
                "spec.gateways",
                "delegate virtual service must have no gateways specified",
            );
        }
        // `*` would capture every host of the mesh for sidecars.
        let binds_mesh = self.gateways.is_empty() || self.gateways.iter().any(|g| g == "mesh");
        for (i, host) in self.hosts.iter().enumerate() {
            let path = format!("spec.hosts[{i}]");
            if host == "*" && binds_mesh {
                errors.push(
                    path,
                    "wildcard host * is not allowed for virtual services bound to the mesh gateway",
                );
            } else {
                check_wildcard_host(&path, host, errors);
            }
        }
        if self.http.is_empty() && self.tls.is_empty() && self.tcp.is_empty() {
            errors.push(
                "spec",
                "http, tcp or tls must be provided in virtual service",
            );
        }
        for (i, route) in self.http.iter().enumerate() {
            route.validate(&format!("spec.http[{i}]"), errors);
        }
        for (i, route) in self.tls.iter().enumerate() {
            let path = format!("spec.tls[{i}]");
            if route.matches.is_empty() {
                errors.push(
                    format!("{path}.match"),
                    "TLS route must have at least one match condition",
                );
            }
            for (j, m) in route.matches.iter().enumerate() {
                let path = format!("{path}.match[{j}]");
                if m.sni_hosts.is_empty() {
                    errors.push(
                        format!("{path}.sniHosts"),
                        "TLS match must have at least one SNI host",
                    );
                }
                for (k, sni) in m.sni_hosts.iter().enumerate() {
                    check_wildcard_host(&format!("{path}.sniHosts[{k}]"), sni, errors);
                }
                check_l4(&path, &m.destination_subnets, m.port, errors);
            }
            check_routes(&format!("{path}.route"), &route.route, errors);
        }
        for (i, route) in self.tcp.iter().enumerate() {
            let path = format!("spec.tcp[{i}]");
            for (j, m) in route.matches.iter().enumerate() {
                let path = format!("{path}.match[{j}]");
                check_l4(&path, &m.destination_subnets, m.port, errors);
                if !m.source_subnet.is_empty() && !is_ip_or_cidr(&m.source_subnet) {
                    errors.push(format!("{path}.sourceSubnet"), "not a valid IP or CIDR");
                }
            }
            check_routes(&format!("{path}.route"), &route.route, errors);
        }
        check_export_to("spec.exportTo", &self.export_to, errors);
    }
}

#[cfg(test)]
mod tests {

    fn problems(spec: &str) -> Vec<(String, String)> {
        crate::decode::spec_problems::<super::VirtualService>(spec)
    }

    #[test]
    fn valid_service_decodes() {
        let spec = r#"  hosts: [reviews]
  http:
  - match:
    - headers: {end-user: {exact: jason}}
      uri: {regex: "^/api/v[0-9]+"}
    route:
    - destination: {host: reviews, subset: v2}
      weight: 80
    - destination: {host: reviews, subset: v3, port: {number: 9080}}
      weight: 20
    timeout: 10s
    retries: {attempts: 3, perTryTimeout: 2s, retryOn: "gateway-error,connect-failure,503"}
    fault: {delay: {fixedDelay: 7s, percentage: {value: 100}}}
  tcp:
  - route: [{destination: {host: mongo}}]
"#;
        assert_eq!(problems(spec), vec![]);
    }

    #[test]
    fn weights_and_hosts_checked() {
        let found = problems(
            "  hosts: [r]\n  http:\n  - route:\n    - destination: {subset: v1}\n      weight: 120\n",
        );
        assert!(found.contains(&(
            "spec.http[0].route[0].weight".into(),
            "must be 0..100".into()
        )));
        assert!(found.contains(&(
            "spec.http[0].route[0].destination.host".into(),
            "Required value".into()
        )));
    }

    #[test]
    fn one_action_per_route() {
        let found = problems(
            "  hosts: [r]\n  http:\n  - redirect: {uri: /x}\n    route: [{destination: {host: r}}]\n  - name: empty\n",
        );
        assert_eq!(found.len(), 2);
        assert_eq!(found[1].0, "spec.http[1]");
    }

    #[test]
    fn matches_and_retries_checked() {
        let spec = "  hosts: [r]\n  http:\n  - match: [{headers: {End-User: {exact: x}}, uri: {regex: \"(\"}}]\n    retries: {attempts: -1, perTryTimeout: 0s}\n    route: [{destination: {host: r}}]\n";
        let paths: Vec<String> = problems(spec).into_iter().map(|(p, _)| p).collect();
        for expected in [
            "spec.http[0].match[0].headers.End-User",
            "spec.http[0].match[0].uri.regex",
            "spec.http[0].retries.attempts",
            "spec.http[0].retries.perTryTimeout",
        ] {
            assert!(
                paths.contains(&expected.to_string()),
                "{expected} missing from {paths:?}"
            );
        }
    }

    #[test]
    fn unknown_field_rejected() {
        assert_eq!(
            problems("  hosts: [r]\n  http: [{route: [{destination: {host: r}}], retry: {}}]\n")
                .len(),
            1
        );
    }
}
