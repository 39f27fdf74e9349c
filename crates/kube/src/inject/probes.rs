//! Application probes, rewritten through the sidecar as Istio does.
//!
//! Under STRICT mutual TLS the kubelet's plain-text probe of an app port
//! would be refused by the sidecar's inbound capture. So each httpGet,
//! tcpSocket and grpc probe of an app container becomes an httpGet of
//! `/app-health/<container>/livez|readyz|startupz` on the sidecar's status
//! port (15020, never captured), and the original goes into the sidecar's
//! `ISTIO_KUBE_APP_PROBERS` (Istio's JSON), which weft-proxy replays to the
//! app from inside the pod. exec probes need no network and stay as written.
//!
//! A probe that is not rewritten (the pod opted out with
//! `sidecar.istio.io/rewriteAppHTTPProbers: "false"`, or its named port is
//! not one of the container's) is listed in the [`NOTE`] annotation and in a
//! warning saying why, never left in silence.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, GRPCAction, HTTPGetAction, Probe, TCPSocketAction};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Serialize;

/// The pod annotation listing the probes that were left as they are.
pub const NOTE: &str = "weft.io/probes-not-rewritten";
/// The sidecar's environment variable holding the original probes.
pub const PROBERS_ENV: &str = "ISTIO_KUBE_APP_PROBERS";
/// The sidecar's status port, where rewritten probes go.
pub const STATUS_PORT: i32 = 15020;
/// Istio's pod annotation; `"false"` keeps the probes as written.
pub const REWRITE_ANNOTATION: &str = "sidecar.istio.io/rewriteAppHTTPProbers";
/// The sidecar's own ports: a probe already aimed at them is the sidecar's.
const SIDECAR_PORTS: [i32; 2] = [STATUS_PORT, 15021];

/// One original probe, as weft-proxy's `--app-probers` reads it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Prober {
    #[serde(skip_serializing_if = "Option::is_none")]
    http_get: Option<HTTPGetAction>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tcp_socket: Option<TCPSocketAction>,
    #[serde(skip_serializing_if = "Option::is_none")]
    grpc: Option<GRPCAction>,
    #[serde(skip_serializing_if = "Option::is_none")]
    timeout_seconds: Option<i32>,
}

/// What [`rewrite`] did.
#[derive(Debug, Default)]
pub struct Rewritten {
    /// The `ISTIO_KUBE_APP_PROBERS` value; None when nothing was rewritten.
    pub probers: Option<String>,
    /// `container/kind (how)` for each network probe left as written
    /// because its named port is not one of the container's ports.
    pub unresolved: Vec<String>,
}

/// Rewrites the network probes of `containers` to the sidecar's status port.
pub fn rewrite(containers: &mut [Container]) -> Result<Rewritten, String> {
    let mut table = BTreeMap::new();
    let mut unresolved = Vec::new();
    for container in containers.iter_mut() {
        let ports = container.ports.clone().unwrap_or_default();
        let name = container.name.clone();
        for (kind, suffix, slot) in [
            ("livenessProbe", "livez", &mut container.liveness_probe),
            ("readinessProbe", "readyz", &mut container.readiness_probe),
            ("startupProbe", "startupz", &mut container.startup_probe),
        ] {
            let Some(probe) = slot.as_mut() else {
                continue;
            };
            let Some(how) = describe(probe) else {
                continue; // exec: runs in the container, no network
            };
            let port = match probe_port(probe) {
                Some(IntOrString::Int(n)) => Some(n),
                Some(IntOrString::String(port_name)) => ports
                    .iter()
                    .find(|p| p.name.as_deref() == Some(port_name.as_str()))
                    .map(|p| p.container_port)
                    .or_else(|| port_name.parse().ok()),
                None => None,
            };
            let Some(port) = port else {
                unresolved.push(format!("{name}/{kind} ({how})"));
                continue;
            };
            if SIDECAR_PORTS.contains(&port) {
                continue;
            }
            let path = format!("/app-health/{name}/{suffix}");
            table.insert(path.clone(), original(probe, port));
            probe.http_get = Some(HTTPGetAction {
                path: Some(path),
                port: IntOrString::Int(STATUS_PORT),
                scheme: Some("HTTP".into()),
                ..HTTPGetAction::default()
            });
            probe.tcp_socket = None;
            probe.grpc = None;
        }
    }
    let probers = if table.is_empty() {
        None
    } else {
        Some(serde_json::to_string(&table).map_err(|err| format!("{PROBERS_ENV}: {err}"))?)
    };
    Ok(Rewritten {
        probers,
        unresolved,
    })
}

fn probe_port(probe: &Probe) -> Option<IntOrString> {
    if let Some(http) = &probe.http_get {
        return Some(http.port.clone());
    }
    if let Some(tcp) = &probe.tcp_socket {
        return Some(tcp.port.clone());
    }
    probe.grpc.as_ref().map(|grpc| IntOrString::Int(grpc.port))
}

/// The probe as the kubelet would have run it, its port a number (the
/// proxy does not know the container's port names).
fn original(probe: &Probe, port: i32) -> Prober {
    let mut prober = Prober {
        http_get: probe.http_get.clone(),
        tcp_socket: probe.tcp_socket.clone(),
        grpc: probe.grpc.clone(),
        timeout_seconds: probe.timeout_seconds,
    };
    if let Some(http) = &mut prober.http_get {
        http.port = IntOrString::Int(port);
    }
    if let Some(tcp) = &mut prober.tcp_socket {
        tcp.port = IntOrString::Int(port);
    }
    prober
}

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

