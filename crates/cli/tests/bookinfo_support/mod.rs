//! What the Bookinfo tests under `weft up` share: waiting until the
//! product page comes through the ingress gateway while watching that the
//! runner has not died, with its log in every failure; and what a browser
//! does with the demo: the product page, login, the JSON APIs, and where
//! the demo's files and binaries are.

// Each test binary that includes this module uses a part of it.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use serde_json::Value;
use weft_testkit::client::{self, Http1Client, Reply};

/// The runner's log so far (empty if it has not written one yet).
pub fn log_text(log: &Path) -> String {
    std::fs::read_to_string(log).unwrap_or_default()
}

/// Waits up to 120 s until a product page through `ingress` is `good`,
/// failing at once if the runner `child` exits; how long it took.
pub async fn await_product_page(
    child: &mut Child,
    ingress: SocketAddr,
    log: &Path,
    good: impl Fn(StatusCode, &str) -> bool,
) -> Duration {
    let began = Instant::now();
    let deadline = began + Duration::from_secs(120);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("weft up exited ({status}):\n{}", log_text(log));
        }
        if let Ok(Ok(reply)) = tokio::time::timeout(
            Duration::from_secs(10),
            client::get(ingress, "bookinfo", "/productpage"),
        )
        .await
            && good(reply.status, &reply.text())
        {
            return began.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "no product page through the ingress {ingress} after 120s:\n{}",
            log_text(log)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

pub const WEFT: &str = env!("CARGO_BIN_EXE_weft");
/// The system interpreter: the apps use its standard library only.
pub const PYTHON: &str = "/usr/bin/python3";

pub const DETAILS_UNAVAILABLE: &str =
    "Sorry, product details are currently unavailable for this book.";
pub const REVIEWS_UNAVAILABLE: &str =
    "Sorry, product reviews are currently unavailable for this book.";
pub const RATINGS_UNAVAILABLE: &str = "Ratings service is currently unavailable";
pub const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
/// Headers a tracer relies on, each of which must reach reviews and ratings.
pub const TRACING: [(&str, &str); 6] = [
    ("x-request-id", "5b1e0c1e-bookinfo-test"),
    ("traceparent", TRACEPARENT),
    ("x-b3-traceid", "80f198ee56343ba8"),
    ("b3", "80f198ee56343ba8-e457b5a2e4d86bd1-1"),
    (
        "sw8",
        "1-dGVzdA==-c2VnbWVudA==-3-c2VydmljZQ==-aW5zdA==-dGFyZ2V0",
    ),
    ("user-agent", "bookinfo-test/1"),
];

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn bookinfo_dir() -> PathBuf {
    repo_root().join("examples/bookinfo")
}

/// The directory of `weft`, with the workspace binaries the demo runs
/// (`bookinfo-reviews`, `weftd`, `weft-proxy`) built beside it. Another
/// package's binaries are not built for this one's tests, so the test asks
/// cargo itself (once per test process; a no-op when they are fresh).
pub fn bin_dir() -> PathBuf {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(build_workspace_binaries)
        .clone()
        .unwrap_or_else(|problem| panic!("{problem}"))
}

pub fn build_workspace_binaries() -> Result<PathBuf, String> {
    let bin_dir = Path::new(WEFT)
        .parent()
        .ok_or("weft has no directory")?
        .to_path_buf();
    let profile = match bin_dir.file_name().and_then(|name| name.to_str()) {
        Some("debug") | None => "dev".to_string(),
        Some(other) => other.to_string(),
    };
    let target_dir = bin_dir.parent().ok_or("no target directory")?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(&cargo)
        .args(["build", "--quiet", "--bins", "--profile", &profile])
        .arg("--target-dir")
        .arg(target_dir)
        .args(["-p", "bookinfo-reviews", "-p", "weft-proxy"])
        .args(["-p", "weft-control"])
        .current_dir(repo_root())
        .status()
        .map_err(|err| format!("cannot run {cargo:?}: {err}"))?;
    if !status.success() {
        return Err(format!("building the demo's binaries failed ({status})"));
    }
    for binary in ["bookinfo-reviews", "weftd", "weft-proxy"] {
        if !bin_dir.join(binary).is_file() {
            return Err(format!(
                "{binary} was built, but not in {}",
                bin_dir.display()
            ));
        }
    }
    Ok(bin_dir)
}

/// `/productpage` as a browser got it.
pub struct Page {
    pub status: StatusCode,
    pub body: String,
}

impl Page {
    pub fn shows(&self, text: &str) -> bool {
        self.body.contains(text)
    }

    /// The pod named by "Reviews served by: <pod>".
    pub fn served_by(&self) -> Option<&str> {
        let (_, rest) = self.body.split_once("Reviews served by: ")?;
        rest.split('<').next()
    }

    /// The colour of the first row of stars, if any.
    pub fn star_color(&self) -> Option<&str> {
        let (_, rest) = self.body.split_once(r#"class="stars" style="color: "#)?;
        rest.split('"').next()
    }

    /// What the page says about reviews: `v1` (no stars), `v2` (black
    /// stars), `v3` (red stars), `v2 without ratings` / `v3 without
    /// ratings` (ratings failed), `unavailable`, or what did not fit.
    pub fn reviews(&self) -> String {
        if self.shows(REVIEWS_UNAVAILABLE) {
            return "unavailable".into();
        }
        let version = ["v1", "v2", "v3"].into_iter().find(|v| {
            self.served_by()
                .is_some_and(|pod| pod.contains(&format!("-{v}-")))
        });
        let ratings_failed = self.shows(RATINGS_UNAVAILABLE);
        match (version, self.star_color(), ratings_failed) {
            (Some("v1"), None, false) => "v1".into(),
            (Some("v2"), Some("black"), false) => "v2".into(),
            (Some("v3"), Some("red"), false) => "v3".into(),
            (Some(v @ ("v2" | "v3")), None, true) => format!("{v} without ratings"),
            (version, color, _) => format!(
                "unexpected (status {}, served by {:?} = {version:?}, stars {color:?}, ratings failed {ratings_failed})",
                self.status,
                self.served_by()
            ),
        }
    }
}

pub async fn send(
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Reply {
    let request = client::request_with_headers(
        method,
        &addr.to_string(),
        path,
        headers,
        client::full(body.to_string()),
    );
    let mut connection = Http1Client::connect(addr).await.expect("connect");
    connection.send(request).await.expect("request")
}

/// The product page, logged in as `user` (the `user` cookie) or not.
pub async fn product_page(addr: SocketAddr, user: Option<&str>) -> Page {
    let cookie = user.map(|user| format!("user={user}"));
    let headers: Vec<(&str, &str)> = cookie.iter().map(|c| ("cookie", c.as_str())).collect();
    let reply = send(addr, Method::GET, "/productpage", &headers, "").await;
    Page {
        status: reply.status,
        body: reply.text(),
    }
}

/// `POST /login` with a form.
pub async fn post_login(addr: SocketAddr, form: &str) -> Reply {
    let headers = [("content-type", "application/x-www-form-urlencoded")];
    send(addr, Method::POST, "/login", &headers, form).await
}

pub async fn api_json(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Value {
    let reply = send(addr, Method::GET, path, headers, "").await;
    assert_eq!(reply.status, StatusCode::OK, "{path}: {}", reply.text());
    serde_json::from_slice(&reply.body)
        .unwrap_or_else(|err| panic!("{path}: {err}: {}", reply.text()))
}

pub type Env = Vec<(String, String)>;

/// The variables that point an app at `service` on `addr`.
pub fn at(service: &str, addr: SocketAddr) -> Env {
    let upper = service.to_uppercase();
    vec![
        (format!("{upper}_HOSTNAME"), addr.ip().to_string()),
        (format!("{upper}_PORT"), addr.port().to_string()),
    ]
}

pub fn vars(pairs: &[(&str, &str)]) -> Env {
    pairs
        .iter()
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect()
}
