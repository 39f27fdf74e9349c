//! weftd in the cluster: its ServiceAccount, least-privilege RBAC, the
//! Deployment and the Service (15012 discovery and CA over TLS, 15017
//! webhooks, 15014 API).
//!
//! RBAC grants what weftd does and nothing more: it reads (get/list/watch)
//! the objects it discovers; writes only the root-cert config maps (every
//! namespace), the status of Istio resources, its leader Lease (own
//! namespace) and the caBundle of its two webhook configurations (by
//! name); creates TokenReviews to check proxies' tokens. It reads Secrets
//! (gateway `credentialName`) and creates one in its own namespace: its
//! admin token ([`crate::api_token`]), never updating or deleting any.
//!
//! The Role [`API_ROLE`] (bound to nobody) is what a person needs to run
//! `weft proxy-status|describe|proxy-config --kubeconfig`: read that Secret
//! and use the `services/proxy` subresource of weftd's Service. Reading the
//! token is being weftd's administrator, so it is a separate grant.

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
    SecretVolumeSource, SecurityContext, Service, ServiceAccount, ServicePort, ServiceSpec,
    TCPSocketAction, Volume, VolumeMount,
};
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;

use super::{
    API_PORT, API_PORT_NAME, InstallOptions, NAMESPACE, WEBHOOK_PORT, WEFTD, XDS_PORT,
    labelled_meta, meta, to_value,
};
use crate::inject::template::field_env;
use crate::webhook::{INJECTOR_NAME, VALIDATOR_NAME};

fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> PolicyRule {
    let strings = |items: &[&str]| Some(items.iter().map(|s| s.to_string()).collect());
    PolicyRule {
        api_groups: strings(groups),
        resources: strings(resources),
        verbs: verbs.iter().map(|s| s.to_string()).collect(),
        ..PolicyRule::default()
    }
}

const READ: &[&str] = &["get", "list", "watch"];
const ISTIO_GROUPS: &[&str] = &[
    "networking.istio.io",
    "security.istio.io",
    "telemetry.istio.io",
    "weft.io",
];

/// The cluster-wide rules.
pub fn cluster_rules() -> Vec<PolicyRule> {
    vec![
        rule(
            &[""],
            &["services", "pods", "namespaces", "nodes", "secrets"],
            READ,
        ),
        rule(&["discovery.k8s.io"], &["endpointslices"], READ),
        rule(ISTIO_GROUPS, &["*"], READ),
        rule(ISTIO_GROUPS, &["*/status"], &["get", "update", "patch"]),
        // The root-cert config map weftd keeps in every namespace.
        rule(
            &[""],
            &["configmaps"],
            &["get", "list", "watch", "create", "update", "patch"],
        ),
        rule(&["authentication.k8s.io"], &["tokenreviews"], &["create"]),
        rule(
            &["apiextensions.k8s.io"],
            &["customresourcedefinitions"],
            READ,
        ),
        PolicyRule {
            resource_names: Some(vec![VALIDATOR_NAME.into()]),
            ..rule(
                &["admissionregistration.k8s.io"],
                &["validatingwebhookconfigurations"],
                &["get", "update", "patch"],
            )
        },
        PolicyRule {
            resource_names: Some(vec![INJECTOR_NAME.into()]),
            ..rule(
                &["admissionregistration.k8s.io"],
                &["mutatingwebhookconfigurations"],
                &["get", "update", "patch"],
            )
        },
    ]
}

/// The rules in weftd's own namespace: the leader Lease, and creating
/// the admin token's Secret (create cannot be limited by name; weftd
/// never updates or deletes a Secret).
pub fn namespace_rules() -> Vec<PolicyRule> {
    vec![
        rule(
            &["coordination.k8s.io"],
            &["leases"],
            &["get", "list", "watch", "create", "update", "patch"],
        ),
        rule(&[""], &["secrets"], &["create"]),
    ]
}

/// The Role a user is bound to (`kubectl create rolebinding ... --role
/// weftd-api`) to use weftd's API through the API server.
pub const API_ROLE: &str = "weftd-api";

/// [`API_ROLE`]'s rules: weftd's admin token and the service proxy to
/// weftd (GET for reads, POST for `analyze --use-weftd`), nothing else.
pub fn api_rules() -> Vec<PolicyRule> {
    vec![
        PolicyRule {
            resource_names: Some(vec![crate::api_token::SECRET.into()]),
            ..rule(&[""], &["secrets"], &["get"])
        },
        // RBAC matches the name as the request spells it, scheme and port
        // included: the one `weft` uses.
        PolicyRule {
            resource_names: Some(vec![super::api_proxy_name()]),
            ..rule(&[""], &["services/proxy"], &["get", "create"])
        },
    ]
}

pub fn objects(options: &InstallOptions) -> Result<Vec<Value>, String> {
    let subject = Subject {
        kind: "ServiceAccount".into(),
        name: WEFTD.into(),
        namespace: Some(NAMESPACE.into()),
        ..Subject::default()
    };
    Ok(vec![
        to_value(&ServiceAccount {
            metadata: meta(WEFTD, Some(NAMESPACE)),
            ..ServiceAccount::default()
        })?,
        to_value(&ClusterRole {
            metadata: meta(WEFTD, None),
            rules: Some(cluster_rules()),
            ..ClusterRole::default()
        })?,
        to_value(&ClusterRoleBinding {
            metadata: meta(WEFTD, None),
            role_ref: RoleRef {
                api_group: Some("rbac.authorization.k8s.io".into()),
                kind: "ClusterRole".into(),
                name: WEFTD.into(),
            },
            subjects: Some(vec![subject.clone()]),
        })?,
        to_value(&Role {
            metadata: meta(WEFTD, Some(NAMESPACE)),
            rules: Some(namespace_rules()),
        })?,
        to_value(&RoleBinding {
            metadata: meta(WEFTD, Some(NAMESPACE)),
            role_ref: RoleRef {
                api_group: Some("rbac.authorization.k8s.io".into()),
                kind: "Role".into(),
                name: WEFTD.into(),
            },
            subjects: Some(vec![subject]),
        })?,
        to_value(&Role {
            metadata: meta(API_ROLE, Some(NAMESPACE)),
            rules: Some(api_rules()),
        })?,
        to_value(&deployment(options))?,
        to_value(&service())?,
    ])
}

