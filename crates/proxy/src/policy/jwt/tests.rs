//! Tests of JWT validation: RS256/ES256 tokens, refusals with their reason,
//! no token, output headers, JWKS fetched (HTTP, HTTPS, OpenID discovery),
//! cached and bounded by the rule timeout, cookies, space-delimited claims.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http::{HeaderName, Request, Response};
use http_body_util::Full;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::json;

use super::*;

const JWKS: &str = include_str!("testdata/jwks.json");
const RSA: &[u8] = include_bytes!("testdata/rsa-1.pem");
const RSA_OTHER: &[u8] = include_bytes!("testdata/rsa-other.pem");
const EC: &[u8] = include_bytes!("testdata/ec-1.pem");
const ISSUER: &str = "https://issuer.test";

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

fn sign_rs(claims: &serde_json::Value, pem: &[u8]) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("rsa-1".into());
    encode(
        &header,
        claims,
        &EncodingKey::from_rsa_pem(pem).expect("rsa key"),
    )
    .expect("sign")
}

fn claims() -> serde_json::Value {
    json!({"iss": ISSUER, "sub": "alice", "aud": ["web"], "exp": now() + 600,
           "groups": ["dev", "ops"], "org": {"team": "blue"}})
}

fn rule(keys: KeySource) -> JwtRule {
    JwtRule {
        issuer: ISSUER.into(),
        audiences: vec!["web".into()],
        keys,
        locations: Location::defaults(),
        payload_header: Some(HeaderName::from_static("x-jwt-payload")),
        forward_original_token: false,
        space_delimited_claims: vec!["roles".into()],
        claim_headers: vec![(
            HeaderName::from_static("x-team"),
            vec!["org".into(), "team".into()],
        )],
        policy: "ns/jwt".into(),
    }
}

fn inline() -> Authenticator {
    Authenticator {
        rules: vec![rule(KeySource::Inline(Arc::new(
            KeySet::parse(JWKS).expect("jwks"),
        )))],
    }
}

fn parts(uri: &str, bearer: Option<&str>) -> http::request::Parts {
    let mut builder = Request::get(uri);
    if let Some(token) = bearer {
        builder = builder.header("authorization", format!("Bearer {token}"));
    }
    builder.body(()).expect("request").into_parts().0
}

async fn check(auth: &Authenticator, token: &str) -> Result<Option<Verified>, JwtError> {
    auth.authenticate(&mut parts("/", Some(token))).await
}

#[tokio::test]
async fn valid_rs256_and_es256_tokens_give_a_request_principal() {
    let auth = inline();
    let verified = check(&auth, &sign_rs(&claims(), RSA))
        .await
        .expect("valid")
        .expect("token");
    assert_eq!(verified.principal, format!("{ISSUER}/alice"));
    assert_eq!(verified.claim_strings(&["groups".into()]), ["dev", "ops"]);

    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some("ec-1".into());
    let es = encode(
        &header,
        &claims(),
        &EncodingKey::from_ec_pem(EC).expect("ec key"),
    )
    .expect("sign");
    assert!(check(&auth, &es).await.expect("valid").is_some());
}

#[tokio::test]
async fn bad_tokens_are_refused_with_their_reason() {
    let auth = inline();
    let mut expired = claims();
    expired["exp"] = json!(now() - 3600);
    assert_eq!(
        check(&auth, &sign_rs(&expired, RSA)).await.unwrap_err(),
        JwtError::Expired
    );
    assert!(matches!(
        check(&auth, &sign_rs(&claims(), RSA_OTHER))
            .await
            .unwrap_err(),
        JwtError::BadSignature(_)
    ));
    let mut other_issuer = claims();
    other_issuer["iss"] = json!("https://elsewhere.test");
    assert!(matches!(
        check(&auth, &sign_rs(&other_issuer, RSA))
            .await
            .unwrap_err(),
        JwtError::UnknownIssuer(_)
    ));
    let mut other_audience = claims();
    other_audience["aud"] = json!("mobile");
    assert_eq!(
        check(&auth, &sign_rs(&other_audience, RSA))
            .await
            .unwrap_err(),
        JwtError::Audience
    );
    assert!(matches!(
        check(&auth, "not-a-jwt").await.unwrap_err(),
        JwtError::Malformed(_)
    ));
}

#[tokio::test]
async fn no_token_passes_unauthenticated() {
    let auth = inline();
    let mut request = parts("/", None);
    assert!(auth.authenticate(&mut request).await.expect("ok").is_none());
    // Another scheme in Authorization is not a JWT location.
    let mut basic = parts("/", None);
    basic.headers.insert(
        "authorization",
        "Basic dXNlcjpwdw==".parse().expect("value"),
    );
    assert!(auth.authenticate(&mut basic).await.expect("ok").is_none());
}

#[tokio::test]
async fn outputs_and_token_removal() {
    let auth = inline();
    let token = sign_rs(&claims(), RSA);
    let mut request = parts("/", Some(&token));
    auth.authenticate(&mut request).await.expect("valid");
    assert!(request.headers.get("authorization").is_none());
    let payload = token.split('.').nth(1).expect("payload");
    assert_eq!(request.headers["x-jwt-payload"], payload);
    assert_eq!(request.headers["x-team"], "blue");

    // From the access_token parameter, removed from the query; kept when
    // forwardOriginalToken.
    let mut from_param = parts(&format!("/p?a=1&access_token={token}&b=2"), None);
    auth.authenticate(&mut from_param).await.expect("valid");
    assert_eq!(from_param.uri.to_string(), "/p?a=1&b=2");
    let mut keep = inline();
    keep.rules[0].forward_original_token = true;
    let mut request = parts("/", Some(&token));
    keep.authenticate(&mut request).await.expect("valid");
    assert!(request.headers.get("authorization").is_some());
}

