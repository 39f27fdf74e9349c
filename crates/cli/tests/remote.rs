//! `weft apply`, `get`, `delete` and `proxy-status` as a user runs them:
//! the real binary against weftd's real API, hosted in this test.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;

use tokio::runtime::Runtime;
use weft_control::api::{AdminToken, Api, bind_socket, serve};
use weft_control::status::StatusBoard;
use weft_control::store::Store;

const WEFT: &str = env!("CARGO_BIN_EXE_weft");

const ROUTES: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v1}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: reviews
"#;

const POLICY: &str = r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews
  namespace: shop
spec:
  host: reviews.shop.svc.cluster.local
  subsets:
  - name: v1
    labels: {version: v1}
"#;

const BROKEN: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: ratings
spec:
  hosts: [ratings]
  http:
  - route:
    - destination: {host: ratings}
      weight: 150
"#;

const TOKEN: &str = "remote-test-admin-token";

/// weftd's API on an ephemeral port and a unix socket, served from this
/// test's runtime, with a CA for `weft token`.
struct Weftd {
    address: String,
    dir: tempfile::TempDir,
    store: Arc<Store>,
    status: Arc<StatusBoard>,
    _runtime: Runtime,
}

impl Weftd {
    fn start() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join(".weft/state");
        std::fs::create_dir_all(&state).expect("mkdir");
        std::fs::write(state.join("admin-token"), TOKEN).expect("token file");
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let address = listener.local_addr().expect("address").to_string();
        let store = Arc::new(Store::in_memory());
        let status = Arc::new(StatusBoard::default());
        let ca = weft_control::ca::Ca::open(&weft_control::ca::CaOptions {
            state_dir: state.clone(),
            cacerts: None,
            trust_domain: "cluster.local".into(),
            workload_ttl: weft_control::ca::DEFAULT_WORKLOAD_TTL,
        })
        .expect("ca");
        let api = Arc::new(
            Api::new(store.clone(), status.clone(), AdminToken::new(TOKEN)).with_ca(Arc::new(ca)),
        );
        let socket = {
            let _guard = runtime.enter();
            bind_socket(&state.join("api.sock")).expect("socket")
        };
        runtime.spawn(serve(listener, api.clone()));
        runtime.spawn(serve(socket, api));
        Self {
            address,
            dir,
            store,
            status,
            _runtime: runtime,
        }
    }

    fn token_file(&self) -> String {
        path(&self.dir.path().join(".weft/state/admin-token")).to_string()
    }

    /// `weft` with the address and the token file given as flags.
    fn weft(&self, args: &[&str]) -> Run {
        let token_file = self.token_file();
        let mut all = vec!["--token-file", token_file.as_str()];
        all.extend(args);
        run(&self.address, &all)
    }
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn run(address: &str, args: &[&str]) -> Run {
    let mut command = Command::new(WEFT);
    command.args(["--weftd", address]);
    run_with(&mut command, args, &[])
}

/// Runs `weft` without any inherited hint of where weftd is.
/// (`env`: the variables the test does set).
fn run_with(command: &mut Command, args: &[&str], env: &[(&str, &str)]) -> Run {
    let home = tempfile::tempdir().expect("tempdir");
    let output = command
        .args(args)
        .stdin(Stdio::null())
        .env_remove("WEFT_ADDR")
        .env_remove("WEFT_TOKEN_FILE")
        .env("WEFT_HOME", home.path())
        .envs(env.iter().copied())
        .output()
        .expect("run weft");
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn write(dir: &Path, name: &str, text: &str) {
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, text).expect("write");
}

fn path(dir: &Path) -> &str {
    dir.to_str().expect("utf-8 path")
}

