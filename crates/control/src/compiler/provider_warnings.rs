//! Telemetry resources naming a provider the proxies cannot use (a tracing
//! provider they cannot export to, an access-log provider they cannot
//! write to), under the MeshConfig in force. Said in three places, from
//! this one check: weftd's build warnings, `weft analyze`, and the reply to
//! the apply that stored the Telemetry.

use std::fmt;

use weft_api::Resource;
use weft_api::mesh::MeshConfig;

use super::access_log_providers::{self, MeshLogging};
use super::trace_providers::{self, MeshTracing};

/// One provider reference that is left out, naming its field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderWarning {
    /// `Telemetry namespace/name`.
    pub resource: String,
    /// `spec.accessLogging[0].providers[1]`.
    pub field: String,
    pub message: String,
}

impl fmt::Display for ProviderWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} {}", self.resource, self.field, self.message)
    }
}

/// Every Telemetry in `resources` naming a tracing or access-log provider
/// that proxies cannot use under `mesh`. (MeshConfig's own
/// `defaultProviders` are in its load warnings.)
pub fn telemetry_provider_warnings(
    resources: &[Resource],
    mesh: &MeshConfig,
) -> Vec<ProviderWarning> {
    let mut out = Vec::new();
    trace_providers::check_telemetry(resources, &MeshTracing::from(mesh), &mut out);
    access_log_providers::check_telemetry(resources, &MeshLogging::from(mesh), &mut out);
    out
}
