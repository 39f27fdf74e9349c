//! A Kubernetes Service → [`KubeService`] (without endpoints), and the port
//! protocol as Istio selects it (`pkg/config/kube/conversion.go`).

use std::net::IpAddr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{KubePort, KubeService};

/// How callers reach the Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceKind {
    /// ClusterIP, NodePort, LoadBalancer: the cluster IPs are the VIPs
    /// (empty until the API server allocated one).
    ClusterIp(Vec<IpAddr>),
    /// `clusterIP: None`: callers dial pod IPs they got from DNS.
    Headless,
    /// `type: ExternalName`: an alias of another host.
    ExternalName(String),
}

/// Ports that carry a server-first protocol: TCP unless named otherwise
/// (SMTP, DNS, MySQL, MongoDB), so they never wait for detection.
const SERVER_FIRST_PORTS: &[u32] = &[25, 53, 3306, 27017];

/// Istio's protocol for a Service port: UDP is UDP; a set `appProtocol`
/// replaces the name (with Kubernetes' `kubernetes.io/h2c|ws|wss`);
/// `grpc-web…` is gRPC-Web; else the part of the name before the first `-`,
/// case-insensitive. Anything unknown is detected (`None`), except the
/// server-first ports, which are TCP.
pub fn protocol_of(
    port: u32,
    name: &str,
    transport: Option<&str>,
    app_protocol: Option<&str>,
) -> Option<&'static str> {
    if transport.is_some_and(|t| t.eq_ignore_ascii_case("UDP")) {
        return Some("UDP");
    }
    let name = match app_protocol {
        Some("kubernetes.io/h2c") => return Some("HTTP2"),
        Some("kubernetes.io/ws") => return Some("HTTP"),
        Some("kubernetes.io/wss") => return Some("HTTPS"),
        Some(app) => app,
        None => name,
    };
    let lower = name.to_ascii_lowercase();
    if lower.starts_with("grpc-web") {
        return Some("GRPC-Web");
    }
    let prefix = lower.split('-').next().unwrap_or_default();
    let known = match prefix {
        "http" | "http_proxy" => Some("HTTP"),
        "http2" => Some("HTTP2"),
        "https" => Some("HTTPS"),
        "grpc" => Some("GRPC"),
        "tcp" => Some("TCP"),
        "tls" => Some("TLS"),
        "mongo" => Some("Mongo"),
        "redis" => Some("Redis"),
        "mysql" => Some("MySQL"),
        "udp" => Some("UDP"),
        _ => None,
    };
    known.or_else(|| SERVER_FIRST_PORTS.contains(&port).then_some("TCP"))
}

/// The Service without endpoints; `None` for one without name or namespace
/// (never stored by an API server).
pub fn convert(service: &Service, cluster_domain: &str) -> Option<KubeService> {
    let name = service.metadata.name.clone()?;
    let namespace = service.metadata.namespace.clone()?;
    let spec = service.spec.clone().unwrap_or_default();
    let kind = if spec.type_.as_deref() == Some("ExternalName") {
        ServiceKind::ExternalName(spec.external_name.clone().unwrap_or_default())
    } else if spec.cluster_ip.as_deref() == Some("None") {
        ServiceKind::Headless
    } else {
        let mut ips: Vec<&String> = spec.cluster_ips.iter().flatten().collect();
        if ips.is_empty() {
            ips.extend(spec.cluster_ip.iter());
        }
        ServiceKind::ClusterIp(ips.into_iter().filter_map(|ip| ip.parse().ok()).collect())
    };
    let ports = spec
        .ports
        .iter()
        .flatten()
        .filter_map(|p| {
            let number = u32::try_from(p.port).ok()?;
            let name = p.name.clone().unwrap_or_default();
            Some(KubePort {
                protocol: protocol_of(
                    number,
                    &name,
                    p.protocol.as_deref(),
                    p.app_protocol.as_deref(),
                ),
                target_port: match &p.target_port {
                    Some(IntOrString::Int(port)) => u32::try_from(*port).ok(),
                    // Named: resolved per endpoint from the slice's ports.
                    Some(IntOrString::String(_)) | None => None,
                },
                name,
                port: number,
            })
        })
        .collect();
    let export_to = service
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("networking.istio.io/exportTo"))
        .map(|value| {
            value
                .split(',')
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    Some(KubeService {
        hostname: format!("{name}.{namespace}.svc.{cluster_domain}"),
        name,
        namespace,
        kind,
        ports,
        export_to,
        selector: spec.selector.clone().filter(|s| !s.is_empty()),
        endpoints: Vec::new(),
    })
}
