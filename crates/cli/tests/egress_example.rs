//! `examples/egress-gateway` as a user meets it: `weft validate` and
//! `weft analyze` read the directory (the mesh file standing in for the
//! cluster), and `weft apply` through a real weftd accepts the task's YAML
//! with nothing refused or left unhonoured (ISTIO_MUTUAL servers are
//! served). The flow itself runs end to end in
//! `crates/control/tests/egress_gateway.rs`.

use std::path::{Path, PathBuf};

use weft_testkit::cli::{Run, run};
use weft_testkit::weftd::WeftdProcess;

const WEFT: &str = env!("CARGO_BIN_EXE_weft");

fn example(file: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/egress-gateway")
        .join(file)
        .display()
        .to_string()
}

fn weft(args: &[&str]) -> Run {
    run(Path::new(WEFT), args)
}

#[test]
fn the_example_validates_and_analyzes_clean_of_errors() {
    let valid = weft(&["validate", "-f", &example("egress-gateway.yaml")]);
    assert_eq!(valid.code, 0, "{}{}", valid.stdout, valid.stderr);
    assert!(
        valid.stdout.contains("5 valid resources"),
        "{}",
        valid.stdout
    );

    let analyzed = weft(&["analyze", "-A", "-f", &example("")]);
    assert_eq!(analyzed.code, 0, "{}{}", analyzed.stdout, analyzed.stderr);
    // Only IST0140 (a rule taken from istioctl's analyzer, harmless here:
    // the subset route matches `gateways: [mesh]` only): no error, nothing
    // Weft does not serve.
    for line in analyzed.stdout.lines().filter(|l| !l.trim().is_empty()) {
        assert!(line.starts_with("Warning [IST0140]"), "{line}");
    }
    assert!(
        !analyzed.stdout.contains("not implemented") && !analyzed.stderr.contains("ISTIO_MUTUAL"),
        "{}{}",
        analyzed.stdout,
        analyzed.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weft_apply_accepts_the_example_without_warnings() {
    let state = tempfile::tempdir().expect("tempdir");
    let weftd = WeftdProcess::start_in(&weft_testkit::cli::sibling(WEFT, "weftd"), state.path())
        .await
        .expect("weftd");
    let api = weftd.api.to_string();
    let token_file = weftd.token_file().display().to_string();
    let applied = tokio::task::spawn_blocking(move || {
        weft(&[
            "--weftd",
            &api,
            "--token-file",
            &token_file,
            "apply",
            "-f",
            &example("egress-gateway.yaml"),
        ])
    })
    .await
    .expect("weft apply");
    assert_eq!(applied.code, 0, "{}{}", applied.stdout, applied.stderr);
    assert!(
        applied
            .stdout
            .contains("gateway.networking.istio.io/istio-egressgateway created"),
        "{}",
        applied.stdout
    );
    assert!(
        !applied.stderr.contains("Warning"),
        "apply warned: {}",
        applied.stderr
    );
}
