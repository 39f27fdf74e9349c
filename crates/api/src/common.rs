//! Types shared by several kinds.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::field::FieldErrors;

/// `selector` / `workloadSelector`: workloads by label.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadSelector {
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
}

impl WorkloadSelector {
    /// Istio rejects wildcards in selector labels.
    pub fn validate(&self, path: &str, errors: &mut FieldErrors) {
        for (key, value) in &self.match_labels {
            if key.is_empty() {
                errors.push(format!("{path}.matchLabels"), "label key must not be empty");
            }
            if key.contains('*') || value.contains('*') {
                errors.push(
                    format!("{path}.matchLabels.{key}"),
                    "wildcard is not supported in selector",
                );
            }
        }
    }
}
