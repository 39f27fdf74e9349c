//! RequestAuthentication end to end: JWTs checked by the workload's sidecar
//! (see `authz_support`), keys inline or served by the test on loopback,
//! principals used by AuthorizationPolicy.

mod authz_support;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http::StatusCode;
use http_body_util::Full;
use serde_json::json;
use weft_proxy::jwt::jsonwebtoken::{self, Algorithm, EncodingKey, Header};
use weft_testkit::backend::serve;

use authz_support::{Workload, call, get, in_namespace};

const JWKS: &str = include_str!("../../proxy/src/policy/jwt/testdata/jwks.json");
const RSA: &[u8] = include_bytes!("../../proxy/src/policy/jwt/testdata/rsa-1.pem");
const RSA_OTHER: &[u8] = include_bytes!("../../proxy/src/policy/jwt/testdata/rsa-other.pem");
const EC: &[u8] = include_bytes!("../../proxy/src/policy/jwt/testdata/ec-1.pem");
const ISSUER: &str = "https://auth.weft.test";

fn token(claims: serde_json::Value, alg: Algorithm, pem: &[u8]) -> String {
    let (kid, key) = match alg {
        Algorithm::ES256 => ("ec-1", EncodingKey::from_ec_pem(pem).expect("ec key")),
        _ => ("rsa-1", EncodingKey::from_rsa_pem(pem).expect("rsa key")),
    };
    let mut header = Header::new(alg);
    header.kid = Some(kid.into());
    jsonwebtoken::encode(&header, &claims, &key).expect("sign")
}

fn claims(sub: &str) -> serde_json::Value {
    json!({
        "iss": ISSUER,
        "sub": sub,
        "aud": "web",
        "exp": jsonwebtoken::get_current_timestamp() + 600,
    })
}

/// RequestAuthentication for app=web with `keys` (a `jwks:` or `jwksUri:`
/// line) and `extra` fields, plus an ALLOW policy needing a token.
fn request_authentication(keys: &str, extra: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {{name: jwt, namespace: default}}\nspec:\n  selector: {{matchLabels: {{app: web}}}}\n  jwtRules:\n  - issuer: {ISSUER}\n    audiences: [web]\n    {keys}\n{extra}---\n"
    )
}

fn inline_keys() -> String {
    format!("jwks: '{}'", JWKS.trim())
}

