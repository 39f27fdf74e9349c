//! Istio YAML as `weft apply`, weftd's API and the admission webhook decode
//! it: any text yields resources, problems and warnings, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let decoded = weft_api::decode_str(&text, "fuzz.yaml");
    // Every problem names where it is, as users read it.
    for problem in &decoded.problems {
        assert_eq!(problem.file, "fuzz.yaml");
    }
});
