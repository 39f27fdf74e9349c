//! The proxy's config file (and weftd's pushes, decoded into the same
//! model): whatever text it is given, parsing and compiling answer with a
//! config or an error, never a panic, so a bad file leaves the last good
//! config running.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weft_proxy::config::{Snapshot, parse_config};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(config) = parse_config(&text, "fuzz.yaml") {
        let _ = Snapshot::compile(config, "fuzz.yaml");
    }
});
