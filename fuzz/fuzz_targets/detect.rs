//! Protocol detection on a connection's first bytes: never an error or a
//! panic on a stream that simply ends, and the bytes it hands on for replay
//! are exactly the ones it read.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use weft_proxy::listener::detect::detect;

fuzz_target!(|data: &[u8]| {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a current-thread runtime");
    runtime.block_on(async {
        let mut reader: &[u8] = data;
        let (_, prefix) = detect(&mut reader, Duration::from_millis(50))
            .await
            .expect("detection on a finite stream");
        assert!(data.starts_with(&prefix), "replay bytes differ from the input");
    });
});
