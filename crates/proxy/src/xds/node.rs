//! The proxy's identity, from command-line flags, as sent to weftd.

use std::collections::BTreeMap;

use weft_proto::discovery::v1::{ExplicitListener, InboundListener, Node, WorkloadPort};
use weft_proto::proxy::v1::Protocol;

/// `key=value` → (key, value).
pub fn parse_label(text: &str) -> Result<(String, String), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("label {text:?}: expected key=value"))?;
    Ok((key.to_string(), value.to_string()))
}

/// `PORT` or `PORT/PROTOCOL` (http, http2, grpc, tcp, tls).
pub fn parse_port(text: &str) -> Result<WorkloadPort, String> {
    let (number, protocol) = text.split_once('/').unwrap_or((text, ""));
    let port: u16 = number
        .parse()
        .map_err(|_| format!("port {text:?}: expected PORT or PORT/PROTOCOL"))?;
    let protocol = match protocol.to_ascii_lowercase().as_str() {
        "" => Protocol::Unspecified,
        "http" => Protocol::Http,
        "http2" => Protocol::Http2,
        "grpc" => Protocol::Grpc,
        "tcp" => Protocol::Tcp,
        "tls" => Protocol::Tls,
        other => return Err(format!("port {text:?}: unknown protocol {other:?}")),
    };
    Ok(WorkloadPort {
        port: u32::from(port),
        protocol: protocol as i32,
        name: String::new(),
    })
}

/// `ADDRESS=SERVICE[:PORT]`, or `ADDRESS` alone to route by HTTP authority.
pub fn parse_listener(text: &str) -> Result<ExplicitListener, String> {
    let (address, target) = text.split_once('=').unwrap_or((text, ""));
    address
        .parse::<std::net::SocketAddr>()
        .map_err(|_| format!("listener {text:?}: {address:?} is not ip:port"))?;
    let (service, port) = match target.rsplit_once(':') {
        Some((service, port)) => (
            service,
            port.parse::<u16>()
                .map_err(|_| format!("listener {text:?}: bad port {port:?}"))?,
        ),
        None => (target, 0),
    };
    Ok(ExplicitListener {
        address: address.to_string(),
        service: service.to_string(),
        port: u32::from(port),
    })
}

/// `ADDRESS=PORT`: mesh callers reach workload port PORT at ADDRESS.
pub fn parse_inbound(text: &str) -> Result<InboundListener, String> {
    let (address, port) = text
        .split_once('=')
        .ok_or_else(|| format!("inbound {text:?}: expected ADDRESS=PORT"))?;
    address
        .parse::<std::net::SocketAddr>()
        .map_err(|_| format!("inbound {text:?}: {address:?} is not ip:port"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("inbound {text:?}: bad port {port:?}"))?;
    Ok(InboundListener {
        address: address.to_string(),
        port: u32::from(port),
    })
}

/// Everything weftd needs to know about this proxy's workload.
pub struct NodeFlags {
    pub id: Option<String>,
    pub workload: String,
    pub namespace: String,
    pub labels: Vec<(String, String)>,
    pub service_account: String,
    pub address: String,
    pub ports: Vec<WorkloadPort>,
    pub capture: bool,
    pub listeners: Vec<ExplicitListener>,
    pub router: bool,
    pub locality: String,
    pub inbound_listeners: Vec<InboundListener>,
    /// Holds (or is getting) a workload certificate.
    pub mtls: bool,
    /// A gateway's trusted hops in X-Forwarded-For.
    pub num_trusted_proxies: u32,
    /// The app's DNS queries are captured to this proxy: ask for names.
    pub dns_capture: bool,
}

impl NodeFlags {
    pub fn into_node(self) -> Node {
        let id = self.id.unwrap_or_else(|| {
            let namespace = if self.namespace.is_empty() {
                "default"
            } else {
                &self.namespace
            };
            format!("{}.{namespace}", self.workload)
        });
        Node {
            id,
            workload: self.workload,
            namespace: self.namespace,
            labels: self.labels.into_iter().collect::<BTreeMap<_, _>>(),
            service_account: self.service_account,
            address: self.address,
            ports: self.ports,
            capture: self.capture,
            explicit_listeners: self.listeners,
            router: self.router,
            locality: self.locality,
            inbound_listeners: self.inbound_listeners,
            mtls: self.mtls,
            num_trusted_proxies: self.num_trusted_proxies,
            dns_capture: self.dns_capture,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse_into_node_parts() {
        assert_eq!(
            parse_label("version=v2"),
            Ok(("version".into(), "v2".into()))
        );
        assert!(parse_label("version").is_err());
        let port = parse_port("9080/http").expect("port");
        assert_eq!((port.port, port.protocol), (9080, Protocol::Http as i32));
        assert!(parse_port("99999").is_err());
        let listener = parse_listener("127.0.0.1:18080=reviews:9080").expect("listener");
        assert_eq!(
            (listener.service.as_str(), listener.port),
            ("reviews", 9080)
        );
        let by_host = parse_listener("127.0.0.1:18081").expect("listener");
        assert_eq!((by_host.service.as_str(), by_host.port), ("", 0));
    }
}
