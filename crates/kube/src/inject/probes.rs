//! Application probes and the sidecar.
//!
//! Istio rewrites HTTP/TCP/gRPC probes to the agent's `/app-health/...`
//! on 15020, which replays them to the app from inside the pod, so they
//! work under STRICT mutual TLS. weft-proxy has no such endpoint (its 15020
//! serves merged metrics only), so Weft does not rewrite probes: the
//! kubelet's probe reaches the app's port through inbound capture as plain
//! text. That works under PERMISSIVE mTLS (Istio's default) and fails under
//! STRICT. This is said at admission, as a warning and as an annotation on
//! the pod, instead of silently breaking or silently bypassing the sidecar.

use k8s_openapi::api::core::v1::{Container, Probe};

/// The pod annotation listing the probes that were left as they are.
pub const NOTE: &str = "weft.io/probes-not-rewritten";

/// `container/kind (how)` for every network probe of `containers`.
pub fn network_probes(containers: &[Container]) -> Vec<String> {
    let mut found = Vec::new();
    for container in containers {
        for (kind, probe) in [
            ("livenessProbe", &container.liveness_probe),
            ("readinessProbe", &container.readiness_probe),
            ("startupProbe", &container.startup_probe),
        ] {
            if let Some(how) = probe.as_ref().and_then(describe) {
                found.push(format!("{}/{kind} ({how})", container.name));
            }
        }
    }
    found
}

fn describe(probe: &Probe) -> Option<String> {
    if let Some(http) = &probe.http_get {
        return Some(format!(
            "httpGet {}{}",
            port_text(&http.port),
            http.path.as_deref().unwrap_or("/")
        ));
    }
    if let Some(tcp) = &probe.tcp_socket {
        return Some(format!("tcpSocket {}", port_text(&tcp.port)));
    }
    probe
        .grpc
        .as_ref()
        .map(|grpc| format!("grpc :{}", grpc.port))
}

fn port_text(port: &k8s_openapi::apimachinery::pkg::util::intstr::IntOrString) -> String {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    match port {
        IntOrString::Int(n) => format!(":{n}"),
        IntOrString::String(name) => format!(":{name}"),
    }
}

/// The warning for the probes `network_probes` found.
pub fn warning(found: &[String]) -> String {
    format!(
        "probes not rewritten through the sidecar ({}): weft-proxy has no /app-health endpoint, so \
         the kubelet's plain-text probe passes inbound capture and fails under STRICT mTLS; use \
         PERMISSIVE for those ports, an exec probe, or traffic.sidecar.istio.io/excludeInboundPorts",
        found.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ExecAction, HTTPGetAction, TCPSocketAction};
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    #[test]
    fn network_probes_are_listed_and_exec_probes_are_not() {
        let container = Container {
            name: "app".into(),
            readiness_probe: Some(Probe {
                http_get: Some(HTTPGetAction {
                    path: Some("/ready".into()),
                    port: IntOrString::Int(8080),
                    ..HTTPGetAction::default()
                }),
                ..Probe::default()
            }),
            liveness_probe: Some(Probe {
                tcp_socket: Some(TCPSocketAction {
                    port: IntOrString::String("http".into()),
                    ..TCPSocketAction::default()
                }),
                ..Probe::default()
            }),
            startup_probe: Some(Probe {
                exec: Some(ExecAction {
                    command: Some(vec!["true".into()]),
                }),
                ..Probe::default()
            }),
            ..Container::default()
        };
        let found = network_probes(&[container]);
        assert_eq!(
            found,
            vec![
                "app/livenessProbe (tcpSocket :http)".to_string(),
                "app/readinessProbe (httpGet :8080/ready)".to_string()
            ]
        );
        assert!(warning(&found).contains("STRICT"));
    }
}
