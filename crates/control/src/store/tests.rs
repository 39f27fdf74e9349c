use super::*;

const REVIEWS_V1: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v1}
"#;

const REVIEWS_V2: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v2}
"#;

const RULE: &str = r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: shop}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
"#;

fn key(kind: &str, namespace: &str, name: &str) -> ResourceKey {
    ResourceKey::new(kind, namespace, name)
}

#[test]
fn apply_reports_created_configured_unchanged_with_versions() {
    let store = Store::in_memory();
    let applied = store.apply_text(REVIEWS_V1, "a.yaml").expect("apply");
    assert_eq!(applied[0].change, Change::Created);
    assert_eq!(applied[0].key, key("VirtualService", "default", "reviews"));
    assert_eq!(store.revision(), 1);

    let again = store.apply_text(REVIEWS_V1, "a.yaml").expect("apply");
    assert_eq!(
        (again[0].change, again[0].resource_version),
        (Change::Unchanged, 1)
    );
    assert_eq!(store.revision(), 1, "an identical apply is not a change");

    let changed = store.apply_text(REVIEWS_V2, "a.yaml").expect("apply");
    assert_eq!(
        (changed[0].change, changed[0].resource_version),
        (Change::Configured, 2)
    );
}

#[test]
fn an_invalid_object_applies_nothing_of_its_request() {
    let store = Store::in_memory();
    let bad = format!(
        "{RULE}---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: bad}}\nspec:\n  hosts: [x]\n  http:\n  - route:\n    - destination: {{host: x}}\n      weight: 500\n"
    );
    let err = store.apply_text(&bad, "bad.yaml").expect_err("invalid");
    let text = err.to_string();
    assert!(text.contains("nothing was applied"), "{text}");
    assert!(
        text.contains("bad.yaml: VirtualService default/bad: spec.http[0].route[0].weight"),
        "{text}"
    );
    assert!(
        store.list(None, None).is_empty(),
        "the valid DestinationRule must not be applied either"
    );
    assert_eq!(store.revision(), 0);
}

#[test]
fn get_list_delete_and_subscribers_see_each_change() {
    let store = Store::in_memory();
    let mut changes = store.subscribe();
    store
        .apply_text(&format!("{REVIEWS_V1}---{RULE}"), "both.yaml")
        .expect("apply");
    assert!(changes.has_changed().unwrap_or(false));
    assert_eq!(*changes.borrow_and_update(), 2);

    assert_eq!(store.list(Some("DestinationRule"), None).len(), 1);
    assert_eq!(store.list(None, Some("shop")).len(), 1);
    assert!(
        store
            .get(&key("DestinationRule", "shop", "reviews"))
            .is_some()
    );

    let deleted = store
        .delete(&key("DestinationRule", "shop", "reviews"))
        .expect("delete");
    assert_eq!(deleted.map(|d| d.change), Some(Change::Deleted));
    assert_eq!(*changes.borrow_and_update(), 3);
    assert!(
        store
            .delete(&key("DestinationRule", "shop", "reviews"))
            .expect("delete")
            .is_none()
    );
}

#[test]
fn a_reopened_store_keeps_resources_and_versions() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = Store::open(dir.path()).expect("open");
        store.apply_text(REVIEWS_V1, "a.yaml").expect("apply");
        store.apply_text(REVIEWS_V2, "a.yaml").expect("apply");
        store.apply_text(RULE, "r.yaml").expect("apply");
        store
            .delete(&key("DestinationRule", "shop", "reviews"))
            .expect("delete");
    }
    let store = Store::open(dir.path()).expect("reopen");
    let stored = store.list(None, None);
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].resource_version, 2);
    assert_eq!(store.revision(), 2);
    let unchanged = store.apply_text(REVIEWS_V2, "a.yaml").expect("apply");
    assert_eq!(
        unchanged[0].change,
        Change::Unchanged,
        "the reloaded object equals what was applied"
    );
}

