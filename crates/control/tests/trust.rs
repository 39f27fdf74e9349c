//! Control-plane trust, through real processes and real TLS: who gets a
//! config and a certificate from weftd, and which weftd (and which roots) a
//! proxy accepts.
//!
//! - without a credential: no certificate, no discovery stream, and a proxy
//!   told so at start;
//! - a token proves one identity, a certificate renews only itself, and the
//!   lifetime is weftd's;
//! - a weftd whose certificate the held root does not vouch for is refused;
//!   a trust bundle with a root the held root does not vouch for is refused;
//! - expired and revoked tokens get nothing.

mod mtls_support;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mtls_support::*;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tonic::Code;
use weft_control::ca::binding;
use weft_proto::discovery::v1::certificates_client::CertificatesClient;
use weft_proto::discovery::v1::discovery_client::DiscoveryClient;
use weft_proto::discovery::v1::{Hello, Node, ProxyMessage, SignRequest, proxy_message};
use weft_testkit::free_addr;
use weft_testkit::proxy::{ProxyOptions, ProxyProcess};

/// A key and a CSR asking for `uri`.
fn csr(uri: &str) -> (rcgen::KeyPair, String) {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.subject_alt_names = vec![rcgen::SanType::URI(uri.try_into().expect("uri"))];
    let pem = params
        .serialize_request(&key)
        .expect("csr")
        .pem()
        .expect("pem");
    (key, pem)
}

/// `Certificates.Sign` on weftd's TLS port, presenting `client` (or none).
async fn sign(
    control: &Control,
    client: Option<Arc<CertifiedKey>>,
    token: &str,
    csr_pem: &str,
    ttl: Option<Duration>,
) -> Result<weft_proto::discovery::v1::SignResponse, tonic::Status> {
    let channel = tls_channel(&control.weftd, client)
        .await
        .map_err(|err| tonic::Status::unavailable(format!("{err:#}")))?;
    CertificatesClient::new(channel)
        .sign(SignRequest {
            token: token.to_string(),
            csr_pem: csr_pem.to_string(),
            ttl: ttl.map(Into::into),
        })
        .await
        .map(tonic::Response::into_inner)
}

fn leaf(chain_pem: &str) -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(chain_pem.as_bytes()).expect("leaf")
}

/// The certificate (chain + key) as rustls presents it.
fn certified(chain_pem: &str, key: &rcgen::KeyPair) -> Arc<CertifiedKey> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .collect::<Result<_, _>>()
        .expect("chain");
    let key = PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    Arc::new(CertifiedKey::from_der(chain, key, &provider).expect("certified key"))
}

/// not_after - not_before of a PEM chain's leaf, in seconds.
fn lifetime(chain_pem: &str) -> i64 {
    let der = leaf(chain_pem);
    let (_, cert) = x509_parser::parse_x509_certificate(&der).expect("x509");
    cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp()
}

/// A self-signed CA: its PEM and what signs with it.
fn foreign_ca(name: &str) -> (String, rcgen::KeyPair, rcgen::CertificateParams) {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params.self_signed(&key).expect("ca");
    (cert.pem(), key, params)
}

