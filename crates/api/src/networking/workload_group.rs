//! WorkloadGroup: a template for WorkloadEntries that VMs register themselves.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::workload_entry::{AddressRule, WorkloadEntry};
use crate::field::FieldErrors;
use crate::meta::ObjectMeta;
use crate::resource::{Group, Spec};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadGroup {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<GroupMetadata>,
    #[serde(default)]
    pub template: WorkloadEntry,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe: Option<ReadinessProbe>,
}

impl WorkloadGroup {
    /// The service account of the group's workloads: the template's, or
    /// Kubernetes' "default" when it names none.
    pub fn service_account(&self) -> &str {
        if self.template.service_account.is_empty() {
            "default"
        } else {
            &self.template.service_account
        }
    }
}

/// Labels and annotations copied onto the generated WorkloadEntries.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GroupMetadata {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReadinessProbe {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_delay_seconds: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period_seconds: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_threshold: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_threshold: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_get: Option<HttpHealthCheck>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_socket: Option<TcpHealthCheck>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<ExecHealthCheck>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc: Option<GrpcHealthCheck>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpHealthCheck {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub path: String,
    #[serde(default)]
    pub port: u32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub host: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub scheme: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http_headers: Vec<HttpHeader>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpHeader {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub value: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpHealthCheck {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub host: String,
    #[serde(default)]
    pub port: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExecHealthCheck {
    #[serde(default)]
    pub command: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrpcHealthCheck {
    #[serde(default)]
    pub port: u32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub service: String,
}

const HEADER_NAME_PATTERN: &str = "^[-_A-Za-z0-9]+$";

impl ReadinessProbe {
    fn validate(&self, path: &str, errors: &mut FieldErrors) {
        let checks = [
            self.http_get.is_some(),
            self.tcp_socket.is_some(),
            self.exec.is_some(),
            self.grpc.is_some(),
        ];
        if checks.iter().filter(|c| **c).count() > 1 {
            errors.push(
                path,
                "only one of httpGet, tcpSocket, exec or grpc may be set",
            );
        }
        for (name, value) in [
            ("initialDelaySeconds", self.initial_delay_seconds),
            ("timeoutSeconds", self.timeout_seconds),
            ("periodSeconds", self.period_seconds),
            ("successThreshold", self.success_threshold),
            ("failureThreshold", self.failure_threshold),
        ] {
            if value.is_some_and(|v| v < 0) {
                errors.push(
                    format!("{path}.{name}"),
                    "should be greater than or equal to 0",
                );
            }
        }
        if let Some(http) = &self.http_get {
            errors.check_port(format!("{path}.httpGet.port"), http.port);
            if !["", "HTTP", "HTTPS"].contains(&http.scheme.as_str()) {
                errors.push(
                    format!("{path}.httpGet.scheme"),
                    "scheme must be HTTP or HTTPS",
                );
            }
            for (i, header) in http.http_headers.iter().enumerate() {
                let valid = !header.name.is_empty()
                    && header
                        .name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
                if !valid {
                    let field = format!("{path}.httpGet.httpHeaders[{i}].name");
                    errors.push(
                        &field,
                        format!("{field} in body should match '{HEADER_NAME_PATTERN}'"),
                    );
                }
            }
        }
        if let Some(tcp) = &self.tcp_socket {
            errors.check_port(format!("{path}.tcpSocket.port"), tcp.port);
        }
        if let Some(grpc) = &self.grpc {
            errors.check_port(format!("{path}.grpc.port"), grpc.port);
        }
        if let Some(exec) = &self.exec
            && (exec.command.is_empty() || exec.command.iter().any(String::is_empty))
        {
            errors.push(
                format!("{path}.exec.command"),
                "command must be set and non-empty",
            );
        }
    }
}

impl Spec for WorkloadGroup {
    const KIND: &'static str = "WorkloadGroup";
    const GROUP: Group = Group::Networking;
    const SPEC_REQUIRED: bool = true;

    fn validate(&self, _meta: &ObjectMeta, errors: &mut FieldErrors) {
        self.template
            .validate_at("spec.template", AddressRule::Optional, errors);
        if let Some(probe) = &self.probe {
            probe.validate("spec.probe", errors);
        }
    }
}

#[cfg(test)]
mod tests {

    fn problems(spec: &str) -> Vec<(String, String)> {
        crate::decode::spec_problems::<super::WorkloadGroup>(spec)
    }

    #[test]
    fn valid_group_decodes() {
        let spec = "  metadata: {labels: {app: vm}}\n  template: {serviceAccount: sa, network: net1}\n  probe:\n    periodSeconds: 5\n    httpGet: {path: /ready, port: 8080, httpHeaders: [{name: X-Probe, value: ok}]}\n";
        assert_eq!(problems(spec), vec![]);
    }

    #[test]
    fn probe_port_and_header_name() {
        assert_eq!(
            problems("  template: {}\n  probe: {tcpSocket: {port: 65536}}\n"),
            vec![(
                "spec.probe.tcpSocket.port".into(),
                "port must be between 1-65535".into()
            )]
        );
        let found = problems(
            "  template: {}\n  probe: {httpGet: {port: 80, httpHeaders: [{name: \"**\"}]}}\n",
        );
        assert_eq!(found[0].0, "spec.probe.httpGet.httpHeaders[0].name");
    }
}
