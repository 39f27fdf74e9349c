//! weftd's HTTP API answers only its owner: a real weftd, every route,
//! called without the credential, with a wrong one, from a foreign Host,
//! with an Origin header, or with a non-JSON body, is refused and changes
//! nothing; the unix socket needs no token and is private; `weft` finds
//! the credential by itself.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use http::{Method, StatusCode};
use serde_json::Value;
use weft_testkit::client::{self, Http1Client, Reply};
use weft_testkit::weftd::WeftdProcess;

const WEFTD: &str = env!("CARGO_BIN_EXE_weftd");

const GROUP: &str = "apiVersion: networking.istio.io/v1\nkind: WorkloadGroup\nmetadata: {name: cart, namespace: shop}\nspec: {template: {serviceAccount: cart, labels: {app: cart}}}\n";

const POLICY: &str = r#"{"apiVersion":"security.istio.io/v1","kind":"AuthorizationPolicy","metadata":{"name":"allow-all","namespace":"istio-system"},"spec":{"action":"ALLOW","rules":[{}]}}"#;

/// What is wrong with a request, its headers, the refusal expected.
type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, StatusCode);

/// Every route, with a body that would change something where it can.
fn routes(token_id: &str) -> Vec<(Method, String, Option<String>)> {
    let delete_group = serde_json::json!({ "text": GROUP }).to_string();
    vec![
        (Method::POST, "/v1/apply".into(), Some(POLICY.into())),
        (Method::POST, "/v1/delete".into(), Some(delete_group)),
        (Method::GET, "/v1/resources".into(), None),
        (
            Method::GET,
            "/v1/resources/WorkloadGroup/shop/cart".into(),
            None,
        ),
        (
            Method::DELETE,
            "/v1/resources/WorkloadGroup/shop/cart".into(),
            None,
        ),
        (Method::GET, "/v1/proxies".into(), None),
        (
            Method::POST,
            "/v1/tokens".into(),
            Some(r#"{"namespace":"shop","workloadGroup":"cart"}"#.into()),
        ),
        (Method::GET, "/v1/tokens".into(), None),
        (Method::DELETE, format!("/v1/tokens/{token_id}"), None),
        (Method::POST, "/v1/analyze".into(), Some("{}".into())),
        (
            Method::GET,
            "/v1/describe?service=cart&namespace=shop".into(),
            None,
        ),
        (Method::GET, "/v1/proxies/cart-1.shop/config".into(), None),
    ]
}

/// One request over TCP with exactly the headers given.
async fn send(
    weftd: &WeftdProcess,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Reply {
    let host = headers
        .iter()
        .find(|(name, _)| *name == "host")
        .map_or_else(|| weftd.api.to_string(), |(_, value)| value.to_string());
    let others: Vec<(&str, &str)> = headers
        .iter()
        .copied()
        .filter(|(name, _)| *name != "host")
        .collect();
    let request = build(method, &host, path, &others, body);
    exchange(Http1Client::connect(weftd.api).await, request).await
}

/// One request over the unix socket with `Host: host` and the headers given.
async fn over_socket(
    weftd: &WeftdProcess,
    host: &str,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Reply {
    let request = build(method, host, path, headers, body);
    exchange(Http1Client::connect_unix(&weftd.socket()).await, request).await
}

fn build(
    method: Method,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> http::Request<client::Body> {
    let body = body.map_or_else(client::empty, |body| client::full(body.to_string()));
    client::request_with_headers(method, host, path, headers, body)
}

/// Sends `request` on a fresh connection and waits for the answer.
async fn exchange(
    connected: anyhow::Result<Http1Client>,
    request: http::Request<client::Body>,
) -> Reply {
    connected
        .expect("connect")
        .send(request)
        .await
        .expect("request")
}

/// Log text without its colour codes.
fn plain(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn json(reply: &Reply) -> Value {
    serde_json::from_slice(&reply.body)
        .unwrap_or_else(|err| panic!("not JSON ({err}): {}", reply.text()))
}

/// What the store and the token list hold, read with the credential.
async fn snapshot(weftd: &WeftdProcess) -> (Value, Value) {
    let resources = weftd
        .call(Method::GET, "/v1/resources", None)
        .await
        .expect("list");
    let tokens = weftd
        .call(Method::GET, "/v1/tokens", None)
        .await
        .expect("tokens");
    assert_eq!(resources.status, StatusCode::OK, "{}", resources.text());
    assert_eq!(tokens.status, StatusCode::OK, "{}", tokens.text());
    (json(&resources), json(&tokens))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_refuses_what_is_not_its_owner_and_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let weftd = WeftdProcess::start_in(Path::new(WEFTD), dir.path())
        .await
        .expect("weftd");
    let applied = weftd.apply(GROUP).await.expect("apply");
    assert_eq!(applied.status, StatusCode::OK, "{}", applied.text());
    weftd.mint_token("shop", "cart").await.expect("mint");
    let token = weftd
        .mint_token_with("shop", "cart", None, Some("10m"))
        .await
        .expect("mint");
    let before = snapshot(&weftd).await;
    assert_eq!(before.1["tokens"].as_array().map(Vec::len), Some(2));

    let bearer = format!("Bearer {}", weftd.token);
    let json_type = ("content-type", "application/json");
    let cases: Vec<Case> = vec![
        ("no credential", vec![json_type], StatusCode::UNAUTHORIZED),
        (
            "a wrong bearer token",
            vec![json_type, ("authorization", "Bearer 00000000")],
            StatusCode::UNAUTHORIZED,
        ),
        (
            "a foreign Host",
            vec![
                json_type,
                ("authorization", &bearer),
                ("host", "evil.example"),
            ],
            StatusCode::FORBIDDEN,
        ),
        (
            "an Origin header",
            vec![
                json_type,
                ("authorization", &bearer),
                ("origin", "http://localhost:8080"),
            ],
            StatusCode::FORBIDDEN,
        ),
        (
            "a text/plain body",
            vec![("content-type", "text/plain"), ("authorization", &bearer)],
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
    ];
    for (what, headers, expected) in &cases {
        for (method, path, body) in routes(&token.id) {
            // A non-JSON body needs a body; GETs get one too (refused all the same).
            let body = if *expected == StatusCode::UNSUPPORTED_MEDIA_TYPE {
                Some(body.unwrap_or_else(|| "{}".into()))
            } else {
                body
            };
            let reply = send(&weftd, method.clone(), &path, headers, body.as_deref()).await;
            assert_eq!(
                reply.status,
                *expected,
                "{method} {path} with {what}: {}",
                reply.text()
            );
            let error = json(&reply)["error"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            assert!(error.starts_with("refused"), "{method} {path}: {error}");
        }
    }
    // The same on the socket (no token needed there, the rest applies).
    for (what, headers, expected) in [
        (
            "an Origin header",
            vec![json_type, ("origin", "null")],
            StatusCode::FORBIDDEN,
        ),
        (
            "a foreign Host",
            vec![json_type, ("host", "evil.example")],
            StatusCode::FORBIDDEN,
        ),
        (
            "a text/plain body",
            vec![("content-type", "text/plain")],
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
    ] {
        for (method, path, body) in routes(&token.id) {
            let body = body.unwrap_or_else(|| "{}".into());
            let mut headers = headers.clone();
            // The socket client sends Host: localhost; a foreign one replaces it.
            let request_host = headers
                .iter()
                .position(|(name, _)| *name == "host")
                .map(|at| headers.remove(at).1);
            let host = request_host.unwrap_or("localhost");
            let reply =
                over_socket(&weftd, host, method.clone(), &path, &headers, Some(&body)).await;
            assert_eq!(
                reply.status,
                expected,
                "socket {method} {path} with {what}: {}",
                reply.text()
            );
        }
    }

    assert_eq!(snapshot(&weftd).await, before, "nothing changed");
    // The setup's own calls are audited too: look for the refusals.
    let logs = weftd.logs();
    for refused in [
        "refused: no administrator credential",
        "refused: the bearer token is not this weftd's",
        "refused: Host \"evil.example\"",
        "refused: the request has an Origin header",
        "refused: the body's Content-Type is \"text/plain\"",
    ] {
        assert!(
            logs.lines()
                .any(|line| line.contains("audit") && line.contains(refused)),
            "no audited {refused:?}:\n{logs}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_socket_needs_no_token_and_is_private() {
    let dir = tempfile::tempdir().expect("tempdir");
    let weftd = WeftdProcess::start_in(Path::new(WEFTD), dir.path())
        .await
        .expect("weftd");
    let mode = |path: &Path| {
        std::fs::metadata(path)
            .unwrap_or_else(|err| panic!("{}: {err}", path.display()))
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode(&weftd.socket()), 0o600);
    assert_eq!(mode(&weftd.token_file()), 0o600);
    assert_eq!(mode(&weftd.state_dir), 0o700);
    assert_eq!(weftd.token.len(), 64, "256 bits, hex");

    let body = serde_json::json!({ "text": GROUP, "source": "group.yaml" }).to_string();
    let applied = over_socket(
        &weftd,
        "localhost",
        Method::POST,
        "/v1/apply",
        &[("content-type", "application/json")],
        Some(&body),
    )
    .await;
    assert_eq!(applied.status, StatusCode::OK, "{}", applied.text());
    let listed = over_socket(
        &weftd,
        "localhost",
        Method::GET,
        "/v1/resources?kind=wg",
        &[],
        None,
    )
    .await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.text());
    assert_eq!(json(&listed)["items"][0]["metadata"]["name"], "cart");

    // The mutating call is in the audit log with who made it.
    let logs = plain(&weftd.logs());
    let audit = logs
        .lines()
        .find(|line| line.contains("audit") && line.contains("POST /v1/apply"))
        .unwrap_or_else(|| panic!("no audit line:\n{logs}"));
    assert!(audit.contains("unix socket uid 0"), "{audit}");
    assert!(audit.contains("status=200"), "{audit}");

    // A restart keeps the admin token.
    let token = weftd.token.clone();
    drop(weftd);
    let again = WeftdProcess::start_in(Path::new(WEFTD), dir.path())
        .await
        .expect("weftd again");
    assert_eq!(again.token, token);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weft_get_finds_the_credential_by_itself() {
    let dir = tempfile::tempdir().expect("tempdir");
    // weftd's default state directory, relative to where it runs.
    let state = dir.path().join(".weft/state");
    std::fs::create_dir_all(dir.path().join(".weft")).expect("mkdir");
    let weftd = WeftdProcess::start(
        Path::new(WEFTD),
        &state,
        weft_testkit::free_addr(),
        weft_testkit::free_addr(),
    )
    .await
    .expect("weftd");
    weftd.apply(GROUP).await.expect("apply");
    // Built beside weftd by `cargo test --workspace` (or `cargo build -p weft-cli`).
    let weft = weft_testkit::cli::sibling(WEFTD, "weft");
    let home = tempfile::tempdir().expect("tempdir");
    let run = |cwd: &Path, env: &[(&str, String)]| {
        let output = std::process::Command::new(&weft)
            .current_dir(cwd)
            .args(["get", "workloadgroups", "-A"])
            .env_remove("WEFT_ADDR")
            .env_remove("WEFT_TOKEN_FILE")
            .env("WEFT_HOME", home.path())
            .envs(env.iter().map(|(name, value)| (*name, value.as_str())))
            .output()
            .expect("run weft");
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    // From the directory weftd runs in (its socket in .weft/state).
    let (code, stdout, stderr) = run(dir.path(), &[]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("cart"), "{stdout}");
    // From the environment (TCP with the token file), anywhere.
    let elsewhere = home.path();
    let address = ("WEFT_ADDR", weftd.api.to_string());
    let token_file = ("WEFT_TOKEN_FILE", weftd.token_file().display().to_string());
    let (code, stdout, stderr) = run(elsewhere, &[address.clone(), token_file]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("cart"), "{stdout}");
    // An address without a token: refused, saying what was missing.
    let (code, _, stderr) = run(elsewhere, &[address]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("no --token-file"), "{stderr}");
}