const REQUIRE_TOKEN: &str = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: need-token, namespace: default}\nspec:\n  rules:\n  - from:\n    - source: {requestPrincipals: [\"*\"]}\n    to:\n    - operation: {paths: [\"/private/*\"]}\n  - to:\n    - operation: {paths: [\"/public/*\"]}\n---\n";

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

async fn get_with(path: &str, authorization: &str) -> authz_support::Answer {
    call(
        "127.0.0.1",
        "GET",
        path,
        &[("authorization", authorization)],
    )
    .await
    .expect("call")
}

#[test]
fn valid_tokens_pass_bad_ones_get_401_and_policies_see_the_principal() {
    in_namespace("valid_tokens_pass_bad_ones_get_401", || async {
        let alice_only = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: alice-admin, namespace: default}\nspec:\n  action: DENY\n  rules:\n  - from:\n    - source: {notRequestPrincipals: [\"https://auth.weft.test/alice\"]}\n    to:\n    - operation: {paths: [\"/private/admin\"]}\n";
        let yaml = request_authentication(&inline_keys(), "") + REQUIRE_TOKEN + alice_only;
        let _web = Workload::start(&yaml, "default", &["app=web"]).await;

        let alice = token(claims("alice"), Algorithm::RS256, RSA);
        let ok = get_with("/private/data", &bearer(&alice)).await;
        assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
        // The token is removed before the app sees the request.
        assert!(!ok.body.contains("authorization:"), "{}", ok.body);
        assert_eq!(
            get_with("/private/admin", &bearer(&alice)).await.status,
            StatusCode::OK
        );

        let bob = token(claims("bob"), Algorithm::ES256, EC);
        assert_eq!(
            get_with("/private/data", &bearer(&bob)).await.status,
            StatusCode::OK
        );
        let bob_admin = get_with("/private/admin", &bearer(&bob)).await;
        assert_eq!(bob_admin.status, StatusCode::FORBIDDEN);

        // Missing token: fine where no policy asks for a principal.
        assert_eq!(get("/public/page").await.status, StatusCode::OK);
        let missing = get("/private/data").await;
        assert_eq!(
            (missing.status, missing.body.as_str()),
            (StatusCode::FORBIDDEN, "RBAC: access denied")
        );

        let mut expired = claims("alice");
        expired["exp"] = json!(jsonwebtoken::get_current_timestamp() - 3600);
        let mut other_issuer = claims("alice");
        other_issuer["iss"] = json!("https://elsewhere.test");
        let mut other_audience = claims("alice");
        other_audience["aud"] = json!("mobile");
        for (what, bad, words) in [
            ("expired", token(expired, Algorithm::RS256, RSA), "expired"),
            (
                "wrong key",
                token(claims("alice"), Algorithm::RS256, RSA_OTHER),
                "verification fails",
            ),
            (
                "wrong issuer",
                token(other_issuer, Algorithm::RS256, RSA),
                "issuer",
            ),
            (
                "wrong audience",
                token(other_audience, Algorithm::RS256, RSA),
                "audiences",
            ),
        ] {
            // Refused even on a path no policy protects.
            let answer = get_with("/public/page", &bearer(&bad)).await;
            assert_eq!(
                answer.status,
                StatusCode::UNAUTHORIZED,
                "{what}: {}",
                answer.body
            );
            assert!(answer.body.contains(words), "{what}: {}", answer.body);
        }
    });
}

#[test]
fn jwks_uri_outputs_and_forwarding() {
    in_namespace("jwks_uri_outputs_and_forwarding", || async {
        let fetches = Arc::new(AtomicUsize::new(0));
        let counter = fetches.clone();
        let issuer = serve(move |_request| {
            counter.fetch_add(1, Ordering::SeqCst);
            async move { Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from(JWKS)))) }
        })
        .await;
        let keys = format!("jwksUri: http://{}/keys.json", issuer.addr);
        let outputs = "    outputPayloadToHeader: x-jwt-payload\n    outputClaimToHeaders:\n    - {header: x-user, claim: sub}\n    fromHeaders:\n    - {name: x-token}\n    fromParams: [token]\n    fromCookies: [session]\n";
        let web = Workload::start(
            &request_authentication(&keys, outputs),
            "default",
            &["app=web"],
        )
        .await;
        let alice = token(claims("alice"), Algorithm::RS256, RSA);
        let answer = call("127.0.0.1", "GET", "/a", &[("x-token", &alice)])
            .await
            .expect("call");
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        let payload = alice.split('.').nth(1).expect("payload");
        assert!(
            answer.body.contains(&format!("x-jwt-payload: {payload}\n")),
            "{}",
            answer.body
        );
        assert!(answer.body.contains("x-user: alice\n"), "{}", answer.body);
        assert!(
            !answer.body.contains("x-token:"),
            "token removed: {}",
            answer.body
        );
        // From a query parameter, which is removed too.
        let answer = get(&format!("/q?token={alice}&keep=1")).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        assert!(
            answer.body.starts_with("path=/q?keep=1\n"),
            "{}",
            answer.body
        );
        // From a cookie, which is removed; the other cookies stay.
        let cookie = format!("theme=dark; session={alice}");
        let answer = call("127.0.0.1", "GET", "/c", &[("cookie", &cookie)])
            .await
            .expect("call");
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        assert!(answer.body.contains("x-user: alice\n"), "{}", answer.body);
        assert!(
            answer.body.contains("cookie: theme=dark\n"),
            "{}",
            answer.body
        );
        // The key set was fetched once and cached.
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
        // Bearer is not where this rule looks: the request passes as
        // anonymous, the header untouched.
        let elsewhere = get_with("/b", &bearer(&alice)).await;
        assert_eq!(elsewhere.status, StatusCode::OK);

        // forwardOriginalToken keeps the token for the app.
        let forward = request_authentication(
            &keys,
            "    fromHeaders:\n    - {name: x-token}\n    forwardOriginalToken: true\n",
        );
        web.apply_until(&forward, || async {
            call("127.0.0.1", "GET", "/c", &[("x-token", &alice)])
                .await
                .is_ok_and(|a| a.body.contains("x-token: "))
        })
        .await;
    });
}
