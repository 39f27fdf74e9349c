//! `GET /v1/describe` → 200: what applies to one service and why, as weftd
//! decides it (`weft describe svc`). Parts a user wrote and a reader wants
//! to see as written (a route's `match`, a traffic policy's sections,
//! labels) stay JSON; everything weftd decided is typed.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceDescription {
    pub service: DescribedService,
    pub virtual_services: Vec<DescribedVirtualService>,
    pub destination_rules: Vec<DescribedDestinationRule>,
    pub endpoints: Vec<DescribedEndpoint>,
    pub gateways: Vec<DescribedGateway>,
    pub policies: Vec<DescribedPolicy>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DescribedService {
    pub host: String,
    pub namespace: String,
    pub vips: Vec<String>,
    pub ports: Vec<DescribedPort>,
    pub export_to: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DescribedPort {
    pub number: u32,
    pub name: String,
    /// `HTTP`, `GRPC`, `TCP`, ... as the registry resolved it.
    pub protocol: String,
}

/// A VirtualService with a host covering the service; `applies` marks the
/// one the sidecars use, `why` says why or why not.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DescribedVirtualService {
    pub name: String,
    pub namespace: String,
    pub applies: bool,
    pub why: String,
    pub gateways: Vec<String>,
    pub rules: Vec<DescribedRule>,
}

/// One `http`, `tcp` or `tls` rule: its matches as written and where it
/// sends traffic.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DescribedRule {
    /// `http`, `tcp` or `tls`.
    pub protocol: String,
    #[serde(default)]
    pub name: Option<String>,
    /// The rule's `match` list as written; `null` when it has none.
    #[serde(rename = "match", default)]
    pub matches: Value,
    pub routes: Vec<DescribedRoute>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DescribedRoute {
    pub host: String,
    #[serde(default)]
    pub subset: Option<String>,
    #[serde(default)]
    pub port: Option<u32>,
    #[serde(default)]
    pub weight: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DescribedDestinationRule {
    pub name: String,
    pub namespace: String,
    pub applies: bool,
    pub why: String,
    pub policy: PolicySummary,
    pub subsets: Vec<DescribedSubset>,
}

/// The sections of a traffic policy a reader looks for
/// (`loadBalancer`, `connectionPool`, `outlierDetection`, `tls`), as written.
pub type PolicySummary = BTreeMap<String, Value>;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DescribedSubset {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub policy: PolicySummary,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DescribedEndpoint {
    /// `address:port` for each of the service's ports.
    pub addresses: Vec<String>,
    pub workload: String,
    pub labels: BTreeMap<String, String>,
    /// `region/zone/subzone`; empty when unknown.
    #[serde(default)]
    pub locality: String,
    /// The subsets of the applying DestinationRule this endpoint is in.
    pub subsets: Vec<String>,
}

/// A Gateway exposing the service through a VirtualService bound to it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DescribedGateway {
    pub name: String,
    pub namespace: String,
    /// False when the VirtualService names a Gateway that does not exist.
    pub found: bool,
    /// `VirtualService NS/NAME`.
    pub via: String,
    /// `PORT PROTOCOL HOSTS` per server.
    pub servers: Vec<String>,
}

/// A PeerAuthentication or AuthorizationPolicy selecting the service's
/// workloads.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DescribedPolicy {
    pub kind: String,
    pub name: String,
    pub namespace: String,
    pub why: String,
    #[serde(default)]
    pub action: Option<String>,
    /// PeerAuthentication `mtls.mode`.
    #[serde(default)]
    pub mtls: Option<String>,
}
