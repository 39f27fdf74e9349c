//! Path normalization runs before routing and authorization on every
//! request: for any path, every mode yields an absolute path with no dot
//! segment and no backslash, is idempotent, and keeps a valid request target
//! valid (so what authorization saw is what the app is sent).
#![no_main]

use libfuzzer_sys::fuzz_target;
use weft_proxy::config::PathNormalization;
use weft_proxy::http::normalize::normalize;

const MODES: [PathNormalization; 3] = [
    PathNormalization::Base,
    PathNormalization::MergeSlashes,
    PathNormalization::DecodeAndMergeSlashes,
];

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = format!("/{text}");
    for mode in MODES {
        let once = normalize(&path, mode).into_owned();
        assert!(once.starts_with('/'), "{mode:?}: {once}");
        assert!(!once.contains('\\'), "{mode:?}: {once}");
        assert!(
            once.split('/').all(|s| s != "." && s != ".."),
            "{mode:?}: dot segment left in {once}"
        );
        if mode != PathNormalization::Base {
            assert!(!once.contains("//"), "{mode:?}: {once}");
        }
        assert_eq!(normalize(&once, mode), once, "{mode:?}: not idempotent");
        // Only a path as a parsed request target hands it over (no `?` or
        // `#`: the query and fragment never reach normalization).
        if path
            .parse::<http::uri::PathAndQuery>()
            .is_ok_and(|target| target.path() == path && target.query().is_none())
        {
            assert!(
                once.parse::<http::uri::PathAndQuery>().is_ok(),
                "{mode:?}: {once} is not a valid target"
            );
        }
    }
});
