//! Bookinfo, the demo application of `examples/bookinfo`, as a user sees it.
//!
//! First the four services alone on loopback (Python productpage, details
//! and ratings; the Rust reviews in three versions), each on its own
//! 127.x address: the product page, login and `end-user` propagation, and
//! the error texts when a service is down or slow.
//!
//! Then the real thing: `weft up examples/bookinfo` (root), the product
//! page through the ingress gateway, and Istio's own Bookinfo routing files
//! (read from ../shared/corpus, never copied) applied with `weft apply -f`,
//! each changing what `/productpage` shows. Files not applied, and why:
//! - virtual-service-details-v2: details v2 is the original's Ruby variant
//!   that calls the Google Books API outside the mesh; the demo has no
//!   details v2 and nothing may leave the machine.
//! - virtual-service-ratings-db, -ratings-mysql, -ratings-mysql-vm: they
//!   route to ratings v2 backed by MongoDB or MySQL, which the demo does
//!   not run.
//! - destination-rule-all(-mtls), destination-rule-reviews,
//!   bookinfo-gateway, certmanager-gateway, egress-rule-google-apis: the
//!   demo ships its own equivalents (destination-rules.yaml,
//!   gateway.yaml), and the rest is TLS or egress, not routing.

mod bookinfo_support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bookinfo_support::{
    DETAILS_UNAVAILABLE, Env, PYTHON, Page, TRACING, WEFT, api_json, at, await_product_page,
    bin_dir, bookinfo_dir, post_login, product_page, repo_root, send, vars,
};
use http::{Method, StatusCode};
use serde_json::Value;
use weft_testkit::client;
use weft_testkit::free_addr;

/// One app process, its output in a log file; killed on drop.
struct App {
    name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl App {
    fn start(name: &str, argv: &[&Path], env: &[(String, String)], logs: &Path) -> Self {
        let log = logs.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).expect("log file");
        let mut command = Command::new(argv[0]);
        command
            .args(&argv[1..])
            .env("POD_NAME", name)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env_remove("SERVICES_DOMAIN")
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log file"))
            .stderr(file);
        for (key, value) in env {
            command.env(key, value);
        }
        let child = command
            .spawn()
            .unwrap_or_else(|err| panic!("start {name}: {err}"));
        Self {
            name: name.to_string(),
            child: Some(child),
            log,
        }
    }

