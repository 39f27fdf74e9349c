//! The resource envelope (`apiVersion`, `kind`, `metadata`, `spec`) and the
//! set of Istio kinds Weft understands.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::field::{FieldError, FieldErrors};
use crate::meta::ObjectMeta;
use crate::{networking, ratelimit, security, telemetry};

/// Istio API groups and the versions Istio serves for them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    Networking,
    Security,
    Telemetry,
    /// Weft's own kinds (`weft.io`): what Istio expresses with EnvoyFilter.
    Weft,
}

impl Group {
    pub fn name(self) -> &'static str {
        match self {
            Self::Networking => "networking.istio.io",
            Self::Security => "security.istio.io",
            Self::Telemetry => "telemetry.istio.io",
            Self::Weft => "weft.io",
        }
    }

    pub fn versions(self) -> &'static [&'static str] {
        match self {
            Self::Networking => &["v1", "v1beta1", "v1alpha3"],
            Self::Security => &["v1", "v1beta1"],
            Self::Telemetry => &["v1", "v1alpha1"],
            Self::Weft => &["v1alpha1"],
        }
    }
}

/// A resource's `spec`: its type, and the checks serde cannot express.
pub trait Spec:
    DeserializeOwned + Serialize + Clone + std::fmt::Debug + Default + PartialEq + Send + Sync + 'static
{
    const KIND: &'static str;
    const GROUP: Group;
    /// Istio's schema marks `spec` required for this kind.
    const SPEC_REQUIRED: bool = false;

    /// Pushes every problem, with paths starting at `spec`.
    fn validate(&self, meta: &ObjectMeta, errors: &mut FieldErrors);
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Object<S> {
    pub api_version: String,
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: S,
    /// Written by controllers, never read by Weft.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Value>,
}

/// Decodes and validates one object whose kind is `S::KIND`.
fn decode_object<S: Spec>(value: Value) -> Result<Object<S>, Vec<FieldError>> {
    if S::SPEC_REQUIRED && value.get("spec").is_none_or(Value::is_null) {
        return Err(vec![FieldError {
            path: "spec".into(),
            message: "Required value".into(),
        }]);
    }
    let object: Object<S> = serde_path_to_error::deserialize(value).map_err(|err| {
        vec![FieldError {
            path: err.path().to_string(),
            message: err.into_inner().to_string(),
        }]
    })?;
    let mut errors = FieldErrors::default();
    if object.metadata.name.is_empty() {
        errors.push("metadata.name", "Required value");
    } else if !is_dns1123_subdomain(&object.metadata.name) {
        errors.push(
            "metadata.name",
            "must be lowercase letters, digits, '-' and '.', starting and ending with a letter or digit (RFC 1123)",
        );
    }
    let namespace = &object.metadata.namespace;
    if !(namespace.is_empty() || namespace.len() <= 63 && is_dns1123_label(namespace)) {
        errors.push(
            "metadata.namespace",
            "must be at most 63 lowercase letters, digits and '-', starting and ending with a letter or digit",
        );
    }
    object.spec.validate(&object.metadata, &mut errors);
    if errors.is_empty() {
        Ok(object)
    } else {
        Err(errors.into_vec())
    }
}

/// Kubernetes object names: RFC 1123 labels joined by dots, at most 253.
fn is_dns1123_subdomain(name: &str) -> bool {
    name.len() <= 253 && name.split('.').all(is_dns1123_label)
}

fn is_dns1123_label(label: &str) -> bool {
    let bytes = label.as_bytes();
    !bytes.is_empty()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes.first() != Some(&b'-')
        && bytes.last() != Some(&b'-')
}

macro_rules! kinds {
    ($($kind:ident => $spec:path),* $(,)?) => {
        /// Every kind Weft stores, in declaration order.
        pub const KINDS: &[&str] = &[$(stringify!($kind)),*];

        /// One validated Istio resource.
        #[derive(Debug, Clone, PartialEq)]
        pub enum Resource {
            $($kind(Object<$spec>),)*
        }

        impl Resource {
            pub fn kind(&self) -> &'static str {
                match self {
                    $(Self::$kind(_) => stringify!($kind),)*
                }
            }

            pub fn metadata(&self) -> &ObjectMeta {
                match self {
                    $(Self::$kind(object) => &object.metadata,)*
                }
            }

            pub fn metadata_mut(&mut self) -> &mut ObjectMeta {
                match self {
                    $(Self::$kind(object) => &mut object.metadata,)*
                }
            }

            /// The whole object as JSON, as a user would write it.
            pub fn to_value(&self) -> Value {
                let encoded = match self {
                    $(Self::$kind(object) => serde_json::to_value(object),)*
                };
                // Serializing plain structs of strings, numbers and maps cannot fail.
                encoded.unwrap_or(Value::Null)
            }

            /// The group of a kind Weft understands.
            pub fn group_of(kind: &str) -> Option<Group> {
                match kind {
                    $(stringify!($kind) => Some(<$spec as Spec>::GROUP),)*
                    _ => None,
                }
            }

            /// Decodes a known kind; `None` for kinds Weft does not know.
            pub(crate) fn decode(kind: &str, value: Value) -> Option<Result<Self, Vec<FieldError>>> {
                match kind {
                    $(stringify!($kind) => Some(decode_object::<$spec>(value).map(Self::$kind)),)*
                    _ => None,
                }
            }
        }
    };
}

kinds! {
    VirtualService => networking::VirtualService,
    DestinationRule => networking::DestinationRule,
    Gateway => networking::Gateway,
    ServiceEntry => networking::ServiceEntry,
    Sidecar => networking::Sidecar,
    WorkloadEntry => networking::WorkloadEntry,
    WorkloadGroup => networking::WorkloadGroup,
    PeerAuthentication => security::PeerAuthentication,
    RequestAuthentication => security::RequestAuthentication,
    AuthorizationPolicy => security::AuthorizationPolicy,
    Telemetry => telemetry::Telemetry,
    RateLimit => ratelimit::RateLimit,
}

impl Resource {
    /// `Kind namespace/name`, as errors and notices name it.
    pub fn label(&self) -> String {
        format!("{} {}", self.kind(), self.metadata().key())
    }
}
