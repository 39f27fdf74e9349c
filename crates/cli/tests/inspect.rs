//! `weft proxy-config`, `weft describe` and `weft analyze --use-weftd` as
//! a user runs them: the real `weft` binary against a real weftd process
//! and a real weft-proxy fed by it, with backends on loopback; one
//! backend fails until outlier detection ejects it.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::Full;
use weft_testkit::backend::{Served, serve};
use weft_testkit::cli::{Run, run};
use weft_testkit::client::Http1Client;
use weft_testkit::fixtures::service_with_workloads;
use weft_testkit::free_addr;
use weft_testkit::proxy::{ProxyOptions, ProxyProcess};
use weft_testkit::weftd::WeftdProcess;

const WEFT: &str = env!("CARGO_BIN_EXE_weft");

/// weftd and weft-proxy are built next to weft by `cargo test --workspace`.
fn sibling(name: &str) -> PathBuf {
    weft_testkit::cli::sibling(WEFT, name)
}

/// A backend answering every request with `status`.
async fn backend(name: &'static str, status: u16) -> Served {
    serve(move |_request| async move {
        let mut response = http::Response::new(Full::new(Bytes::from(name)));
        *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
        Ok::<_, Infallible>(response)
    })
    .await
}

/// Service `shop` with endpoints v1 (`broken`) and v2 (`healthy`), a
/// DestinationRule with subsets and outlier detection, and a
/// VirtualService sending `x-canary: yes` to v2 and the rest to both.
fn mesh_yaml(broken: SocketAddr, healthy: SocketAddr) -> String {
    let workloads =
        service_with_workloads("shop", 80, &[("v1", broken.port()), ("v2", healthy.port())]);
    format!(
        r#"{workloads}---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: shop}}
spec:
  host: shop
  trafficPolicy:
    loadBalancer: {{simple: ROUND_ROBIN}}
    outlierDetection: {{consecutive5xxErrors: 2, interval: 1s, baseEjectionTime: 60s, maxEjectionPercent: 100}}
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v2, labels: {{version: v2}}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: shop}}
spec:
  hosts: [shop]
  http:
  - match: [{{headers: {{x-canary: {{exact: "yes"}}}}}}]
    route:
    - destination: {{host: shop, subset: v2}}
  - retries: {{attempts: 0}}
    route:
    - destination: {{host: shop}}
"#
    )
}

fn weft(args: &[&str]) -> Run {
    run(Path::new(WEFT), args)
}

