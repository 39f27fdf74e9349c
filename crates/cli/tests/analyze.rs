//! `weft analyze -f` offline, on fixtures of our own: the istioctl-shaped
//! line, the exit status, namespace scoping and output formats.

use std::path::Path;

use weft_testkit::cli::{Run, run};

const WEFT: &str = env!("CARGO_BIN_EXE_weft");

const REVIEWS: &str = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: reviews
spec:
  hosts: [reviews.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9080, name: http, protocol: HTTP}]
  workloadSelector: {labels: {app: reviews}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v1}
      weight: 90
    - destination: {host: reviews, subset: v9}
      weight: 10
"#;

const CLEAN: &str = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: ratings
  namespace: shop
spec:
  hosts: [ratings.shop.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9080, name: http, protocol: HTTP}]
  workloadSelector: {labels: {app: ratings}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: ratings
  namespace: shop
spec:
  host: ratings
  subsets:
  - {name: v1, labels: {version: v1}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: ratings
  namespace: shop
spec:
  hosts: [ratings]
  http:
  - route:
    - destination: {host: ratings, subset: v1}
"#;

fn analyze(args: &[&str]) -> Run {
    run(Path::new(WEFT), &[&["analyze"], args].concat())
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    path.to_str().expect("utf-8 path").to_string()
}

#[test]
fn a_missing_subset_fails_with_istioctls_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(dir.path(), "reviews.yaml", REVIEWS);
    let run = analyze(&["-f", &file]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert_eq!(
        run.stdout,
        "Error [IST0101] (VirtualService default/reviews) Referenced host+subset in destinationrule not found: \"reviews+v9\"\n"
    );
}

#[test]
fn clean_config_passes_and_other_namespaces_need_all_namespaces() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clean = write(dir.path(), "ratings.yaml", CLEAN);
    let run = analyze(&["-f", &clean, "-n", "shop"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert_eq!(
        run.stdout,
        "\u{2714} No validation issues found when analyzing namespace: shop.\n"
    );
    // A broken file placed in `default`, analyzed for `shop` only: nothing
    // shown, as istioctl scopes to one namespace; -A shows it again.
    let placed = REVIEWS.replace(
        "\n  name: reviews\n",
        "\n  name: reviews\n  namespace: default\n",
    );
    let broken = write(dir.path(), "reviews.yaml", &placed);
    let scoped = analyze(&["-f", &broken, "-n", "shop"]);
    assert_eq!(scoped.code, 0, "{}", scoped.stdout);
    let dir_run = analyze(&["-A", "-f", dir.path().to_str().expect("utf-8")]);
    assert_eq!(dir_run.code, 1, "{}", dir_run.stdout);
    assert!(dir_run.stdout.contains("[IST0101]"), "{}", dir_run.stdout);
}

#[test]
fn json_output_and_thresholds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tls = write(
        dir.path(),
        "db.yaml",
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: db}\nspec:\n  host: db.example.com\n  trafficPolicy:\n    tls: {mode: SIMPLE}\n",
    );
    // A warning alone passes the default threshold (error) ...
    let run = analyze(&["-f", &tls, "-o", "json"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let messages: serde_json::Value = serde_json::from_str(&run.stdout).expect("JSON");
    assert_eq!(messages[0]["code"], "IST0128", "{messages}");
    assert_eq!(messages[0]["level"], "Warning", "{messages}");
    assert_eq!(messages[0]["resource"], "DestinationRule default/db");
    // ... and fails a warning threshold.
    let strict = analyze(&["-f", &tls, "--failure-threshold", "warning"]);
    assert_eq!(strict.code, 1, "{}", strict.stdout);
}

#[test]
fn bad_input_names_the_file_and_unknown_analyzers_are_listed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broken = write(dir.path(), "broken.yaml", "kind: [unclosed");
    let run = analyze(&["-f", &broken]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("broken.yaml"), "{}", run.stderr);
    let clean = write(dir.path(), "ok.yaml", CLEAN);
    let unknown = analyze(&["-f", &clean, "--analyzer", "nope"]);
    assert_eq!(unknown.code, 1);
    assert!(
        unknown.stderr.contains("virtualservice.GatewayAnalyzer"),
        "{}",
        unknown.stderr
    );
    let listed = analyze(&["--list-analyzers"]);
    assert_eq!(listed.code, 0);
    assert!(
        listed
            .stdout
            .contains("destinationrule.CaCertificateAnalyzer\tIST0128,IST0129"),
        "{}",
        listed.stdout
    );
}

/// The Bookinfo example as `weft up` runs it: the mesh file's services and
/// workloads stand in for a cluster, so the example is clean, and a subset
/// no workload carries or a route to a missing service is caught.
#[test]
fn the_bookinfo_example_is_clean_and_breaking_it_is_caught() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/bookinfo");
    let example = example.to_str().expect("utf-8 path");
    let clean = analyze(&["-A", "-f", example]);
    assert_eq!(clean.code, 0, "{}{}", clean.stdout, clean.stderr);

    let dir = tempfile::tempdir().expect("tempdir");
    let read = |name: &str| std::fs::read_to_string(Path::new(example).join(name)).expect("read");
    write(dir.path(), "mesh.yaml", &read("mesh.yaml"));
    let rules = read("destination-rules.yaml").replace("version: v3}", "version: v9}");
    write(dir.path(), "destination-rules.yaml", &rules);
    let gateway = read("gateway.yaml").replace("host: productpage\n", "host: productpagex\n");
    write(dir.path(), "gateway.yaml", &gateway);
    let broken = analyze(&["-A", "-f", dir.path().to_str().expect("utf-8")]);
    assert_eq!(broken.code, 1, "{}", broken.stdout);
    assert!(
        broken
            .stdout
            .contains("Error [IST0173] (DestinationRule default/reviews) The subset \"v3\""),
        "{}",
        broken.stdout
    );
    assert!(
        broken.stdout.contains("Error [IST0101] (VirtualService default/bookinfo) Referenced host not found: \"productpagex\""),
        "{}",
        broken.stdout
    );
}
