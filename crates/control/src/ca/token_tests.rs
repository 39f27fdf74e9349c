//! Bootstrap tokens: each way a token can be wrong is refused with its own
//! error, and the token list survives a restart.

use std::os::unix::fs::PermissionsExt;

use super::*;

fn request(group: &str, ttl: Option<Duration>) -> MintRequest {
    MintRequest {
        namespace: "shop".into(),
        service_account: "cart".into(),
        workload_group: group.into(),
        address: Some("10.0.0.7".parse().expect("ip")),
        ttl,
        minted_by: "test".into(),
    }
}

/// A token signed with `signer`'s key but claims of the test's choosing.
fn forge(signer: &TokenSigner, edit: impl FnOnce(&mut Jwt)) -> String {
    let now = now();
    let mut claims = Jwt {
        iss: ISSUER.into(),
        aud: AUDIENCE.into(),
        sub: "spiffe://cluster.local/ns/shop/sa/cart".into(),
        ns: "shop".into(),
        sa: "cart".into(),
        wg: "cart".into(),
        addr: None,
        iat: now,
        exp: now + 60,
        jti: random_id(),
    };
    edit(&mut claims);
    jsonwebtoken::encode(&Header::new(Algorithm::ES256), &claims, &signer.encoding).expect("encode")
}

#[test]
fn a_minted_token_proves_its_binding_across_restarts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let signer = TokenSigner::open(dir.path(), "cluster.local").expect("open");
    let minted = signer.mint(&request("cart", None)).expect("mint");
    assert_eq!(minted.identity, "spiffe://cluster.local/ns/shop/sa/cart");
    let claims = signer.verify(&minted.token).expect("valid");
    assert_eq!(claims.workload_group, "cart");
    assert_eq!(claims.address, Some("10.0.0.7".parse().expect("ip")));
    assert_eq!(claims.id, minted.record.id);
    assert_eq!(claims.expires - claims.iat, DEFAULT_TTL.as_secs());
    assert_eq!(
        claims.identity().uri(),
        "spiffe://cluster.local/ns/shop/sa/cart"
    );

    let again = TokenSigner::open(dir.path(), "cluster.local").expect("reopen");
    assert!(
        again.verify(&minted.token).is_ok(),
        "a restart keeps it valid"
    );
    assert_eq!(again.list(), vec![minted.record.clone()]);
    let mode = std::fs::metadata(dir.path().join("tokens.json"))
        .expect("ledger")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let text = std::fs::read_to_string(dir.path().join("tokens.json")).expect("read");
    assert!(
        !text.contains(&minted.token),
        "the list never holds a token"
    );
}

#[test]
fn revoking_one_token_leaves_the_others_valid_and_survives_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let signer = TokenSigner::open(dir.path(), "cluster.local").expect("open");
    let first = signer.mint(&request("cart", None)).expect("mint");
    let second = signer.mint(&request("cart", None)).expect("mint");
    assert!(signer.revoke(&first.record.id).expect("revoke").revoked);
    assert_eq!(
        signer.verify(&first.token),
        Err(TokenError::Revoked(first.record.id.clone()))
    );
    assert!(signer.verify(&second.token).is_ok());
    assert!(matches!(
        signer.revoke("no-such-id"),
        Err(RevokeError::NotFound(_))
    ));

    let again = TokenSigner::open(dir.path(), "cluster.local").expect("reopen");
    assert!(matches!(
        again.verify(&first.token),
        Err(TokenError::Revoked(_))
    ));
    let listed: Vec<(String, bool)> = again
        .list()
        .into_iter()
        .map(|token| (token.id, token.revoked))
        .collect();
    assert_eq!(
        listed,
        vec![(first.record.id, true), (second.record.id, false)]
    );
}

#[test]
fn expired_tokens_are_refused_and_pruned_from_the_list() {
    let dir = tempfile::tempdir().expect("tempdir");
    let signer = TokenSigner::open(dir.path(), "cluster.local").expect("open");
    let old = forge(&signer, |claims| claims.exp = now() - 3600);
    assert!(
        matches!(signer.verify(&old), Err(TokenError::Expired(_))),
        "{:?}",
        signer.verify(&old)
    );
    // Within the leeway it is still good.
    let just = forge(&signer, |claims| claims.exp = now() - 1);
    assert!(signer.verify(&just).is_ok());

    signer.mint(&request("cart", None)).expect("mint");
    {
        let mut ledger = signer.ledger.lock().expect("lock");
        ledger.minted[0].expires = now() - 3600;
    }
    // The next write prunes it.
    let kept = signer.mint(&request("cart", None)).expect("mint");
    assert_eq!(
        signer
            .list()
            .into_iter()
            .map(|token| token.id)
            .collect::<Vec<_>>(),
        vec![kept.record.id]
    );
}

#[test]
fn foreign_audience_issuer_signature_and_trust_domain_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let signer = TokenSigner::open(dir.path(), "cluster.local").expect("open");

    let audience = forge(&signer, |claims| claims.aud = "weft-admin".into());
    assert_eq!(signer.verify(&audience), Err(TokenError::WrongAudience));
    let issuer = forge(&signer, |claims| claims.iss = "someone".into());
    assert_eq!(signer.verify(&issuer), Err(TokenError::WrongIssuer));

    // Signed by another weftd's key.
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let stranger = TokenSigner::open(elsewhere.path(), "cluster.local").expect("open");
    let foreign = stranger.mint(&request("cart", None)).expect("mint");
    assert_eq!(signer.verify(&foreign.token), Err(TokenError::BadSignature));

    // A payload swapped under a genuine signature.
    let genuine = signer.mint(&request("cart", None)).expect("mint");
    let admin = forge(&signer, |claims| {
        claims.sa = "admin".into();
        claims.sub = "spiffe://cluster.local/ns/shop/sa/admin".into();
    });
    let mut parts: Vec<&str> = genuine.token.split('.').collect();
    let admin_parts: Vec<&str> = admin.split('.').collect();
    parts[1] = admin_parts[1];
    assert_eq!(
        signer.verify(&parts.join(".")),
        Err(TokenError::BadSignature)
    );

    // The same key serving another trust domain.
    let other_domain = TokenSigner::open(dir.path(), "example.org").expect("open");
    assert_eq!(
        other_domain.verify(&genuine.token),
        Err(TokenError::WrongTrustDomain(
            "cluster.local".into(),
            "example.org".into()
        ))
    );

    for junk in ["nonsense", "", "a.b.c", "weft1.00.00"] {
        assert!(
            matches!(signer.verify(junk), Err(TokenError::Malformed(_))),
            "{junk}: {:?}",
            signer.verify(junk)
        );
    }
    // Every refusal is a sentence for the operator.
    assert!(
        TokenError::WrongAudience
            .to_string()
            .contains("weft-bootstrap")
    );
}

#[test]
fn ttls_are_bounded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let signer = TokenSigner::open(dir.path(), "cluster.local").expect("open");
    assert!(
        signer
            .mint(&request("cart", Some(MAX_TTL + Duration::from_secs(1))))
            .is_err()
    );
    assert!(signer.mint(&request("cart", Some(Duration::ZERO))).is_err());
    let short = signer
        .mint(&request("cart", Some(Duration::from_secs(60))))
        .expect("mint");
    assert_eq!(short.record.expires - short.record.issued, 60);
}
