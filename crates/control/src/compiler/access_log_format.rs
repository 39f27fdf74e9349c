//! MeshConfig `accessLogFormat` as pushed to proxies: Envoy format strings
//! (weft-api has checked every operator), either one text line or, with
//! `accessLogEncoding: JSON`, a JSON object of field → format.

use serde_json::Value;
use weft_api::mesh::{AccessLogEncoding, MeshConfig};
use weft_proto::proxy::v1 as pb;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct MeshFormat {
    text: String,
    labels: Vec<pb::AccessLogLabel>,
    /// The selected provider's `path`; empty: the proxy's `--access-log`.
    path: String,
}

impl From<&MeshConfig> for MeshFormat {
    fn from(mesh: &MeshConfig) -> Self {
        if let Some(chosen) = default_provider_format(mesh) {
            return chosen;
        }
        let Some(format) = mesh.access_log_format.as_deref().filter(|f| !f.is_empty()) else {
            return Self::default();
        };
        let json = mesh.access_log_encoding == Some(AccessLogEncoding::Json);
        match serde_json::from_str::<Value>(format) {
            Ok(Value::Object(fields)) if json => Self::json(labels(&fields)),
            _ => Self::text(format),
        }
    }
}

/// The first `envoyFileAccessLog` provider `defaultProviders.accessLogging`
/// names: its `path` and `logFormat` (none: Istio's default line;
/// `accessLogFormat` belongs to the built-in `envoy` provider only). Weft
/// writes one line per request, so later ones add nothing (docs say so).
fn default_provider_format(mesh: &MeshConfig) -> Option<MeshFormat> {
    let defaults = mesh.default_providers.as_ref()?;
    defaults.access_logging.iter().find_map(|name| {
        let provider = mesh.extension_providers.iter().find(|p| &p.name == name)?;
        let file = provider.envoy_file_access_log.as_ref()?;
        let mut chosen = match file.log_format.as_ref() {
            Some(format) => match (&format.labels, format.text.as_deref()) {
                (Some(Value::Object(fields)), _) => MeshFormat::json(labels(fields)),
                (_, Some(text)) => MeshFormat::text(text),
                _ => MeshFormat::default(),
            },
            None => MeshFormat::default(),
        };
        chosen.path = match file.path.as_str() {
            "" => "/dev/stdout".to_string(),
            path => path.to_string(),
        };
        Some(chosen)
    })
}

/// `logFormat.labels` (or a JSON `accessLogFormat`) in the order written;
/// values that are not strings were refused at apply time.
pub fn labels(fields: &serde_json::Map<String, Value>) -> Vec<pb::AccessLogLabel> {
    fields
        .iter()
        .filter_map(|(name, value)| {
            Some(pb::AccessLogLabel {
                name: name.clone(),
                format: value.as_str()?.to_string(),
            })
        })
        .collect()
}

impl MeshFormat {
    fn json(labels: Vec<pb::AccessLogLabel>) -> Self {
        Self {
            labels,
            ..Self::default()
        }
    }

    fn text(text: &str) -> Self {
        Self {
            text: text.to_string(),
            ..Self::default()
        }
    }

    pub fn is_empty(&self) -> bool {
        self.text.is_empty() && self.labels.is_empty() && self.path.is_empty()
    }

    /// Sets the format where no Telemetry provider chose one.
    pub fn fill(&self, telemetry: &mut pb::Telemetry) {
        if telemetry.access_log_text_format.is_empty() && telemetry.access_log_labels.is_empty() {
            telemetry.access_log_text_format = self.text.clone();
            telemetry.access_log_labels = self.labels.clone();
        }
        if telemetry.access_log_path.is_empty() {
            telemetry.access_log_path = self.path.clone();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mesh(yaml: &str) -> MeshConfig {
        weft_api::mesh::parse(yaml).expect("valid").config
    }

    #[test]
    fn text_and_json_formats_reach_the_pushed_telemetry() {
        let text = MeshFormat::from(&mesh("accessLogFormat: '%RESPONSE_CODE% %DURATION%'"));
        let mut pushed = pb::Telemetry::default();
        text.fill(&mut pushed);
        assert_eq!(pushed.access_log_text_format, "%RESPONSE_CODE% %DURATION%");
        assert!(pushed.access_log_labels.is_empty());

        let json = MeshFormat::from(&mesh(
            "accessLogEncoding: JSON\naccessLogFormat: '{\"code\": \"%RESPONSE_CODE%\"}'",
        ));
        let mut pushed = pb::Telemetry::default();
        json.fill(&mut pushed);
        assert_eq!(pushed.access_log_text_format, "");
        assert_eq!(
            pushed.access_log_labels,
            vec![pb::AccessLogLabel {
                name: "code".into(),
                format: "%RESPONSE_CODE%".into()
            }]
        );
        assert!(MeshFormat::from(&mesh("{}")).is_empty());
    }

    #[test]
    fn the_first_default_file_provider_brings_its_path_and_format() {
        let chosen = MeshFormat::from(&mesh(
            "accessLogFormat: '%DURATION%'
extensionProviders:
- name: json
  envoyFileAccessLog: {path: /var/log/x.log, logFormat: {labels: {code: '%RESPONSE_CODE%'}}}
- name: plain
  envoyFileAccessLog: {}
defaultProviders: {accessLogging: [json, plain]}
",
        ));
        let mut wanted = MeshFormat::json(vec![pb::AccessLogLabel {
            name: "code".into(),
            format: "%RESPONSE_CODE%".into(),
        }]);
        wanted.path = "/var/log/x.log".into();
        assert_eq!(chosen, wanted);
        let plain = MeshFormat::from(&mesh(
            "accessLogFormat: '%DURATION%'
extensionProviders:
- name: plain
  envoyFileAccessLog: {}
defaultProviders: {accessLogging: [plain]}
",
        ));
        assert_eq!(
            (plain.text.as_str(), plain.path.as_str()),
            ("", "/dev/stdout")
        );
        let unselected = MeshFormat::from(&mesh(
            "accessLogFormat: '%DURATION%'
extensionProviders:
- name: text
  envoyFileAccessLog: {logFormat: {text: '%RESPONSE_CODE%'}}
",
        ));
        assert_eq!(unselected, MeshFormat::text("%DURATION%"));
    }
}
