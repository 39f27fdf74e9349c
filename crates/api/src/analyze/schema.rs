//! IST0106: what weftd's own validation (weft-api) rejects.

use super::{Input, Message, SCHEMA_VALIDATION_ERROR};

/// Every Istio object Weft stores is decoded and validated as weftd would
/// on apply; each problem becomes one message on that object.
pub fn analyze(input: &Input, out: &mut Vec<Message>) {
    for object in &input.objects {
        let ours = object.group.ends_with("istio.io") || object.group == "weft.io";
        if crate::Resource::group_of(&object.kind).is_none() || !ours {
            continue;
        }
        let decoded =
            crate::decode::decode_document(object.raw.clone(), &object.origin, object.document);
        for problem in decoded.problems {
            out.push(object.message(
                SCHEMA_VALIDATION_ERROR,
                format!("Schema validation error: {}", problem.error),
            ));
        }
    }
}
