//! `weft analyze`: likely mistakes in a set of Istio resources, reported
//! with Istio's analyzer message codes and levels (`istioctl analyze`).
//!
//! The analyzers read objects as parsed YAML ([`Object`]), not as
//! validated resources: a half-written object must still be analyzable,
//! and Kubernetes objects Weft does not store (Namespace, Pod, Service)
//! still tell an analyzer what exists. Offline the CLI feeds files; weftd
//! serves the same analysis over its store (`POST /v1/analyze`). They live
//! in weft-api so that `weft` needs no part of weftd to run them.
//!
//! Contract: [`analyze`] is deterministic (messages sorted by resource,
//! then code), never panics on any input, and each analyzer only reports
//! on objects it was given. Which analyzers exist: [`ANALYZERS`].

mod authz;
mod deprecation;
mod destination_host;
mod destination_rule;
pub mod gateway;
pub mod hosts;
mod jwt_route;
mod matches;
mod not_implemented;
mod schema;
mod service_entry;
mod sidecar;
pub mod virtual_service;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Serialize;
use serde_json::Value;

/// Istio's message levels, most severe first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Level {
    Error,
    Warning,
    Info,
}

impl Level {
    pub fn parse(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "error" => Some(Self::Error),
            "warning" | "warn" => Some(Self::Warning),
            "info" => Some(Self::Info),
            _ => None,
        }
    }
}

/// One message type: Istio's code, name and level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Code {
    pub code: &'static str,
    pub name: &'static str,
    pub level: Level,
}

pub const DEPRECATED: Code = Code {
    code: "IST0002",
    name: "Deprecated",
    level: Level::Warning,
};
/// Weft's own code (Istio implements every field of its API): a field
/// accepted but not honoured.
pub const NOT_IMPLEMENTED: Code = Code {
    code: "WEFT0001",
    name: "FieldNotImplemented",
    level: Level::Warning,
};
/// Weft's own code: a Gateway server Weft's gateways cannot serve as
/// written (left out of the gateway's config).
pub const GATEWAY_SERVER_NOT_SERVED: Code = Code {
    code: "WEFT0002",
    name: "GatewayServerNotServed",
    level: Level::Warning,
};
/// Weft's own code: CUSTOM AuthorizationPolicies naming more than one
/// provider for one workload (Istio takes one; Weft asks each policy's).
pub const MULTIPLE_CUSTOM_PROVIDERS: Code = Code {
    code: "WEFT0003",
    name: "MultipleCustomProviders",
    level: Level::Warning,
};
pub const REFERENCED_RESOURCE_NOT_FOUND: Code = Code {
    code: "IST0101",
    name: "ReferencedResourceNotFound",
    level: Level::Error,
};
pub const SCHEMA_VALIDATION_ERROR: Code = Code {
    code: "IST0106",
    name: "SchemaValidationError",
    level: Level::Error,
};
pub const CONFLICTING_MESH_GATEWAY_HOSTS: Code = Code {
    code: "IST0109",
    name: "ConflictingMeshGatewayVirtualServiceHosts",
    level: Level::Error,
};
pub const CONFLICTING_SIDECAR_SELECTORS: Code = Code {
    code: "IST0110",
    name: "ConflictingSidecarWorkloadSelectors",
    level: Level::Error,
};
pub const MULTIPLE_SIDECARS_WITHOUT_SELECTOR: Code = Code {
    code: "IST0111",
    name: "MultipleSidecarsWithoutWorkloadSelectors",
    level: Level::Error,
};
pub const PORT_SELECTOR_REQUIRED: Code = Code {
    code: "IST0112",
    name: "VirtualServiceDestinationPortSelectorRequired",
    level: Level::Error,
};
pub const NO_MATCHING_WORKLOADS: Code = Code {
    code: "IST0127",
    name: "NoMatchingWorkloadsFound",
    level: Level::Warning,
};
pub const NO_SERVER_CERT_VERIFICATION_DESTINATION: Code = Code {
    code: "IST0128",
    name: "NoServerCertificateVerificationDestinationLevel",
    level: Level::Warning,
};
pub const NO_SERVER_CERT_VERIFICATION_PORT: Code = Code {
    code: "IST0129",
    name: "NoServerCertificateVerificationPortLevel",
    level: Level::Warning,
};
pub const VS_HOST_NOT_FOUND_IN_GATEWAY: Code = Code {
    code: "IST0132",
    name: "VirtualServiceHostNotFoundInGateway",
    level: Level::Warning,
};
pub const UNREACHABLE_RULE: Code = Code {
    code: "IST0130",
    name: "VirtualServiceUnreachableRule",
    level: Level::Warning,
};
pub const INEFFECTIVE_MATCH: Code = Code {
    code: "IST0131",
    name: "VirtualServiceIneffectiveMatch",
    level: Level::Info,
};
pub const SERVICE_ENTRY_ADDRESSES_REQUIRED: Code = Code {
    code: "IST0134",
    name: "ServiceEntryAddressesRequired",
    level: Level::Warning,
};
pub const INGRESS_ROUTE_RULES_NOT_AFFECTED: Code = Code {
    code: "IST0140",
    name: "IngressRouteRulesNotAffected",
    level: Level::Warning,
};
pub const CONFLICTING_GATEWAYS: Code = Code {
    code: "IST0145",
    name: "ConflictingGateways",
    level: Level::Error,
};
pub const JWT_CLAIM_ROUTE_WITHOUT_AUTHN: Code = Code {
    code: "IST0149",
    name: "JwtClaimBasedRoutingWithoutRequestAuthN",
    level: Level::Error,
};
pub const GATEWAY_PORT_NOT_ON_SERVICE: Code = Code {
    code: "IST0162",
    name: "GatewayPortNotDefinedOnService",
    level: Level::Warning,
};
pub const REFERENCED_INTERNAL_GATEWAY: Code = Code {
    code: "IST0165",
    name: "ReferencedInternalGateway",
    level: Level::Warning,
};

