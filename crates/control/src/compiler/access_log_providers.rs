//! Access-log providers: which MeshConfig providers each proxy writes its
//! lines to, and what each provider is (a file, or an OpenTelemetry log
//! collector), as `Telemetry.access_log_providers`.
//!
//! Selection follows Istio's merge of Telemetry `accessLogging`, per side
//! (CLIENT: outbound, SERVER: inbound):
//! - the providers in scope are those named by the most specific level
//!   (workload, namespace, root) whose enabling entries for the side name
//!   any, else MeshConfig `defaultProviders.accessLogging` (so a workload
//!   naming `otel` logs to `otel` alone, while a namespace disabling one
//!   of the root's providers keeps the others);
//! - entries are then applied from the root down: an entry's providers
//!   (none named: the previous entry's, at first the defaults) are turned
//!   on, or off with `disabled: true`, with the entry's `filter`;
//! - with no Telemetry `accessLogging` at all, the default providers log.
//!
//! A provider is resolved against MeshConfig by name: `envoyFileAccessLog`
//! (its `path` and `logFormat`), `envoyOtelAls` (its service port's cluster
//! is added to the proxy, as for tracing), and Istio's built-in `envoy`
//! (the proxy's own sink with MeshConfig `accessLogFormat`). The gRPC ALS
//! kinds (`envoyHttpAls`, `envoyTcpAls`), `stackdriver` and unknown names
//! are left out with a warning at apply time and in `weft analyze`.

use std::collections::{BTreeMap, BTreeSet};

use weft_api::Resource;
use weft_api::mesh::MeshConfig;
use weft_api::mesh::providers::LogFormat;
use weft_api::telemetry::Telemetry;
use weft_proto::proxy::v1::{self as pb};

use super::access_log_format::{MeshFormat, labels};
use super::ext_authz::{add_cluster, service_host};
use super::ports::cluster_name;
use crate::registry::namespace_or_default;

/// Istio's built-in access-log provider (the proxy's stdout log).
pub(super) const ENVOY: &str = "envoy";
/// Istio's `envoyOtelAls.logName` default.
const OTEL_LOG_NAME: &str = "otel_envoy_accesslog";

/// One `accessLogging[]` entry of one Telemetry resource.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct LogEntry {
    client: bool,
    server: bool,
    providers: Vec<String>,
    disabled: bool,
    /// CEL; `None`: every request.
    filter: Option<String>,
}

impl LogEntry {
    fn covers(&self, client: bool) -> bool {
        if client { self.client } else { self.server }
    }
}

/// The entries of one resource's `accessLogging`; empty: it says nothing.
pub(super) fn entries(spec: &Telemetry) -> Vec<LogEntry> {
    spec.access_logging
        .iter()
        .map(|entry| {
            let mode = entry
                .match_
                .as_ref()
                .and_then(|m| m.get("mode"))
                .and_then(|m| m.as_str());
            let (client, server) = match mode {
                Some("CLIENT") => (true, false),
                Some("SERVER") => (false, true),
                _ => (true, true),
            };
            LogEntry {
                client,
                server,
                providers: entry.providers.iter().map(|p| p.name.clone()).collect(),
                disabled: entry.disabled == Some(true),
                filter: entry
                    .filter
                    .as_ref()
                    .map(|f| f.expression.clone())
                    .filter(|e| !e.is_empty()),
            }
        })
        .collect()
}

/// The providers one side logs to, with their filters (Istio's merge, see
/// the module doc). `levels`: root first; `defaults`:
/// `defaultProviders.accessLogging`.
pub(super) fn merge(
    levels: &[&[LogEntry]],
    defaults: &[String],
    client: bool,
) -> BTreeMap<String, Option<String>> {
    let mut in_scope: BTreeSet<&str> = defaults.iter().map(String::as_str).collect();
    for level in levels {
        let named: BTreeSet<&str> = level
            .iter()
            .filter(|e| e.covers(client) && !e.disabled)
            .flat_map(|e| e.providers.iter().map(String::as_str))
            .collect();
        if !named.is_empty() {
            in_scope = named;
        }
    }
    let mut parent: Vec<&str> = defaults.iter().map(String::as_str).collect();
    let mut out = BTreeMap::new();
    for entry in levels.iter().flat_map(|level| level.iter()) {
        let names: Vec<&str> = if entry.providers.is_empty() {
            parent.clone()
        } else {
            entry.providers.iter().map(String::as_str).collect()
        };
        parent = names.clone();
        if !entry.covers(client) {
            continue;
        }
        for name in names.into_iter().filter(|n| in_scope.contains(n)) {
            if entry.disabled {
                out.remove(name);
            } else {
                out.insert(name.to_string(), entry.filter.clone());
            }
        }
    }
    out
}