    fn python(name: &str, script: &str, listen: SocketAddr, env: Env, logs: &Path) -> Self {
        let script = bookinfo_dir().join("apps").join(script);
        let mut env = env;
        env.extend(vars(&[("LISTEN_ADDR", &listen.to_string())]));
        Self::start(name, &[Path::new(PYTHON), &script], &env, logs)
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    async fn wait_healthy(&mut self, addr: SocketAddr) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("{} exited ({status}):\n{}", self.name, self.logs());
            }
            if client::get(addr, "health", "/health")
                .await
                .is_ok_and(|reply| reply.status == StatusCode::OK)
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} not healthy on {addr} after 20s:\n{}",
                self.name,
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for App {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The whole app on loopback: details, ratings, reviews v1/v2/v3, and one
/// productpage per reviews version.
struct Loopback {
    details: (SocketAddr, App),
    ratings: (SocketAddr, App),
    /// (version, address, process)
    reviews: Vec<(&'static str, SocketAddr, App)>,
    /// version of the reviews it calls → product page address
    pages: BTreeMap<&'static str, SocketAddr>,
    _pages: Vec<App>,
    _logs: tempfile::TempDir,
}

impl Loopback {
    async fn start() -> Self {
        let bin_dir = bin_dir();
        let logs = tempfile::tempdir().expect("tempdir");
        let (details_addr, ratings_addr) = (free_addr(), free_addr());
        let python = |name, script, addr| App::python(name, script, addr, Env::new(), logs.path());
        let mut details = python("details-v1-loopback", "details.py", details_addr);
        let mut ratings = python("ratings-v1-loopback", "ratings.py", ratings_addr);
        let mut reviews = Vec::new();
        // (SERVICE_VERSION, ENABLE_RATINGS, STAR_COLOR) as in mesh.yaml
        let versions = [("v1", "false", ""), ("v2", "true", "black")];
        for (version, enable, color) in versions.into_iter().chain([("v3", "true", "red")]) {
            let addr = free_addr();
            let mut env = at("ratings", ratings_addr);
            env.extend(vars(&[
                ("LISTEN_ADDR", &addr.to_string()),
                ("SERVICE_VERSION", version),
                ("ENABLE_RATINGS", enable),
                ("STAR_COLOR", color),
            ]));
            let binary = bin_dir.join("bookinfo-reviews");
            let app = App::start(
                &format!("reviews-{version}-loopback"),
                &[&binary],
                &env,
                logs.path(),
            );
            reviews.push((version, addr, app));
        }
        let mut pages = BTreeMap::new();
        let mut page_apps = Vec::new();
        for (version, reviews_addr, _) in &reviews {
            let addr = free_addr();
            let mut env = at("details", details_addr);
            env.extend(at("reviews", *reviews_addr));
            env.extend(at("ratings", ratings_addr));
            let name = format!("productpage-for-{version}");
            page_apps.push(App::python(&name, "productpage.py", addr, env, logs.path()));
            pages.insert(*version, addr);
        }
        details.wait_healthy(details_addr).await;
        ratings.wait_healthy(ratings_addr).await;
        for (_, addr, app) in &mut reviews {
            app.wait_healthy(*addr).await;
        }
        for (app, addr) in page_apps.iter_mut().zip(pages.values()) {
            app.wait_healthy(*addr).await;
        }
        Self {
            details: (details_addr, details),
            ratings: (ratings_addr, ratings),
            reviews,
            pages,
            _pages: page_apps,
            _logs: logs,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn product_page_shows_each_reviews_version() {
    let app = Loopback::start().await;
    for (version, stars) in [("v1", None), ("v2", Some("black")), ("v3", Some("red"))] {
        let page = product_page(app.pages[version], None).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        assert_eq!(page.reviews(), version, "{}", page.body);
        assert_eq!(page.star_color(), stars);
        assert!(page.shows("Ada Marlowe"), "details missing: {}", page.body);
        assert!(
            page.shows(&format!("Reviews served by: reviews-{version}-loopback")),
            "{}",
            page.body
        );
        assert!(!page.shows("Logged in as"), "{}", page.body);
    }
    // Five and four stars, in the version's colour.
    let v3 = product_page(app.pages["v3"], None).await;
    for stars in ["★★★★★", "★★★★☆"] {
        let markup = format!("<span class=\"stars\" style=\"color: red\">{stars}</span>");
        assert!(v3.shows(&markup), "{markup} missing: {}", v3.body);
    }

    let page = app.pages["v1"];
    let css = send(page, Method::GET, "/static/bookinfo.css", &[], "").await;
    assert_eq!(css.status, StatusCode::OK);
    assert_eq!(css.header("content-type"), Some("text/css; charset=utf-8"));
    let products = api_json(page, "/api/v1/products", &[]).await;
    assert_eq!(products[0]["id"], 0, "{products}");
    let details = api_json(page, "/api/v1/products/0", &[]).await;
    assert_eq!(details["author"], "Ada Marlowe", "{details}");
    let ratings = api_json(page, "/api/v1/products/0/ratings", &[]).await;
    assert_eq!(ratings["ratings"]["Reviewer1"], 5, "{ratings}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_names_the_end_user_to_every_service() {
    let app = Loopback::start().await;
    let page = app.pages["v2"];

    let login = post_login(page, "username=jason&passwd=").await;
    assert_eq!(login.status, StatusCode::FOUND, "{}", login.text());
    assert_eq!(login.header("location"), Some("/productpage"));
    let cookie = login.header("set-cookie").expect("a cookie").to_string();
    assert!(cookie.starts_with("user=jason"), "{cookie}");
    let bad = post_login(page, "username=a%3Bb").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.text());

    let logged_in = product_page(page, Some("jason")).await;
    assert!(logged_in.shows("Logged in as jason"), "{}", logged_in.body);
    assert_eq!(logged_in.reviews(), "v2");

    // The cookie and the tracing headers go in; reviews, and ratings
    // behind it, see end-user and every tracing header, never the cookie.
    let mut headers = vec![("cookie", "user=jason")];
    headers.extend(TRACING);
    let reviews = api_json(page, "/api/v1/products/0/reviews", &headers).await;
    assert_eq!(reviews["end_user"], "jason", "{reviews}");
    for echo in ["seen", "ratings_seen"] {
        assert_eq!(reviews[echo]["end-user"], "jason", "{echo}: {reviews}");
        for (name, value) in TRACING {
            assert_eq!(reviews[echo][name], value, "{echo} {name}: {reviews}");
        }
        assert!(reviews[echo].get("cookie").is_none(), "{echo}: {reviews}");
    }
    let details = api_json(page, "/api/v1/products/0", &headers).await;
    assert_eq!(details["seen"]["end-user"], "jason", "{details}");
    assert_eq!(details["seen"]["x-request-id"], TRACING[0].1, "{details}");
    assert!(details["seen"].get("cookie").is_none(), "{details}");

    // A request that already names its user (no cookie) keeps that name.
    let tester = [("end-user", "tester")];
    let reviews = api_json(page, "/api/v1/products/0/reviews", &tester).await;
    assert_eq!(reviews["ratings_seen"]["end-user"], "tester", "{reviews}");
    // Anonymous: no end-user at all.
    let reviews = api_json(page, "/api/v1/products/0/reviews", &[]).await;
    assert_eq!(reviews["end_user"], Value::Null, "{reviews}");

    let logout = send(page, Method::GET, "/logout", &[], "").await;
    assert_eq!(logout.status, StatusCode::FOUND);
    let cleared = logout.header("set-cookie").unwrap_or_default();
    assert!(
        cleared.starts_with("user=;") && cleared.contains("Max-Age=0"),
        "{cleared}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_down_shows_its_error_text() {
    let mut app = Loopback::start().await;

    app.ratings.1.stop();
    for version in ["v2", "v3"] {
        let page = product_page(app.pages[version], None).await;
        assert_eq!(page.status, StatusCode::OK);
        assert_eq!(
            page.reviews(),
            format!("{version} without ratings"),
            "{}",
            page.body
        );
    }
    // v1 never asks ratings.
    assert_eq!(product_page(app.pages["v1"], None).await.reviews(), "v1");

    app.details.1.stop();
    let page = product_page(app.pages["v1"], None).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.shows(DETAILS_UNAVAILABLE), "{}", page.body);
    assert_eq!(page.reviews(), "v1", "reviews still shown: {}", page.body);
    let reply = send(app.pages["v1"], Method::GET, "/api/v1/products/0", &[], "").await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);

    app.reviews[0].2.stop();
    let page = product_page(app.pages["v1"], None).await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(page.reviews(), "unavailable", "{}", page.body);
    assert!(page.shows(DETAILS_UNAVAILABLE));
}

/// A reviews that accepts and never answers: the product page waits 3 s,
/// tries once more, then says reviews are unavailable (the story of the
/// ratings-test-delay routing file).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn product_page_gives_up_on_slow_reviews() {
    let silent = tokio::net::TcpListener::bind(free_addr())
        .await
        .expect("bind");
    let silent_addr = silent.local_addr().expect("address");
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            held.push(stream);
        }
    });
    let logs = tempfile::tempdir().expect("tempdir");
    let addr = free_addr();
    let mut env = at("reviews", silent_addr);
    env.extend(at("details", weft_testkit::dead_addr()));
    let mut page_app = App::python("productpage-slow", "productpage.py", addr, env, logs.path());
    page_app.wait_healthy(addr).await;

    let began = Instant::now();
    let page = product_page(addr, None).await;
    let took = began.elapsed();
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(page.reviews(), "unavailable", "{}", page.body);
    assert_eq!(accepted.load(Ordering::SeqCst), 2, "one try and one retry");
    assert!(
        (Duration::from_millis(5800)..Duration::from_secs(9)).contains(&took),
        "two 3 s timeouts, took {took:?}"
    );
    hold.abort();
}