pub const INEFFECTIVE_POLICY: Code = Code {
    code: "IST0167",
    name: "IneffectivePolicy",
    level: Level::Warning,
};

pub const SUBSET_SELECTS_NOTHING: Code = Code {
    code: "IST0173",
    name: "DestinationRuleSubsetNotSelectPods",
    level: Level::Error,
};
pub const UNKNOWN_DESTINATION_RULE_HOST: Code = Code {
    code: "IST0174",
    name: "UnknownDestinationRuleHost",
    level: Level::Warning,
};

pub const CONFLICTING_SERVICE_ENTRY_PROTOCOL: Code = Code {
    code: "IST0177",
    name: "ConflictingServiceEntryProtocol",
    level: Level::Warning,
};

/// Istio's root namespace: mesh-wide policies live there.
pub const ROOT_NAMESPACE: &str = "istio-system";

/// Whether every label of `selector` is on `labels` (an empty selector
/// selects everything).
pub fn labels_match(
    selector: &BTreeMap<String, String>,
    labels: &BTreeMap<String, String>,
) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// One finding: `Error [IST0101] (VirtualService default/reviews) text`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Message {
    pub code: &'static str,
    pub name: &'static str,
    pub level: Level,
    /// `Kind namespace/name`, or `Kind name` for an object without a
    /// namespace (as Istio names resources in its messages).
    pub resource: String,
    /// The object's namespace (`""` when unset), for `--namespace` filters.
    pub namespace: String,
    pub text: String,
    /// Where the object came from (`file`, or `weftd`), when known.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub origin: String,
}

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = match self.level {
            Level::Error => "Error",
            Level::Warning => "Warning",
            Level::Info => "Info",
        };
        write!(
            f,
            "{level} [{}] ({}) {}",
            self.code, self.resource, self.text
        )
    }
}

/// A parsed object, any kind.
#[derive(Debug, Clone)]
pub struct Object {
    pub kind: String,
    /// `networking.istio.io`, `""` for core Kubernetes kinds.
    pub group: String,
    /// As written; the caller decides what an unset namespace means.
    pub namespace: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub spec: Value,
    /// The whole document, for the schema check.
    pub raw: Value,
    /// `file` (and document number) it was read from.
    pub origin: String,
    pub document: usize,
}

