//! MeshConfig: Istio's mesh-wide settings (the `mesh` key of the `istio`
//! ConfigMap, or `meshConfig:` at install), typed, validated with field
//! paths, and every field Weft does not act on named in a warning.
//!
//! [`parse`] is the one entry point: YAML or JSON text → [`Loaded`] (the
//! config and its warnings) or the list of errors. Unknown top-level
//! fields are errors, as in Istio (it reads MeshConfig strictly); Istio
//! fields Weft does not implement are accepted and warned about, so a
//! valid Istio file is never refused. [`MeshConfig::effective`] fills in
//! Istio's defaults: what is in force when the file says nothing.

mod fields;
pub mod log_format;
pub mod providers;
pub mod proxy_defaults;
#[cfg(test)]
mod tests;
pub mod tracing;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::field::{FieldErrors, parse_duration};
use crate::networking::LocalityLbSetting;

pub use self::providers::{ExtensionProvider, Kind};
pub use self::proxy_defaults::{GatewayTopology, ProxyDefaults};

/// The MeshConfig file weftd reads in its config directory (`weft up
/// DIR` passes DIR): not an Istio resource file, so resource readers skip
/// it there.
pub const FILE_NAME: &str = "meshconfig.yaml";

/// Istio's defaults.
pub const DEFAULT_ROOT_NAMESPACE: &str = "istio-system";
pub const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The mesh-wide settings Weft reads. Fields left `None` take Istio's
/// default ([`MeshConfig::effective`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust_domain: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trust_domain_aliases: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbound_traffic_policy: Option<OutboundTrafficPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_auto_mtls: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_config: Option<ProxyDefaults>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_normalization: Option<PathNormalization>,
    /// Empty: no access log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_log_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_log_format: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_log_encoding: Option<AccessLogEncoding>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_providers: Option<DefaultProviders>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extension_providers: Vec<ExtensionProvider>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locality_lb_setting: Option<LocalityLbSetting>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol_detection_timeout: Option<String>,
    /// Istio fields Weft accepts but does not act on, as written.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[serde(skip_deserializing)]
    pub not_applied: BTreeMap<String, Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutboundTrafficPolicy {
    #[serde(default)]
    pub mode: OutboundMode,
}

