//! The containers and volumes injection adds: `weft-init` (runs
//! `weft intercept`, as root with NET_ADMIN/NET_RAW, then exits) and
//! `weft-proxy` (UID 1337, which capture leaves alone), mirroring Istio's
//! injection template (`istio-init`, `istio-proxy`).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EnvVar, EnvVarSource,
    ExecAction, HTTPGetAction, KeyToPath, Lifecycle, LifecycleHandler, ObjectFieldSelector,
    PodSpec, Probe, ProjectedVolumeSource, ResourceRequirements, SecurityContext,
    ServiceAccountTokenProjection, Volume, VolumeMount, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::Settings;
use super::annotations::Options;
use super::capture::PROXY_UID;

pub const INIT_NAME: &str = "weft-init";
pub const PROXY_NAME: &str = "weft-proxy";
pub const TOKEN_VOLUME: &str = "weft-token";
pub const ROOT_VOLUME: &str = "weft-ca-root";
pub const TOKEN_DIR: &str = "/var/run/secrets/tokens";
pub const TOKEN_PATH: &str = "/var/run/secrets/tokens/istio-token";
pub const ROOT_DIR: &str = "/var/run/secrets/weft";
pub const ROOT_PATH: &str = "/var/run/secrets/weft/root-cert.pem";
/// The projected token's audience: what weftd's TokenReview asks for.
pub const TOKEN_AUDIENCE: &str = "istio-ca";
pub const TOKEN_SECONDS: i64 = 43200;
pub const HEALTH_PORT: i32 = 15021;
pub const READY_PATH: &str = "/healthz/ready";

/// Who the pod is, for the proxy's flags.
pub struct Workload<'a> {
    pub name: &'a str,
    pub labels: &'a BTreeMap<String, String>,
}

pub fn init_container(settings: &Settings, options: &Options) -> Container {
    Container {
        name: INIT_NAME.into(),
        image: Some(settings.image.clone()),
        image_pull_policy: Some(settings.pull_policy.clone()),
        command: Some(vec!["weft".into()]),
        args: Some(options.capture.to_args()),
        resources: Some(resources(options)),
        security_context: Some(SecurityContext {
            run_as_user: Some(0),
            run_as_group: Some(0),
            run_as_non_root: Some(false),
            allow_privilege_escalation: Some(false),
            privileged: Some(false),
            read_only_root_filesystem: Some(false),
            capabilities: Some(Capabilities {
                add: Some(vec!["NET_ADMIN".into(), "NET_RAW".into()]),
                drop: Some(vec!["ALL".into()]),
            }),
            ..SecurityContext::default()
        }),
        ..Container::default()
    }
}

/// What the `weft-proxy` container is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Beside an app, its traffic captured; `native` makes it a native
    /// sidecar (an init container that keeps running: `restartPolicy:
    /// Always`, with a startup probe the app containers wait for).
    Sidecar { native: bool },
    /// A gateway (`--router`): serves Gateway resources, captures nothing.
    Gateway,
}

