//! Nothing Weft does not honour passes in silence: `weft apply` against a
//! real weftd accepts every field of weft-api's not-implemented table and
//! prints a warning naming the file, the resource and the field path for
//! each; routes carrying the field Istio removed, `websocketUpgrade` (as
//! Istio's `rule-websocket-route.yaml` does, which is not in the shared
//! corpus: the file here is Weft's own), are accepted with a warning; `weft analyze` reports
//! the same fields.

use std::path::{Path, PathBuf};

use weft_api::unimplemented::{TABLE, Treatment};
use weft_testkit::cli::{Run, run};
use weft_testkit::weftd::WeftdProcess;

const WEFT: &str = env!("CARGO_BIN_EXE_weft");

fn data(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
        .display()
        .to_string()
}

fn weft(args: &[&str]) -> Run {
    run(Path::new(WEFT), args)
}

/// `weft` told to talk to the weftd API at `api` with the admin token in
/// `token_file`.
fn weft_at(api: &str, token_file: &str, args: &[&str]) -> Run {
    let mut all = vec!["--weftd", api, "--token-file", token_file];
    all.extend_from_slice(args);
    weft(&all)
}

/// `Warning: FILE: RESOURCE: FIELD: message` lines of stderr.
fn warnings(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| l.starts_with("Warning: "))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_prints_a_warning_for_every_unhonoured_field_and_accepts_websocket_upgrade() {
    let state = tempfile::tempdir().expect("tempdir");
    let weftd = WeftdProcess::start_in(&weft_testkit::cli::sibling(WEFT, "weftd"), state.path())
        .await
        .expect("weftd");
    let api = weftd.api.to_string();
    let token_file = weftd.token_file().display().to_string();
    let blocking = tokio::task::spawn_blocking(move || {
        let file = data("unhonoured.yaml");
        let applied = weft_at(&api, &token_file, &["apply", "-f", &file]);
        assert_eq!(applied.code, 0, "{}{}", applied.stdout, applied.stderr);
        assert!(
            applied
                .stdout
                .contains("destinationrule.networking.istio.io/ratings created"),
            "{}",
            applied.stdout
        );
        let said = warnings(&applied.stderr);
        // Every row of the table that concerns today's API is said, with
        // the file, the resource and the field path.
        for row in TABLE.iter().filter(|r| r.treatment == Treatment::Ignored) {
            let leaf = row.pattern.rsplit('.').next().unwrap_or(row.pattern);
            let leaf = leaf.trim_end_matches("[]");
            assert!(
                said.iter().any(|line| {
                    line.starts_with(&format!("Warning: {file}: {} shop/", row.kind))
                        && (line.contains(&format!("{leaf}: {}", row.message))
                            || line.contains(&format!("{leaf}[0]: {}", row.message)))
                }),
                "no warning for {} {}:\n{}",
                row.kind,
                row.pattern,
                applied.stderr
            );
        }
        assert!(
            said.contains(&format!(
                "Warning: {file}: DestinationRule shop/ratings: spec.trafficPolicy.tunnel: not implemented (HTTP CONNECT/POST tunnelling to an upstream proxy); traffic goes to the destination directly"
            ).as_str()),
            "{}",
            applied.stderr
        );
        // Applying the same again: unchanged, and still said.
        let again = weft_at(&api, &token_file, &["apply", "-f", &file]);
        assert_eq!(again.code, 0, "{}", again.stderr);
        assert_eq!(warnings(&again.stderr).len(), said.len());

        // Routes that still carry the removed websocketUpgrade.
        let websocket = data("removed-websocket-upgrade.yaml");
        let applied = weft_at(&api, &token_file, &["apply", "-f", &websocket]);
        assert_eq!(applied.code, 0, "{}{}", applied.stdout, applied.stderr);
        assert!(
            applied
                .stdout
                .contains("virtualservice.networking.istio.io/websocket-route created"),
            "{}",
            applied.stdout
        );
        assert_eq!(
            warnings(&applied.stderr),
            [
                format!(
                    "Warning: {websocket}: VirtualService testns/websocket-route: spec.http[0].websocketUpgrade: removed from Istio's API (WebSocket upgrades need no setting); ignored"
                ),
                format!(
                    "Warning: {websocket}: VirtualService testns/websocket-route2: spec.http[0].websocketUpgrade: removed from Istio's API (WebSocket upgrades need no setting); ignored"
                ),
            ]
        );
        // weftd stored the routes without the removed field.
        let stored = weft_at(
            &api,
            &token_file,
            &[
                "get",
                "virtualservice",
                "websocket-route",
                "-n",
                "testns",
                "-o",
                "yaml",
            ],
        );
        assert_eq!(stored.code, 0, "{}", stored.stderr);
        assert!(
            stored.stdout.contains("chat.testns.example"),
            "{}",
            stored.stdout
        );
        assert!(
            !stored.stdout.contains("websocketUpgrade"),
            "{}",
            stored.stdout
        );
    });
    blocking.await.expect("weft runs");
}

#[test]
fn analyze_names_every_unhonoured_field() {
    let file = data("unhonoured.yaml");
    let analyzed = weft(&["analyze", "-A", "-f", &file]);
    let lines: Vec<&str> = analyzed
        .stdout
        .lines()
        .filter(|l| l.contains("[WEFT0001]"))
        .collect();
    assert!(
        lines.contains(&"Warning [WEFT0001] (DestinationRule shop/ratings) Field not implemented by Weft spec.trafficPolicy.tunnel: not implemented (HTTP CONNECT/POST tunnelling to an upstream proxy); traffic goes to the destination directly"),
        "{}",
        analyzed.stdout
    );
    let ignored = TABLE
        .iter()
        .filter(|r| r.treatment == Treatment::Ignored)
        .count();
    // One object sets each row once.
    assert_eq!(lines.len(), ignored, "{}", analyzed.stdout);

    let websocket = weft(&[
        "analyze",
        "-A",
        "-f",
        &data("removed-websocket-upgrade.yaml"),
    ]);
    assert!(
        websocket.stdout.contains("Warning [IST0002] (VirtualService testns/websocket-route) Removed field spec.http[0].websocketUpgrade"),
        "{}{}",
        websocket.stdout,
        websocket.stderr
    );
}