/// Polls `/ready` for `window` and asserts it never says LIVE; the last
/// answer.
async fn never_ready(proxy: &ProxyProcess, window: Duration) -> String {
    let up = Instant::now() + Duration::from_secs(10);
    while proxy.admin_get("/ready").await.is_err() && Instant::now() < up {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let deadline = Instant::now() + window;
    let mut last = String::new();
    while Instant::now() < deadline {
        let ready = proxy.admin_get("/ready").await.expect("/ready");
        assert_eq!(
            ready.status,
            503,
            "ready: {}\n{}",
            ready.text(),
            proxy.logs()
        );
        last = ready.text();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    last
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_a_credential_there_is_no_certificate_and_no_config() {
    let control = Control::start(&[]).await;

    // A proxy pointed at the TLS port with no token says what it needs.
    let binary = proxy_binary();
    let root = control.weftd.root_cert.display().to_string();
    let xds = control.weftd.xds.to_string();
    let mut options = ProxyOptions::new(&binary, "");
    options.config = None;
    options.args = [
        "--control-plane",
        &xds,
        "--ca-root",
        &root,
        "--node-id",
        "x",
    ]
    .map(String::from)
    .to_vec();
    let mut tokenless = ProxyProcess::spawn(options).expect("spawn");
    let code = tokenless
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("exits");
    assert_eq!(code, Some(2), "{}", tokenless.logs());
    assert!(
        tokenless.logs().contains("--token-file"),
        "{}",
        tokenless.logs()
    );

    // Over TLS without a client certificate: no stream, and no certificate
    // without a token (or with a forged one).
    let channel = tls_channel(&control.weftd, None).await.expect("connect");
    let hello = ProxyMessage {
        message: Some(proxy_message::Message::Hello(Hello {
            node: Some(Node {
                id: "intruder".into(),
                ..Default::default()
            }),
            known_versions: Default::default(),
        })),
    };
    let refused = DiscoveryClient::new(channel)
        .stream(tokio_stream::iter([hello]))
        .await
        .expect_err("no stream without a workload certificate");
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    assert!(
        refused.message().contains("--token-file"),
        "{}",
        refused.message()
    );

    let (_, request) = csr(CLIENT_ID);
    let none = sign(&control, None, "", &request, None)
        .await
        .expect_err("no token");
    assert_eq!(none.code(), Code::Unauthenticated, "{none:?}");
    let forged = sign(&control, None, "weft1.0000.0000", &request, None)
        .await
        .expect_err("forged token");
    assert_eq!(forged.code(), Code::Unauthenticated, "{forged:?}");
    assert!(
        forged.message().contains("bootstrap token refused"),
        "{}",
        forged.message()
    );

    // The plaintext port does not sign at all.
    let plain = tonic::transport::Endpoint::from_shared(format!("http://{}", control.weftd.grpc))
        .expect("endpoint")
        .connect()
        .await
        .expect("plaintext connect");
    let unserved = CertificatesClient::new(plain)
        .sign(SignRequest {
            token: String::new(),
            csr_pem: request.clone(),
            ttl: None,
        })
        .await
        .expect_err("no signing on the plaintext port");
    assert_eq!(unserved.code(), Code::Unimplemented, "{unserved:?}");

    // None of them became a proxy of the mesh.
    let proxies = control.weftd.proxies().await.expect("proxies");
    assert!(!proxies.contains("intruder"), "{proxies}");
    assert!(
        !control.weftd.logs().contains("certificate issued"),
        "{}",
        control.weftd.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_token_proves_one_identity_and_a_certificate_renews_only_itself() {
    let control = Control::start(&["--workload-cert-ttl", "2h"]).await;
    let token = read_token(&control, "sleep").await;

    // Another identity than the token's: refused, naming both.
    let (_, for_httpbin) = csr(SERVER_ID);
    let refused = sign(&control, None, &token, &for_httpbin, None)
        .await
        .expect_err("another identity");
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert!(
        refused.message().contains(&format!("proves {CLIENT_ID}")),
        "{}",
        refused.message()
    );

    // The token's identity, for weftd's lifetime whatever is asked.
    let (key, for_sleep) = csr(CLIENT_ID);
    let first = sign(
        &control,
        None,
        &token,
        &for_sleep,
        Some(Duration::from_secs(90 * 24 * 3600)),
    )
    .await
    .expect("first certificate");
    assert_eq!(
        lifetime(&first.cert_chain_pem),
        2 * 3600 + 60,
        "weftd's 2h (plus the skew allowance), not the 90 days asked"
    );
    let first_proof =
        binding::proven_identity(&leaf(&first.cert_chain_pem), "cluster.local").expect("proof");
    assert_eq!(first_proof.spiffe.uri(), CLIENT_ID);

    // Renewal: mutual TLS with that certificate, no token; a short ttl
    // asked is ignored too.
    let presented = certified(&first.cert_chain_pem, &key);
    let (_, renewal_csr) = csr(CLIENT_ID);
    let renewed = sign(
        &control,
        Some(presented.clone()),
        "",
        &renewal_csr,
        Some(Duration::from_secs(1)),
    )
    .await
    .expect("renewed without a token");
    assert_eq!(lifetime(&renewed.cert_chain_pem), 2 * 3600 + 60);
    let renewed_proof =
        binding::proven_identity(&leaf(&renewed.cert_chain_pem), "cluster.local").expect("proof");
    assert_eq!(renewed_proof, first_proof, "same identity and binding");

    // A certificate cannot be traded for another identity, token or not.
    let other_token = read_token(&control, "httpbin").await;
    let swapped = sign(&control, Some(presented), &other_token, &for_httpbin, None)
        .await
        .expect_err("a certificate renews only itself");
    assert_eq!(swapped.code(), Code::PermissionDenied, "{swapped:?}");

    // A client certificate weftd did not issue ends the handshake.
    let (_, foreign_key, foreign_params) = foreign_ca("stranger");
    let issuer = rcgen::Issuer::new(foreign_params, foreign_key);
    let (stranger_key, _) = csr(CLIENT_ID);
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.subject_alt_names = vec![rcgen::SanType::URI(CLIENT_ID.try_into().expect("uri"))];
    let stranger = params
        .signed_by(&stranger_key, &issuer)
        .expect("foreign cert");
    let foreign = certified(&stranger.pem(), &stranger_key);
    let (_, again) = csr(CLIENT_ID);
    assert!(
        sign(&control, Some(foreign), "", &again, None)
            .await
            .is_err(),
        "a foreign client certificate is refused"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while !control.weftd.logs().contains("TLS handshake with") && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        control.weftd.logs().contains("TLS handshake with"),
        "{}",
        control.weftd.logs()
    );
}

/// Options for a proxy holding the root in `held` (not weftd's own) with
/// the bootstrap token in `token`.
fn held_root_options<'a>(
    control: &Control,
    binary: &'a Path,
    held: &Path,
    token: &Path,
    args: &[String],
) -> ProxyOptions<'a> {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ProxyOptions::secure(binary, control.weftd.xds, held, token, &args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_proxy_refuses_a_weftd_its_held_root_does_not_vouch_for() {
    let control = Control::start(&[]).await;
    let backend = echo_backend().await;
    let token = control.token_file("httpbin").await;
    let (foreign_pem, _, _) = foreign_ca("not weftd");
    let held = control.dir.path().join("foreign-root.pem");
    std::fs::write(&held, foreign_pem).expect("write");

    let binary = proxy_binary();
    let args = httpbin_args("misled", backend.addr, None);
    let options = held_root_options(&control, &binary, &held, &token, &args);
    let proxy = ProxyProcess::spawn(options).expect("spawn");
    let why = never_ready(&proxy, Duration::from_secs(3)).await;
    assert!(why.contains("not trusted"), "/ready says why: {why}");
    assert!(
        why.contains("foreign-root.pem"),
        "names the held root: {why}"
    );
    assert!(
        cert_field(&certs(&proxy).await, "serialNumber").is_none(),
        "no certificate"
    );
    let dump = proxy.admin_get("/config_dump").await.expect("config_dump");
    assert!(
        !dump.text().contains("weftd"),
        "no config from weftd: {}",
        dump.text()
    );
    assert!(
        !control.weftd.logs().contains("certificate issued"),
        "the token never reached weftd's CA: {}",
        control.weftd.logs()
    );
    let proxies = control.weftd.proxies().await.expect("proxies");
    assert!(!proxies.contains("misled"), "{proxies}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_trust_bundle_with_a_root_the_held_root_does_not_vouch_for_is_refused() {
    // weftd's CA signs with root A but announces A and a foreign root B.
    let cacerts = tempfile::tempdir().expect("tempdir");
    let (a_pem, a_key, _) = foreign_ca("mesh root A");
    let (b_pem, _, _) = foreign_ca("intruder root B");
    for (name, text) in [
        ("ca-cert.pem", a_pem.clone()),
        ("ca-key.pem", a_key.serialize_pem()),
        ("root-cert.pem", format!("{a_pem}{b_pem}")),
        ("cert-chain.pem", a_pem.clone()),
    ] {
        std::fs::write(cacerts.path().join(name), text).expect("write");
    }
    let dir = cacerts.path().display().to_string();
    let control = Control::start(&["--cacerts", &dir]).await;
    let backend = echo_backend().await;
    control.apply(&service_yaml(backend.addr.port())).await;

    // The proxy holds A alone, as the operator handed it out.
    let held = control.dir.path().join("held-root.pem");
    std::fs::write(&held, &a_pem).expect("write");
    let token = control.token_file("httpbin").await;
    let binary = proxy_binary();
    let args = httpbin_args("httpbin", backend.addr, Some(free_addr()));
    let options = held_root_options(&control, &binary, &held, &token, &args);
    let proxy = ProxyProcess::spawn_ready(options, Duration::from_secs(20))
        .await
        .expect("ready: weftd itself is vouched for by A");

    let shown = certs(&proxy).await;
    assert_eq!(
        cert_field(&shown, "rootCertificates").as_deref(),
        Some(a_pem.as_str()),
        "B never became a trust anchor: {shown}"
    );
    let rejected = cert_field(&shown, "rejectedBundle").expect("rejection shown on /certs");
    assert!(
        rejected.contains("intruder root B") && rejected.contains("neither the held root"),
        "{rejected}"
    );
    assert!(
        proxy.logs().contains("trust bundle from weftd refused"),
        "{}",
        proxy.logs()
    );
}

/// A token past its expiry, and one revoked with `DELETE /v1/tokens/<id>`,
/// get no certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn expired_and_revoked_tokens_get_no_certificate() {
    let control = Control::start(&[]).await;
    let group = "apiVersion: networking.istio.io/v1\nkind: WorkloadGroup\nmetadata: {name: sleep, namespace: default}\nspec: {template: {serviceAccount: sleep}}\n";
    control.apply(group).await;

    let short = mint(
        &control,
        r#"{"namespace":"default","workloadGroup":"sleep","ttl":"1s"}"#,
    )
    .await;
    let revoked = mint(
        &control,
        r#"{"namespace":"default","workloadGroup":"sleep"}"#,
    )
    .await;
    let id = revoked["id"].as_str().expect("id");
    let reply = api(
        &control,
        http::Method::DELETE,
        &format!("/v1/tokens/{id}"),
        None,
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    // Past the expiry and its few seconds of leeway.
    tokio::time::sleep(Duration::from_secs(7)).await;

    for (token, why) in [(&short["token"], "expired"), (&revoked["token"], "revoked")] {
        let (_, request) = csr(CLIENT_ID);
        let refused = sign(
            &control,
            None,
            token.as_str().expect("token"),
            &request,
            None,
        )
        .await
        .expect_err(why);
        assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
        assert!(refused.message().contains(why), "{}", refused.message());
    }

    // A proxy holding the revoked token never gets ready.
    let path = control.dir.path().join("revoked.token");
    std::fs::write(&path, revoked["token"].as_str().expect("token")).expect("write");
    let binary = proxy_binary();
    let options = control.secure_options(&binary, &path, &["--node-id", "sleep"]);
    let proxy = ProxyProcess::spawn(options).expect("spawn");
    let why = never_ready(&proxy, Duration::from_secs(3)).await;
    assert!(why.contains("revoked"), "{why}");
}

/// A bootstrap token for `sa` in the default namespace (as mtls_support
/// mints them).
async fn read_token(control: &Control, sa: &str) -> String {
    let path = control.token_file(sa).await;
    std::fs::read_to_string(path).expect("token file")
}

/// `POST /v1/tokens` with `body` (JSON); the answer.
async fn mint(control: &Control, body: &str) -> serde_json::Value {
    let reply = api(control, http::Method::POST, "/v1/tokens", Some(body)).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    serde_json::from_slice(&reply.body).expect("JSON")
}

/// One call to weftd's API with the admin token it keeps in its state
/// directory.
async fn api(
    control: &Control,
    method: http::Method,
    path: &str,
    body: Option<&str>,
) -> weft_testkit::client::Reply {
    let admin =
        std::fs::read_to_string(control.weftd.state_dir.join("admin-token")).unwrap_or_default();
    let authorization = format!("Bearer {}", admin.trim());
    let host = control.weftd.api.to_string();
    let mut headers = vec![("authorization", authorization.as_str())];
    let body = match body {
        Some(body) => {
            headers.push(("content-type", "application/json"));
            weft_testkit::client::full(body.to_string())
        }
        None => weft_testkit::client::empty(),
    };
    let mut request = weft_testkit::client::request(method, &host, path, body);
    for (name, value) in headers {
        request.headers_mut().insert(
            http::HeaderName::from_static(name),
            http::HeaderValue::from_str(value).expect("header"),
        );
    }
    weft_testkit::client::Http1Client::connect(control.weftd.api)
        .await
        .expect("connect")
        .send(request)
        .await
        .expect("API call")
}
