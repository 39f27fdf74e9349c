//! Compatibility with Istio's own configuration: every Istio object in the
//! samples and validation data sets of `../shared/corpus` is accepted unless
//! it carries `_err`, and every object carrying `_err` (the key stripped) is
//! rejected. Objects of kinds Weft does not use are skipped, as `weft
//! validate` skips them.
//!
//! The corpus is read in place, never copied. Without it the test says it
//! skipped; under `CI=true` a missing corpus is a failure.

use std::path::{Path, PathBuf};

use serde_json::Value;
use weft_api::decode::decode_document;
use weft_api::resource::Resource;

const SETS: &[&str] = &[
    "istio/samples",
    "istio/pkg/test/datasets/validation",
    "istio/pkg/config/validation/testdata",
];

#[derive(Default)]
struct Tally {
    accepted: usize,
    rejected: usize,
    skipped: usize,
    failures: Vec<String>,
}

#[test]
fn istio_corpus_valid_objects_pass_and_err_objects_fail() {
    let Some(root) =
        weft_testkit::corpus::root_or_skip("istio_corpus_valid_objects_pass_and_err_objects_fail")
    else {
        return;
    };
    let files: Vec<PathBuf> = SETS
        .iter()
        .flat_map(|set| weft_api::config_files(&root.join(set)).expect("corpus directory readable"))
        .collect();
    assert!(
        !files.is_empty(),
        "no corpus files under {}",
        root.display()
    );

    let mut tally = Tally::default();
    for file in &files {
        check_file(file, &root, &mut tally);
    }
    eprintln!(
        "istio corpus: {} files, {} objects accepted, {} expected-invalid rejected, {} of other kinds skipped",
        files.len(),
        tally.accepted,
        tally.rejected,
        tally.skipped
    );
    assert!(
        tally.failures.is_empty(),
        "{} corpus objects judged wrongly:\n{}",
        tally.failures.len(),
        tally.failures.join("\n")
    );
    assert!(
        tally.accepted > 50 && tally.rejected > 20,
        "too few objects checked"
    );
}

fn check_file(file: &Path, root: &Path, tally: &mut Tally) {
    let name = file
        .strip_prefix(root)
        .unwrap_or(file)
        .display()
        .to_string();
    let Ok(text) = std::fs::read_to_string(file) else {
        tally.failures.push(format!("{name}: unreadable"));
        return;
    };
    let documents: Vec<Value> = match serde_saphyr::from_multiple(&text) {
        Ok(documents) => documents,
        Err(err) => {
            tally
                .failures
                .push(format!("{name}: not parsed as YAML: {err}"));
            return;
        }
    };
    for (index, mut document) in documents.into_iter().enumerate() {
        let expected_error = document.as_object_mut().and_then(|map| map.remove("_err"));
        let kind = document
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if Resource::group_of(&kind).is_none() {
            tally.skipped += 1;
            continue;
        }
        let decoded = decode_document(document, &name, index + 1);
        match (&expected_error, decoded.problems.is_empty()) {
            (None, true) => tally.accepted += 1,
            (Some(_), false) => tally.rejected += 1,
            (None, false) => tally.failures.extend(
                decoded
                    .problems
                    .iter()
                    .map(|p| format!("wrongly rejected: {p}")),
            ),
            (Some(why), true) => tally.failures.push(format!(
                "wrongly accepted: {name}: document {} ({kind}) should fail with {why}",
                index + 1
            )),
        }
        tally.skipped += decoded.notices.len();
    }
}
