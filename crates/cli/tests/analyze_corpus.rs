//! `weft analyze` against Istio's own analyzer test inputs: for every row
//! of the corpus MANIFEST's section 3a whose analyzer Weft implements,
//! that analyzer alone over the listed file must yield exactly the
//! expected (code, resource) messages, as Istio's `analyzers_test.go`
//! requires. The expectations are parsed from MANIFEST.md at test time;
//! the corpus is read in place, never copied.
//!
//! Implemented (see `weft analyze --list-analyzers`):
//! schema.ValidationAnalyzer (IST0106), gateway.ConflictingGatewayAnalyzer
//! (IST0145), destinationrule.CaCertificateAnalyzer (IST0128, IST0129),
//! serviceentry.ProtocolAddressesAnalyzer (IST0134),
//! virtualservice.DestinationRuleAnalyzer (IST0101),
//! virtualservice.GatewayAnalyzer (IST0101, IST0132, IST0165),
//! virtualservice.ConflictingMeshGatewayHostsAnalyzer (IST0109),
//! authz.AuthorizationPoliciesAnalyzer (IST0127, IST0101),
//! sidecar.SelectorAnalyzer (IST0101, IST0110, IST0111, IST0167),
//! gateway.IngressGatewayPortAnalyzer (IST0101, IST0162),
//! virtualservice.DestinationHostAnalyzer (IST0101, IST0112, IST0140),
//! destinationrule.PodNotSelectedAnalyzer (IST0173, IST0174),
//! serviceentry.ConflictingServiceEntryProtocolAnalyzer (IST0177),
//! deprecation.FieldAnalyzer (IST0002),
//! virtualservice.JWTClaimRouteAnalyzer (IST0149), virtualservice.MatchesAnalyzer
//! (IST0130, IST0131; Istio's VirtualService validation, see [`ALIASES`]).
//! Rows for those analyzers that are skipped, and why: [`SKIPPED`].

use std::path::Path;
use std::process::Command;

use serde_json::Value;
use weft_api::analyze::{ANALYZERS, Input, analyze};

const WEFT: &str = env!("CARGO_BIN_EXE_weft");

/// Rows of an implemented analyzer that Weft does not check, with why.
const SKIPPED: &[(&str, &str)] = &[
    (
        "meshConfigFile=",
        "the case runs under a MeshConfig (DNS auto-allocation); Weft has no mesh config file",
    ),
    (
        "gateway-no-port.yaml",
        "relies on Istio's built-in ingress gateway Pod and Service (AddDefaultResources), which Weft does not invent",
    ),
    (
        "gateway-correct-port.yaml",
        "relies on Istio's built-in ingress gateway Pod and Service (AddDefaultResources), which Weft does not invent",
    ),
    (
        "gateway-no-workload.yaml",
        "relies on Istio's built-in ingress gateway Pod (AddDefaultResources); without any workload in the input Weft does not judge selectors",
    ),
    (
        "virtualservice_kubernetes_gateways.yaml",
        "binds to a Kubernetes Gateway API object; Weft has no Gateway API support",
    ),
];

/// Istio analyzers whose messages Weft reports from another analyzer:
/// (Istio's name, Weft's, why).
const ALIASES: &[(&str, &str, &str)] = &[(
    "schemaValidation.CollectionValidationAnalyzer(collections.VirtualService)",
    "virtualservice.MatchesAnalyzer",
    "Istio reports unreachable rules and ineffective matches while validating VirtualServices; \
     Weft's schema analyzer is weft-api's validation, so they have an analyzer of their own",
)];

/// One analyzer case from the MANIFEST.
#[derive(Debug)]
struct Case {
    file: String,
    test: String,
    analyzer: String,
    options: String,
    /// `(code, resource)`, repeated as often as expected.
    expected: Vec<(String, String)>,
}

