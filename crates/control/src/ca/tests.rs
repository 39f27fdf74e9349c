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

fn proven(ns: &str, sa: &str) -> ProvenIdentity {
    ProvenIdentity {
        spiffe: identity(ns, sa),
        workload_group: None,
        address: None,
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

    let sleep = proven("default", "sleep");
    let chain = again
        .sign(&csr_for(&sleep.spiffe.uri()), &sleep)
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
        )
        .expect_err("another identity");
    assert!(matches!(err, SignError::NotAllowed(_)), "{err}");
    assert!(matches!(
        again.sign("garbage", &sleep),
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

#[test]
fn the_binding_weftd_writes_is_what_the_presented_certificate_proves() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::open(&options(dir.path())).expect("ca");
    for (group, address) in [
        (Some("reviews-v1"), Some("10.1.2.3".parse().expect("ip"))),
        (Some("ratings"), Some("fd00::7".parse().expect("ip"))),
        (Some("details"), None),
        (None, None),
    ] {
        let bound = ProvenIdentity {
            spiffe: identity("bookinfo", "reviews"),
            workload_group: group.map(str::to_string),
            address,
        };
        let chain = ca
            .sign(&csr_for(&bound.spiffe.uri()), &bound)
            .expect("signed");
        let der = rustls_pki_types::CertificateDer::from_pem_slice(chain.as_bytes()).expect("pem");
        let read = binding::proven_identity(&der, "cluster.local").expect("parsed");
        assert_eq!(read, bound);
        let (_, cert) = x509_parser::parse_x509_certificate(&der).expect("x509");
        let ext = cert
            .extensions()
            .iter()
            .find(|e| e.oid.to_id_string() == "1.3.6.1.4.1.59123.12.1")
            .expect("binding extension");
        assert!(!ext.critical, "peers that do not know it must accept it");
    }
    let elsewhere = binding::proven_identity(
        &rustls_pki_types::CertificateDer::from_pem_slice(
            ca.sign(&csr_for(&identity("a", "b").uri()), &proven("a", "b"))
                .expect("signed")
                .as_bytes(),
        )
        .expect("pem"),
        "other.domain",
    )
    .expect_err("another trust domain");
    assert!(elsewhere.contains("other.domain"), "{elsewhere}");
}

#[test]
fn the_lifetime_is_weftds_and_the_root_is_published_for_proxies() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut short = options(dir.path());
    short.workload_ttl = Duration::from_secs(3600);
    let ca = Ca::open(&short).expect("ca");
    let sleep = proven("default", "sleep");
    let chain = ca
        .sign(&csr_for(&sleep.spiffe.uri()), &sleep)
        .expect("signed");
    let der = rustls_pki_types::CertificateDer::from_pem_slice(chain.as_bytes()).expect("pem");
    let (_, cert) = x509_parser::parse_x509_certificate(&der).expect("x509");
    let lifetime = cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp();
    assert_eq!(lifetime, 3600 + 60);

    let published = std::fs::read_to_string(dir.path().join("root-cert.pem")).expect("published");
    assert_eq!(published, ca.roots_pem());
    let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode(&dir.path().join("root-cert.pem")), 0o644);
    assert_eq!(mode(&dir.path().join("ca")), 0o700);
    assert_eq!(mode(&dir.path().join("ca/root-key.pem")), 0o600);
    assert_eq!(mode(&dir.path().join("ca/token-key.pem")), 0o600);
}