impl Object {
    /// The object in `value`; `Kubernetes List`s are flattened by the
    /// caller ([`Input::add_document`]). `None` without a kind.
    pub fn from_value(value: Value, origin: &str, document: usize) -> Option<Self> {
        let text = |path: &str| {
            value
                .pointer(path)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        let kind = text("/kind");
        if kind.is_empty() {
            return None;
        }
        let api_version = text("/apiVersion");
        let group = api_version
            .rsplit_once('/')
            .map_or("", |(group, _)| group)
            .to_string();
        Some(Self {
            kind,
            group,
            namespace: text("/metadata/namespace"),
            name: text("/metadata/name"),
            labels: string_map(value.pointer("/metadata/labels")),
            spec: value.get("spec").cloned().unwrap_or(Value::Null),
            raw: value,
            origin: origin.to_string(),
            document,
        })
    }

    fn is_istio(&self, kind: &str) -> bool {
        self.kind == kind && self.group.ends_with("istio.io")
    }

    /// `Kind namespace/name`, `Kind name` without a namespace.
    pub fn resource(&self) -> String {
        if self.namespace.is_empty() {
            format!("{} {}", self.kind, self.name)
        } else {
            format!("{} {}/{}", self.kind, self.namespace, self.name)
        }
    }

    fn message(&self, code: Code, text: String) -> Message {
        Message {
            code: code.code,
            name: code.name,
            level: code.level,
            resource: self.resource(),
            namespace: self.namespace.clone(),
            text,
            origin: self.origin.clone(),
        }
    }
}

/// Everything one analysis looks at.
#[derive(Debug, Default)]
pub struct Input {
    pub objects: Vec<Object>,
}

impl Input {
    /// What weftd stores, as analyzer input (namespaces filled in).
    pub fn from_resources(resources: &[crate::Resource], origin: &str) -> Self {
        let mut input = Self::default();
        for resource in resources {
            input.add_document(resource.to_value(), origin, 0, "default");
        }
        input
    }

    /// Adds one parsed YAML/JSON document (an object or a `List`),
    /// giving objects without a namespace `default_namespace` (`""` keeps
    /// them unset).
    pub fn add_document(
        &mut self,
        value: Value,
        origin: &str,
        document: usize,
        default_namespace: &str,
    ) {
        if value.get("kind").and_then(Value::as_str) == Some("List")
            && let Some(Value::Array(items)) = value.get("items")
        {
            for item in items.clone() {
                self.add_document(item, origin, document, default_namespace);
            }
            return;
        }
        if let Some(expanded) = mesh_file_objects(&value) {
            for object in expanded {
                self.add_document(object, origin, document, default_namespace);
            }
        }
        if let Some(mut object) = Object::from_value(value, origin, document) {
            if object.namespace.is_empty() && object.kind != "Namespace" {
                object.namespace = default_namespace.to_string();
            }
            self.objects.push(object);
        }
    }

    /// Istio objects of `kind`.
    pub fn istio<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Object> + 'a {
        self.objects.iter().filter(move |o| o.is_istio(kind))
    }

    /// Kubernetes core objects of `kind` (Pod, Service, Namespace).
    fn core<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Object> + 'a {
        self.objects
            .iter()
            .filter(move |o| o.kind == kind && o.group.is_empty())
    }

    /// Workloads as `(namespace, labels)`: Pods, WorkloadEntries, and the
    /// proxies connected to weftd (`weft.io` `ConnectedProxy` objects).
    pub fn workloads(&self) -> Vec<(String, BTreeMap<String, String>)> {
        self.workloads_named()
            .into_iter()
            .map(|(namespace, _, labels)| (namespace, labels))
            .collect()
    }

    /// As [`Input::workloads`], with each workload's name.
    fn workloads_named(&self) -> Vec<(String, String, BTreeMap<String, String>)> {
        let mut out: Vec<_> = self
            .core("Pod")
            .chain(self.objects.iter().filter(|o| o.kind == "ConnectedProxy"))
            .map(|o| (o.namespace.clone(), o.name.clone(), o.labels.clone()))
            .collect();
        out.extend(self.istio("WorkloadEntry").map(|o| {
            let labels = string_map(o.spec.get("labels"));
            (o.namespace.clone(), o.name.clone(), labels)
        }));
        out
    }

    /// Namespaces known to exist: declared, or holding an object.
    pub fn namespaces(&self) -> BTreeSet<String> {
        let mut known: BTreeSet<String> = self.core("Namespace").map(|o| o.name.clone()).collect();
        known.extend(self.objects.iter().map(|o| o.namespace.clone()));
        known.remove("");
        known
    }
}