/// A side's filter for the proxy: providers with different filters on one
/// side share one (a line is written when any provider's filter passes);
/// empty when one of them logs everything.
pub(super) fn side(providers: &BTreeMap<String, Option<String>>) -> pb::AccessLogSide {
    if providers.is_empty() {
        return pb::AccessLogSide {
            disabled: true,
            filter: String::new(),
        };
    }
    let filters: BTreeSet<&str> = providers
        .values()
        .map(|f| f.as_deref().unwrap_or(""))
        .collect();
    let filter = if filters.contains("") {
        String::new()
    } else {
        filters
            .iter()
            .map(|f| format!("({f})"))
            .collect::<Vec<_>>()
            .join(" || ")
    };
    pb::AccessLogSide {
        disabled: false,
        filter,
    }
}

/// Provider names with the sides they log on (names only; resolved by
/// [`super::MeshIndex::attach_access_logs`]).
pub(super) fn selected(
    client: &BTreeMap<String, Option<String>>,
    server: &BTreeMap<String, Option<String>>,
) -> Vec<pb::AccessLogProvider> {
    let names: BTreeSet<&String> = client.keys().chain(server.keys()).collect();
    names
        .into_iter()
        .map(|name| pb::AccessLogProvider {
            name: name.clone(),
            client: client.contains_key(name),
            server: server.contains_key(name),
            ..Default::default()
        })
        .collect()
}

/// A MeshConfig provider as an access-log destination.
#[derive(Debug, Clone, PartialEq)]
enum Provider {
    /// `path` empty: the proxy's own sink (the built-in `envoy`).
    File {
        path: String,
        text: String,
        labels: Vec<pb::AccessLogLabel>,
    },
    Otel {
        cluster: String,
        log_name: String,
        text: String,
        labels: Vec<pb::AccessLogLabel>,
    },
    /// A kind Weft does not send to (its YAML key).
    Unsupported(&'static str),
}

/// MeshConfig's access-log providers, computed once per build.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MeshLogging {
    providers: BTreeMap<String, Provider>,
    /// `defaultProviders.accessLogging`.
    pub(super) defaults: Vec<String>,
}

fn format_of(format: Option<&LogFormat>) -> (String, Vec<pb::AccessLogLabel>) {
    let Some(format) = format else {
        return (String::new(), Vec::new());
    };
    match (&format.labels, format.text.as_deref()) {
        (Some(serde_json::Value::Object(fields)), _) if !fields.is_empty() => {
            // Envoy's OpenTelemetry logger writes both; a file log one.
            (format.text.clone().unwrap_or_default(), labels(fields))
        }
        (_, Some(text)) => (text.to_string(), Vec::new()),
        _ => (String::new(), Vec::new()),
    }
}

impl From<&MeshConfig> for MeshLogging {
    fn from(mesh: &MeshConfig) -> Self {
        let root = mesh.root_namespace();
        let mut providers = BTreeMap::new();
        let envoy = MeshFormat::from(mesh);
        providers.insert(
            ENVOY.to_string(),
            Provider::File {
                path: String::new(),
                text: envoy.text_format().to_string(),
                labels: envoy.labels().to_vec(),
            },
        );
        let mut seen = BTreeSet::new();
        for provider in &mesh.extension_providers {
            let Some(kind) = provider.kind().filter(|k| k.is_access_log()) else {
                continue;
            };
            // The first of two providers with one name wins (weft-api
            // reports duplicates when the MeshConfig loads).
            if !seen.insert(provider.name.clone()) {
                continue;
            }
            let entry = if let Some(file) = &provider.envoy_file_access_log {
                let (text, labels) = format_of(file.log_format.as_ref());
                Provider::File {
                    path: match file.path.as_str() {
                        "" => "/dev/stdout".to_string(),
                        path => path.to_string(),
                    },
                    // A file log writes JSON when it has labels.
                    text: if labels.is_empty() {
                        text
                    } else {
                        String::new()
                    },
                    labels,
                }
            } else if let Some(otel) = &provider.envoy_otel_als {
                let (text, labels) = format_of(otel.log_format.as_ref());
                Provider::Otel {
                    cluster: cluster_name(otel.port, "", &service_host(&otel.service, root)),
                    log_name: match otel.log_name.as_str() {
                        "" => OTEL_LOG_NAME.to_string(),
                        name => name.to_string(),
                    },
                    text,
                    labels,
                }
            } else {
                Provider::Unsupported(kind.key())
            };
            providers.insert(provider.name.clone(), entry);
        }
        Self {
            providers,
            defaults: mesh
                .default_providers
                .as_ref()
                .map(|d| d.access_logging.clone())
                .unwrap_or_default(),
        }
    }
}

