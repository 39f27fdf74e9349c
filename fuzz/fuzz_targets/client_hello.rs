//! The ClientHello parser reads the first bytes of every TLS connection a
//! sidecar accepts, before any authentication: it must never panic, whatever
//! it is sent, and what it reports must come from inside the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weft_proxy::listener::detect::{Hello, parse_client_hello, parse_sni};

fuzz_target!(|data: &[u8]| {
    if let Hello::Complete(info) = parse_client_hello(data) {
        // A name or protocol the parser reports is bytes the client sent.
        for alpn in &info.alpn {
            assert!(alpn.len() <= data.len());
        }
        if let Some(sni) = &info.sni {
            assert!(sni.len() <= data.len());
        }
    }
    let _ = parse_sni(data);
});
