//! Kind names as istioctl and kubectl users type them.

/// Every kind Weft stores (weft-api's list, so a new kind is never missed).
pub use weft_api::resource::KINDS;

/// Istio's short names (`kubectl api-resources`), beside each kind.
const SHORT_NAMES: &[(&str, &str)] = &[
    ("vs", "VirtualService"),
    ("dr", "DestinationRule"),
    ("gw", "Gateway"),
    ("se", "ServiceEntry"),
    ("we", "WorkloadEntry"),
    ("wg", "WorkloadGroup"),
    ("pa", "PeerAuthentication"),
    ("ra", "RequestAuthentication"),
    ("ap", "AuthorizationPolicy"),
];

/// The stored name of a kind from any form a user types: `VirtualService`,
/// `virtualservice`, `virtualservices`, `vs`, ... (case-insensitive), and
/// the fully qualified `virtualservices.networking.istio.io` too.
pub fn canonical_kind(name: &str) -> Option<&'static str> {
    let lower = name.to_ascii_lowercase();
    let lower = lower
        .strip_suffix(".networking.istio.io")
        .or_else(|| lower.strip_suffix(".security.istio.io"))
        .or_else(|| lower.strip_suffix(".telemetry.istio.io"))
        .or_else(|| lower.strip_suffix(".weft.io"))
        .unwrap_or(&lower);
    if let Some((_, kind)) = SHORT_NAMES.iter().find(|(short, _)| *short == lower) {
        return Some(kind);
    }
    let singular = lower.strip_suffix('s').unwrap_or(lower);
    KINDS.iter().copied().find(|kind| {
        let kind = kind.to_ascii_lowercase();
        kind == lower || kind == singular
    })
}

/// For error messages: what a user may type instead.
pub fn known_kinds() -> String {
    KINDS
        .iter()
        .map(|kind| kind.to_ascii_lowercase())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_istio_forms() {
        for form in [
            "VirtualService",
            "virtualservice",
            "virtualservices",
            "VS",
            "virtualservices.networking.istio.io",
        ] {
            assert_eq!(canonical_kind(form), Some("VirtualService"), "{form}");
        }
        assert_eq!(canonical_kind("sidecars"), Some("Sidecar"));
        assert_eq!(canonical_kind("ap"), Some("AuthorizationPolicy"));
        assert_eq!(
            canonical_kind("peerauthentications"),
            Some("PeerAuthentication")
        );
        assert_eq!(canonical_kind("gw"), Some("Gateway"));
    }

    #[test]
    fn rejects_others() {
        for form in ["", "s", "deployment", "envoyfilter", "virtualservicess"] {
            assert_eq!(canonical_kind(form), None, "{form}");
        }
    }

    #[test]
    fn every_kind_is_one_weft_api_knows() {
        for kind in KINDS {
            assert!(weft_api::Resource::group_of(kind).is_some(), "{kind}");
        }
    }
}
