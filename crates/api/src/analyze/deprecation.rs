//! `deprecation.FieldAnalyzer`: fields Istio deprecated, with what
//! replaces them.

use serde_json::Value;

use super::{DEPRECATED, Input, Message};

/// IST0002: `fault.delay.percent` (use `percentage`), `mirrorPercent`
/// (use `mirrorPercentage`), Sidecar `outboundTrafficPolicy.egressProxy`.
pub fn fields(input: &Input, out: &mut Vec<Message>) {
    for vs in input.istio("VirtualService") {
        let rules = vs
            .spec
            .get("http")
            .and_then(Value::as_array)
            .into_iter()
            .flatten();
        for (index, rule) in rules.enumerate() {
            if rule.pointer("/fault/delay/percent").is_some() {
                out.push(vs.message(
                    DEPRECATED,
                    format!(
                        "Deprecated field spec.http[{index}].fault.delay.percent: use percentage"
                    ),
                ));
            }
            if rule.get("mirrorPercent").is_some() {
                out.push(vs.message(
                    DEPRECATED,
                    format!(
                        "Deprecated field spec.http[{index}].mirrorPercent: use mirrorPercentage"
                    ),
                ));
            }
        }
    }
    for sidecar in input.istio("Sidecar") {
        if sidecar
            .spec
            .pointer("/outboundTrafficPolicy/egressProxy")
            .is_some()
        {
            out.push(sidecar.message(
                DEPRECATED,
                "Deprecated field spec.outboundTrafficPolicy.egressProxy".to_string(),
            ));
        }
    }
}
