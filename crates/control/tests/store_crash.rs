//! The store loses nothing and half-applies nothing: a real weftd killed
//! with SIGKILL while a 1,000-object apply is in flight comes back with all
//! of it or none of it; unreadable resource files do not stop start-up and
//! are set aside.

use std::path::Path;

use http::{Method, StatusCode};
use serde_json::{Value, json};
use weft_testkit::weftd::WeftdProcess;

const WEFTD: &str = env!("CARGO_BIN_EXE_weftd");
const OBJECTS: usize = 1000;

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

/// `OBJECTS` DestinationRules named `<batch>-<n>`, as one JSON List.
fn batch(name: &str) -> String {
    let items: Vec<Value> = (0..OBJECTS)
        .map(|n| {
            json!({
                "apiVersion": "networking.istio.io/v1",
                "kind": "DestinationRule",
                "metadata": {"name": format!("{name}-{n}"), "namespace": "crash"},
                "spec": {"host": format!("svc-{n}.crash.svc.cluster.local"),
                         "subsets": [{"name": "v1", "labels": {"version": "v1"}}]}
            })
        })
        .collect();
    json!({"apiVersion": "v1", "kind": "List", "items": items}).to_string()
}

/// How many objects of each batch weftd holds.
async fn counts(weftd: &WeftdProcess, batches: &[String]) -> Vec<usize> {
    let reply = weftd
        .call(
            Method::GET,
            "/v1/resources?kind=DestinationRule&namespace=crash",
            None,
        )
        .await
        .expect("list");
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let listed: Value = serde_json::from_slice(&reply.body).expect("JSON");
    let names: Vec<String> = listed["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|item| item["metadata"]["name"].as_str().map(str::to_string))
        .collect();
    batches
        .iter()
        .map(|batch| {
            names
                .iter()
                .filter(|name| name.starts_with(&format!("{batch}-")))
                .count()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_during_a_large_apply_keeps_all_of_it_or_none() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let (grpc, api) = (weft_testkit::free_addr(), weft_testkit::free_addr());
    let mut weftd = WeftdProcess::start(Path::new(WEFTD), &state, grpc, api)
        .await
        .expect("weftd");
    // How long an uninterrupted apply takes here, to aim the kills inside it.
    let started = std::time::Instant::now();
    let reply = weftd
        .call(Method::POST, "/v1/apply", Some(batch("warmup")))
        .await
        .expect("apply");
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let full = started.elapsed();

    let mut batches = vec!["warmup".to_string()];
    let (mut all, mut none) = (0, 0);
    for (round, fraction) in [0.1, 0.3, 0.5, 0.7, 0.9, 1.2].into_iter().enumerate() {
        let name = format!("round{round}");
        batches.push(name.clone());
        let body = batch(&name);
        let (token, address) = (weftd.token.clone(), weftd.api);
        let apply = tokio::spawn(async move {
            let request = weft_testkit::client::request_with_headers(
                Method::POST,
                &address.to_string(),
                "/v1/apply",
                &[
                    ("authorization", &format!("Bearer {token}")),
                    ("content-type", "application/json"),
                ],
                weft_testkit::client::full(body),
            );
            match weft_testkit::client::Http1Client::connect(address).await {
                Ok(mut client) => client.send(request).await.map(|reply| reply.status),
                Err(err) => Err(err),
            }
        });
        tokio::time::sleep(full.mul_f64(fraction)).await;
        weftd.kill().await.expect("SIGKILL weftd");
        let answered = apply.await.expect("task");
        weftd = WeftdProcess::start(Path::new(WEFTD), &state, grpc, api)
            .await
            .expect("weftd comes back");
        let found = counts(&weftd, &batches).await;
        let this = found[round + 1];
        assert!(
            this == 0 || this == OBJECTS,
            "round {round} (kill after {:?}): {this} of {OBJECTS} objects survived",
            full.mul_f64(fraction)
        );
        if answered.is_ok_and(|status| status == StatusCode::OK) {
            assert_eq!(this, OBJECTS, "an acknowledged apply is kept whole");
        }
        if this == OBJECTS {
            all += 1;
        } else {
            none += 1;
        }
        // Earlier batches are untouched.
        for (earlier, count) in batches.iter().zip(&found).take(round + 1) {
            let expected_whole = *count == OBJECTS || *count == 0;
            assert!(expected_whole, "{earlier}: {count}");
        }
        assert_eq!(found[0], OBJECTS, "the first apply survives every kill");
    }
    eprintln!("apply of {OBJECTS} took {full:?}; after kills: {all} whole, {none} absent");
    assert!(
        !state.join("store-journal.json").exists(),
        "a replayed journal is removed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_and_corrupt_resource_files_are_quarantined_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let (grpc, api) = (weft_testkit::free_addr(), weft_testkit::free_addr());
    let weftd = WeftdProcess::start(Path::new(WEFTD), &state, grpc, api)
        .await
        .expect("weftd");
    let good = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: good-1, namespace: crash}\nspec: {host: good}\n";
    let reply = weftd.apply(good).await.expect("apply");
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    drop(weftd);

    let files = state.join("DestinationRule/crash");
    std::fs::write(files.join("empty.json"), "").expect("write");
    std::fs::write(files.join("torn.json"), "{\"apiVersion\": \"networking.is").expect("write");
    let weftd = WeftdProcess::start(Path::new(WEFTD), &state, grpc, api)
        .await
        .expect("weftd starts despite them");
    assert_eq!(counts(&weftd, &["good".into()]).await, vec![1]);
    let quarantined = quarantined(&state);
    assert_eq!(quarantined.len(), 2, "{quarantined:?}");
    assert!(quarantined[0].ends_with("DestinationRule_crash_empty.json"));
    assert!(quarantined[1].ends_with("DestinationRule_crash_torn.json"));
    assert!(!files.join("empty.json").exists() && !files.join("torn.json").exists());
    let logs = weftd.logs();
    for name in ["empty.json", "torn.json"] {
        let line = logs
            .lines()
            .find(|line| line.contains(name) && line.contains("unreadable"))
            .unwrap_or_else(|| panic!("no error naming {name}:\n{logs}"));
        assert!(line.contains("ERROR"), "{line}");
    }
    assert!(logs.contains("the file is empty"), "{logs}");
}
