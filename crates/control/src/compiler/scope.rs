//! Sidecar resources: which one applies to a proxy, what it lets the proxy
//! see (`egress[].hosts`) and its outbound traffic policy.

use std::collections::BTreeMap;

use weft_api::networking::Sidecar;
use weft_api::{Object, Resource};
use weft_proto::proxy::v1 as pb;

use super::hosts::wildcard_matches;
use weft_api::networking::OutboundMode;

use crate::registry::{ROOT_NAMESPACE, labels_match, namespace_or_default};

/// The compiled form of one Sidecar.
#[derive(Debug)]
pub(super) struct SidecarScope {
    /// `None`: no egress listed, every exported service is visible.
    egress: Option<Vec<EgressHost>>,
    pub(super) outbound_policy: Option<pb::OutboundTrafficPolicy>,
}

/// One `namespace/host` of `egress[].hosts`.
#[derive(Debug)]
struct EgressHost {
    namespace: EgressNamespace,
    /// `*`, `*.suffix` or a host.
    host: String,
}

#[derive(Debug)]
enum EgressNamespace {
    Any,
    /// `.`: the proxy's own namespace.
    Own,
    /// `~`: no namespace (nothing from the registry).
    None,
    Named(String),
}

impl SidecarScope {
    fn new(sidecar: &Sidecar) -> Self {
        let hosts: Vec<EgressHost> = sidecar
            .egress
            .iter()
            .flat_map(|listener| listener.hosts.iter())
            .map(|entry| {
                // Validation requires `ns/host`; a bare host means any namespace.
                let (namespace, host) = entry.split_once('/').unwrap_or(("*", entry));
                EgressHost {
                    namespace: match namespace {
                        "*" => EgressNamespace::Any,
                        "." => EgressNamespace::Own,
                        "~" => EgressNamespace::None,
                        other => EgressNamespace::Named(other.to_string()),
                    },
                    host: host.to_string(),
                }
            })
            .collect();
        let outbound_policy = sidecar.outbound_traffic_policy.as_ref().map(|policy| {
            // Istio's enum default (an unset mode) is REGISTRY_ONLY.
            match policy.mode {
                Some(OutboundMode::AllowAny) => pb::OutboundTrafficPolicy::AllowAny,
                Some(OutboundMode::RegistryOnly) | None => pb::OutboundTrafficPolicy::RegistryOnly,
            }
        });
        Self {
            egress: (!sidecar.egress.is_empty()).then_some(hosts),
            outbound_policy,
        }
    }

    /// Whether a proxy in `node_namespace` may see the service `name` of
    /// `namespace`.
    pub(super) fn allows(&self, node_namespace: &str, namespace: &str, name: &str) -> bool {
        let Some(egress) = &self.egress else {
            return true;
        };
        egress.iter().any(|e| {
            let namespace_ok = match &e.namespace {
                EgressNamespace::Any => true,
                EgressNamespace::Own => namespace == node_namespace,
                EgressNamespace::None => false,
                EgressNamespace::Named(n) => n == namespace,
            };
            namespace_ok && wildcard_matches(&e.host, name)
        })
    }
}

#[derive(Debug, Default)]
struct NamespaceSidecars {
    /// With a `workloadSelector`, in name order.
    selecting: Vec<(BTreeMap<String, String>, SidecarScope)>,
    default: Option<SidecarScope>,
}

/// Every Sidecar, by namespace.
#[derive(Debug, Default)]
pub(super) struct Sidecars {
    by_namespace: BTreeMap<String, NamespaceSidecars>,
}

impl Sidecars {
    pub(super) fn build(resources: &[Resource], warnings: &mut Vec<String>) -> Self {
        let mut objects: Vec<&Object<Sidecar>> = resources
            .iter()
            .filter_map(|r| match r {
                Resource::Sidecar(object) => Some(object),
                _ => None,
            })
            .collect();
        objects.sort_by(|a, b| {
            (&a.metadata.namespace, &a.metadata.name)
                .cmp(&(&b.metadata.namespace, &b.metadata.name))
        });
        let mut by_namespace: BTreeMap<String, NamespaceSidecars> = BTreeMap::new();
        for object in objects {
            let namespace = namespace_or_default(&object.metadata.namespace);
            let entry = by_namespace.entry(namespace.to_string()).or_default();
            let scope = SidecarScope::new(&object.spec);
            match &object.spec.workload_selector {
                Some(selector) if !selector.labels.is_empty() => {
                    entry.selecting.push((selector.labels.clone(), scope));
                }
                _ if entry.default.is_some() => warnings.push(format!(
                    "Sidecar {namespace}/{}: namespace {namespace} already has a Sidecar without workloadSelector; ignored",
                    object.metadata.name
                )),
                _ => entry.default = Some(scope),
            }
        }
        Self { by_namespace }
    }

    /// The Sidecar for a proxy: a selecting one in its namespace, else the
    /// namespace's selector-less one, else the root namespace's.
    pub(super) fn for_node(
        &self,
        namespace: &str,
        labels: &BTreeMap<String, String>,
    ) -> Option<&SidecarScope> {
        let own = self.by_namespace.get(namespace);
        own.and_then(|n| {
            n.selecting
                .iter()
                .find(|(selector, _)| labels_match(selector, labels))
                .map(|(_, scope)| scope)
        })
        .or_else(|| own.and_then(|n| n.default.as_ref()))
        .or_else(|| {
            self.by_namespace
                .get(ROOT_NAMESPACE)
                .and_then(|n| n.default.as_ref())
        })
    }
}
