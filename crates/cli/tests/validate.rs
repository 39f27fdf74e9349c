//! `weft validate` as a user runs it: real files, real process, exit codes.

use std::path::Path;
use std::process::Command;

const WEFT: &str = env!("CARGO_BIN_EXE_weft");

fn validate(args: &[&Path]) -> (i32, String) {
    let output = Command::new(WEFT)
        .arg("validate")
        .arg("-f")
        .args(args)
        .output()
        .expect("run weft");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    (output.status.code().unwrap_or(-1), text)
}

const GOOD: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: shop
  namespace: retail
spec:
  hosts: [shop]
  http:
  - route:
    - destination: {host: shop, subset: v1}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: shop
"#;

const BAD: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v1}
      weight: 50
    - destination: {host: reviews, subset: v2}
      weight: 150
---
apiVersion: networking.istio.io/v2
kind: VirtualService
metadata:
  name: future
spec: {}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
spec: {}
"#;

#[test]
fn valid_files_pass_and_other_kinds_are_skipped() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("good.yaml"), GOOD).expect("write");
    let (code, out) = validate(&[dir.path()]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("1 valid resources in 1 files, 1 skipped"),
        "{out}"
    );
}

#[test]
fn every_problem_is_named_by_file_resource_and_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, BAD).expect("write");
    let (code, out) = validate(&[&bad]);
    assert_eq!(code, 1, "{out}");
    let file = bad.display().to_string();
    assert!(
        out.contains(&format!(
            "{file}: VirtualService default/reviews: spec.http[0].route[1].weight: must be 0..100"
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "{file}: VirtualService default/future: apiVersion: \"networking.istio.io/v2\" is not served"
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "{file}: PeerAuthentication default/: metadata.name: Required value"
        )),
        "{out}"
    );
}

#[test]
fn a_file_that_is_not_yaml_is_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broken = dir.path().join("broken.json");
    std::fs::write(&broken, "{\"kind\": ").expect("write");
    let (code, out) = validate(&[&broken]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("{}: not valid YAML or JSON", broken.display())),
        "{out}"
    );
}

/// A directory's `meshconfig.yaml` is weftd's MeshConfig, not a resource
/// file: `weft validate -f DIR` checks it as weftd will (errors with their
/// field paths fail the run, fields Weft does not apply are warnings).
#[test]
fn the_directorys_mesh_config_is_checked_as_weftd_checks_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("shop.yaml"), GOOD).expect("write");
    let file = dir.path().join("meshconfig.yaml");
    std::fs::write(&file, "outboundTrafficPolicy: {mode: REGISTRY_ONLY}\n").expect("write");
    let (code, text) = validate(&[dir.path()]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("1 valid resources in 1 files"), "{text}");
    std::fs::write(&file, "outboundTrafficPolicy: {mode: OPEN}\n").expect("write");
    let (code, text) = validate(&[dir.path()]);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains(&format!(
            "{}: MeshConfig outboundTrafficPolicy.mode: unknown variant `OPEN`",
            file.display()
        )),
        "{text}"
    );
}

#[test]
fn a_rate_limit_is_validated_like_the_istio_kinds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = r#"
apiVersion: weft.io/v1alpha1
kind: RateLimit
metadata: {name: edge, namespace: istio-system}
spec:
  selector: {matchLabels: {istio: ingressgateway}}
  service: {host: ratelimit.infra.svc.cluster.local, port: 8081, domain: edge}
  limits:
  - match: {routes: [checkout]}
    local: {maxTokens: 10, tokensPerFill: 10, fillInterval: 1s}
    descriptors: [{entries: [{sourceAddress: {}}]}]
"#;
    let path = dir.path().join("rl.yaml");
    std::fs::write(&path, good).expect("write");
    let (code, out) = validate(&[&path]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("1 valid resources in 1 files"), "{out}");
    let bad = good
        .replace("fillInterval: 1s", "fillInterval: 10ms")
        .replace("{sourceAddress: {}}", "{sourceAddress: {}, method: {}}");
    std::fs::write(&path, bad).expect("write");
    let (code, out) = validate(&[&path]);
    assert_eq!(code, 1, "{out}");
    let file = path.display().to_string();
    for field in [
        "spec.limits[0].local.fillInterval: must be a valid duration greater than 50ms",
        "spec.limits[0].descriptors[0].entries[0]: exactly one of",
    ] {
        assert!(
            out.contains(&format!("{file}: RateLimit istio-system/edge: {field}")),
            "{field} not in {out}"
        );
    }
}
