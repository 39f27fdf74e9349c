//! DestinationRule `tls.credentialName` (issue 15): the client certificate,
//! key and CA of a MUTUAL TLS origination come from a credential weftd
//! holds (`<state dir>/credentials/<namespace>/<name>/`, or a Kubernetes
//! Secret), found in the calling proxy's namespace and pushed with the
//! cluster, as Istio's SDS does. A sidecar takes it only from a rule with a
//! `workloadSelector` (Istio's rule); a renewed credential reaches new
//! connections without a restart; the key never shows in `/config_dump`.

mod gateway_tls_support;

use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use gateway_tls_support::{Issued, Pki, eventually};
use http::{Response, StatusCode};
use http_body_util::Full;
use rustls::server::WebPkiClientVerifier;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use weft_testkit::client::Http1Client;
use weft_testkit::free_addr;
use weft_testkit::proxy::ProxyProcess;
use weft_testkit::weftd::WeftdProcess;

const WEFTD: &str = env!("CARGO_BIN_EXE_weftd");
const HOST: &str = "secure.example.test";

/// A stable fingerprint of a certificate, as the server reports it.
fn fingerprint(der: &[u8]) -> u64 {
    BuildHasherDefault::<DefaultHasher>::default().hash_one(der)
}

/// An "external" HTTPS server that requires a client certificate from
/// `clients` and answers `client=<fingerprint>` of the one presented. Every
/// answer closes the connection, so each request is a new handshake.
async fn mutual_server(server: &Issued, clients: &Pki) -> SocketAddr {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(clients.ca_der.clone()).expect("client ca");
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .expect("verifier");
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![server.der.clone()], server.key())
        .expect("server cert");
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let presented = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|chain| chain.first())
                    .map_or(0, |der| fingerprint(der));
                let service = hyper::service::service_fn(move |_request| async move {
                    Ok::<_, std::convert::Infallible>(
                        Response::builder()
                            .header("connection", "close")
                            .body(Full::new(Bytes::from(format!("client={presented}"))))
                            .expect("response"),
                    )
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    addr
}

/// Writes `files` as the credential `namespace/name` in weftd's state.
fn write_credential(state: &Path, namespace: &str, name: &str, files: &[(&str, &str)]) {
    let dir = state.join("credentials").join(namespace).join(name);
    std::fs::create_dir_all(&dir).expect("mkdir credential");
    for (file, pem) in files {
        let tmp = dir.join(format!("{file}.tmp"));
        std::fs::write(&tmp, pem).expect("write credential");
        std::fs::rename(&tmp, dir.join(file)).expect("rename credential");
    }
}

/// A sidecar in `default` with `app=<app>` whose explicit listener carries
/// the app's plain HTTP.
async fn sidecar(weftd: &WeftdProcess, app: &str) -> (ProxyProcess, SocketAddr) {
    let listen = free_addr();
    let listen_flag = listen.to_string();
    let label = format!("app={app}");
    let flags = [
        "--workload",
        app,
        "--namespace",
        "default",
        "--label",
        &label,
        "--listen",
        &listen_flag,
    ];
    let proxy = weftd.plaintext_proxy(&flags).await.expect("sidecar ready");
    (proxy, listen)
}

async fn get(listen: SocketAddr) -> (StatusCode, String) {
    let mut client = Http1Client::connect(listen).await.expect("connect");
    let reply = client.get(HOST, "/").await.expect("request");
    (reply.status, reply.text())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credential_name_gives_selected_sidecars_their_client_certificate_and_renews_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let servers = Pki::new(dir.path(), "servers");
    let clients = Pki::new(dir.path(), "clients");
    let server = mutual_server(&servers.issue(&[HOST]), &clients).await;
    let first = clients.issue(&["spiffe://example.test/first"]);
    let second = clients.issue(&["spiffe://example.test/second"]);

    let state = tempfile::tempdir().expect("state");
    let weftd = WeftdProcess::start_in(Path::new(WEFTD), state.path())
        .await
        .expect("weftd");
    write_credential(
        &weftd.state_dir,
        "default",
        "client-cred",
        &[
            ("tls.crt", &first.cert_pem),
            ("tls.key", &first.key_pem),
            ("ca.crt", &servers.ca_pem),
        ],
    );
    let port = server.port();
    let yaml = format!(
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: secure, namespace: default}}
spec:
  hosts: [{HOST}]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [{{number: {port}, name: http, protocol: HTTP}}]
  endpoints: [{{address: 127.0.0.1}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: secure, namespace: default}}
spec:
  host: {HOST}
  workloadSelector: {{matchLabels: {{app: caller}}}}
  trafficPolicy:
    tls: {{mode: MUTUAL, credentialName: client-cred}}
"
    );
    let reply = weftd.apply(&yaml).await.expect("apply");
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());

    // The selected sidecar originates mutual TLS with the credential's
    // certificate, verifying the server with its CA.
    let (caller, listen) = sidecar(&weftd, "caller").await;
    let want_first = format!("client={}", fingerprint(&first.der));
    eventually("the first certificate is presented", || async {
        let (status, body) = get(listen).await;
        (status == StatusCode::OK && body == want_first).then_some(())
    })
    .await;

    // The key travels to the proxy but never shows in its config dump.
    let dump = caller.admin_get("/config_dump").await.expect("dump").text();
    assert!(dump.contains("[redacted]"), "{dump}");
    assert!(!dump.contains("PRIVATE KEY"), "the key leaked: {dump}");

    // A sidecar the rule does not select gets no rule (and no credential):
    // the server refuses it.
    let (_other, other_listen) = sidecar(&weftd, "other").await;
    let (status, body) = get(other_listen).await;
    assert_ne!(
        status,
        StatusCode::OK,
        "unselected sidecar got through: {body}"
    );

    // A renewed credential reaches the next connection, no restart.
    write_credential(
        &weftd.state_dir,
        "default",
        "client-cred",
        &[("tls.key", &second.key_pem), ("tls.crt", &second.cert_pem)],
    );
    let want_second = format!("client={}", fingerprint(&second.der));
    eventually("the renewed certificate is presented", || async {
        let (status, body) = get(listen).await;
        (status == StatusCode::OK && body == want_second).then_some(())
    })
    .await;
}