fn app_labels() -> std::collections::BTreeMap<String, String> {
    [("app", WEFTD), ("istio", "pilot")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn deployment(options: &InstallOptions) -> Deployment {
    let mut args: Vec<String> = [
        // Kubernetes mode from the in-cluster config (its service account).
        "--kubernetes",
        "--state-dir",
        "/var/lib/weft",
        "--xds",
        "0.0.0.0:15012",
        "--api",
        "0.0.0.0:15014",
        "--webhook",
        "0.0.0.0:15017",
        "--xds-san",
        "weftd.weft-system.svc.cluster.local",
        "--trust-domain",
        &options.trust_domain,
        "--proxy-image",
        &options.image,
    ]
    .map(String::from)
    .to_vec();
    if let Some(version) = &options.kube_version {
        args.extend(["--kube-server-version".to_string(), version.clone()]);
    }
    // A plug-in CA from the `cacerts` Secret (Istio's layout): the same
    // root across restarts and replicas. Without it weftd self-signs into
    // its state directory (an emptyDir: a new root when the pod is replaced).
    if options.plugin_ca {
        args.extend(["--cacerts".to_string(), "/etc/cacerts".to_string()]);
    }
    let port = |name: &str, number: i32| ContainerPort {
        name: Some(name.into()),
        container_port: number,
        protocol: Some("TCP".into()),
        ..ContainerPort::default()
    };
    let mut mounts = vec![VolumeMount {
        name: "state".into(),
        mount_path: "/var/lib/weft".into(),
        ..VolumeMount::default()
    }];
    let mut volumes = vec![Volume {
        name: "state".into(),
        empty_dir: Some(Default::default()),
        ..Volume::default()
    }];
    if options.plugin_ca {
        mounts.push(VolumeMount {
            name: "cacerts".into(),
            mount_path: "/etc/cacerts".into(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
        volumes.push(Volume {
            name: "cacerts".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some("cacerts".into()),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        });
    }
    let metadata = labelled_meta(WEFTD, NAMESPACE, app_labels());
    Deployment {
        metadata,
        spec: Some(DeploymentSpec {
            replicas: Some(options.replicas),
            selector: LabelSelector {
                match_labels: Some(app_labels()),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                    labels: Some(app_labels()),
                    annotations: Some(
                        [("sidecar.istio.io/inject".to_string(), "false".to_string())].into(),
                    ),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(WEFTD.into()),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(1337),
                        run_as_group: Some(1337),
                        fs_group: Some(1337),
                        ..PodSecurityContext::default()
                    }),
                    containers: vec![Container {
                        name: WEFTD.into(),
                        image: Some(options.image.clone()),
                        command: Some(vec!["weftd".into()]),
                        args: Some(args),
                        // The leader Lease's namespace and holder name.
                        env: Some(vec![
                            field_env("POD_NAMESPACE", "metadata.namespace"),
                            field_env("POD_NAME", "metadata.name"),
                        ]),
                        ports: Some(vec![
                            port("grpc-xds", XDS_PORT),
                            port("https-webhook", WEBHOOK_PORT),
                            port(API_PORT_NAME, API_PORT),
                        ]),
                        readiness_probe: Some(Probe {
                            tcp_socket: Some(TCPSocketAction {
                                port: IntOrString::Int(XDS_PORT),
                                ..TCPSocketAction::default()
                            }),
                            period_seconds: Some(3),
                            ..Probe::default()
                        }),
                        resources: Some(k8s_openapi::api::core::v1::ResourceRequirements {
                            requests: Some(
                                [
                                    ("cpu".to_string(), quantity("500m")),
                                    ("memory".to_string(), quantity("512Mi")),
                                ]
                                .into(),
                            ),
                            ..Default::default()
                        }),
                        security_context: Some(SecurityContext {
                            allow_privilege_escalation: Some(false),
                            read_only_root_filesystem: Some(true),
                            capabilities: Some(Capabilities {
                                drop: Some(vec!["ALL".into()]),
                                ..Capabilities::default()
                            }),
                            ..SecurityContext::default()
                        }),
                        volume_mounts: Some(mounts),
                        ..Container::default()
                    }],
                    volumes: Some(volumes),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}

fn quantity(text: &str) -> k8s_openapi::apimachinery::pkg::api::resource::Quantity {
    k8s_openapi::apimachinery::pkg::api::resource::Quantity(text.into())
}

fn service() -> Service {
    let port = |name: &str, number: i32| ServicePort {
        name: Some(name.into()),
        port: number,
        target_port: Some(IntOrString::Int(number)),
        protocol: Some("TCP".into()),
        ..ServicePort::default()
    };
    Service {
        metadata: meta(WEFTD, Some(NAMESPACE)),
        spec: Some(ServiceSpec {
            selector: Some(app_labels()),
            ports: Some(vec![
                port("grpc-xds", XDS_PORT),
                port("https-webhook", WEBHOOK_PORT),
                port(API_PORT_NAME, API_PORT),
            ]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}