#[test]
fn apply_a_directory_then_get_and_delete() {
    let weftd = Weftd::start();
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "routes.yaml", ROUTES);
    write(dir.path(), "nested/policy.yml", POLICY);
    write(dir.path(), "README.md", "not config");

    let applied = weftd.weft(&["apply", "-f", path(dir.path())]);
    assert_eq!(applied.code, 0, "{}{}", applied.stdout, applied.stderr);
    assert_eq!(
        applied.stdout,
        "destinationrule.networking.istio.io/reviews created\n\
         virtualservice.networking.istio.io/reviews created\n"
    );
    assert!(
        applied.stderr.contains("1 object(s) skipped"),
        "{}",
        applied.stderr
    );

    let again = weftd.weft(&["apply", "-f", path(dir.path())]);
    assert!(
        again
            .stdout
            .contains("virtualservice.networking.istio.io/reviews unchanged")
    );

    let table = weftd.weft(&["get", "vs"]);
    assert_eq!(table.code, 0, "{}", table.stderr);
    assert_eq!(
        table.stdout,
        "NAME      GATEWAYS   HOSTS         RESOURCE VERSION\n\
         reviews              [\"reviews\"]   2\n"
    );
    let everywhere = weftd.weft(&["get", "destinationrules", "-A"]);
    assert_eq!(
        everywhere.stdout,
        "NAMESPACE   NAME      HOST                             RESOURCE VERSION\n\
         shop        reviews   reviews.shop.svc.cluster.local   1\n"
    );
    let empty = weftd.weft(&["get", "dr"]);
    assert_eq!((empty.code, empty.stdout.as_str()), (0, ""));
    assert!(
        empty
            .stderr
            .contains("No resources found in default namespace")
    );

    let yaml = weftd.weft(&["get", "dr", "reviews", "-n", "shop", "-o", "yaml"]);
    assert_eq!(yaml.code, 0, "{}", yaml.stderr);
    assert!(
        yaml.stdout.contains("kind: DestinationRule"),
        "{}",
        yaml.stdout
    );
    assert!(
        yaml.stdout.contains("host: reviews.shop.svc.cluster.local"),
        "{}",
        yaml.stdout
    );
    // What `get -o yaml` prints applies again, unchanged.
    write(dir.path(), "out/dr.yaml", &yaml.stdout);
    let reapplied = weftd.weft(&["apply", "-f", path(&dir.path().join("out"))]);
    assert_eq!(
        reapplied.stdout, "destinationrule.networking.istio.io/reviews unchanged\n",
        "{}",
        reapplied.stderr
    );

    let json = weftd.weft(&["get", "virtualservice", "-o", "json"]);
    let list: serde_json::Value = serde_json::from_str(&json.stdout).expect("json");
    assert_eq!(list["items"][0]["metadata"]["resourceVersion"], "2");

    let missing = weftd.weft(&["get", "vs", "ratings"]);
    assert_eq!(missing.code, 1);
    assert!(
        missing
            .stderr
            .contains("VirtualService default/ratings not found"),
        "{}",
        missing.stderr
    );

    let deleted = weftd.weft(&["delete", "dr", "reviews", "-n", "shop"]);
    assert_eq!(deleted.code, 0, "{}", deleted.stderr);
    assert_eq!(
        deleted.stdout,
        "destinationrule.networking.istio.io \"reviews\" deleted\n"
    );
    let gone = weftd.weft(&["delete", "dr", "reviews", "-n", "shop"]);
    assert_eq!(gone.code, 1);

    let by_file = weftd.weft(&["delete", "-f", path(&dir.path().join("routes.yaml"))]);
    assert_eq!(by_file.code, 0, "{}", by_file.stderr);
    assert_eq!(
        by_file.stdout,
        "virtualservice.networking.istio.io \"reviews\" deleted\n"
    );
    assert!(weftd.store.list(None, None).is_empty());
}

#[test]
fn an_invalid_file_applies_nothing() {
    let weftd = Weftd::start();
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "a-routes.yaml", ROUTES);
    write(dir.path(), "b-broken.yaml", BROKEN);

    let applied = weftd.weft(&["apply", "-f", path(dir.path())]);
    assert_eq!(applied.code, 1);
    assert!(
        applied.stdout.contains(
            "b-broken.yaml: VirtualService default/ratings: spec.http[0].route[0].weight"
        ),
        "{}",
        applied.stdout
    );
    assert!(
        applied.stderr.contains("nothing applied"),
        "{}",
        applied.stderr
    );
    assert!(weftd.store.list(None, None).is_empty());
}

#[test]
fn proxy_status_shows_sync_and_nack_reasons() {
    let weftd = Weftd::start();
    let empty = weftd.weft(&["proxy-status"]);
    assert_eq!(empty.code, 0);
    assert!(empty.stderr.contains("No proxies"), "{}", empty.stderr);

    weftd.status.update("reviews-v1-7f9.shop", |p| {
        p.namespace = "shop".into();
        p.connected = true;
        p.sent_version = "5".into();
        p.acked_version = "5".into();
    });
    weftd.status.update("ratings-v1-2c4.shop", |p| {
        p.namespace = "shop".into();
        p.connected = true;
        p.sent_version = "5".into();
        p.acked_version = "4".into();
        p.error = Some("route reviews: unknown cluster".into());
    });
    weftd.status.update("details-1.default", |p| {
        p.namespace = "default".into();
        p.connected = false;
        p.acked_version = "3".into();
    });
    weftd.status.update("web-0.default", |p| {
        p.namespace = "default".into();
        p.connected = true;
        p.sent_version = "5".into();
        p.acked_version = "4".into();
    });

    let status = weftd.weft(&["proxy-status"]);
    assert_eq!(status.code, 0, "{}", status.stderr);
    assert_eq!(
        status.stdout,
        "NAME                  NAMESPACE   STATUS         VERSION\n\
         details-1.default     default     DISCONNECTED   3\n\
         ratings-v1-2c4.shop   shop        NACK           4\n    \
         NACK: route reviews: unknown cluster\n\
         reviews-v1-7f9.shop   shop        SYNCED         5\n\
         web-0.default         default     STALE          4\n"
    );
}