#[test]
fn analyzers_match_istio_expectations_on_the_corpus() {
    let Some(root) = weft_testkit::corpus::root_or_skip("analyze_corpus") else {
        return;
    };
    let manifest = std::fs::read_to_string(root.join("MANIFEST.md")).expect("MANIFEST.md");
    let cases = parse_section_3a(&manifest);
    assert!(
        cases.len() > 50,
        "parsed only {} cases from MANIFEST 3a",
        cases.len()
    );
    let (mut checked, mut skipped, mut failures) = (0, Vec::new(), Vec::new());
    let mut per_analyzer: std::collections::BTreeMap<&str, usize> =
        std::collections::BTreeMap::new();
    for case in &cases {
        let analyzer = ALIASES
            .iter()
            .find(|(istio, _, _)| *istio == case.analyzer)
            .map_or(case.analyzer.as_str(), |(_, weft, _)| weft);
        if !ANALYZERS.iter().any(|a| a.name == analyzer) {
            continue;
        }
        let where_ = format!("{} {}", case.file, case.options);
        if let Some((_, why)) = SKIPPED.iter().find(|(mark, _)| where_.contains(mark)) {
            skipped.push(format!("{} ({}): {why}", case.test, case.file));
            continue;
        }
        let mut input = Input::default();
        let path = root.join(&case.file);
        load(&path, &mut input);
        // A case over several files lists, per file, the messages on the
        // objects that file defines.
        if let Some(other) = together_with(&case.options) {
            load(&path.with_file_name(other), &mut input);
        }
        let origin = path.display().to_string();
        let messages: Vec<_> = analyze(&input, &[analyzer])
            .expect("analyze")
            .into_iter()
            .filter(|m| m.origin == origin)
            .collect();
        let mut got: Vec<(String, String)> = messages
            .iter()
            .map(|m| (m.code.to_string(), m.resource.clone()))
            .collect();
        got.sort();
        let mut expected = case.expected.clone();
        expected.sort();
        checked += 1;
        *per_analyzer.entry(analyzer).or_default() += 1;
        if got != expected {
            let lines: Vec<String> = messages.iter().map(ToString::to_string).collect();
            failures.push(format!(
                "{} [{}] {}:\n  expected {expected:?}\n  got      {got:?}\n  {}",
                case.test,
                analyzer,
                case.file,
                lines.join("\n  ")
            ));
        }
    }
    for line in &skipped {
        eprintln!("skipped: {line}");
    }
    eprintln!(
        "{checked} corpus analyzer cases checked, {} skipped",
        skipped.len()
    );
    eprintln!("cases per analyzer: {per_analyzer:?}");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // A misspelt analyzer name would skip its rows silently. Weft's own
    // analyzers have no Istio case (tests/apply_warnings.rs and weft-api's
    // analyze tests cover them).
    for analyzer in ANALYZERS.iter().filter(|a| {
        !matches!(
            a.name,
            "schema.ValidationAnalyzer"
                | "weft.NotImplementedAnalyzer"
                | "weft.GatewayServerAnalyzer"
                | "weft.CustomProvidersAnalyzer"
        )
    }) {
        assert!(
            per_analyzer.contains_key(analyzer.name),
            "no corpus case checked {}",
            analyzer.name
        );
    }
    assert!(checked >= 25, "only {checked} cases checked");
}

