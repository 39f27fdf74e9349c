//! Authorization by mTLS identity, through two sidecars: callers with their
//! own workload certificates (sleep, other) and one without, a server
//! sidecar (httpbin) enforcing policies on the principal it verified.

mod mtls_support;

use std::time::Duration;

use http::StatusCode;
use serde_json::json;
use weft_proxy::jwt::jsonwebtoken::{self, Algorithm, EncodingKey, Header};
use weft_testkit::client::{Http1Client, request_with_headers};
use weft_testkit::free_addr;

use mtls_support::{Control, echo_backend, service_yaml};

const JWKS: &str = include_str!("../../proxy/src/policy/jwt/testdata/jwks.json");
const RSA: &[u8] = include_bytes!("../../proxy/src/policy/jwt/testdata/rsa-1.pem");

/// The status `listen` answers for `path` once the mesh has settled (the
/// first pushes and certificates take a moment); `settled` says when.
async fn status_when(
    listen: std::net::SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    settled: impl Fn(StatusCode) -> bool,
) -> StatusCode {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let request = request_with_headers(
            http::Method::GET,
            "httpbin",
            path,
            headers,
            weft_testkit::client::empty(),
        );
        let status = match Http1Client::connect(listen).await {
            Ok(mut client) => client.send(request).await.map(|r| r.status).ok(),
            Err(_) => None,
        };
        if let Some(status) = status
            && (settled(status) || std::time::Instant::now() > deadline)
        {
            return status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no answer from {listen}{path}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

struct Mesh {
    control: Control,
    sleep: std::net::SocketAddr,
    other: std::net::SocketAddr,
    plaintext: std::net::SocketAddr,
    _proxies: Vec<weft_testkit::proxy::ProxyProcess>,
    _backend: weft_testkit::backend::Served,
}

/// httpbin (labels app=httpbin, version=v1) with `policies`, and three
/// callers: sa sleep and sa other with certificates, one plaintext.
async fn mesh(policies: &str) -> Mesh {
    let control = Control::start(&[]).await;
    let backend = echo_backend().await;
    control.apply(&service_yaml(backend.addr.port())).await;
    control.apply(policies).await;
    let server = control
        .ready_server(
            "httpbin",
            backend.addr,
            free_addr(),
            &["--label", "version=v1"],
        )
        .await;
    let mut proxies = vec![server];
    let mut listens = Vec::new();
    for (id, sa, with_cert) in [
        ("sleep", "sleep", true),
        ("other", "other", true),
        ("plain", "plain", false),
    ] {
        let listen = free_addr();
        proxies.push(control.ready_client(id, sa, listen, with_cert).await);
        listens.push(listen);
    }
    Mesh {
        control,
        sleep: listens[0],
        other: listens[1],
        plaintext: listens[2],
        _proxies: proxies,
        _backend: backend,
    }
}

#[tokio::test]
async fn an_allow_policy_by_principal_admits_only_that_caller() {
    let policy = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: only-sleep, namespace: default}\nspec:\n  selector: {matchLabels: {app: httpbin}}\n  rules:\n  - from:\n    - source: {principals: [cluster.local/ns/default/sa/sleep]}\n  - from:\n    - source: {namespaces: [default]}\n    to:\n    - operation: {paths: [/namespace/*]}\n";
    let mesh = mesh(policy).await;
    let ok = |s: StatusCode| s == StatusCode::OK;
    assert_eq!(status_when(mesh.sleep, "/x", &[], ok).await, StatusCode::OK);
    // The others are denied, by identity.
    let denied = |s: StatusCode| s == StatusCode::FORBIDDEN;
    assert_eq!(
        status_when(mesh.other, "/x", &[], denied).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        status_when(mesh.plaintext, "/x", &[], denied).await,
        StatusCode::FORBIDDEN
    );
    // namespaces come from the verified identity too.
    assert_eq!(
        status_when(mesh.other, "/namespace/a", &[], ok).await,
        StatusCode::OK
    );
    assert_eq!(
        status_when(mesh.plaintext, "/namespace/a", &[], denied).await,
        StatusCode::FORBIDDEN
    );
    let _ = &mesh.control;
}

/// Istio's own sample policy (`security-v1-AuthorizationPolicy.yaml` in the
/// corpus): principal sleep or namespace test, GET /info* or POST /data,
/// and a JWT from https://accounts.google.com (signed here by a test key a
/// RequestAuthentication trusts).
#[tokio::test]
async fn istio_sample_allow_policy_is_enforced() {
    let test = "istio_sample_allow_policy_is_enforced";
    let Some(root) = weft_testkit::corpus::root_or_skip(test) else {
        return;
    };
    let sample = root
        .join("istio/pkg/test/datasets/validation/dataset/security-v1-AuthorizationPolicy.yaml");
    let policy = std::fs::read_to_string(&sample).expect("corpus sample");
    let google = format!(
        "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {{name: google}}\nspec:\n  selector: {{matchLabels: {{app: httpbin}}}}\n  jwtRules:\n  - issuer: https://accounts.google.com\n    jwks: '{}'\n---\n{policy}",
        JWKS.trim()
    );
    let mesh = mesh(&google).await;
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("rsa-1".into());
    let claims = json!({"iss": "https://accounts.google.com", "sub": "u1",
                        "exp": jsonwebtoken::get_current_timestamp() + 600});
    let token = jsonwebtoken::encode(
        &header,
        &claims,
        &EncodingKey::from_rsa_pem(RSA).expect("key"),
    )
    .expect("sign");
    let bearer = format!("Bearer {token}");
    let with_token = [("authorization", bearer.as_str())];
    let ok = |s: StatusCode| s == StatusCode::OK;
    let denied = |s: StatusCode| s == StatusCode::FORBIDDEN;
    assert_eq!(
        status_when(mesh.sleep, "/info/me", &with_token, ok).await,
        StatusCode::OK
    );
    assert_eq!(
        status_when(mesh.sleep, "/info/me", &[], denied).await,
        StatusCode::FORBIDDEN,
        "no token, no iss claim"
    );
    assert_eq!(
        status_when(mesh.sleep, "/elsewhere", &with_token, denied).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        status_when(mesh.other, "/info/me", &with_token, denied).await,
        StatusCode::FORBIDDEN,
        "sa other is neither sleep nor in namespace test"
    );
}
