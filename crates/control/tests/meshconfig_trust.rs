//! MeshConfig `trustDomain` decides what weftd's CA issues: with a real
//! weftd, a bootstrap token minted and a certificate signed over its TLS
//! port carry `spiffe://<trustDomain>/...`; a `--trust-domain` flag that
//! disagrees with the MeshConfig stops weftd at start, naming both.

use std::path::Path;

use http::StatusCode;
use rcgen::{CertificateParams, KeyPair, SanType};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use weft_proto::discovery::v1::SignRequest;
use weft_proto::discovery::v1::certificates_client::CertificatesClient;
use weft_testkit::free_addr;
use weft_testkit::weftd::WeftdProcess;

mod mtls_support;

const WEFTD: &str = env!("CARGO_BIN_EXE_weftd");
const GROUP: &str = "apiVersion: networking.istio.io/v1\nkind: WorkloadGroup\nmetadata: {name: cart, namespace: shop}\nspec: {template: {serviceAccount: cart}}\n";

async fn weftd_with(dir: &Path, mesh: &str, extra: &[&str]) -> anyhow::Result<WeftdProcess> {
    let file = dir.join("meshconfig.yaml");
    std::fs::write(&file, mesh)?;
    let file_flag = file.display().to_string();
    let mut flags = vec!["--mesh-config", file_flag.as_str()];
    flags.extend_from_slice(extra);
    WeftdProcess::start_with(
        Path::new(WEFTD),
        &dir.join("store"),
        free_addr(),
        free_addr(),
        &flags,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identities_are_issued_in_the_mesh_configs_trust_domain() {
    let dir = tempfile::tempdir().expect("tempdir");
    let weftd = weftd_with(
        dir.path(),
        "trustDomain: example.org\ntrustDomainAliases: [old.example.org]\n",
        &[],
    )
    .await
    .expect("weftd");
    let reply = weftd.apply(GROUP).await.expect("apply");
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let minted = weftd
        .mint_token_with("shop", "cart", None, None)
        .await
        .expect("token");
    let identity = "spiffe://example.org/ns/shop/sa/cart";
    assert_eq!(minted.identity, identity);

    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let mut params = CertificateParams::default();
    params.subject_alt_names = vec![SanType::URI(identity.try_into().expect("uri"))];
    let csr = params
        .serialize_request(&key)
        .expect("csr")
        .pem()
        .expect("pem");
    let channel = mtls_support::tls_channel(&weftd, None)
        .await
        .expect("TLS to weftd's --xds port");
    let chain = CertificatesClient::new(channel)
        .sign(SignRequest {
            token: minted.token,
            csr_pem: csr,
            ttl: None,
        })
        .await
        .expect("signed")
        .into_inner()
        .cert_chain_pem;
    let leaf = CertificateDer::pem_slice_iter(chain.as_bytes())
        .next()
        .expect("a leaf")
        .expect("PEM");
    let (_, cert) = x509_parser::parse_x509_certificate(&leaf).expect("x509");
    let uris: Vec<String> = cert
        .subject_alternative_name()
        .expect("SAN")
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    x509_parser::extensions::GeneralName::URI(uri) => Some(uri.to_string()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(uris, [identity]);
}

#[tokio::test]
async fn a_trust_domain_flag_that_disagrees_with_the_mesh_config_stops_weftd() {
    let dir = tempfile::tempdir().expect("tempdir");
    let started = weftd_with(
        dir.path(),
        "trustDomain: example.org\n",
        &["--trust-domain", "cluster.local"],
    )
    .await;
    let err = format!("{:#}", started.err().expect("refused"));
    assert!(
        err.contains(
            "--trust-domain \"cluster.local\" and the MeshConfig's trustDomain \"example.org\""
        ),
        "{err}"
    );
}
