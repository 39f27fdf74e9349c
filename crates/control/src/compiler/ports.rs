//! What a service port means to the proxy: protocol, server-first, and how
//! to talk to its endpoints.

use std::collections::BTreeMap;

use weft_proto::proxy::v1 as pb;

use super::resilience;

use crate::registry::{PortProtocol, ServicePortDef};

/// SMTP, MySQL and MongoDB: the server speaks first, so the proxy must not
/// wait for client bytes to detect a protocol.
const SERVER_FIRST_PORTS: [u32; 3] = [25, 3306, 27017];

pub(super) fn protocol(protocol: PortProtocol) -> pb::Protocol {
    match protocol {
        PortProtocol::Http | PortProtocol::GrpcWeb => pb::Protocol::Http,
        PortProtocol::Http2 => pb::Protocol::Http2,
        PortProtocol::Grpc => pb::Protocol::Grpc,
        PortProtocol::Tcp | PortProtocol::Mongo | PortProtocol::Mysql | PortProtocol::Redis => {
            pb::Protocol::Tcp
        }
        PortProtocol::Tls | PortProtocol::Https => pb::Protocol::Tls,
        PortProtocol::Udp | PortProtocol::Unknown => pb::Protocol::Unspecified,
    }
}

pub(super) fn is_server_first(number: u32, protocol: PortProtocol) -> bool {
    SERVER_FIRST_PORTS.contains(&number)
        || matches!(protocol, PortProtocol::Mysql | PortProtocol::Mongo)
}

/// Whether HTTP routes apply: declared HTTP, or undeclared (the proxy may
/// detect HTTP). Opaque ports only ever use the default cluster.
pub(super) fn carries_http(port: &ServicePortDef) -> bool {
    matches!(
        protocol(port.protocol),
        pb::Protocol::Http | pb::Protocol::Http2 | pb::Protocol::Grpc | pb::Protocol::Unspecified
    ) && !is_server_first(port.number, port.protocol)
}

pub(super) fn upstream_protocol(protocol: PortProtocol) -> pb::UpstreamProtocol {
    match protocol {
        PortProtocol::Http2 | PortProtocol::Grpc => pb::UpstreamProtocol::Http2PriorKnowledge,
        PortProtocol::Http | PortProtocol::GrpcWeb => pb::UpstreamProtocol::Http1,
        _ => pb::UpstreamProtocol::UseClientProtocol,
    }
}

/// The proxy-side port, without routes.
pub(super) fn service_port(port: &ServicePortDef) -> pb::ServicePort {
    pb::ServicePort {
        port: port.number,
        name: port.name.clone(),
        protocol: protocol(port.protocol) as i32,
        server_first: is_server_first(port.number, port.protocol),
        routes: Vec::new(),
        cluster: String::new(),
        // Filled per VirtualService (`routes::l4_routes`).
        tcp_routes: Vec::new(),
        tls_routes: Vec::new(),
    }
}

/// The route of an HTTP port no VirtualService routes: everything to the
/// port's cluster, with Istio's default retry policy. Emitted here rather
/// than left to the proxy's built-in default route, which has no retries
/// (a proxy config without weftd means none). `None` for opaque ports and
/// when the cluster does not exist (the proxy then reports the port).
pub(super) fn default_route(
    port: &ServicePortDef,
    host: &str,
    clusters: &BTreeMap<String, pb::Cluster>,
) -> Option<pb::Route> {
    let cluster = cluster_name(port.number, "", host);
    if !carries_http(port) || !clusters.contains_key(&cluster) {
        return None;
    }
    Some(pb::Route {
        name: "default".to_string(),
        clusters: vec![pb::WeightedCluster {
            cluster,
            ..Default::default()
        }],
        retries: Some(resilience::default_retry_policy()),
        ..Default::default()
    })
}

/// Istio's cluster naming: `outbound|<port>|<subset>|<host>`.
pub(super) fn cluster_name(port: u32, subset: &str, host: &str) -> String {
    format!("outbound|{port}|{subset}|{host}")
}
