//! Randomized ("fuzz") tests of the parsers that read what a client or a
//! config author sends, on stable Rust (cargo-fuzz needs nightly and
//! libFuzzer; these run everywhere, as part of `cargo test`):
//!
//! - protocol detection and the ClientHello parser: random bytes and
//!   mutations of real ClientHellos never panic, and a mutated hello is
//!   never read past its end;
//! - path normalization: never panics, always yields an absolute path with
//!   no `.`/`..` segment and no backslash, is idempotent, and keeps a valid
//!   request target valid;
//! - config decoding: random mutations of a real config never panic the
//!   parser or the compiler.
//!
//! Each target runs `WEFT_FUZZ_ITERATIONS` inputs (default 3,000: a second
//! or two in CI); set it to millions for a long run. `WEFT_FUZZ_SEED` replays
//! a run; a failure prints the seed and the input.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use weft_proxy::config::{PathNormalization, Snapshot, parse_config};
use weft_proxy::http::normalize::normalize;
use weft_proxy::listener::detect::{Hello, detect, parse_client_hello, parse_sni};

fn iterations() -> usize {
    std::env::var("WEFT_FUZZ_ITERATIONS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(3_000)
}

/// The run's generator, and its seed for the failure message.
fn rng(target: &str) -> (StdRng, u64) {
    let seed = std::env::var("WEFT_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("{target}: seed {seed} (WEFT_FUZZ_SEED={seed} replays it)");
    (StdRng::seed_from_u64(seed), seed)
}

/// Runs `check` on `input`, turning a panic into a failure that names the
/// seed and the input.
fn run<T: std::fmt::Debug>(target: &str, seed: u64, input: &T, check: impl FnOnce(&T)) {
    if catch_unwind(AssertUnwindSafe(|| check(input))).is_err() {
        panic!("{target}: failed on {input:?} (WEFT_FUZZ_SEED={seed})");
    }
}

/// `base` with a few random edits: flipped bytes, a cut, an insertion, a
/// duplicated slice.
fn mutate(rng: &mut StdRng, base: &[u8]) -> Vec<u8> {
    let mut out = base.to_vec();
    for _ in 0..rng.random_range(1..=4) {
        match rng.random_range(0..5) {
            0 if !out.is_empty() => {
                let at = rng.random_range(0..out.len());
                out[at] ^= 1 << rng.random_range(0..8);
            }
            1 if !out.is_empty() => {
                let at = rng.random_range(0..out.len());
                out[at] = rng.random();
            }
            2 => {
                let keep = rng.random_range(0..=out.len());
                out.truncate(keep);
            }
            3 => {
                let at = rng.random_range(0..=out.len());
                let mut extra = vec![0u8; rng.random_range(1..16)];
                rng.fill_bytes(&mut extra);
                out.splice(at..at, extra);
            }
            _ if !out.is_empty() => {
                let from = rng.random_range(0..out.len());
                let to = rng.random_range(from..=out.len().min(from + 32));
                let copy = out[from..to].to_vec();
                let at = rng.random_range(0..=out.len());
                out.splice(at..at, copy);
            }
            _ => {}
        }
    }
    out
}

/// A real ClientHello (rustls), offering `istio-h2` and naming `host`.
fn client_hello(host: &str) -> Vec<u8> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    config.alpn_protocols = vec![b"istio-h2".to_vec(), b"h2".to_vec()];
    let name = rustls::pki_types::ServerName::try_from(host.to_string()).expect("name");
    let mut client = rustls::ClientConnection::new(Arc::new(config), name).expect("client");
    let mut hello = Vec::new();
    client.write_tls(&mut hello).expect("client hello");
    hello
}

#[test]
fn client_hello_parser_survives_random_and_mutated_input() {
    let (mut rng, seed) = rng("client_hello");
    let real = client_hello("reviews.example.com");
    // The seed input parses, so the mutations start from something real.
    match parse_client_hello(&real) {
        Hello::Complete(info) => assert!(info.alpn.iter().any(|p| p == b"istio-h2")),
        _ => panic!("a real ClientHello did not parse"),
    }
    for i in 0..iterations() {
        let input = if i % 4 == 0 {
            let mut bytes = vec![0u8; rng.random_range(0..600)];
            rng.fill_bytes(&mut bytes);
            // Often a TLS record header, so the parser goes deeper.
            if bytes.len() > 2 && rng.random_bool(0.7) {
                bytes[0] = 0x16;
                bytes[1] = 0x03;
            }
            bytes
        } else {
            mutate(&mut rng, &real)
        };
        run("client_hello", seed, &input, |input| {
            let _ = parse_client_hello(input);
            let _ = parse_sni(input);
        });
    }
}

#[tokio::test]
async fn protocol_detection_survives_random_first_bytes() {
    let (mut rng, seed) = rng("detect");
    let seeds: [&[u8]; 4] = [
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        b"POST /x HTTP/1.0\r\n",
        &[0x16, 0x03, 0x01, 0x00, 0x05],
    ];
    for i in 0..iterations() {
        let input = if i % 3 == 0 {
            let mut bytes = vec![0u8; rng.random_range(0..64)];
            rng.fill_bytes(&mut bytes);
            bytes
        } else {
            mutate(&mut rng, seeds[i % seeds.len()])
        };
        let mut reader: &[u8] = &input;
        // A reader that ends: detection decides on what it has.
        let detected = detect(&mut reader, Duration::from_millis(50)).await;
        let Ok((_, prefix)) = detected else {
            panic!("detect: error on {input:?} (WEFT_FUZZ_SEED={seed})");
        };
        assert!(
            input.starts_with(&prefix),
            "detect: replay bytes differ from the input {input:?} (WEFT_FUZZ_SEED={seed})"
        );
    }
}

const MODES: [PathNormalization; 4] = [
    PathNormalization::Base,
    PathNormalization::MergeSlashes,
    PathNormalization::DecodeAndMergeSlashes,
    PathNormalization::None,
];

#[test]
fn path_normalization_properties_hold_for_random_paths() {
    let (mut rng, seed) = rng("normalize");
    // The characters tricks are made of, and some ordinary ones.
    // Bytes above 0x7f become Latin-1 characters: raw UTF-8 that HTTP
    // parsers let through in a target.
    const ALPHABET: &[u8] = b"/./.%2e%2E%2f%2F%5c%5C\\%61%7e%zz%%aAzZ09-_~:@!$&'()*+,;=\xe9\xff";
    for _ in 0..iterations() {
        let len = rng.random_range(0..48);
        let mut path = String::from("/");
        for _ in 0..len {
            path.push(char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]));
        }
        run("normalize", seed, &path, |path| {
            for mode in MODES {
                let once = normalize(path, mode).into_owned();
                if mode == PathNormalization::None {
                    assert_eq!(&once, path);
                    continue;
                }
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
                if path.parse::<http::uri::PathAndQuery>().is_ok() {
                    assert!(
                        once.parse::<http::uri::PathAndQuery>().is_ok(),
                        "{mode:?}: {once} is not a valid target"
                    );
                }
            }
        });
    }
}

