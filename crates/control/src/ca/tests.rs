use super::*;
use rustls_pki_types::pem::PemObject;

fn options(dir: &Path) -> CaOptions {
    CaOptions {
        state_dir: dir.to_path_buf(),
        cacerts: None,
        trust_domain: "cluster.local".into(),
        workload_ttl: DEFAULT_WORKLOAD_TTL,
    }
}

fn csr_for(uri: &str) -> String {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let mut params = CertificateParams::default();
    params.subject_alt_names = vec![SanType::URI(uri.to_string().try_into().expect("ascii"))];
    params
        .serialize_request(&key)
        .expect("csr")
        .pem()
        .expect("pem")
}

fn identity(ns: &str, sa: &str) -> SpiffeId {
    SpiffeId {
        trust_domain: "cluster.local".into(),
        namespace: ns.into(),
        service_account: sa.into(),
    }
}

#[test]
fn self_signed_root_survives_a_restart_and_signs_only_the_proven_identity() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = Ca::open(&options(dir.path())).expect("ca");
    let again = Ca::open(&options(dir.path())).expect("ca again");
    assert_eq!(
        first.roots_pem(),
        again.roots_pem(),
        "same root after restart"
    );

    let sleep = identity("default", "sleep");
    let chain = again
        .sign(&csr_for(&sleep.uri()), &sleep, None)
        .expect("signed");
    let der = rustls_pki_types::CertificateDer::from_pem_slice(chain.as_bytes()).expect("pem");
    let (_, cert) = x509_parser::parse_x509_certificate(&der).expect("x509");
    let san = cert
        .subject_alternative_name()
        .expect("san ext")
        .expect("san");
    assert!(
        format!("{:?}", san.value.general_names)
            .contains("spiffe://cluster.local/ns/default/sa/sleep")
    );
    let lifetime = cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp();
    assert_eq!(lifetime, 24 * 3600 + 60, "24 h plus the skew allowance");

    let err = again
        .sign(
            &csr_for("spiffe://cluster.local/ns/default/sa/admin"),
            &sleep,
            None,
        )
        .expect_err("another identity");
    assert!(matches!(err, SignError::NotAllowed(_)), "{err}");
    assert!(matches!(
        again.sign("garbage", &sleep, None),
        Err(SignError::BadCsr(_))
    ));
}

#[test]
fn ttl_limits_are_enforced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut too_long = options(dir.path());
    too_long.workload_ttl = MAX_WORKLOAD_TTL + Duration::from_secs(1);
    assert!(Ca::open(&too_long).is_err());
}

#[test]
fn a_plug_in_key_that_does_not_match_is_refused_at_start() {
    let state = tempfile::tempdir().expect("tempdir");
    let cacerts = tempfile::tempdir().expect("tempdir");
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::default();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).expect("ca");
    let other_key = KeyPair::generate().expect("key");
    for (name, text) in [
        ("ca-cert.pem", cert.pem()),
        ("ca-key.pem", other_key.serialize_pem()),
        ("root-cert.pem", cert.pem()),
        ("cert-chain.pem", cert.pem()),
    ] {
        std::fs::write(cacerts.path().join(name), text).expect("write");
    }
    let mut plug_in = options(state.path());
    plug_in.cacerts = Some(cacerts.path().to_path_buf());
    let err = Ca::open(&plug_in).err().expect("refused").to_string();
    assert!(err.contains("ca-key.pem belongs to ca-cert.pem"), "{err}");

    std::fs::write(cacerts.path().join("ca-key.pem"), key.serialize_pem()).expect("write");
    assert!(Ca::open(&plug_in).is_ok(), "the matching key is accepted");
    std::fs::remove_file(cacerts.path().join("root-cert.pem")).expect("rm");
    let missing = Ca::open(&plug_in).err().expect("refused").to_string();
    assert!(missing.contains("root-cert.pem"), "{missing}");
}