/// The mesh's name, and its `$WEFT_HOME`: kept between runs under
/// target/tmp, so a run that crashed is cleaned up by the next one, and
/// `weft apply` finds this mesh (the only one recorded there) by itself.
const MESH: &str = "bookinfo-test";

fn mesh_home() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("bookinfo-weft-home")
}

/// Expected shares of the page's reviews, in percent.
type Shares = &'static [(&'static str, f64)];

/// `weft up examples/bookinfo`, running; stopped on drop.
struct Mesh {
    child: Child,
    ingress: SocketAddr,
    networking: PathBuf,
    log: PathBuf,
}

impl Mesh {
    fn weft() -> Command {
        let mut command = Command::new(WEFT);
        command
            .env("WEFT_HOME", mesh_home())
            .env_remove("WEFT_ADDR");
        command
    }

    /// Starts the mesh and waits until the product page, served through
    /// the ingress gateway, shows details and reviews.
    async fn up(networking: PathBuf) -> Self {
        bin_dir();
        std::fs::create_dir_all(mesh_home()).expect("weft home");
        // A runner a killed test run left behind.
        Self::down_quietly();
        let log = mesh_home().join("weft-up.log");
        let file = std::fs::File::create(&log).expect("log");
        let ingress = free_addr();
        let child = Self::weft()
            .arg("up")
            .arg(bookinfo_dir())
            .args(["--name", MESH, "--ingress", &ingress.to_string()])
            .args(["--api", &free_addr().to_string()])
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log"))
            .stderr(file)
            .spawn()
            .expect("spawn weft up");
        let mut mesh = Self {
            child,
            ingress,
            networking,
            log,
        };
        let took = await_product_page(&mut mesh.child, ingress, &mesh.log, |status, body| {
            status == StatusCode::OK
                && body.contains("Ada Marlowe")
                && body.contains("Reviews served by: reviews-")
        })
        .await;
        eprintln!("product page through the ingress after {took:?}");
        mesh
    }

