//! Registrations, as real weftd and weft-proxy processes on loopback see
//! them: a node id belongs to one proxy, a proxy leaving takes only its own
//! endpoints, a lost proxy is kept for the grace period, and a weftd killed
//! under traffic comes back without any caller losing an endpoint.
//!
//! Most run on the plaintext discovery port (proxies trusted at their
//! word), where the claimed service account and address are the owner of a
//! node id. The last ones run over mutual TLS with tokens bound to a
//! WorkloadGroup: the registration comes from the group and the binding,
//! and a claim beyond them is refused (every case is unit-tested in
//! `push::admission`), and follows its group when an administrator changes
//! or deletes it while the proxy is connected.

mod registration_support;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use http::StatusCode;
use registration_support::*;
use weft_testkit::backend::HttpBackend;
use weft_testkit::free_addr;
use weft_testkit::weftd::WeftdProcess;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_stream_reusing_a_node_id_is_refused_and_the_first_keeps_serving() {
    let reviews = HttpBackend::start("reviews").await;
    let state = tempfile::tempdir().expect("tempdir");
    let weftd = weftd_applying(state.path(), &service("reviews", reviews.addr)).await;
    let real = ready_server(weftd.grpc, "reviews-1", "reviews", reviews.addr).await;
    let (caller, listeners) = ready_caller(&weftd, &["reviews"]).await;
    all_answer(&listeners).await;
    let traffic = Traffic::start(&listeners);

    // Same node id, another service account, its own inbound listener.
    let mut impostor = spawn_server(weftd.grpc, "reviews-1", "impostor", "reviews", reviews.addr);
    eventually(
        "the refusal on the board",
        Duration::from_secs(10),
        || async {
            let body = proxies_json(&weftd).await;
            let refused = body["refused"].to_string();
            if refused.contains("reviews-1") && refused.contains("FailedPrecondition") {
                Ok(())
            } else {
                Err(body.to_string())
            }
        },
    )
    .await;
    eventually(
        "the refusal in the impostor's log",
        Duration::from_secs(10),
        || {
            let logs = impostor.proxy.logs();
            async move {
                if logs.contains("node id \\\"reviews-1\\\" is registered to")
                    || logs.contains("node id \"reviews-1\" is registered to")
                {
                    Ok(())
                } else {
                    Err(logs)
                }
            }
        },
    )
    .await;
    assert!(
        impostor
            .proxy
            .admin_get("/ready")
            .await
            .is_ok_and(|r| r.status != 200),
        "the impostor got a config"
    );
    // `weft proxy-status` says who was refused and why.
    let text = weft_proxy_status(&weftd);
    assert!(text.contains("REFUSED"), "{text}");
    assert!(
        text.contains(
            "node id \"reviews-1\" is registered to plaintext proxy claiming default/reviews"
        ),
        "{text}"
    );
    assert!(
        text.contains("refused for plaintext proxy claiming default/impostor"),
        "{text}"
    );

    // The impostor goes away: the real registration stays, untouched.
    impostor.proxy.terminate().expect("SIGTERM impostor");
    impostor
        .proxy
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("impostor exits");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (ok, failures) = traffic.stop().await;
    assert_eq!(
        failures,
        0,
        "{failures} of {} requests failed",
        ok + failures
    );
    assert_eq!(
        endpoints(&caller, "reviews").await,
        [real.inbound.to_string()],
        "the caller still reaches the real proxy, never the impostor at {}",
        impostor.inbound
    );
    assert_eq!(
        listed(&weftd).await,
        [
            ("caller".to_string(), true),
            ("reviews-1".to_string(), true)
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_leaving_removes_only_its_own_registration() {
    let reviews = HttpBackend::start("reviews").await;
    let ratings = HttpBackend::start("ratings").await;
    let state = tempfile::tempdir().expect("tempdir");
    // A long grace: only the goodbye can explain a quick removal.
    let weftd = weftd_with_grace(&state.path().join("store"), "60s").await;
    apply_ok(&weftd, &reviews_and_ratings(reviews.addr, ratings.addr)).await;
    let _reviews = ready_server(weftd.grpc, "reviews-1", "reviews", reviews.addr).await;
    let mut leaving = ready_server(weftd.grpc, "ratings-1", "ratings", ratings.addr).await;
    let (caller, listeners) = ready_caller(&weftd, &["reviews", "ratings"]).await;
    all_answer(&listeners).await;

    // A clean shutdown says goodbye: gone at once, not after 60 s.
    leaving.proxy.terminate().expect("SIGTERM");
    leaving
        .proxy
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("ratings proxy exits");
    assert!(
        leaving.proxy.logs().contains("said goodbye"),
        "{}",
        leaving.proxy.logs()
    );
    endpoints_until(
        &caller,
        "ratings",
        "ratings' endpoint removed",
        Duration::from_secs(3),
        <[String]>::is_empty,
    )
    .await;
    assert_eq!(
        endpoints(&caller, "reviews").await.len(),
        1,
        "reviews kept its endpoint"
    );
    assert!(
        get(listeners[0])
            .await
            .is_ok_and(|text| text.starts_with("reviews"))
    );
    assert_eq!(
        listed(&weftd).await,
        [
            ("caller".to_string(), true),
            ("reviews-1".to_string(), true)
        ],
        "the leaver's status entry is gone with it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_proxy_is_kept_for_the_grace_period_then_forgotten() {
    let ratings = HttpBackend::start("ratings").await;
    let state = tempfile::tempdir().expect("tempdir");
    let weftd = weftd_with_grace(&state.path().join("store"), "3s").await;
    apply_ok(&weftd, &service("ratings", ratings.addr)).await;
    let lost = ready_server(weftd.grpc, "ratings-1", "ratings", ratings.addr).await;
    let (caller, _listeners) = ready_caller(&weftd, &["ratings"]).await;
    endpoints_until(
        &caller,
        "ratings",
        "the endpoint",
        Duration::from_secs(10),
        |held| held.len() == 1,
    )
    .await;

    // SIGKILL: no goodbye, the stream just breaks.
    drop(lost);
    let lost_at = Instant::now();
    listed_until(
        &weftd,
        "shown disconnected",
        Duration::from_secs(2),
        "ratings-1",
        false,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        endpoints(&caller, "ratings").await.len(),
        1,
        "kept within the grace period"
    );
    endpoints_until(
        &caller,
        "ratings",
        "removed after the grace period",
        Duration::from_secs(6),
        <[String]>::is_empty,
    )
    .await;
    assert!(
        lost_at.elapsed() >= Duration::from_secs(3),
        "removed before its grace ended"
    );
    // Its per-proxy state went with it.
    assert_eq!(listed(&weftd).await, [("caller".to_string(), true)]);
    let config = api_get(&weftd, "/v1/proxies/ratings-1/config")
        .await
        .expect("GET config");
    assert_eq!(config.status, StatusCode::NOT_FOUND, "{}", config.text());
    let config = api_get(&weftd, "/v1/proxies/caller/config")
        .await
        .expect("GET config");
    assert_eq!(config.status, StatusCode::OK, "{}", config.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weftd_killed_under_traffic_costs_no_request_and_no_endpoint() {
    // `_state` holds weftd's state directory until the test ends.
    let ReviewsAndRatings {
        reviews,
        ratings,
        state: _state,
        mut weftd,
    } = ReviewsAndRatings::start().await;
    // ratings' proxy reaches weftd through a relay that keeps it away for a
    // while after each restart: the caller, back first, must not lose it.
    let relay = Relay::start(weftd.grpc).await;
    let _servers = (
        ready_server(weftd.grpc, "reviews-1", "reviews", reviews.addr).await,
        ready_server(relay.addr, "ratings-1", "ratings", ratings.addr).await,
    );
    let (caller, listeners) = ready_caller(&weftd, &["reviews", "ratings"]).await;
    all_answer(&listeners).await;
    let saved = weftd.state_dir.join("registrations.json");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&saved)
            .expect("registrations file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "registrations are the owner's only");
    }

    let traffic = Traffic::start(&listeners);
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = watch_endpoints(caller.admin, &["reviews", "ratings"], stop.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;
    for round in 0..2 {
        relay.pause(true);
        weftd.kill().await.expect("SIGKILL weftd");
        tokio::time::sleep(Duration::from_millis(700)).await;
        let (grpc, api, state_dir) = (weftd.grpc, weftd.api, weftd.state_dir.clone());
        weftd = WeftdProcess::start(Path::new(WEFTD), &state_dir, grpc, api)
            .await
            .expect("weftd restarts from its state");
        let in_sync = |count: usize| {
            let weftd = &weftd;
            move || async move {
                let proxies = weftd.proxies().await.map_err(|e| e.to_string())?;
                if proxies.matches("\"synced\":true").count() == count {
                    Ok(())
                } else {
                    Err(proxies)
                }
            }
        };
        let what = format!("round {round}: the caller and reviews back in sync");
        eventually(&what, Duration::from_secs(15), in_sync(2)).await;
        // The caller is served while ratings' proxy is still away.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        relay.pause(false);
        let what = format!("round {round}: ratings back in sync");
        eventually(&what, Duration::from_secs(15), in_sync(3)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let fewest = watcher.await.expect("watcher");
    let (ok, failures) = traffic.stop().await;
    assert_eq!(
        failures,
        0,
        "{failures} of {} requests failed across two SIGKILLs; weftd log:\n{}",
        ok + failures,
        weftd.logs()
    );
    assert!(ok > 100, "too little traffic to mean anything: {ok}");
    assert_eq!(
        fewest,
        [1, 1],
        "the caller's endpoints shrank during a restart"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_weftd_drops_a_proxy_that_does_not_come_back_after_the_grace() {
    // `_state` holds weftd's state directory until the test ends.
    let ReviewsAndRatings {
        reviews,
        ratings,
        state: _state,
        mut weftd,
    } = ReviewsAndRatings::start().await;
    let _stays = ready_server(weftd.grpc, "reviews-1", "reviews", reviews.addr).await;
    let gone = ready_server(weftd.grpc, "ratings-1", "ratings", ratings.addr).await;
    let (caller, listeners) = ready_caller(&weftd, &["reviews", "ratings"]).await;
    all_answer(&listeners).await;

    weftd.kill().await.expect("SIGKILL weftd");
    drop(gone); // SIGKILL too: it will not come back
    let (grpc, api, state_dir) = (weftd.grpc, weftd.api, weftd.state_dir.clone());
    let weftd = WeftdProcess::start_with(
        Path::new(WEFTD),
        &state_dir,
        grpc,
        api,
        &["--registration-grace", "8s"],
    )
    .await
    .expect("weftd restarts");
    let started = Instant::now();
    // Restored: known to weftd (not connected) and still the caller's
    // endpoint once the caller is back in sync.
    assert!(
        listed(&weftd)
            .await
            .contains(&("ratings-1".to_string(), false))
    );
    listed_until(
        &weftd,
        "the caller back in sync",
        Duration::from_secs(10),
        "caller",
        true,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Well inside the 8 s grace on any machine: still an endpoint.
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "setup outlasted the grace"
    );
    assert_eq!(
        endpoints(&caller, "ratings").await.len(),
        1,
        "dropped before its grace"
    );
    endpoints_until(
        &caller,
        "ratings",
        "the absent proxy dropped",
        Duration::from_secs(14),
        <[String]>::is_empty,
    )
    .await;
    assert!(started.elapsed() >= Duration::from_secs(8));
    assert_eq!(
        endpoints(&caller, "reviews").await.len(),
        1,
        "the one that came back stays"
    );
    assert!(!listed(&weftd).await.iter().any(|(id, _)| id == "ratings-1"));
}

/// Two WorkloadGroups: reviews (`app: reviews`) and ratings
/// (`app: ratings`), each with its own service account.
const GROUPS: &str = r#"---
apiVersion: networking.istio.io/v1
kind: WorkloadGroup
metadata: {name: reviews}
spec:
  metadata: {labels: {app: reviews}}
  template: {serviceAccount: reviews, labels: {version: v1}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadGroup
metadata: {name: ratings}
spec:
  metadata: {labels: {app: ratings}}
  template: {serviceAccount: ratings}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_registers_as_its_group_and_cannot_claim_another_groups_labels() {
    let reviews = HttpBackend::start("reviews").await;
    let state = tempfile::tempdir().expect("tempdir");
    let yaml = format!("{}{GROUPS}", service("reviews", reviews.addr));
    let weftd = weftd_applying(state.path(), &yaml).await;

    // The real reviews proxy claims no labels and no workload: they come
    // from its group, and the service selects it by them.
    let token = bound_token_file(&weftd, state.path(), "default", "reviews", None).await;
    let inbound = free_addr();
    let mut real = spawn_secure(
        &weftd,
        &token,
        reviews.addr,
        Some(inbound),
        &["--node-id", "reviews-1", "--service-account", "reviews"],
    );
    real.wait_ready(Duration::from_secs(20))
        .await
        .expect("the reviews proxy is admitted");
    let (caller, listeners) = ready_caller(&weftd, &["reviews"]).await;
    all_answer(&listeners).await;
    let body = proxies_json(&weftd).await;
    let entry = body["proxies"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["id"] == "reviews-1")
        .cloned()
        .unwrap_or_default();
    assert_eq!(entry["workload"], "reviews", "the group's name: {body}");

    // A ratings token claiming reviews' labels, with its own inbound
    // listener: refused, no config, no endpoint anywhere.
    let token = bound_token_file(&weftd, state.path(), "default", "ratings", None).await;
    let evil = free_addr();
    let mut impostor = spawn_secure(
        &weftd,
        &token,
        reviews.addr,
        Some(evil),
        &[
            "--node-id",
            "impostor",
            "--service-account",
            "ratings",
            "--label",
            "app=reviews",
        ],
    );
    let reason = refusal(
        &weftd,
        "impostor",
        "PermissionDenied",
        "claims label app=reviews, but WorkloadGroup default/ratings gives app=ratings",
    )
    .await;
    assert!(
        reason.contains("spiffe://cluster.local/ns/default/sa/ratings"),
        "{reason}"
    );
    assert!(
        impostor.wait_ready(Duration::from_secs(1)).await.is_err(),
        "the impostor got a config"
    );
    assert!(
        impostor.logs().contains("claims label app=reviews"),
        "{}",
        impostor.logs()
    );
    assert_eq!(
        endpoints(&caller, "reviews").await,
        [inbound.to_string()],
        "only the real proxy is reviews' endpoint"
    );
    let text = weft_proxy_status(&weftd);
    assert!(text.contains("impostor"), "{text}");
    assert!(text.contains("claims label app=reviews"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_address_is_the_bound_address() {
    let reviews = HttpBackend::start("reviews").await;
    let state = tempfile::tempdir().expect("tempdir");
    let yaml = format!("{}{GROUPS}", service("reviews", reviews.addr));
    let weftd = weftd_applying(state.path(), &yaml).await;
    let (caller, _listeners) = ready_caller(&weftd, &["reviews"]).await;
    let token = bound_token_file(
        &weftd,
        state.path(),
        "default",
        "reviews",
        Some("127.0.0.5"),
    )
    .await;

    // Claiming the address it connects from is not enough: the credential
    // binds another.
    let mut elsewhere = spawn_secure(
        &weftd,
        &token,
        reviews.addr,
        None,
        &[
            "--node-id",
            "claims-peer",
            "--service-account",
            "reviews",
            "--address",
            "127.0.0.1",
        ],
    );
    refusal(
        &weftd,
        "claims-peer",
        "PermissionDenied",
        "claims address \"127.0.0.1\", but its certificate is bound to 127.0.0.5",
    )
    .await;
    assert!(elsewhere.wait_ready(Duration::from_secs(1)).await.is_err());
    drop(elsewhere);

    // Connecting from 127.0.0.1, registered at its bound 127.0.0.5.
    let mut bound = spawn_secure(
        &weftd,
        &token,
        reviews.addr,
        None,
        &[
            "--node-id",
            "bound",
            "--service-account",
            "reviews",
            "--address",
            "127.0.0.5",
        ],
    );
    bound
        .wait_ready(Duration::from_secs(20))
        .await
        .expect("admitted at its bound address");
    let expected = format!("127.0.0.5:{}", reviews.addr.port());
    endpoints_until(
        &caller,
        "reviews",
        "the bound address as reviews' endpoint",
        Duration::from_secs(10),
        |held| held == [expected.clone()],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_are_limited_per_proven_identity() {
    let reviews = HttpBackend::start("reviews").await;
    let state = tempfile::tempdir().expect("tempdir");
    let weftd = WeftdProcess::start_in(Path::new(WEFTD), state.path())
        .await
        .expect("weftd");
    let mut proxies = Vec::new();
    for n in 1..=5 {
        let id = format!("reviews-{n}");
        let token = group_token_file(&weftd, state.path(), "reviews", &format!("{id}.token")).await;
        let args = ["--node-id", id.as_str(), "--service-account", "reviews"];
        let mut proxy = spawn_secure(&weftd, &token, reviews.addr, None, &args);
        if n <= 4 {
            proxy
                .wait_ready(Duration::from_secs(20))
                .await
                .unwrap_or_else(|err| panic!("{id}: {err:#}"));
        }
        proxies.push(proxy);
    }
    // Same SPIFFE id, group and address: the fifth stream is one too many.
    let reason = refusal(
        &weftd,
        "reviews-5",
        "ResourceExhausted",
        "already has 4 streams open (at most 4)",
    )
    .await;
    assert!(
        reason.contains("spiffe://cluster.local/ns/default/sa/reviews"),
        "{reason}"
    );
    assert!(proxies[4].wait_ready(Duration::from_secs(1)).await.is_err());
    // One leaves: the fifth gets its place on its next attempt.
    proxies[0].terminate().expect("SIGTERM");
    proxies[0]
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("exits");
    proxies[4]
        .wait_ready(Duration::from_secs(15))
        .await
        .expect("admitted once a stream is free");
}

/// The reviews group as [`GROUPS`] has it, with `labels` over the group's.
fn reviews_group(labels: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: WorkloadGroup\nmetadata: {{name: reviews}}\n\
         spec:\n  metadata: {{labels: {{{labels}}}}}\n  template: {{serviceAccount: reviews}}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_group_re_admits_its_connected_proxy_and_a_deleted_one_refuses_it() {
    let reviews = HttpBackend::start("reviews").await;
    let state = tempfile::tempdir().expect("tempdir");
    let weftd = WeftdProcess::start_in(Path::new(WEFTD), state.path())
        .await
        .expect("weftd");
    // canary selects `track: canary`, a label no group gives yet.
    let canary = service("canary", reviews.addr).replace("{app: canary}", "{track: canary}");
    let yaml = format!("{}{canary}{GROUPS}", service("reviews", reviews.addr));
    let reply = weftd.apply(&yaml).await.expect("apply");
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let token = bound_token_file(&weftd, state.path(), "default", "reviews", None).await;
    let inbound = free_addr();
    let args = ["--node-id", "reviews-1", "--service-account", "reviews"];
    let mut real = spawn_secure(&weftd, &token, reviews.addr, Some(inbound), &args);
    real.wait_ready(Duration::from_secs(20))
        .await
        .expect("the reviews proxy is admitted");
    let (caller, listeners) = ready_caller(&weftd, &["reviews", "canary"]).await;
    eventually(
        "reviews through the caller",
        Duration::from_secs(10),
        || get(listeners[0]),
    )
    .await;
    assert!(
        endpoints(&caller, "canary").await.is_empty(),
        "no canary yet"
    );

    // The administrator labels the group: its connected proxy becomes a
    // canary endpoint without reconnecting.
    let reply = weftd
        .apply(&reviews_group("app: reviews, track: canary"))
        .await
        .expect("apply");
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    eventually("canary through the caller", Duration::from_secs(5), || {
        get(listeners[1])
    })
    .await;
    assert_eq!(endpoints(&caller, "canary").await, [inbound.to_string()]);
    assert!(
        !real.logs().contains("does not exist"),
        "re-admitted, not refused: {}",
        real.logs()
    );

    // The group is deleted: its proxy is refused at once (no grace), and
    // callers lose its endpoint.
    let reply = weftd
        .delete(&reviews_group("app: reviews, track: canary"))
        .await
        .expect("delete");
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let reason = refusal(&weftd, "reviews-1", "PermissionDenied", "does not exist").await;
    assert!(reason.contains("WorkloadGroup default/reviews"), "{reason}");
    eventually("no endpoint left", Duration::from_secs(5), || async {
        let held = [
            endpoints(&caller, "reviews").await,
            endpoints(&caller, "canary").await,
        ];
        if held.iter().all(Vec::is_empty) {
            Ok(())
        } else {
            Err(format!("{held:?}"))
        }
    })
    .await;
    eventually(
        "the refusal in the proxy's log",
        Duration::from_secs(5),
        || {
            let logs = real.logs();
            async move {
                if logs.contains("WorkloadGroup default/reviews") && logs.contains("does not exist")
                {
                    Ok(())
                } else {
                    Err(logs)
                }
            }
        },
    )
    .await;
    let text = weft_proxy_status(&weftd);
    assert!(
        text.contains("REFUSED") && text.contains("does not exist"),
        "{text}"
    );
}
