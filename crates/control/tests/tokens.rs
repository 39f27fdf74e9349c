//! Bootstrap tokens through a real weftd: minted over the authenticated
//! API for an existing WorkloadGroup, then shown to `Certificates.Sign`.
//! A valid token gets a certificate; an expired, revoked, foreign-signed
//! or wrong-audience token gets none, each with its reason.
//!
//! Sign is called as a proxy calls it for its first certificate: over TLS
//! on weftd's `--xds` port, verifying weftd with the published root, with
//! no client certificate.

use std::path::Path;
use std::time::Duration;

use http::{Method, StatusCode};
use rcgen::{CertificateParams, KeyPair, SanType};
use weft_proto::discovery::v1::SignRequest;
use weft_proto::discovery::v1::certificates_client::CertificatesClient;
use weft_testkit::weftd::WeftdProcess;

mod mtls_support;

const WEFTD: &str = env!("CARGO_BIN_EXE_weftd");
const GROUP: &str = "apiVersion: networking.istio.io/v1\nkind: WorkloadGroup\nmetadata: {name: cart, namespace: shop}\nspec: {template: {serviceAccount: cart, labels: {app: cart}}}\n";
const IDENTITY: &str = "spiffe://cluster.local/ns/shop/sa/cart";

fn csr() -> String {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let mut params = CertificateParams::default();
    params.subject_alt_names = vec![SanType::URI(
        IDENTITY.to_string().try_into().expect("ascii"),
    )];
    params
        .serialize_request(&key)
        .expect("csr")
        .pem()
        .expect("pem")
}

/// `Certificates.Sign` with `token`: the chain, or the refusal's message.
async fn sign(weftd: &WeftdProcess, token: &str) -> Result<String, String> {
    let channel = mtls_support::tls_channel(weftd, None)
        .await
        .expect("TLS to weftd's --xds port");
    let mut client = CertificatesClient::new(channel);
    client
        .sign(SignRequest {
            token: token.to_string(),
            csr_pem: csr(),
            ttl: None,
        })
        .await
        .map(|reply| reply.into_inner().cert_chain_pem)
        .map_err(|status| status.message().to_string())
}

async fn started(dir: &Path) -> WeftdProcess {
    let weftd = WeftdProcess::start_in(Path::new(WEFTD), dir)
        .await
        .expect("weftd");
    let reply = weftd.apply(GROUP).await.expect("apply");
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    weftd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_valid_unrevoked_token_of_this_weftd_gets_a_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let weftd = started(dir.path()).await;

    let valid = weftd
        .mint_token_with("shop", "cart", None, Some("10m"))
        .await
        .expect("mint");
    assert_eq!(valid.identity, IDENTITY);
    let chain = sign(&weftd, &valid.token).await.expect("a certificate");
    assert!(chain.contains("BEGIN CERTIFICATE"), "{chain}");

    // A group that does not exist gets no token at all.
    let missing = weftd
        .mint_token("shop", "nope")
        .await
        .expect_err("no group");
    assert!(
        missing.to_string().contains("no WorkloadGroup shop/nope"),
        "{missing}"
    );

    // Revoked: refused, and the other token still works.
    let revoked = weftd
        .mint_token_with("shop", "cart", None, None)
        .await
        .expect("mint");
    weftd.revoke_token(&revoked.id).await.expect("revoke");
    let refused = sign(&weftd, &revoked.token).await.expect_err("revoked");
    assert!(refused.contains("revoked"), "{refused}");
    assert!(sign(&weftd, &valid.token).await.is_ok());

    // Signed by another weftd's key.
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let stranger = started(elsewhere.path()).await;
    let foreign = stranger.mint_token("shop", "cart").await.expect("mint");
    let refused = sign(&weftd, &foreign).await.expect_err("foreign");
    assert!(refused.contains("signature does not verify"), "{refused}");

    // Signed with this weftd's own key, for another audience.
    let key = std::fs::read(weftd.state_dir.join("ca/token-key.pem")).expect("key");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let claims = serde_json::json!({
        "iss": "weftd", "aud": "weft-admin", "sub": IDENTITY, "ns": "shop", "sa": "cart",
        "wg": "cart", "iat": now, "exp": now + 600, "jti": "forged",
    });
    let other_audience = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256),
        &claims,
        &jsonwebtoken::EncodingKey::from_ec_pem(&key).expect("P-256 key"),
    )
    .expect("encode");
    let refused = sign(&weftd, &other_audience).await.expect_err("audience");
    assert!(refused.contains("audience"), "{refused}");
    let refused = sign(&weftd, "").await.expect_err("no token");
    assert!(refused.contains("needs a bootstrap token"), "{refused}");

    // The list shows each token once, with who minted it and its state.
    let listed = weftd
        .call(Method::GET, "/v1/tokens", None)
        .await
        .expect("list");
    let listed: serde_json::Value = serde_json::from_slice(&listed.body).expect("JSON");
    let tokens = listed["tokens"].as_array().expect("tokens");
    assert_eq!(tokens.len(), 2, "{listed}");
    assert_eq!(tokens[1]["revoked"], true);
    assert!(
        tokens[0]["mintedBy"]
            .as_str()
            .expect("who")
            .contains("bearer token")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_gets_no_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let weftd = started(dir.path()).await;
    let short = weftd
        .mint_token_with(
            "shop",
            "cart",
            Some("10.0.0.7".parse().expect("ip")),
            Some("1s"),
        )
        .await
        .expect("mint");
    // One second of life plus weftd's five seconds of clock leeway.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let refused = sign(&weftd, &short.token).await.expect_err("expired");
    assert!(refused.contains("expired"), "{refused}");
    // Expired tokens leave the list too (at its next write).
    weftd.mint_token("shop", "cart").await.expect("mint");
    let listed = weftd
        .call(Method::GET, "/v1/tokens", None)
        .await
        .expect("list");
    assert!(!listed.text().contains(&short.id), "{}", listed.text());
}
