//! `networking.istio.io` kinds.

mod destination_rule;
mod gateway;
pub mod gateway_tls;
mod http_route;
mod service_entry;
mod sidecar;
mod traffic_policy;
mod types;
mod virtual_service;
mod workload_entry;
mod workload_group;

pub use destination_rule::{DestinationRule, Subset};
pub use gateway::{Gateway, Server, ServerTlsMode, ServerTlsSettings, TlsProtocol};
pub use http_route::{HttpMatchRequest, HttpRoute, HttpRouteDestination, RedirectPortSelection};
pub use service_entry::{Location, Resolution, ServiceEntry};
pub use sidecar::{EgressProxy, OutboundMode, Sidecar};
pub use traffic_policy::{
    ConnectionPoolSettings, H2UpgradePolicy, LoadBalancerSettings, LocalityLbSetting,
    OutlierDetection, SimpleLb, TrafficPolicy,
};
pub use types::{ClientTlsMode, ClientTlsSettings, Destination, Port, PortSelector, StringMatch};
pub use virtual_service::VirtualService;
pub use workload_entry::WorkloadEntry;
pub use workload_group::WorkloadGroup;