#[test]
fn unreachable_weftd_says_how_to_start_it() {
    // A port nothing listens on: bound, then released.
    let address = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("free port")
        .to_string();
    for args in [
        &["get", "vs"][..],
        &["proxy-status"],
        &["delete", "vs", "x"],
    ] {
        let failed = run(&address, args);
        assert_eq!(failed.code, 1, "{args:?}");
        assert_eq!(failed.stderr.lines().count(), 1, "{}", failed.stderr);
        assert!(
            failed
                .stderr
                .contains(&format!("cannot reach weftd at {address}")),
            "{}",
            failed.stderr
        );
        assert!(
            failed
                .stderr
                .contains("is weftd running? start it with `weftd`"),
            "{}",
            failed.stderr
        );
    }
}

#[test]
fn weft_finds_the_credential_by_itself() {
    let weftd = Weftd::start();
    weftd
        .store
        .apply_text(ROUTES.split("---").next().unwrap_or(ROUTES), "r.yaml")
        .expect("apply");

    // In the directory weftd runs in: its socket, no token needed.
    let here = run_with(
        Command::new(WEFT).current_dir(weftd.dir.path()),
        &["get", "vs"],
        &[],
    );
    assert_eq!(here.code, 0, "{}", here.stderr);
    assert!(here.stdout.contains("reviews"), "{}", here.stdout);

    // The socket named outright.
    let socket = weftd.dir.path().join(".weft/state/api.sock");
    let named = run(&format!("unix:{}", path(&socket)), &["get", "vs"]);
    assert_eq!(named.code, 0, "{}", named.stderr);
    assert!(named.stdout.contains("reviews"), "{}", named.stdout);

    // From the environment.
    let token_file = weftd.token_file();
    let env = run_with(
        &mut Command::new(WEFT),
        &["get", "vs"],
        &[
            ("WEFT_ADDR", weftd.address.as_str()),
            ("WEFT_TOKEN_FILE", token_file.as_str()),
        ],
    );
    assert_eq!(env.code, 0, "{}", env.stderr);
    assert!(env.stdout.contains("reviews"), "{}", env.stdout);
}

#[test]
fn a_missing_or_wrong_token_is_refused_with_what_was_tried() {
    let weftd = Weftd::start();
    let without = run(&weftd.address, &["get", "vs"]);
    assert_eq!(without.code, 1);
    assert!(
        without.stderr.contains("refused the credential")
            && without.stderr.contains("no --token-file"),
        "{}",
        without.stderr
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let wrong = dir.path().join("token");
    std::fs::write(&wrong, "not-the-token").expect("write");
    let wrong_token = run(&weftd.address, &["--token-file", path(&wrong), "get", "vs"]);
    assert!(
        wrong_token.stderr.contains("not this weftd's admin token"),
        "{}",
        wrong_token.stderr
    );
    assert!(weftd.store.list(None, None).is_empty());
}

#[test]
fn tokens_are_created_listed_and_revoked() {
    let weftd = Weftd::start();
    let missing = weftd.weft(&["token", "create", "-n", "shop", "--group", "cart"]);
    assert_eq!(missing.code, 1);
    assert!(
        missing.stderr.contains("no WorkloadGroup shop/cart"),
        "{}",
        missing.stderr
    );
    weftd
        .store
        .apply_text(
            "apiVersion: networking.istio.io/v1\nkind: WorkloadGroup\nmetadata: {name: cart, namespace: shop}\nspec: {template: {serviceAccount: cart}}\n",
            "wg.yaml",
        )
        .expect("group");
    let created = weftd.weft(&[
        "token",
        "create",
        "-n",
        "shop",
        "--group",
        "cart",
        "--address",
        "10.0.0.7",
        "--ttl",
        "10m",
    ]);
    assert_eq!(created.code, 0, "{}", created.stderr);
    let token = created.stdout.trim();
    assert_eq!(token.split('.').count(), 3, "a JWT on stdout: {token}");
    assert!(
        created
            .stderr
            .contains("spiffe://cluster.local/ns/shop/sa/cart"),
        "{}",
        created.stderr
    );
    let id = created
        .stderr
        .split_whitespace()
        .nth(1)
        .expect("id")
        .to_string();

    let listed = weftd.weft(&["token", "list"]);
    assert_eq!(listed.code, 0, "{}", listed.stderr);
    assert!(listed.stdout.starts_with("ID "), "{}", listed.stdout);
    assert!(
        listed.stdout.contains(&id) && listed.stdout.contains("shop/cart"),
        "{}",
        listed.stdout
    );
    assert!(listed.stdout.contains("10.0.0.7") && listed.stdout.contains("valid"));
    assert!(
        !listed.stdout.contains(token),
        "the token is shown only once"
    );

    let revoked = weftd.weft(&["token", "revoke", &id]);
    assert_eq!(revoked.code, 0, "{}", revoked.stderr);
    let listed = weftd.weft(&["token", "list"]);
    assert!(listed.stdout.contains("revoked"), "{}", listed.stdout);
    let unknown = weftd.weft(&["token", "revoke", "nope"]);
    assert_eq!(unknown.code, 1);
    assert!(
        unknown.stderr.contains("no token with id"),
        "{}",
        unknown.stderr
    );
}
