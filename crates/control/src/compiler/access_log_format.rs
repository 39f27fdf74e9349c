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
            Ok(Value::Object(fields)) if json => Self {
                text: String::new(),
                labels: labels(&fields),
            },
            _ => Self {
                text: format.to_string(),
                labels: Vec::new(),
            },
        }
    }
}

/// The `logFormat` of the first `envoyFileAccessLog` provider that
/// `defaultProviders.accessLogging` names and that has one: its lines are
/// the ones Istio writes where no Telemetry says otherwise. (Its `path` is
/// not applied: the warning says so.)
fn default_provider_format(mesh: &MeshConfig) -> Option<MeshFormat> {
    let defaults = mesh.default_providers.as_ref()?;
    defaults.access_logging.iter().find_map(|name| {
        let provider = mesh.extension_providers.iter().find(|p| &p.name == name)?;
        let format = provider
            .envoy_file_access_log
            .as_ref()?
            .log_format
            .as_ref()?;
        if let Some(Value::Object(fields)) = &format.labels {
            return Some(MeshFormat::json(labels(fields)));
        }
        let text = format.text.as_deref().filter(|t| !t.is_empty())?;
        Some(MeshFormat::text(text))
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
            text: String::new(),
            labels,
        }
    }

    fn text(text: &str) -> Self {
        Self {
            text: text.to_string(),
            labels: Vec::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.text.is_empty() && self.labels.is_empty()
    }

    /// Sets the format where no Telemetry provider chose one.
    pub fn fill(&self, telemetry: &mut pb::Telemetry) {
        if telemetry.access_log_text_format.is_empty() && telemetry.access_log_labels.is_empty() {
            telemetry.access_log_text_format = self.text.clone();
            telemetry.access_log_labels = self.labels.clone();
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
    fn a_default_file_provider_brings_its_log_format() {
        let chosen = MeshFormat::from(&mesh(
            "accessLogFormat: '%DURATION%'
extensionProviders:
- name: plain
  envoyFileAccessLog: {path: /dev/stdout}
- name: json
  envoyFileAccessLog: {path: /dev/stdout, logFormat: {labels: {code: '%RESPONSE_CODE%'}}}
defaultProviders: {accessLogging: [plain, json]}
",
        ));
        assert_eq!(
            chosen,
            MeshFormat::json(vec![pb::AccessLogLabel {
                name: "code".into(),
                format: "%RESPONSE_CODE%".into()
            }])
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