#[tokio::test]
async fn jwks_uri_is_fetched_cached_and_refetched_for_an_unknown_kid() {
    let fetches = Arc::new(AtomicUsize::new(0));
    let counter = fetches.clone();
    let served = weft_testkit::backend::serve(move |_request| {
        let counter = counter.clone();
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(
                JWKS.as_bytes(),
            ))))
        }
    })
    .await;
    let uri = format!("http://{}/jwks.json", served.addr);
    let auth = Authenticator {
        rules: vec![rule(KeySource::Remote(
            RemoteJwks::shared(&uri),
            DEFAULT_FETCH_TIMEOUT,
        ))],
    };
    let token = sign_rs(&claims(), RSA);
    assert!(check(&auth, &token).await.expect("valid").is_some());
    assert!(check(&auth, &token).await.expect("valid").is_some());
    assert_eq!(fetches.load(Ordering::SeqCst), 1, "the set is cached");

    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("rotated".into());
    let unknown = encode(
        &header,
        &claims(),
        &EncodingKey::from_rsa_pem(RSA).expect("key"),
    )
    .expect("sign");
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert!(matches!(
        check(&auth, &unknown).await.unwrap_err(),
        JwtError::NoKey(..)
    ));
    assert_eq!(
        fetches.load(Ordering::SeqCst),
        2,
        "an unknown kid refetches"
    );
}

#[tokio::test]
async fn jwks_over_https_is_verified_against_the_given_roots() {
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("cert");
    let cert = certified.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        certified.signing_key.serialize_der(),
    ));
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let service = hyper::service::service_fn(|_request| async {
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(
                        JWKS.as_bytes(),
                    ))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    let uri = format!("https://localhost:{port}/jwks.json");
    let token = sign_rs(&claims(), RSA);

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).expect("root");
    let trusted = Authenticator {
        rules: vec![rule(KeySource::Remote(
            Arc::new(RemoteJwks::with_tls(&uri, jwks::tls_client(roots))),
            DEFAULT_FETCH_TIMEOUT,
        ))],
    };
    assert!(check(&trusted, &token).await.expect("valid").is_some());

    // A server the roots do not vouch for gives no keys.
    let untrusted = Authenticator {
        rules: vec![rule(KeySource::Remote(
            Arc::new(RemoteJwks::with_tls(
                &uri,
                jwks::tls_client(rustls::RootCertStore::empty()),
            )),
            DEFAULT_FETCH_TIMEOUT,
        ))],
    };
    assert!(matches!(
        check(&untrusted, &token).await.unwrap_err(),
        JwtError::KeysUnavailable(..)
    ));
}

#[tokio::test]
async fn an_openid_discovery_document_leads_to_the_key_set() {
    let served =
        weft_testkit::backend::serve(|request: Request<hyper::body::Incoming>| async move {
            let body = if request.uri().path() == "/.well-known/openid-configuration" {
                let host = request.headers()["host"]
                    .to_str()
                    .expect("host")
                    .to_string();
                format!(r#"{{"issuer": "x", "jwks_uri": "http://{host}/keys"}}"#)
            } else {
                JWKS.to_string()
            };
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body))))
        })
        .await;
    let uri = format!("http://{}/.well-known/openid-configuration", served.addr);
    let auth = Authenticator {
        rules: vec![rule(KeySource::Remote(
            RemoteJwks::shared(&uri),
            DEFAULT_FETCH_TIMEOUT,
        ))],
    };
    assert!(
        check(&auth, &sign_rs(&claims(), RSA))
            .await
            .expect("valid")
            .is_some()
    );
}

#[tokio::test]
async fn tokens_in_cookies() {
    let mut auth = inline();
    auth.rules[0].locations = vec![Location::Cookie("session".into())];
    let token = sign_rs(&claims(), RSA);
    let mut request = parts("/", None);
    request.headers.insert(
        "cookie",
        format!("theme=dark; session={token}; lang=en")
            .parse()
            .expect("cookie"),
    );
    let verified = auth.authenticate(&mut request).await.expect("valid");
    assert!(verified.is_some());
    assert_eq!(request.headers["cookie"], "theme=dark; lang=en");
}

#[tokio::test]
async fn space_delimited_claims_are_words_for_policies() {
    let auth = inline();
    let mut with_scopes = claims();
    with_scopes["scope"] = json!("read write");
    with_scopes["roles"] = json!("admin ops");
    with_scopes["note"] = json!("two words");
    let verified = check(&auth, &sign_rs(&with_scopes, RSA))
        .await
        .expect("valid")
        .expect("token");
    assert_eq!(verified.claim_values(&["scope".into()]), ["read", "write"]);
    assert_eq!(verified.claim_values(&["roles".into()]), ["admin", "ops"]);
    assert_eq!(verified.claim_values(&["note".into()]), ["two words"]);
}

#[tokio::test]
async fn a_slow_key_server_fails_within_the_rule_timeout() {
    let served = weft_testkit::backend::serve(|_request| async {
        tokio::time::sleep(std::time::Duration::from_secs(10)).await;
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(
            JWKS.as_bytes(),
        ))))
    })
    .await;
    let uri = format!("http://{}/slow-keys", served.addr);
    let auth = Authenticator {
        rules: vec![rule(KeySource::Remote(
            RemoteJwks::shared(&uri),
            std::time::Duration::from_millis(200),
        ))],
    };
    let started = std::time::Instant::now();
    let err = check(&auth, &sign_rs(&claims(), RSA)).await.unwrap_err();
    assert!(matches!(err, JwtError::KeysUnavailable(..)), "{err}");
    assert!(err.to_string().contains("timed out"), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
}
