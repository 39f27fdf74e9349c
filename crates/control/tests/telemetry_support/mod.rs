//! What the Telemetry tests share: reading a warning out of weftd's apply
//! reply.

use weft_testkit::client::Reply;

/// Asserts that the accepted apply `applied` warns about `field` of
/// `resource` (`Telemetry ns/name`) with a message containing `says`.
pub fn assert_apply_warns(applied: &Reply, resource: &str, field: &str, says: &str) {
    let reply: weft_api::wire::ApplyReply =
        serde_json::from_str(&applied.text()).expect("apply reply");
    assert!(
        reply
            .warnings
            .iter()
            .any(|w| w.resource == resource && w.field == field && w.message.contains(says)),
        "no warning on {resource} {field} saying {says:?}: {:?}",
        reply.warnings
    );
}