impl MeshLogging {
    /// Why the provider `name` cannot take lines; None when it can.
    fn problem(&self, name: &str) -> Option<String> {
        match self.providers.get(name) {
            None => Some("is not an access-log provider in MeshConfig extensionProviders".into()),
            Some(Provider::Unsupported(kind)) => Some(format!(
                "is a {kind} provider, which Weft does not implement (use envoyFileAccessLog or \
                 envoyOtelAls)"
            )),
            Some(_) => None,
        }
    }
}

/// Mesh-wide (apply, `weft analyze`): each Telemetry naming an access-log
/// provider proxies cannot write to.
pub(super) fn check_telemetry(
    resources: &[Resource],
    mesh: &MeshLogging,
    warnings: &mut Vec<super::ProviderWarning>,
) {
    for resource in resources {
        let Resource::Telemetry(object) = resource else {
            continue;
        };
        for (index, entry) in object.spec.access_logging.iter().enumerate() {
            for (p, provider) in entry.providers.iter().enumerate() {
                if let Some(problem) = mesh.problem(&provider.name) {
                    warnings.push(super::ProviderWarning {
                        resource: resource.label(),
                        field: format!("spec.accessLogging[{index}].providers[{p}]"),
                        message: format!("{:?} {problem}; left out", provider.name),
                    });
                }
            }
        }
    }
}

impl super::MeshIndex {
    /// Resolves the proxy's access-log providers (names from its Telemetry,
    /// else MeshConfig's defaults) into destinations, adding the clusters
    /// of OpenTelemetry collectors.
    pub(super) fn attach_access_logs(&self, node: &super::Node, output: &mut super::ProxyOutput) {
        let mesh = &self.mesh.logging;
        let config = &mut output.config;
        let mut selected = config
            .telemetry
            .as_ref()
            .map(|t| t.access_log_providers.clone())
            .unwrap_or_default();
        // A Telemetry `accessLogging` for this proxy always sets the sides.
        let said = config
            .telemetry
            .as_ref()
            .is_some_and(|t| t.client_access_log.is_some() || !t.access_log_providers.is_empty());
        if !said && !mesh.defaults.is_empty() {
            // No Telemetry says anything: the default providers log.
            let all: BTreeMap<String, Option<String>> =
                mesh.defaults.iter().map(|n| (n.clone(), None)).collect();
            selected = self::selected(&all, &all);
        }
        if selected.is_empty() {
            return;
        }
        let namespace = namespace_or_default(&node.namespace);
        let mut resolved = Vec::with_capacity(selected.len());
        for mut chosen in selected {
            match mesh.providers.get(&chosen.name) {
                Some(Provider::File { path, text, labels }) => {
                    chosen.path = path.clone();
                    chosen.text_format = text.clone();
                    chosen.labels = labels.clone();
                }
                Some(Provider::Otel {
                    cluster,
                    log_name,
                    text,
                    labels,
                }) => {
                    let Some(found) = self.rule_clusters.resolve(
                        cluster,
                        &self.clusters,
                        namespace,
                        &node.labels,
                    ) else {
                        output.warnings.push(format!(
                            "MeshConfig extensionProviders {:?}: service port {cluster} is not a \
                             known service port; no access-log records are sent there",
                            chosen.name
                        ));
                        continue;
                    };
                    add_cluster(&mut config.clusters, found, node);
                    chosen.otel_cluster = cluster.clone();
                    chosen.log_name = log_name.clone();
                    chosen.text_format = text.clone();
                    chosen.labels = labels.clone();
                }
                // Unsupported or unknown: warned mesh-wide, left out.
                _ => continue,
            }
            resolved.push(chosen);
        }
        let telemetry = config.telemetry.get_or_insert_with(Default::default);
        if resolved.is_empty() {
            // Only providers Weft cannot write to: no lines rather than
            // lines somewhere the mesh's owner did not ask for.
            telemetry.access_log = pb::telemetry::AccessLog::Disabled as i32;
        } else if !said {
            telemetry.access_log = pb::telemetry::AccessLog::Enabled as i32;
        }
        telemetry.access_log_providers = resolved;
    }
}

#[cfg(test)]
#[path = "access_log_providers_tests.rs"]
mod tests;