/// istioctl analyze's own file cases (MANIFEST 3f), through the binary.
#[test]
fn istioctl_file_cases_pass_and_fail_as_istioctl_does() {
    let Some(root) = weft_testkit::corpus::root_or_skip("analyze_corpus_3f") else {
        return;
    };
    let dir = root.join("istio/istioctl/pkg/analyze/testdata/analyze-file");
    let run = |args: &[&str]| {
        let output = Command::new(WEFT)
            .arg("analyze")
            .args(args)
            .output()
            .expect("weft");
        let text = String::from_utf8_lossy(&output.stdout).to_string();
        (output.status.code(), text)
    };
    let public = dir.join("public-gateway.yaml");
    let public = public.to_str().expect("utf-8 path");
    let (code, text) = run(&["-A", "-f", public, "--failure-threshold", "error"]);
    assert_eq!(code, Some(0), "{text}");
    let specific = dir.join("specific-analyzer.yaml");
    let specific = specific.to_str().expect("utf-8 path");
    let (code, text) = run(&["-A", "-f", specific]);
    assert_eq!(code, Some(1), "all analyzers must fail it: {text}");
    assert!(text.contains("[IST0106]"), "{text}");
    let (code, text) = run(&[
        "-A",
        "-f",
        specific,
        "--analyzer",
        "schema.ValidationAnalyzer",
    ]);
    assert_eq!(code, Some(1), "{text}");
    let (code, text) = run(&[
        "-A",
        "-f",
        specific,
        "--analyzer",
        "gateway.ConflictingGatewayAnalyzer",
    ]);
    assert_eq!(code, Some(0), "{text}");
}

/// `(loaded together with other.yaml)` → `other.yaml`.
fn together_with(options: &str) -> Option<&str> {
    let rest = options.split("loaded together with ").nth(1)?;
    rest.split([')', ' ', ','])
        .next()
        .filter(|name| !name.is_empty())
}

/// Every document of `path`, namespaces left as written (Istio's test
/// names resources without one as `Kind name`).
fn load(path: &Path, input: &mut Input) {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let documents: Vec<Value> =
        serde_saphyr::from_multiple(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    for (index, document) in documents.into_iter().enumerate() {
        input.add_document(document, &path.display().to_string(), index + 1, "");
    }
}

/// The cases of MANIFEST section 3a. Cells are separated by ` | `; an
/// escaped `\|` inside a cell separates two tests run on one file.
fn parse_section_3a(manifest: &str) -> Vec<Case> {
    let section = manifest
        .split("\n## ")
        .find(|s| s.starts_with("3a."))
        .expect("MANIFEST has a section 3a");
    let mut cases = Vec::new();
    for line in section.lines().filter(|l| l.starts_with("| `")) {
        let line = line.replace("\\|", "\u{1}");
        let cells: Vec<&str> = line.split(" | ").collect();
        let (Some(path), Some(expected)) = (cells.first(), cells.get(3)) else {
            continue;
        };
        let file = path.trim_start_matches("| ").trim_matches('`').to_string();
        for test in expected.split('\u{1}').map(str::trim) {
            if let Some(case) = parse_test(&file, test) {
                cases.push(case);
            }
        }
    }
    cases
}

/// `test "NAME" [ANALYZER] (OPTIONS): CODE Name (Level) → Kind ns/name, ...; ...`
fn parse_test(file: &str, text: &str) -> Option<Case> {
    let rest = text.strip_prefix("test \"")?;
    let (test, rest) = rest.split_once("\" [")?;
    let (analyzer, rest) = rest.split_once(']')?;
    let (options, outcome) = rest.split_once(": ")?;
    let mut expected = Vec::new();
    if !outcome.starts_with("no messages expected") {
        for group in outcome.split("; ") {
            let (head, resources) = group.split_once(" → ")?;
            let code = head.split_whitespace().next()?.to_string();
            for resource in resources.split(", ") {
                let (resource, times) = match resource.rsplit_once(" ×") {
                    Some((resource, n)) => (resource, n.trim().parse().ok()?),
                    None => (resource, 1),
                };
                for _ in 0..times {
                    expected.push((code.clone(), resource.trim().to_string()));
                }
            }
        }
    }
    Some(Case {
        file: format!(
            "istio/pkg/config/analysis/analyzers/testdata/{}",
            file.rsplit('/').next()?
        ),
        test: test.to_string(),
        analyzer: analyzer.to_string(),
        options: options.trim().to_string(),
        expected,
    })
}