    fn down_quietly() {
        let _ = Self::weft()
            .args(["down", MESH])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    /// `weft apply -f` of a corpus routing file, with no address flag.
    fn apply(&self, file: &str) {
        self.apply_path(&self.networking.join(file));
    }

    fn apply_path(&self, file: &Path) {
        let output = Self::weft()
            .args(["apply", "-f"])
            .arg(file)
            .output()
            .expect("weft apply");
        assert!(
            output.status.success(),
            "weft apply -f {}: {}{}",
            file.display(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    async fn page(&self, user: Option<&str>) -> Page {
        product_page(self.ingress, user).await
    }

    /// Waits (up to 30 s) for `in_a_row` pages in a row that satisfy
    /// `done`: the sign that `file` is live in the proxies.
    async fn settle(
        &self,
        file: &str,
        user: Option<&str>,
        in_a_row: usize,
        done: impl Fn(&Page) -> bool,
    ) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut streak = 0;
        while streak < in_a_row {
            let page = self.page(user).await;
            streak = if done(&page) { streak + 1 } else { 0 };
            assert!(
                Instant::now() < deadline,
                "{file} not live after 30s (user {user:?}); last page says {}:\n{}",
                page.reviews(),
                page.body
            );
        }
    }

    /// `n` pages must all say `want` about reviews.
    async fn expect_only(&self, file: &str, user: Option<&str>, want: &str, n: usize) {
        let shares = self.shares(user, n).await;
        assert_eq!(
            shares.keys().collect::<Vec<_>>(),
            [want],
            "{file}, user {user:?}: {shares:?}"
        );
    }

    /// What `n` pages say about reviews, in percent (four at a time).
    async fn shares(&self, user: Option<&str>, n: usize) -> BTreeMap<String, f64> {
        let mut tasks = tokio::task::JoinSet::new();
        for worker in 0..4 {
            let (ingress, user) = (self.ingress, user.map(str::to_string));
            tasks.spawn(async move {
                let mut seen = Vec::new();
                for _ in (worker..n).step_by(4) {
                    let page = product_page(ingress, user.as_deref()).await;
                    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
                    seen.push(page.reviews());
                }
                seen
            });
        }
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for seen in tasks.join_all().await {
            for said in seen {
                *counts.entry(said).or_default() += 1;
            }
        }
        counts
            .into_iter()
            .map(|(said, count)| (said, count as f64 * 100.0 / n as f64))
            .collect()
    }

    /// A weighted split over `n` pages, each share within ±10 points.
    async fn expect_split(&self, file: &str, n: usize, expected: &[(&str, f64)]) {
        let shares = self.shares(None, n).await;
        eprintln!("{file}: {shares:?} over {n} pages");
        for said in shares.keys() {
            assert!(
                expected.iter().any(|(version, _)| version == said),
                "{file}: unexpected {said:?} in {shares:?}"
            );
        }
        for (version, want) in expected {
            let got = shares.get(*version).copied().unwrap_or(0.0);
            assert!(
                (got - want).abs() <= 10.0,
                "{file}: {version} got {got:.1}%, want {want}% ± 10: {shares:?}"
            );
        }
    }

    /// `weft down`: the runner exits and no namespace of the mesh is left.
    fn down(&mut self) {
        let output = Self::weft()
            .args(["down", MESH])
            .output()
            .expect("weft down");
        assert!(
            output.status.success(),
            "weft down: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.child.try_wait().expect("wait").is_none() {
            assert!(
                Instant::now() < deadline,
                "weft up still running after weft down"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let namespaces = Command::new("ip")
            .args(["netns", "list"])
            .output()
            .expect("ip netns");
        let left: Vec<String> = String::from_utf8_lossy(&namespaces.stdout)
            .lines()
            .filter(|line| line.starts_with(&format!("weft-{MESH}-")))
            .map(str::to_string)
            .collect();
        assert!(left.is_empty(), "left behind: {left:?}");
    }
}

impl Drop for Mesh {
    /// A test that failed half-way still leaves nothing behind.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            Mesh::down_quietly();
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookinfo_routing_files_through_weft_up() {
    const TEST: &str = "bookinfo_routing_files_through_weft_up";
    if !weft_testkit::netns::privileged_or_skip(TEST) {
        return;
    }
    let Some(corpus) = weft_testkit::corpus::root_or_skip(TEST) else {
        return;
    };
    let mut mesh = Mesh::up(corpus.join("istio/samples/bookinfo/networking")).await;
    let jason = Some("jason");

    // No VirtualService yet: every version of reviews answers.
    let shares = mesh.shares(None, 60).await;
    eprintln!("no routes: {shares:?}");
    for version in ["v1", "v2", "v3"] {
        assert!(
            shares.contains_key(version),
            "{version} never answered: {shares:?}"
        );
    }

    // Login through the gateway; the page knows the user.
    let login = post_login(mesh.ingress, "username=jason").await;
    assert_eq!(login.status, StatusCode::FOUND, "{}", login.text());
    assert!(
        login
            .header("set-cookie")
            .is_some_and(|c| c.starts_with("user=jason"))
    );
    let page = mesh.page(jason).await;
    assert!(page.shows("Logged in as jason"), "{}", page.body);
    let file = "virtual-service-all-v1.yaml";
    mesh.apply(file);
    mesh.settle(file, None, 12, |p| p.reviews() == "v1").await;
    mesh.expect_only(file, None, "v1", 20).await;
    mesh.expect_only(file, jason, "v1", 10).await;

    let file = "virtual-service-reviews-v3.yaml";
    mesh.apply(file);
    mesh.settle(file, None, 1, |p| p.reviews() == "v3").await;
    mesh.expect_only(file, None, "v3", 20).await;
    mesh.expect_only(file, jason, "v3", 10).await;

    // Each split brings a version the one before did not route to: seeing
    // it is the sign the new weights are live.
    let splits: [(&str, &str, Shares); 4] = [
        (
            "virtual-service-reviews-50-v3.yaml",
            "v1",
            &[("v1", 50.0), ("v3", 50.0)],
        ),
        (
            "virtual-service-reviews-80-20.yaml",
            "v2",
            &[("v1", 80.0), ("v2", 20.0)],
        ),
        (
            "virtual-service-reviews-v2-v3.yaml",
            "v3",
            &[("v2", 50.0), ("v3", 50.0)],
        ),
        (
            "virtual-service-reviews-90-10.yaml",
            "v1",
            &[("v1", 90.0), ("v2", 10.0)],
        ),
    ];
    for (file, sign, expected) in splits {
        mesh.apply(file);
        mesh.settle(file, None, 1, |p| p.reviews() == sign).await;
        mesh.expect_split(file, 300, expected).await;
    }

    let file = "virtual-service-reviews-test-v2.yaml";
    mesh.apply(file);
    mesh.settle(file, jason, 8, |p| p.reviews() == "v2").await;
    mesh.expect_only(file, jason, "v2", 20).await;
    mesh.expect_only(file, None, "v1", 20).await;
    // The login's end-user crossed the sidecars to reviews v2 and on to
    // ratings; the cookie stayed with the product page.
    let mut headers = vec![("cookie", "user=jason")];
    headers.extend(TRACING);
    let reviews = api_json(mesh.ingress, "/api/v1/products/0/reviews", &headers).await;
    assert_eq!(reviews["version"], "v2", "{reviews}");
    for echo in ["seen", "ratings_seen"] {
        assert_eq!(reviews[echo]["end-user"], "jason", "{echo}: {reviews}");
        assert!(
            reviews[echo]["x-request-id"].is_string(),
            "{echo}: {reviews}"
        );
        assert!(reviews[echo].get("cookie").is_none(), "{echo}: {reviews}");
    }

    let file = "virtual-service-reviews-jason-v2-v3.yaml";
    mesh.apply(file);
    mesh.settle(file, None, 1, |p| p.reviews() == "v3").await;
    mesh.expect_only(file, None, "v3", 20).await;
    mesh.expect_only(file, jason, "v2", 20).await;

    // Istio's fault-injection task: jason on v2, whose ratings calls are
    // delayed 7 s; the product page gives up on reviews after 2 × 3 s.
    let file = "virtual-service-reviews-test-v2.yaml";
    mesh.apply(file);
    mesh.settle(file, None, 1, |p| p.reviews() == "v1").await;
    let file = "virtual-service-ratings-test-delay.yaml";
    mesh.apply(file);
    mesh.settle(file, jason, 1, |p| p.reviews() == "unavailable")
        .await;
    let began = Instant::now();
    let page = mesh.page(jason).await;
    let took = began.elapsed();
    eprintln!("{file}: jason's page took {took:?}");
    assert_eq!(page.reviews(), "unavailable", "{}", page.body);
    assert!(
        took >= Duration::from_millis(5800),
        "{file}: two 3 s timeouts, took {took:?}"
    );
    assert!(
        page.shows("Ada Marlowe"),
        "details still shown: {}",
        page.body
    );
    let began = Instant::now();
    assert_eq!(mesh.page(None).await.reviews(), "v1");
    assert!(
        began.elapsed() < Duration::from_secs(3),
        "others wait for nothing"
    );

    let file = "virtual-service-ratings-test-abort.yaml";
    mesh.apply(file);
    mesh.settle(file, jason, 3, |p| p.reviews() == "v2 without ratings")
        .await;
    mesh.expect_only(file, jason, "v2 without ratings", 10)
        .await;
    mesh.expect_only(file, None, "v1", 10).await;

    let file = "fault-injection-details-v1.yaml";
    mesh.apply(file);
    mesh.settle(file, None, 3, |p| p.shows(DETAILS_UNAVAILABLE))
        .await;
    for user in [None, jason] {
        let page = mesh.page(user).await;
        assert_eq!(page.status, StatusCode::OK);
        assert!(page.shows(DETAILS_UNAVAILABLE), "{}", page.body);
        assert!(!page.shows("Ada Marlowe"), "{}", page.body);
        assert_ne!(
            page.reviews(),
            "unavailable",
            "reviews still shown: {}",
            page.body
        );
    }

    // The README's walk-through files do what it says they do.
    let walkthrough = repo_root().join("examples/walkthrough");
    let file = "reviews-v3.yaml";
    mesh.apply_path(&walkthrough.join(file));
    mesh.settle(file, None, 1, |p| p.reviews() == "v3").await;
    mesh.expect_only(file, None, "v3", 20).await;
    let file = "reviews-50-50.yaml";
    mesh.apply_path(&walkthrough.join(file));
    mesh.settle(file, None, 1, |p| p.reviews() == "v1").await;
    mesh.expect_split(file, 300, &[("v1", 50.0), ("v3", 50.0)])
        .await;
    let file = "ratings-abort-jason.yaml";
    mesh.apply_path(&walkthrough.join("jason-v2.yaml"));
    mesh.apply_path(&walkthrough.join(file));
    mesh.settle(file, jason, 3, |p| p.reviews() == "v2 without ratings")
        .await;
    mesh.expect_only(file, None, "v1", 10).await;

    mesh.down();
}
