//! The bodies of weftd's HTTP API, typed once: weftd writes and the `weft`
//! CLI reads the same structs instead of `json!` values read back by
//! string keys. They live here because both link weft-api and the CLI
//! must not link weftd. [`decode`] reads an answer and, when it does not
//! fit, names the field that does not.

use std::net::IpAddr;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::unimplemented::FieldWarning;

mod describe;
pub use describe::*;

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

/// Any refusal: `{"error": "..."}` with a 4xx or 5xx status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReply {
    pub error: String,
}

/// Kind, namespace and name of a stored object.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectKey {
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

/// `POST /v1/delete` → 200 (a 422 is a [`ProblemsReply`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeleteReply {
    pub deleted: Vec<AppliedObject>,
    pub not_found: Vec<ObjectKey>,
    /// Notices for documents of kinds Weft does not store.
    #[serde(default)]
    pub skipped: Vec<String>,
}

/// `DELETE /v1/resources/<Kind>/<namespace>/<name>` → 200.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeletedReply {
    pub deleted: AppliedObject,
}

/// `GET /v1/resources` → 200. The objects stay JSON: they are printed
/// and re-applied as they are, in the shape users wrote them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ListReply {
    pub items: Vec<Value>,
}

/// `GET /v1/proxies` → 200.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxiesReply {
    pub proxies: Vec<ProxyStatus>,
    /// Streams weftd refused lately, oldest first.
    #[serde(default)]
    pub refused: Vec<Refusal>,
}

/// One proxy registered with weftd.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProxyStatus {
    pub id: String,
    pub workload: String,
    pub namespace: String,
    pub connected: bool,
    /// The version weftd last pushed.
    pub sent_version: String,
    /// The version the proxy last ACKed (serving).
    pub acked_version: String,
    /// Why the proxy refused the last push, while it does (NACK); `null`
    /// otherwise.
    #[serde(default)]
    pub error: Option<String>,
    /// Connected, NACKing nothing, serving what was last pushed.
    #[serde(default)]
    pub synced: bool,
}

/// What `weft proxy-status` shows for a proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sync {
    Disconnected,
    Nack,
    Stale,
    Synced,
}

impl ProxyStatus {
    pub fn sync(&self) -> Sync {
        if !self.connected {
            Sync::Disconnected
        } else if self.error.is_some() {
            Sync::Nack
        } else if self.sent_version != self.acked_version {
            Sync::Stale
        } else {
            Sync::Synced
        }
    }
}

impl Sync {
    /// istioctl's words.
    pub fn as_str(self) -> &'static str {
        match self {
            Sync::Disconnected => "DISCONNECTED",
            Sync::Nack => "NACK",
            Sync::Stale => "STALE",
            Sync::Synced => "SYNCED",
        }
    }
}

/// A stream weftd refused, and why.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    /// RFC 3339, UTC.
    pub time: String,
    pub peer: String,
    /// The node id the proxy claimed (empty when it sent none).
    pub id: String,
    /// The gRPC code the proxy got.
    pub code: String,
    pub reason: String,
}

/// `POST /v1/tokens`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TokenRequest {
    pub namespace: String,
    pub workload_group: String,
    /// The only address a proxy may use the token from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<IpAddr>,
    /// A duration as people write it: "10m", "1h", "7d".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
}

/// `POST /v1/tokens` → 200: the only time the token itself is shown.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenMinted {
    pub token: String,
    pub id: String,
    /// The SPIFFE identity a proxy admitted by it gets.
    pub identity: String,
    pub workload_group: String,
    #[serde(default)]
    pub address: Option<IpAddr>,
    /// Seconds since the epoch.
    pub expires: u64,
}

/// One token as `GET /v1/tokens` lists it (never the token itself).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenInfo {
    pub id: String,
    pub namespace: String,
    pub service_account: String,
    pub workload_group: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<IpAddr>,
    /// Seconds since the epoch, as `expires`.
    #[serde(default)]
    pub issued: u64,
    pub expires: u64,
    pub minted_by: String,
    #[serde(default)]
    pub revoked: bool,
}

