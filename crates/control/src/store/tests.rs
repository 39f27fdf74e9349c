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
fn a_corrupt_stored_file_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("VirtualService/default");
    std::fs::create_dir_all(&path).expect("mkdir");
    std::fs::write(path.join("broken.json"), "{ not json").expect("write");
    let err = Store::open(dir.path()).err().expect("corrupt").to_string();
    assert!(err.contains("broken.json"), "{err}");
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
