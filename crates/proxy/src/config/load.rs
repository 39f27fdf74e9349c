//! Parsing a config file into the protobuf message, with errors that name the
//! file and the field.

use weft_proto::proxy::v1::ProxyConfig;

/// A config that could not be used. The message names the file and the
/// field path (`services[0].ports[1].protocol: ...`), one problem per line.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{source_name}: {message}")]
pub struct ConfigError {
    pub source_name: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(source_name: &str, message: impl Into<String>) -> Self {
        Self {
            source_name: source_name.to_string(),
            message: message.into(),
        }
    }
}

/// Parses YAML or JSON (JSON is YAML) in the proto3 JSON mapping: field names
/// in camelCase or snake_case, enums by name, durations like `"1.5s"`.
/// Unknown fields are errors, so a typo never silently drops a setting.
pub fn parse_config(text: &str, source_name: &str) -> Result<ProxyConfig, ConfigError> {
    if text.trim().is_empty() {
        return Err(ConfigError::new(source_name, "the file is empty"));
    }
    serde_saphyr::with_deserializer_from_str(text, |de| {
        serde_path_to_error::deserialize::<_, ProxyConfig>(de).map_err(|err| {
            let path = err.path().to_string();
            let inner = err.into_inner();
            <serde_saphyr::Error as serde::de::Error>::custom(format!("{path}: {inner}"))
        })
    })
    .map_err(|err| ConfigError::new(source_name, err.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_yaml_with_camel_case_and_enum_names() {
        let cfg = parse_config(
            "version: v1\nlisteners:\n- name: out\n  address: 127.0.0.1:15001\n  kind: OUTBOUND_CAPTURE\nprotocolDetectionTimeout: 0.25s\n",
            "a.yaml",
        )
        .expect("valid config");
        assert_eq!(cfg.listeners[0].address, "127.0.0.1:15001");
        assert_eq!(cfg.listeners[0].kind, 1);
        assert_eq!(
            cfg.protocol_detection_timeout.map(|d| d.nanos),
            Some(250_000_000)
        );
    }

    #[test]
    fn accepts_json() {
        let cfg = parse_config(
            r#"{"version": "j1", "clusters": [{"name": "c", "upstream_protocol": "HTTP1", "endpoints": [{"address": "127.0.0.1:80", "weight": 3}]}]}"#,
            "a.json",
        )
        .expect("valid JSON config");
        assert_eq!(cfg.version, "j1");
        assert_eq!(cfg.clusters[0].upstream_protocol, 1);
        assert_eq!(cfg.clusters[0].endpoints[0].weight, 3);
    }

    #[test]
    fn error_names_file_and_field_path() {
        let err = parse_config(
            "services:\n- name: a\n  ports:\n  - port: 80\n    protocol: HTPP\n",
            "bad.yaml",
        )
        .expect_err("unknown enum value");
        let text = err.to_string();
        assert!(text.starts_with("bad.yaml: "), "{text}");
        assert!(text.contains("services[0].ports[0].protocol"), "{text}");
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let err = parse_config("listners: []\n", "typo.yaml").expect_err("typo");
        assert!(err.to_string().contains("listners"), "{err}");
    }
}
