//! `weft proxy-config ADMIN secret` against a running mTLS proxy: a real
//! weftd signs the proxy's workload certificate over TLS (bootstrap token),
//! and `weft` shows its chain, SPIFFE id, validity and the trusted root as
//! read from the proxy's `/certs`.

use std::path::Path;
use std::time::{Duration, Instant};

use weft_testkit::cli::{Run, run, sibling};
use weft_testkit::proxy::{ProxyOptions, ProxyProcess};
use weft_testkit::weftd::WeftdProcess;

const WEFT: &str = env!("CARGO_BIN_EXE_weft");
const SPIFFE: &str = "spiffe://cluster.local/ns/default/sa/sleep";

fn weft(args: &[&str]) -> Run {
    run(Path::new(WEFT), args)
}

/// The serial of the first certificate in a PEM text, as weft prints it.
fn serial_of(pem: &str) -> String {
    let pem = x509_parser::pem::Pem::iter_from_buffer(pem.as_bytes())
        .next()
        .expect("a PEM block")
        .expect("PEM");
    let cert = pem.parse_x509().expect("a certificate");
    cert.raw_serial_as_string().replace(':', "")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_config_secret_shows_the_workload_chain_identity_validity_and_root() {
    let state = tempfile::tempdir().expect("tempdir");
    let weftd = WeftdProcess::start_in(&sibling(WEFT, "weftd"), state.path())
        .await
        .expect("weftd");
    let token = weftd
        .mint_token_for_account("default", "sleep")
        .await
        .expect("token");
    let token_file = state.path().join("sleep.token");
    std::fs::write(&token_file, token).expect("write token");
    let proxy_binary = sibling(WEFT, "weft-proxy");
    let options = ProxyOptions::secure(
        &proxy_binary,
        weftd.xds,
        &weftd.root_cert,
        &token_file,
        &["--node-id", "sleep", "--service-account", "sleep"],
    );
    let proxy = ProxyProcess::spawn_ready(options, Duration::from_secs(20))
        .await
        .expect("proxy ready");
    // The first certificate may come just after the proxy is ready.
    let deadline = Instant::now() + Duration::from_secs(20);
    let certs = loop {
        let reply = proxy.admin_get("/certs").await.expect("/certs");
        let certs: serde_json::Value = serde_json::from_str(&reply.text()).expect("JSON");
        if !certs["certificate"].is_null() {
            break certs;
        }
        assert!(
            Instant::now() < deadline,
            "no certificate: {}",
            proxy.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let chain = certs["certificate"]["certChain"]
        .as_str()
        .expect("chain")
        .to_string();
    let expires = certs["certificate"]["expirationTime"]
        .as_u64()
        .expect("expiry");
    let root_pem = std::fs::read_to_string(&weftd.root_cert).expect("root");

    let admin = proxy.admin.to_string();
    let blocking = tokio::task::spawn_blocking(move || {
        let shown = weft(&["proxy-config", &admin, "secret"]);
        assert_eq!(shown.code, 0, "{}", shown.stderr);
        let lines: Vec<&str> = shown.stdout.lines().collect();
        assert!(
            lines[0].starts_with("RESOURCE NAME") && lines[0].contains("IDENTITY"),
            "{}",
            shown.stdout
        );
        let leaf: Vec<&str> = lines
            .iter()
            .find(|l| l.starts_with("default "))
            .unwrap_or_else(|| panic!("no workload certificate row:\n{}", shown.stdout))
            .split_whitespace()
            .collect();
        assert_eq!(
            leaf[..5],
            ["default", "Cert", "Chain", "ACTIVE", "true"],
            "{}",
            shown.stdout
        );
        assert_eq!(leaf[5], serial_of(&chain));
        assert_eq!(leaf.last().copied(), Some(SPIFFE), "{}", shown.stdout);
        let root: Vec<&str> = lines
            .iter()
            .find(|l| l.starts_with("ROOTCA "))
            .unwrap_or_else(|| panic!("no root row:\n{}", shown.stdout))
            .split_whitespace()
            .collect();
        assert_eq!(root[..4], ["ROOTCA", "CA", "ACTIVE", "true"]);
        // The root the proxy trusts is the one weftd wrote for distribution.
        assert_eq!(root[4], serial_of(&root_pem));

        let json = weft(&["proxy-config", &admin, "secrets", "-o", "json"]);
        assert_eq!(json.code, 0, "{}", json.stderr);
        let parsed: serde_json::Value = serde_json::from_str(&json.stdout).expect("JSON");
        let default = &parsed["secrets"][0];
        assert_eq!(default["identity"], SPIFFE);
        let not_after =
            humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_secs(expires))
                .to_string();
        assert_eq!(default["notAfter"], not_after, "{parsed}");
        assert!(
            default["issuer"].as_str().is_some_and(|i| !i.is_empty()),
            "{parsed}"
        );
    });
    blocking.await.expect("weft runs");
}