/// One analyzer, named as in Istio (`istioctl analyze --analyzer NAME`).
pub struct Analyzer {
    pub name: &'static str,
    /// The codes it can report.
    pub codes: &'static [Code],
    run: fn(&Input, &mut Vec<Message>),
}

/// Every analyzer Weft implements.
pub const ANALYZERS: &[Analyzer] = &[
    Analyzer {
        name: "schema.ValidationAnalyzer",
        codes: &[SCHEMA_VALIDATION_ERROR],
        run: schema::analyze,
    },
    Analyzer {
        name: "authz.AuthorizationPoliciesAnalyzer",
        codes: &[NO_MATCHING_WORKLOADS, REFERENCED_RESOURCE_NOT_FOUND],
        run: authz::policies,
    },
    Analyzer {
        name: "weft.CustomProvidersAnalyzer",
        codes: &[MULTIPLE_CUSTOM_PROVIDERS],
        run: authz::custom_providers,
    },
    Analyzer {
        name: "gateway.ConflictingGatewayAnalyzer",
        codes: &[CONFLICTING_GATEWAYS],
        run: gateway::conflicting,
    },
    Analyzer {
        name: "weft.GatewayServerAnalyzer",
        codes: &[GATEWAY_SERVER_NOT_SERVED],
        run: gateway::server_kinds,
    },
    Analyzer {
        name: "gateway.IngressGatewayPortAnalyzer",
        codes: &[REFERENCED_RESOURCE_NOT_FOUND, GATEWAY_PORT_NOT_ON_SERVICE],
        run: gateway::workload_ports,
    },
    Analyzer {
        name: "destinationrule.CaCertificateAnalyzer",
        codes: &[
            NO_SERVER_CERT_VERIFICATION_DESTINATION,
            NO_SERVER_CERT_VERIFICATION_PORT,
        ],
        run: destination_rule::ca_certificates,
    },
    Analyzer {
        name: "deprecation.FieldAnalyzer",
        codes: &[DEPRECATED],
        run: deprecation::fields,
    },
    Analyzer {
        name: "weft.NotImplementedAnalyzer",
        codes: &[NOT_IMPLEMENTED, DEPRECATED],
        run: not_implemented::fields,
    },
    Analyzer {
        name: "destinationrule.PodNotSelectedAnalyzer",
        codes: &[SUBSET_SELECTS_NOTHING, UNKNOWN_DESTINATION_RULE_HOST],
        run: destination_rule::selected_endpoints,
    },
    Analyzer {
        name: "serviceentry.ProtocolAddressesAnalyzer",
        codes: &[SERVICE_ENTRY_ADDRESSES_REQUIRED],
        run: service_entry::addresses,
    },
    Analyzer {
        name: "serviceentry.ConflictingServiceEntryProtocolAnalyzer",
        codes: &[CONFLICTING_SERVICE_ENTRY_PROTOCOL],
        run: service_entry::conflicting_protocols,
    },
    Analyzer {
        name: "sidecar.SelectorAnalyzer",
        codes: &[
            REFERENCED_RESOURCE_NOT_FOUND,
            CONFLICTING_SIDECAR_SELECTORS,
            MULTIPLE_SIDECARS_WITHOUT_SELECTOR,
            INEFFECTIVE_POLICY,
        ],
        run: sidecar::selectors,
    },
    Analyzer {
        name: "virtualservice.DestinationRuleAnalyzer",
        codes: &[REFERENCED_RESOURCE_NOT_FOUND],
        run: virtual_service::subsets,
    },
    Analyzer {
        name: "virtualservice.DestinationHostAnalyzer",
        codes: &[
            REFERENCED_RESOURCE_NOT_FOUND,
            PORT_SELECTOR_REQUIRED,
            INGRESS_ROUTE_RULES_NOT_AFFECTED,
        ],
        run: destination_host::analyze,
    },
    Analyzer {
        name: "virtualservice.JWTClaimRouteAnalyzer",
        codes: &[JWT_CLAIM_ROUTE_WITHOUT_AUTHN],
        run: jwt_route::analyze,
    },
    Analyzer {
        name: "virtualservice.MatchesAnalyzer",
        codes: &[UNREACHABLE_RULE, INEFFECTIVE_MATCH],
        run: matches::analyze,
    },
    Analyzer {
        name: "virtualservice.GatewayAnalyzer",
        codes: &[
            REFERENCED_RESOURCE_NOT_FOUND,
            VS_HOST_NOT_FOUND_IN_GATEWAY,
            REFERENCED_INTERNAL_GATEWAY,
        ],
        run: virtual_service::gateways,
    },
    Analyzer {
        name: "virtualservice.ConflictingMeshGatewayHostsAnalyzer",
        codes: &[CONFLICTING_MESH_GATEWAY_HOSTS],
        run: virtual_service::conflicting_mesh_hosts,
    },
];