/// The table line that mentions `needle`.
fn line_with<'a>(text: &'a str, needle: &str) -> &'a str {
    text.lines()
        .find(|line| line.contains(needle))
        .unwrap_or_else(|| panic!("no line with {needle:?} in:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_config_describe_and_analyze_against_a_live_mesh() {
    let broken = backend("broken", 503).await;
    let healthy = backend("healthy", 200).await;
    let state = tempfile::tempdir().expect("tempdir");
    let weftd = WeftdProcess::start_in(&sibling("weftd"), state.path())
        .await
        .expect("weftd");
    let reply = weftd
        .apply(&mesh_yaml(broken.addr, healthy.addr))
        .await
        .expect("apply");
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());

    let listen = free_addr();
    let listen_flag = format!("{listen}=shop:80");
    let proxy_binary = sibling("weft-proxy");
    let flags = [
        "--node-id",
        "caller",
        "--workload",
        "caller",
        "--listen",
        &listen_flag,
    ];
    let proxy = ProxyProcess::spawn_ready(
        ProxyOptions::control_plane(&proxy_binary, weftd.grpc, &flags),
        Duration::from_secs(20),
    )
    .await
    .expect("proxy ready");

    // Round robin over both endpoints: two 503s in a row from `broken`
    // come within a few requests and eject it for 60s.
    let mut client = Http1Client::connect(listen).await.expect("connect");
    for _ in 0..8 {
        client.get("shop", "/").await.expect("request");
    }
    for _ in 0..4 {
        assert_eq!(
            client.get("shop", "/").await.expect("request").text(),
            "healthy"
        );
    }

    let admin = proxy.admin.to_string();
    let api = weftd.api.to_string();
    let token_file = weftd.token_file().display().to_string();
    let blocking = tokio::task::spawn_blocking(move || {
        let endpoints = weft(&["proxy-config", "caller", "endpoints", "--admin", &admin]);
        assert_eq!(endpoints.code, 0, "{}", endpoints.stderr);
        let header = endpoints.stdout.lines().next().unwrap_or_default();
        assert!(
            header.starts_with("ENDPOINT") && header.contains("OUTLIER CHECK"),
            "{header}"
        );
        let ejected = line_with(&endpoints.stdout, &broken.addr.to_string());
        assert!(
            ejected.contains("UNHEALTHY") && ejected.contains("EJECTED"),
            "{ejected}"
        );
        let fine = line_with(&endpoints.stdout, &healthy.addr.to_string());
        assert!(fine.contains("HEALTHY") && fine.contains(" OK "), "{fine}");

        // By id alone: what weftd last pushed, health unknown.
        let pushed = weft(&[
            "--weftd",
            &api,
            "--token-file",
            &token_file,
            "proxy-config",
            "caller",
            "endpoints",
        ]);
        assert_eq!(pushed.code, 0, "{}", pushed.stderr);
        assert!(pushed.stderr.contains("--admin ADDR"), "{}", pushed.stderr);
        let unknown = line_with(&pushed.stdout, &broken.addr.to_string());
        assert!(unknown.contains("UNKNOWN"), "{unknown}");
        let stranger = weft(&[
            "--weftd",
            &api,
            "--token-file",
            &token_file,
            "proxy-config",
            "nobody",
        ]);
        assert_eq!(stranger.code, 1);
        assert!(stranger.stderr.contains("nobody"), "{}", stranger.stderr);

        let clusters = weft(&["proxy-config", &admin, "clusters"]);
        assert_eq!(clusters.code, 0, "{}", clusters.stderr);
        // The route without a subset uses the service's whole cluster.
        let whole = line_with(&clusters.stdout, "outbound|80||shop");
        let fields: Vec<&str> = whole.split_whitespace().collect();
        assert_eq!(fields[1..4], ["ROUND_ROBIN", "2", "1"], "{whole}");
        assert!(whole.contains("5xx x2, every 1s, eject 60s"), "{whole}");

        let routes = weft(&["proxy-config", &admin, "routes"]);
        assert_eq!(routes.code, 0, "{}", routes.stderr);
        let canary = line_with(&routes.stdout, "x-canary");
        assert!(
            canary.contains("|v2|") && canary.contains("shop"),
            "{canary}"
        );

        let listeners = weft(&["proxy-config", &admin, "listeners", "-o", "json"]);
        let parsed: serde_json::Value =
            serde_json::from_str(&listeners.stdout).expect("listeners as JSON");
        assert_eq!(
            parsed["listeners"][0]["address"],
            listen.to_string(),
            "{parsed}"
        );

        let secrets = weft(&["proxy-config", &admin, "secrets"]);
        assert!(secrets.stdout.contains("none"), "{}", secrets.stdout);

        let described = weft(&[
            "--weftd",
            &api,
            "--token-file",
            &token_file,
            "describe",
            "svc",
            "shop",
        ]);
        assert_eq!(described.code, 0, "{}", described.stderr);
        let text = described.stdout;
        assert!(
            text.contains("Service: shop.default.svc.cluster.local"),
            "{text}"
        );
        assert!(
            line_with(&text, "* default/shop").contains("host"),
            "{text}"
        );
        assert!(text.contains("-> shop subset v2"), "{text}");
        assert!(
            text.contains("HTTP rule, match header x-canary exact yes:"),
            "{text}"
        );
        let rule = line_with(&text, "subset v1 (labels");
        assert!(rule.contains("version=v1"), "{text}");
        let endpoint = line_with(&text, &broken.addr.to_string());
        assert!(
            endpoint.contains("subsets v1") && endpoint.contains("version=v1"),
            "{text}"
        );

        // `-o json` is the same description, in keys scripts can rely on.
        let json = weft(&[
            "--weftd",
            &api,
            "--token-file",
            &token_file,
            "describe",
            "svc",
            "shop",
            "-o",
            "json",
        ]);
        assert_eq!(json.code, 0, "{}", json.stderr);
        let parsed: serde_json::Value = serde_json::from_str(&json.stdout).expect("json");
        assert_eq!(
            parsed["service"]["host"], "shop.default.svc.cluster.local",
            "{parsed}"
        );
        let applying: Vec<&serde_json::Value> = parsed["destinationRules"]
            .as_array()
            .expect("destinationRules")
            .iter()
            .filter(|rule| rule["applies"] == true)
            .collect();
        assert_eq!(applying.len(), 1, "{parsed}");
        assert_eq!(
            applying[0]["subsets"][0]["labels"]["version"], "v1",
            "{parsed}"
        );
        let routes = &parsed["virtualServices"][0]["rules"][0]["routes"];
        assert_eq!(routes[0]["subset"], "v2", "{parsed}");

        let missing = weft(&[
            "--weftd",
            &api,
            "--token-file",
            &token_file,
            "describe",
            "svc",
            "nope",
        ]);
        assert_eq!(missing.code, 1);
        assert!(
            missing.stderr.contains("shop.default.svc.cluster.local"),
            "{}",
            missing.stderr
        );

        // A canary that names a subset the stored DestinationRule lacks.
        let dir = tempfile::tempdir().expect("tempdir");
        let canary = dir.path().join("canary.yaml");
        std::fs::write(
            &canary,
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: shop-canary}\nspec:\n  hosts: [shop-canary]\n  http:\n  - route:\n    - destination: {host: shop, subset: v9}\n",
        )
        .expect("write");
        let canary = canary.to_str().expect("utf-8");
        let analyzed = weft(&[
            "--weftd",
            &api,
            "--token-file",
            &token_file,
            "analyze",
            "--use-weftd",
            "-f",
            canary,
        ]);
        assert_eq!(analyzed.code, 1, "{}{}", analyzed.stdout, analyzed.stderr);
        assert_eq!(
            analyzed.stdout.trim(),
            "Error [IST0101] (VirtualService default/shop-canary) Referenced host+subset in destinationrule not found: \"shop+v9\""
        );
        // What weftd holds alone is clean.
        let stored = weft(&["--weftd", &api, "--token-file", &token_file, "analyze"]);
        assert_eq!(stored.code, 0, "{}{}", stored.stdout, stored.stderr);
        assert!(
            stored.stdout.contains("No validation issues"),
            "{}",
            stored.stdout
        );
    });
    blocking.await.expect("weft runs");
}

#[test]
fn proxy_config_rejects_a_bad_admin_address_and_says_when_it_is_unreachable() {
    let bad = weft(&["proxy-config", "caller", "--admin", "localhost"]);
    assert_eq!(bad.code, 1);
    assert!(bad.stderr.contains("127.0.0.1:15000"), "{}", bad.stderr);
    let dead = weft_testkit::dead_addr().to_string();
    let unreachable = weft(&["proxy-config", &dead]);
    assert_eq!(unreachable.code, 1);
    assert!(
        unreachable
            .stderr
            .contains(&format!("cannot reach the proxy's admin port {dead}")),
        "{}",
        unreachable.stderr
    );
}
