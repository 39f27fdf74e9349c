//! MeshConfig `accessLogFormat` as pushed to proxies: Envoy format strings
//! (weft-api has checked every operator), either one text line or, with
//! `accessLogEncoding: JSON`, a JSON object of field → format. It is the
//! format of Istio's built-in `envoy` provider; the others bring their own
//! (`access_log_providers.rs`).

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
        self.text.is_empty() && self.labels.is_empty()
    }

    pub fn text_format(&self) -> &str {
        &self.text
    }

    pub fn labels(&self) -> &[pb::AccessLogLabel] {
        &self.labels
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
}