const CONFIG: &str = r#"
version: fuzz
pathNormalization: MERGE_SLASHES
numTrustedProxies: 1
maxConnectionsPerListener: 10
listeners:
- {name: web, address: "127.0.0.1:18080", kind: EXPLICIT, service: web}
- {name: gw, address: "127.0.0.1:18081", kind: GATEWAY}
services:
- name: web
  hosts: [web, "*.example.com"]
  ports:
  - port: 80
    protocol: HTTP
    routes:
    - name: admin
      match: {pathPrefix: /admin, headers: [{name: x-user, value: {exact: root}}]}
      directResponse: {status: 403, body: "no"}
    - {name: rest, timeout: 1s, clusters: [{cluster: web, weight: 100}], mirrors: [{cluster: web}]}
clusters:
- name: web
  connectTimeout: 0.5s
  endpoints: [{address: "127.0.0.1:9000", mesh: true, labels: {app: web}}]
  loadBalancer: {consistentHash: {httpHeaderName: x-user}}
inboundPorts:
- port: 9080
  protocol: HTTP
  security:
    policies: [{name: a/b, action: DENY, rules: [{to: [{conditions: [{attribute: PATH, values: ["/admin"]}]}]}]}]
"#;

#[test]
fn config_decoding_survives_mutated_configs() {
    let (mut rng, seed) = rng("config");
    let parsed = parse_config(CONFIG, "fuzz.yaml").expect("the seed config parses");
    Snapshot::compile(parsed, "fuzz.yaml").expect("the seed config compiles");
    for _ in 0..iterations() {
        let bytes = mutate(&mut rng, CONFIG.as_bytes());
        let text = String::from_utf8_lossy(&bytes).into_owned();
        run("config", seed, &text, |text| {
            if let Ok(config) = parse_config(text, "fuzz.yaml") {
                let _ = Snapshot::compile(config, "fuzz.yaml");
            }
        });
    }
}