/// Runs the named analyzers (all when `only` is empty). An unknown name is
/// an error naming the ones that exist.
pub fn analyze(input: &Input, only: &[&str]) -> Result<Vec<Message>, String> {
    if let Some(unknown) = only
        .iter()
        .find(|name| !ANALYZERS.iter().any(|a| a.name == **name))
    {
        let names: Vec<&str> = ANALYZERS.iter().map(|a| a.name).collect();
        return Err(format!(
            "unknown analyzer {unknown:?}; Weft has {}",
            names.join(", ")
        ));
    }
    let mut messages = Vec::new();
    for analyzer in ANALYZERS
        .iter()
        .filter(|a| only.is_empty() || only.contains(&a.name))
    {
        (analyzer.run)(input, &mut messages);
    }
    messages.sort_by(|a, b| (&a.resource, a.code, &a.text).cmp(&(&b.resource, b.code, &b.text)));
    messages.dedup();
    Ok(messages)
}

/// A `weft up` mesh file (`weft.dev` `Mesh`) stands in for a cluster: its
/// services become Kubernetes Services and its workloads and gateways
/// Pods, so the analyzers see what `weft up` will run.
fn mesh_file_objects(value: &Value) -> Option<Vec<Value>> {
    let api_version = value.get("apiVersion").and_then(Value::as_str)?;
    if value.get("kind").and_then(Value::as_str) != Some("Mesh")
        || !api_version.starts_with("weft.dev/")
    {
        return None;
    }
    let spec = value.get("spec")?;
    let list = |key: &str| {
        spec.get(key)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let namespace = |item: &Value| item.get("namespace").cloned().unwrap_or(Value::Null);
    let mut out = Vec::new();
    for service in list("services") {
        let ports: Vec<Value> = service
            .get("ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|p| serde_json::json!({"name": p.get("name"), "port": p.get("port"), "targetPort": p.get("targetPort"), "protocol": p.get("protocol")}))
            .collect();
        out.push(serde_json::json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": service.get("name"), "namespace": namespace(&service)},
            "spec": {"ports": ports, "selector": service.get("selector")},
        }));
    }
    for pod in list("workloads").into_iter().chain(list("gateways")) {
        out.push(serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": pod.get("name"), "namespace": namespace(&pod), "labels": pod.get("labels")},
        }));
    }
    Some(out)
}

/// A `{key: value}` map of strings; anything else is empty.
pub fn string_map(value: Option<&Value>) -> BTreeMap<String, String> {
    value
        .and_then(Value::as_object)
        .map(|map| {
            map.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// The strings of a list; anything else is empty.
pub fn strings(value: Option<&Value>) -> Vec<String> {
    value
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests;