#[test]
fn corrupt_and_empty_files_are_quarantined_and_the_rest_loads() {
    let dir = tempfile::tempdir().expect("tempdir");
    Store::open(dir.path())
        .expect("open")
        .apply_text(RULE, "r.yaml")
        .expect("apply");
    let vs = dir.path().join("VirtualService/default");
    std::fs::create_dir_all(&vs).expect("mkdir");
    std::fs::write(vs.join("broken.json"), "{ not json").expect("write");
    std::fs::write(vs.join("empty.json"), "").expect("write");
    // Files of other components in the state directory are not the store's.
    std::fs::create_dir_all(dir.path().join("ca")).expect("mkdir");
    std::fs::write(dir.path().join("ca/tokens.json"), "{}").expect("write");

    let store = Store::open(dir.path()).expect("starts without them");
    assert_eq!(store.list(None, None).len(), 1, "the good file loads");
    assert!(!vs.join("broken.json").exists() && !vs.join("empty.json").exists());
    let quarantined = quarantined(dir.path());
    assert_eq!(quarantined.len(), 2, "{quarantined:?}");
    assert!(quarantined[0].ends_with("VirtualService_default_broken.json"));
    assert!(quarantined[1].ends_with("VirtualService_default_empty.json"));
    assert!(dir.path().join("ca/tokens.json").exists());
}

/// The names of the files set aside in `state`'s quarantine, sorted.
fn quarantined(state: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(state.join("quarantine"))
        .expect("quarantine directory")
        .map(|entry| {
            entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

#[test]
fn a_batch_is_journaled_and_a_left_journal_is_replayed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let many: String = (0..20)
        .map(|i| RULE.replace("name: reviews,", &format!("name: r{i},")))
        .collect::<Vec<_>>()
        .join("---\n");
    {
        let store = Store::open(dir.path()).expect("open");
        store.apply_text(&many, "many.yaml").expect("apply");
    }
    assert!(
        !dir.path().join("store-journal.json").exists(),
        "the journal goes once the batch is durable"
    );
    // A crash after the journal, before the files: the files are missing
    // and the journal is there. Opening finishes the batch.
    let journal = serde_json::json!({
        "writes": (0..3).map(|i| serde_json::json!({
            "path": format!("DestinationRule/shop/late{i}.json"),
            "content": {
                "apiVersion": "networking.istio.io/v1",
                "kind": "DestinationRule",
                "metadata": {"name": format!("late{i}"), "namespace": "shop", "resourceVersion": format!("{}", 100 + i)},
                "spec": {"host": "reviews"}
            }
        })).collect::<Vec<_>>(),
        "removes": ["DestinationRule/shop/r0.json"]
    });
    std::fs::write(
        dir.path().join("store-journal.json"),
        serde_json::to_vec(&journal).expect("json"),
    )
    .expect("write journal");
    let store = Store::open(dir.path()).expect("reopen");
    let names: Vec<String> = store
        .list(Some("DestinationRule"), None)
        .iter()
        .map(|stored| stored.resource.metadata().name.clone())
        .collect();
    assert_eq!(names.len(), 22, "{names:?}");
    assert!(names.contains(&"late2".to_string()) && !names.contains(&"r0".to_string()));
    assert_eq!(store.revision(), 102);
    assert!(!dir.path().join("store-journal.json").exists());

    // A journal whose paths leave the store is not obeyed.
    std::fs::write(
        dir.path().join("store-journal.json"),
        r#"{"writes": [], "removes": ["../outside"]}"#,
    )
    .expect("write journal");
    let err = Store::open(dir.path()).err().expect("refused").to_string();
    assert!(err.contains("store-journal.json"), "{err}");
}

#[test]
fn names_that_could_escape_the_store_directory_are_rejected() {
    let store = Store::in_memory();
    let sneaky = REVIEWS_V1.replace("{name: reviews}", "{name: ../../etc}");
    let err = store
        .apply_text(&sneaky, "s.yaml")
        .expect_err("invalid name")
        .to_string();
    assert!(err.contains("metadata.name: must be lowercase"), "{err}");
}