/// `GET /v1/tokens` → 200.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenList {
    pub tokens: Vec<TokenInfo>,
}

/// `DELETE /v1/tokens/<id>` → 200.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRevoked {
    pub revoked: TokenInfo,
}

/// `POST /v1/analyze`: the analyzers over the store plus `objects` as if
/// applied; only the analyzers named, when some are.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AnalyzeRequest {
    #[serde(default)]
    pub objects: Vec<AnalyzeObject>,
    #[serde(default)]
    pub analyzers: Vec<String>,
}

/// One document sent for analysis, and where it came from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AnalyzeObject {
    #[serde(default = "request_origin")]
    pub origin: String,
    #[serde(default)]
    pub document: usize,
    pub object: Value,
}

fn request_origin() -> String {
    "request".into()
}

/// `POST /v1/analyze` → 200.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnalyzeReply {
    pub messages: Vec<AnalyzeMessage>,
}

/// A finding as it travels ([`crate::analyze::Message`] holds its code's
/// static names; the CLI looks the code up in its own table).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnalyzeMessage {
    pub code: String,
    #[serde(default)]
    pub name: String,
    pub resource: String,
    #[serde(default)]
    pub namespace: String,
    pub text: String,
    #[serde(default)]
    pub origin: String,
}

impl From<&crate::analyze::Message> for AnalyzeMessage {
    fn from(message: &crate::analyze::Message) -> Self {
        Self {
            code: message.code.into(),
            name: message.name.into(),
            resource: message.resource.clone(),
            namespace: message.namespace.clone(),
            text: message.text.clone(),
            origin: message.origin.clone(),
        }
    }
}

/// `GET /v1/proxies/<id>/config` → 200: the envelope of the config weftd
/// last pushed (`config` is the proxy's own `/config_dump` shape).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PushedConfig {
    /// Who answers: `weftd (last pushed)`.
    pub source: String,
    pub version: String,
    /// `null` before any config arrived.
    #[serde(default)]
    pub config: Value,
}

/// `GET /v1/meshconfig` → 200: the MeshConfig in force.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MeshConfigReply {
    /// Where it came from: `file PATH`, `ConfigMap NS/istio key mesh`, or
    /// `defaults (...)`.
    pub source: String,
    /// In force: what was written, Istio's defaults filled in.
    pub config: Value,
    /// As written (validated).
    #[serde(default)]
    pub written: Value,
    /// Fields accepted but not (fully) applied, one line each.
    #[serde(default)]
    pub warnings: Vec<String>,
    /// The last change refused since this one took effect, with its errors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
}

/// A body that does not fit its type, naming the field.
#[derive(Debug, thiserror::Error)]
#[error("{what} is not understood: {path}: {source}")]
pub struct WireError {
    what: String,
    path: String,
    #[source]
    source: serde_json::Error,
}

impl WireError {
    /// The path of the field that did not fit (`proxies[0].connected`).
    pub fn path(&self) -> &str {
        &self.path
    }
}

/// Reads `body` as a `T`; `what` names the body in the error ("weftd's
/// apply reply"), which names the field that does not fit.
pub fn decode<T: DeserializeOwned>(what: &str, body: &Value) -> Result<T, WireError> {
    serde_path_to_error::deserialize(body).map_err(|err| {
        let path = match err.path().to_string() {
            path if path == "." => "the body".to_string(),
            path => format!("field {path}"),
        };
        WireError {
            what: what.to_string(),
            path,
            source: err.into_inner(),
        }
    })
}

/// A typed answer as JSON for the API's replies. These structs hold
/// strings, numbers and JSON values only, so encoding cannot fail; the
/// fallback only keeps callers panic-free.
pub fn to_value(reply: &impl Serialize) -> Value {
    serde_json::to_value(reply).unwrap_or_default()
}

#[cfg(test)]
#[path = "wire_tests.rs"]
mod tests;