/// The `weft-proxy` container for `role`.
pub fn proxy_container(
    settings: &Settings,
    options: &Options,
    workload: &Workload<'_>,
    app_ports: &[String],
    role: Role,
) -> Container {
    let native = role == Role::Sidecar { native: true };
    let mut args = vec![
        "--control-plane".to_string(),
        settings.control_plane.clone(),
        "--ca-root".into(),
        ROOT_PATH.into(),
        "--token-file".into(),
        TOKEN_PATH.into(),
        // Kubernetes expands $(VAR) from the container's env.
        "--node-id".into(),
        "$(POD_NAME).$(POD_NAMESPACE)".into(),
        "--workload".into(),
        workload.name.into(),
        "--namespace".into(),
        "$(POD_NAMESPACE)".into(),
        "--service-account".into(),
        "$(SERVICE_ACCOUNT)".into(),
        "--address".into(),
        "$(INSTANCE_IP)".into(),
        "--cluster-id".into(),
        settings.cluster_id.clone(),
    ];
    match role {
        // Istio's merged metrics port beside the capture listeners.
        Role::Sidecar { .. } => {
            args.extend(["--capture", "--merged-metrics", "0.0.0.0:15020"].map(String::from))
        }
        Role::Gateway => {
            args.push("--router".into());
            // The client address policies see behind a load balancer.
            if let Some(n) = options.num_trusted_proxies.filter(|n| *n > 0) {
                args.extend(["--num-trusted-proxies".into(), n.to_string()]);
            }
        }
    }
    for (key, value) in workload.labels {
        args.push("--label".into());
        args.push(format!("{key}={value}"));
    }
    for port in app_ports {
        args.push("--port".into());
        args.push(port.clone());
    }
    args.extend(options.proxy_flags());
    let mut env = vec![
        field_env("POD_NAME", "metadata.name"),
        field_env("POD_NAMESPACE", "metadata.namespace"),
        field_env("INSTANCE_IP", "status.podIP"),
        field_env("SERVICE_ACCOUNT", "spec.serviceAccountName"),
        field_env("HOST_IP", "status.hostIP"),
    ];
    // proxyMetadata reaches the proxy as environment, as in Istio (weft-proxy
    // reads ISTIO_META_DNS_CAPTURE from it).
    for (name, value) in &options.proxy_metadata {
        env.push(EnvVar {
            name: name.clone(),
            value: Some(value.clone()),
            ..EnvVar::default()
        });
    }
    if let Some(level) = &options.log_level {
        env.push(EnvVar {
            name: "RUST_LOG".into(),
            value: Some(level.clone()),
            ..EnvVar::default()
        });
    }
    let ready = Probe {
        http_get: Some(HTTPGetAction {
            path: Some(READY_PATH.into()),
            port: IntOrString::Int(HEALTH_PORT),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(15),
        failure_threshold: Some(4),
        timeout_seconds: Some(3),
        ..Probe::default()
    };
    let startup = Probe {
        period_seconds: Some(1),
        failure_threshold: Some(600),
        initial_delay_seconds: Some(0),
        ..ready.clone()
    };
    // Classic sidecar held first: the kubelet runs the next container only
    // when this postStart hook returns, i.e. when the proxy is ready.
    let hold = (!native && options.hold_application).then(|| Lifecycle {
        post_start: Some(LifecycleHandler {
            exec: Some(ExecAction {
                command: Some(vec![
                    "weft".into(),
                    "wait-proxy".into(),
                    "--timeout".into(),
                    "600s".into(),
                ]),
            }),
            ..LifecycleHandler::default()
        }),
        ..Lifecycle::default()
    });
    Container {
        name: PROXY_NAME.into(),
        image: Some(settings.image.clone()),
        image_pull_policy: Some(settings.pull_policy.clone()),
        command: Some(vec!["weft-proxy".into()]),
        args: Some(args),
        env: Some(env),
        ports: Some(vec![ContainerPort {
            container_port: 15090,
            name: Some("http-envoy-prom".into()),
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        }]),
        readiness_probe: Some(ready),
        startup_probe: native.then_some(startup),
        lifecycle: hold,
        restart_policy: native.then(|| "Always".to_string()),
        resources: Some(resources(options)),
        security_context: Some(SecurityContext {
            run_as_user: Some(i64::from(PROXY_UID)),
            run_as_group: Some(i64::from(PROXY_UID)),
            run_as_non_root: Some(true),
            allow_privilege_escalation: Some(false),
            privileged: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Capabilities::default()
            }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(vec![
            VolumeMount {
                name: TOKEN_VOLUME.into(),
                mount_path: TOKEN_DIR.into(),
                read_only: Some(true),
                ..VolumeMount::default()
            },
            VolumeMount {
                name: ROOT_VOLUME.into(),
                mount_path: ROOT_DIR.into(),
                read_only: Some(true),
                ..VolumeMount::default()
            },
        ]),
        ..Container::default()
    }
}

/// The projected token and the trust root, as volumes.
pub fn volumes(settings: &Settings) -> Vec<Volume> {
    vec![
        Volume {
            name: TOKEN_VOLUME.into(),
            projected: Some(ProjectedVolumeSource {
                sources: Some(vec![VolumeProjection {
                    service_account_token: Some(ServiceAccountTokenProjection {
                        audience: Some(TOKEN_AUDIENCE.into()),
                        expiration_seconds: Some(TOKEN_SECONDS),
                        path: "istio-token".into(),
                    }),
                    ..VolumeProjection::default()
                }]),
                ..ProjectedVolumeSource::default()
            }),
            ..Volume::default()
        },
        Volume {
            name: ROOT_VOLUME.into(),
            config_map: Some(ConfigMapVolumeSource {
                name: settings.root_config_map.clone(),
                items: Some(vec![KeyToPath {
                    key: "root-cert.pem".into(),
                    path: "root-cert.pem".into(),
                    ..KeyToPath::default()
                }]),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        },
    ]
}

fn resources(options: &Options) -> ResourceRequirements {
    let pair = |cpu: &str, memory: &str| {
        Some(BTreeMap::from([
            ("cpu".to_string(), Quantity(cpu.to_string())),
            ("memory".to_string(), Quantity(memory.to_string())),
        ]))
    };
    let r = &options.resources;
    ResourceRequirements {
        requests: pair(&r.cpu, &r.memory),
        limits: pair(&r.cpu_limit, &r.memory_limit),
        ..ResourceRequirements::default()
    }
}

/// An environment variable from the downward API (`fieldRef`).
pub(crate) fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

/// The app's ports as `--port PORT[/PROTOCOL]`, the protocol from the port
/// name's prefix as Istio reads it (`http-web` → http); others unspecified.
pub fn app_ports(spec: &PodSpec) -> Vec<String> {
    let mut ports = Vec::new();
    for container in &spec.containers {
        for port in container.ports.iter().flatten() {
            if port.protocol.as_deref().is_some_and(|p| p != "TCP") {
                continue;
            }
            let prefix = port
                .name
                .as_deref()
                .map(|name| name.split('-').next().unwrap_or(name).to_ascii_lowercase());
            let text = match prefix.as_deref() {
                Some(p @ ("http" | "http2" | "grpc" | "tcp" | "tls")) => {
                    format!("{}/{p}", port.container_port)
                }
                Some("https") => format!("{}/tls", port.container_port),
                _ => port.container_port.to_string(),
            };
            if !ports.contains(&text) {
                ports.push(text);
            }
        }
    }
    ports
}