fn port_text(port: &IntOrString) -> String {
    match port {
        IntOrString::Int(n) => format!(":{n}"),
        IntOrString::String(name) => format!(":{name}"),
    }
}

/// The warning for probes left as written, `why` they were.
pub fn warning(found: &[String], why: &str) -> String {
    format!(
        "probes not rewritten through the sidecar ({}): {why}; the kubelet's plain-text probe \
         passes inbound capture and fails under STRICT mTLS: use PERMISSIVE for those ports, an \
         exec probe, or traffic.sidecar.istio.io/excludeInboundPorts",
        found.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ContainerPort, ExecAction, HTTPHeader};

    fn container() -> Container {
        Container {
            name: "app".into(),
            ports: Some(vec![ContainerPort {
                name: Some("http".into()),
                container_port: 8080,
                ..ContainerPort::default()
            }]),
            liveness_probe: Some(Probe {
                http_get: Some(HTTPGetAction {
                    path: Some("/live".into()),
                    port: IntOrString::String("http".into()),
                    http_headers: Some(vec![HTTPHeader {
                        name: "X-Probe".into(),
                        value: "1".into(),
                    }]),
                    ..HTTPGetAction::default()
                }),
                timeout_seconds: Some(3),
                period_seconds: Some(7),
                ..Probe::default()
            }),
            readiness_probe: Some(Probe {
                tcp_socket: Some(TCPSocketAction {
                    port: IntOrString::Int(5432),
                    ..TCPSocketAction::default()
                }),
                ..Probe::default()
            }),
            startup_probe: Some(Probe {
                grpc: Some(GRPCAction {
                    port: 7070,
                    service: Some("shop".into()),
                }),
                failure_threshold: Some(30),
                ..Probe::default()
            }),
            ..Container::default()
        }
    }

    fn rewritten_get(probe: &Option<Probe>) -> (&str, &IntOrString, bool) {
        let probe = probe.as_ref().expect("probe");
        let http = probe.http_get.as_ref().expect("httpGet");
        (
            http.path.as_deref().unwrap_or(""),
            &http.port,
            probe.tcp_socket.is_none() && probe.grpc.is_none(),
        )
    }

    #[test]
    fn network_probes_become_gets_of_the_status_port_and_keep_their_timing() {
        let mut containers = vec![container()];
        let done = rewrite(&mut containers).expect("rewrite");
        assert!(done.unresolved.is_empty());
        let app = &containers[0];
        let port = IntOrString::Int(STATUS_PORT);
        assert_eq!(
            rewritten_get(&app.liveness_probe),
            ("/app-health/app/livez", &port, true)
        );
        assert_eq!(
            rewritten_get(&app.readiness_probe),
            ("/app-health/app/readyz", &port, true)
        );
        assert_eq!(
            rewritten_get(&app.startup_probe),
            ("/app-health/app/startupz", &port, true)
        );
        // Timing stays with the kubelet's probe.
        let live = app.liveness_probe.as_ref().expect("live");
        assert_eq!(
            (live.timeout_seconds, live.period_seconds),
            (Some(3), Some(7))
        );
        let startup = app.startup_probe.as_ref().expect("startup");
        assert_eq!(startup.failure_threshold, Some(30));

        let json: serde_json::Value =
            serde_json::from_str(done.probers.as_deref().expect("probers")).expect("json");
        assert_eq!(
            json,
            serde_json::json!({
                "/app-health/app/livez": {
                    "httpGet": {"path": "/live", "port": 8080,
                                "httpHeaders": [{"name": "X-Probe", "value": "1"}]},
                    "timeoutSeconds": 3
                },
                "/app-health/app/readyz": {"tcpSocket": {"port": 5432}},
                "/app-health/app/startupz": {"grpc": {"port": 7070, "service": "shop"}}
            })
        );
    }

    #[test]
    fn exec_probes_unknown_port_names_and_sidecar_ports_stay_as_written() {
        let mut app = container();
        app.liveness_probe = Some(Probe {
            exec: Some(ExecAction {
                command: Some(vec!["true".into()]),
            }),
            ..Probe::default()
        });
        app.readiness_probe = Some(Probe {
            tcp_socket: Some(TCPSocketAction {
                port: IntOrString::String("admin".into()),
                ..TCPSocketAction::default()
            }),
            ..Probe::default()
        });
        app.startup_probe = Some(Probe {
            http_get: Some(HTTPGetAction {
                path: Some("/healthz/ready".into()),
                port: IntOrString::Int(15021),
                ..HTTPGetAction::default()
            }),
            ..Probe::default()
        });
        let before = app.clone();
        let mut containers = vec![app];
        let done = rewrite(&mut containers).expect("rewrite");
        assert_eq!(containers[0], before);
        assert_eq!(done.probers, None);
        assert_eq!(
            done.unresolved,
            vec!["app/readinessProbe (tcpSocket :admin)"]
        );
        assert!(warning(&done.unresolved, "why").contains("STRICT"));
        assert_eq!(
            network_probes(&containers),
            vec![
                "app/readinessProbe (tcpSocket :admin)".to_string(),
                "app/startupProbe (httpGet :15021/healthz/ready)".to_string()
            ]
        );
    }
}