/// Istio's default is ALLOW_ANY (the proto's zero value is REGISTRY_ONLY,
/// but Istio's compiled-in default sets ALLOW_ANY; an explicit
/// `outboundTrafficPolicy: {}` is read as ALLOW_ANY too).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OutboundMode {
    #[default]
    AllowAny,
    RegistryOnly,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PathNormalization {
    #[serde(default)]
    pub normalization: Normalization,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Normalization {
    /// BASE.
    #[default]
    Default,
    None,
    Base,
    MergeSlashes,
    DecodeAndMergeSlashes,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AccessLogEncoding {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DefaultProviders {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tracing: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub access_logging: Vec<String>,
}

/// A `defaultProviders` list: its field, its names, the kinds it takes.
type ProviderList<'a> = (&'a str, &'a [String], fn(Kind) -> bool);

/// A MeshConfig that passed validation, and what in it is not applied.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Loaded {
    pub config: MeshConfig,
    /// One line per field accepted but not (fully) applied, naming it.
    pub warnings: Vec<String>,
}

/// Parses and validates MeshConfig text (YAML or JSON, one document).
/// Errors read `<field path>: <what is wrong>`.
pub fn parse(text: &str) -> Result<Loaded, Vec<String>> {
    let documents = crate::decode::parse_documents(text)
        .map_err(|err| vec![format!("not valid YAML or JSON: {err}")])?;
    let value = match documents.as_slice() {
        [] => Value::Object(Default::default()),
        [one] => one.clone(),
        many => {
            return Err(vec![format!("one document expected, found {}", many.len())]);
        }
    };
    let value = if value.is_null() {
        Value::Object(Default::default())
    } else {
        value
    };
    let Value::Object(map) = value else {
        return Err(vec!["expected an object of MeshConfig fields".into()]);
    };
    let mut typed = serde_json::Map::new();
    let mut not_applied = BTreeMap::new();
    let mut errors = FieldErrors::default();
    for (key, value) in map {
        if fields::TYPED.contains(&key.as_str()) {
            typed.insert(key, value);
        } else if fields::is_istio_field(&key) {
            not_applied.insert(key, value);
        } else {
            errors.push(
                key.clone(),
                "unknown MeshConfig field (Istio reads MeshConfig strictly; check the spelling)",
            );
        }
    }
    let mut config: MeshConfig = match serde_path_to_error::deserialize(Value::Object(typed)) {
        Ok(config) => config,
        Err(err) => {
            let path = err.path().to_string();
            errors.push(
                if path == "." { String::new() } else { path },
                err.inner().to_string(),
            );
            return Err(errors.into_vec().iter().map(ToString::to_string).collect());
        }
    };
    config.not_applied = not_applied;
    config.validate(&mut errors);
    if !errors.is_empty() {
        return Err(errors.into_vec().iter().map(ToString::to_string).collect());
    }
    let warnings = fields::warnings(&config);
    Ok(Loaded { config, warnings })
}

impl MeshConfig {
    fn validate(&self, errors: &mut FieldErrors) {
        if let Some(namespace) = &self.root_namespace
            && !is_dns1123_label(namespace)
        {
            errors.push(
                "rootNamespace",
                format!("{namespace:?} is not a namespace name (DNS-1123 label)"),
            );
        }
        if let Some(domain) = &self.trust_domain
            && let Err(why) = check_trust_domain(domain)
        {
            errors.push("trustDomain", why);
        }
        for (index, alias) in self.trust_domain_aliases.iter().enumerate() {
            if let Err(why) = check_trust_domain(alias) {
                errors.push(format!("trustDomainAliases[{index}]"), why);
            }
        }
        if let Some(timeout) = &self.connect_timeout {
            errors.check_duration("connectTimeout", timeout, Some(Duration::from_millis(1)));
        }
        if let Some(timeout) = &self.protocol_detection_timeout {
            match parse_duration(timeout) {
                Some(d) if d.is_zero() || d >= Duration::from_millis(1) => {}
                Some(_) => errors.push(
                    "protocolDetectionTimeout",
                    "must be 0s (no timeout) or at least 1ms",
                ),
                None => errors.check_duration("protocolDetectionTimeout", timeout, None),
            }
        }
        if self.access_log_encoding == Some(AccessLogEncoding::Json)
            && let Some(format) = self.access_log_format.as_deref().filter(|f| !f.is_empty())
            && !serde_json::from_str::<Value>(format).is_ok_and(|v| v.is_object())
        {
            errors.push(
                "accessLogFormat",
                "with accessLogEncoding JSON the format must be a JSON object of fields",
            );
        }
        if let Some(format) = self.access_log_format.as_deref().filter(|f| !f.is_empty()) {
            match serde_json::from_str::<Value>(format) {
                Ok(labels @ Value::Object(_))
                    if self.access_log_encoding == Some(AccessLogEncoding::Json) =>
                {
                    log_format::check_labels("accessLogFormat", &labels, errors)
                }
                _ => log_format::check_text("accessLogFormat", format, errors),
            }
        }
        if let Some(defaults) = &self.default_config {
            defaults.validate("defaultConfig", errors);
        }
        if let Some(locality) = &self.locality_lb_setting {
            locality.validate("localityLbSetting", errors);
        }
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        for (index, provider) in self.extension_providers.iter().enumerate() {
            let path = format!("extensionProviders[{index}]");
            provider.validate(&path, errors);
            if !provider.name.is_empty()
                && let Some(first) = seen.insert(&provider.name, index)
            {
                errors.push(
                    format!("{path}.name"),
                    format!(
                        "{:?} is already the name of extensionProviders[{first}]",
                        provider.name
                    ),
                );
            }
        }
        if let Some(defaults) = &self.default_providers {
            let lists: [ProviderList<'_>; 3] = [
                ("tracing", &defaults.tracing, Kind::is_tracing),
                ("metrics", &defaults.metrics, Kind::is_metrics),
                (
                    "accessLogging",
                    &defaults.access_logging,
                    Kind::is_access_log,
                ),
            ];
            for (field, names, fits) in lists {
                for (index, name) in names.iter().enumerate() {
                    let path = format!("defaultProviders.{field}[{index}]");
                    match self.provider_kind(name) {
                        None => errors.push(path, format!("no extension provider named {name:?}")),
                        Some(kind) if !fits(kind) => errors.push(
                            path,
                            format!(
                                "provider {name:?} is a {} provider, not one for {field}",
                                kind.key()
                            ),
                        ),
                        Some(_) => {}
                    }
                }
            }
        }
    }

    /// The kind of the provider `name`, counting Istio's built-in
    /// `prometheus`, `stackdriver` and `envoy` (stdout access log).
    pub fn provider_kind(&self, name: &str) -> Option<Kind> {
        if let Some(provider) = self.extension_providers.iter().find(|p| p.name == name) {
            return provider.kind();
        }
        match name {
            "prometheus" => Some(Kind::Prometheus),
            "stackdriver" => Some(Kind::Stackdriver),
            "envoy" => Some(Kind::EnvoyFileAccessLog),
            _ => None,
        }
    }

    /// This config with Istio's defaults filled in: what `weft get
    /// meshconfig` shows as in force.
    pub fn effective(&self) -> MeshConfig {
        let mut out = self.clone();
        out.root_namespace
            .get_or_insert_with(|| DEFAULT_ROOT_NAMESPACE.to_string());
        out.trust_domain
            .get_or_insert_with(|| DEFAULT_TRUST_DOMAIN.to_string());
        out.outbound_traffic_policy
            .get_or_insert_with(Default::default);
        out.enable_auto_mtls.get_or_insert(true);
        out.path_normalization.get_or_insert_with(Default::default);
        out.access_log_encoding.get_or_insert_with(Default::default);
        out.access_log_file.get_or_insert_with(String::new);
        out.connect_timeout.get_or_insert_with(|| "10s".to_string());
        out.protocol_detection_timeout
            .get_or_insert_with(|| "0s".to_string());
        out.default_providers
            .get_or_insert_with(|| DefaultProviders {
                metrics: vec!["prometheus".into()],
                ..Default::default()
            });
        out
    }

    pub fn root_namespace(&self) -> &str {
        self.root_namespace
            .as_deref()
            .unwrap_or(DEFAULT_ROOT_NAMESPACE)
    }

    pub fn trust_domain(&self) -> &str {
        self.trust_domain.as_deref().unwrap_or(DEFAULT_TRUST_DOMAIN)
    }

    pub fn outbound_mode(&self) -> OutboundMode {
        self.outbound_traffic_policy
            .as_ref()
            .map(|p| p.mode)
            .unwrap_or_default()
    }

    pub fn auto_mtls(&self) -> bool {
        self.enable_auto_mtls.unwrap_or(true)
    }

    pub fn normalization(&self) -> Normalization {
        self.path_normalization
            .as_ref()
            .map(|p| p.normalization)
            .unwrap_or_default()
    }

    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
            .as_deref()
            .and_then(parse_duration)
            .unwrap_or(DEFAULT_CONNECT_TIMEOUT)
    }

    /// `None`: not set (Weft's own default applies). Istio's 0s (no
    /// timeout) is `Some(ZERO)`.
    pub fn protocol_detection_timeout(&self) -> Option<Duration> {
        self.protocol_detection_timeout
            .as_deref()
            .and_then(parse_duration)
    }

    /// `defaultConfig.gatewayTopology.numTrustedProxies`.
    pub fn num_trusted_proxies(&self) -> Option<u32> {
        self.default_config
            .as_ref()
            .and_then(|d| d.gateway_topology.as_ref())
            .and_then(|t| t.num_trusted_proxies)
    }

    /// Whether proxies log requests where Telemetry says nothing:
    /// `accessLogFile` set, or a default access-logging provider that is a
    /// file log.
    pub fn access_log_on(&self) -> bool {
        let file = self
            .access_log_file
            .as_deref()
            .is_some_and(|f| !f.is_empty());
        let provider = self.default_providers.as_ref().is_some_and(|d| {
            d.access_logging
                .iter()
                .any(|name| self.provider_kind(name) == Some(Kind::EnvoyFileAccessLog))
        });
        file || provider
    }
}

/// SPIFFE trust domain characters (lower-case letters, digits, `.`, `-`,
/// `_`), not empty.
fn check_trust_domain(domain: &str) -> Result<(), String> {
    if domain.is_empty() {
        return Err("must not be empty".into());
    }
    if domain
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_'))
    {
        Ok(())
    } else {
        Err(format!(
            "{domain:?} is not a SPIFFE trust domain (lower-case letters, digits, '.', '-', '_')"
        ))
    }
}

fn is_dns1123_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}
