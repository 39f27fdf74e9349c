//! The ingress gateway: weft-proxy with `--router`, labelled as Istio's
//! (`istio: ingressgateway`, `app: istio-ingressgateway`) so Istio's
//! Gateway resources (Bookinfo's included) select it unchanged, behind a
//! LoadBalancer Service.
//!
//! Unlike Istio, which maps Service 80→8080 and 443→8443, weft-proxy binds
//! the port a Gateway names; the pod allows unprivileged binds below 1024
//! (`net.ipv4.ip_unprivileged_port_start=0`, a safe sysctl) so it can bind
//! 80 and 443 as UID 1337 without any capability.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, PodSecurityContext, PodSpec, PodTemplateSpec, SecurityContext,
    Service, ServiceAccount, ServicePort, ServiceSpec, Sysctl,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;

use super::{GATEWAY, InstallOptions, NAMESPACE, labelled_meta, meta, to_value};
use crate::inject::Settings;
use crate::inject::annotations::Options;
use crate::inject::template::{self, Role, Workload};

fn labels() -> BTreeMap<String, String> {
    [("app", "istio-ingressgateway"), ("istio", "ingressgateway")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub fn objects(options: &InstallOptions) -> Result<Vec<Value>, String> {
    Ok(vec![
        to_value(&ServiceAccount {
            metadata: meta(GATEWAY, Some(NAMESPACE)),
            ..ServiceAccount::default()
        })?,
        to_value(&deployment(options))?,
        to_value(&service())?,
    ])
}

fn deployment(options: &InstallOptions) -> Deployment {
    let settings = Settings {
        image: options.image.clone(),
        ..Settings::default()
    };
    let labels = labels();
    let workload = Workload {
        name: GATEWAY,
        labels: &labels,
    };
    // The sidecar's container (identity, root, probes, resources) in its
    // gateway role; Istio names the gateway's container istio-proxy.
    let mut proxy: Container = template::proxy_container(
        &settings,
        &Options::default(),
        &workload,
        &[],
        Role::Gateway,
    );
    proxy.name = "istio-proxy".into();
    proxy.security_context = Some(SecurityContext {
        run_as_user: Some(1337),
        run_as_group: Some(1337),
        run_as_non_root: Some(true),
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Capabilities::default()
        }),
        ..SecurityContext::default()
    });
    let metadata = labelled_meta(GATEWAY, NAMESPACE, labels.clone());
    Deployment {
        metadata,
        spec: Some(DeploymentSpec {
            replicas: Some(1),
            selector: LabelSelector {
                match_labels: Some(labels.clone()),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    annotations: Some(
                        [("sidecar.istio.io/inject".to_string(), "false".to_string())].into(),
                    ),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(GATEWAY.into()),
                    security_context: Some(PodSecurityContext {
                        sysctls: Some(vec![Sysctl {
                            name: "net.ipv4.ip_unprivileged_port_start".into(),
                            value: "0".into(),
                        }]),
                        ..PodSecurityContext::default()
                    }),
                    containers: vec![proxy],
                    volumes: Some(template::volumes(&settings)),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}

fn service() -> Service {
    let port = |name: &str, number: i32| ServicePort {
        name: Some(name.into()),
        port: number,
        target_port: Some(IntOrString::Int(number)),
        protocol: Some("TCP".into()),
        ..ServicePort::default()
    };
    let metadata = labelled_meta(GATEWAY, NAMESPACE, labels());
    Service {
        metadata,
        spec: Some(ServiceSpec {
            type_: Some("LoadBalancer".into()),
            selector: Some(labels()),
            ports: Some(vec![
                port("status-port", 15021),
                port("http2", 80),
                port("https", 443),
            ]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}
