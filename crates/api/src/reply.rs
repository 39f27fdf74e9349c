//! The bodies weftd's apply API answers with, typed once so weftd writes
//! and `weft apply` reads the same struct instead of keys looked up by
//! string.

use serde::{Deserialize, Serialize};

use crate::unimplemented::FieldWarning;

/// Largest request body weftd's API accepts (`413` above it): room for an
/// apply of about half a million objects (110,000 ServiceEntries and
/// WorkloadEntries are ~30 MiB), and a bound on what one request can make
/// weftd hold. `weft apply` checks it before sending.
pub const MAX_REQUEST_BODY: usize = 128 * 1024 * 1024;

/// `POST /v1/apply` → 200.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyReply {
    pub applied: Vec<AppliedObject>,
    /// Fields accepted but not honoured, as Kubernetes returns warnings
    /// with an accepted request. Absent in replies of older weftds.
    #[serde(default)]
    pub warnings: Vec<FieldWarning>,
}

/// One object of an apply and what happened to it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppliedObject {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    /// `created`, `configured`, `unchanged`.
    pub change: String,
    pub resource_version: u64,
}

/// `POST /v1/apply` → 422: nothing applied.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProblemsReply {
    pub problems: Vec<String>,
}
