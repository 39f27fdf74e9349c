//! mTLS between two sidecars, as real processes on loopback: weftd signs
//! both proxies' certificates, the wire carries TLS 1.3 only, the server
//! side learns the caller's SPIFFE identity, and PeerAuthentication decides
//! what a plaintext caller gets.

mod mtls_support;

use std::time::{Duration, Instant};

use mtls_support::*;
use weft_testkit::free_addr;
use weft_testkit::proxy::ProxyProcess;

/// A client sidecar from a config file: its only cluster reaches the
/// server's inbound listener through `endpoint`, expecting `identity`.
fn file_client_config(
    listen: std::net::SocketAddr,
    endpoint: std::net::SocketAddr,
    identity: &str,
) -> String {
    format!(
        r#"
listeners:
- {{name: out, address: "{listen}", kind: EXPLICIT, service: httpbin}}
services:
- name: httpbin
  ports: [{{port: 8000, protocol: HTTP}}]
clusters:
- name: "outbound|8000||httpbin"
  endpoints: [{{address: "{endpoint}", identity: "{identity}"}}]
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sidecars_speak_tls13_and_the_server_learns_the_callers_identity() {
    let control = Control::start(&[]).await;
    let backend = echo_backend().await;
    control.apply(&service_yaml(backend.addr.port())).await;
    let inbound = free_addr();
    let server = control
        .ready_server("httpbin", backend.addr, inbound, &[])
        .await;

    // The client sidecar reaches the server through a recording relay.
    let (relay, recorded) = recording_relay(inbound).await;
    let listen = free_addr();
    let client_token = control.token_file("sleep").await;
    let binary = proxy_binary();
    let mut options = weft_testkit::proxy::ProxyOptions::new(
        &binary,
        Box::leak(file_client_config(listen, relay, SERVER_ID).into_boxed_str()),
    );
    let token = client_token.display().to_string();
    let ca = control.weftd.xds.to_string();
    options.args = vec![
        "--token-file".into(),
        token,
        "--ca-address".into(),
        ca,
        "--ca-root".into(),
        control.weftd.root_cert.display().to_string(),
        "--service-account".into(),
        "sleep".into(),
    ];
    let mut client = ProxyProcess::spawn(options).expect("spawn client");
    client
        .wait_ready(Duration::from_secs(20))
        .await
        .expect("client ready");

    let reply = eventually(listen, "/secret-path-4711", |r| r.status == 200)
        .await
        .unwrap_or_else(|last| panic!("no answer through mTLS: {last}\n{}", client.logs()));
    assert_eq!(
        reply.text(),
        format!("xfcc=By={SERVER_ID};URI={CLIENT_ID} version=HTTP/1.1"),
        "the backend gets plaintext HTTP/1.1 and the caller's identity; client log:\n{}\nserver log:\n{}",
        client.logs(),
        server.logs()
    );

    let recorded = std::mem::take(&mut *recorded.lock().expect("lock"));
    assert!(
        recorded.to_server.starts_with(&[0x16, 0x03]),
        "client → server starts with a TLS handshake record"
    );
    // ServerHello's supported_versions extension selects TLS 1.3 (0x0304).
    assert!(
        contains(&recorded.to_client, &[0x00, 0x2b, 0x00, 0x02, 0x03, 0x04]),
        "the server chose TLS 1.3"
    );
    for (direction, bytes) in [
        ("to server", &recorded.to_server),
        ("to client", &recorded.to_client),
    ] {
        assert!(
            !contains(bytes, b"secret-path-4711"),
            "request path in clear {direction}"
        );
        assert!(
            !contains(bytes, b"xfcc="),
            "response body in clear {direction}"
        );
    }

    // The client checks who answers: a server that is not the identity
    // weftd names for the endpoint is refused.
    let wrong = free_addr();
    std::fs::write(
        client.config_path(),
        file_client_config(wrong, inbound, "spiffe://cluster.local/ns/default/sa/other"),
    )
    .expect("rewrite config");
    let refused = eventually(wrong, "/", |r| r.status != 200 && r.status != 404).await;
    assert!(
        refused.as_ref().is_ok_and(|r| r.status == 503),
        "identity mismatch must fail the connection: {refused:?}"
    );
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn peer_authentication_strict_permissive_disable_and_port_level() {
    let control = Control::start(&[]).await;
    let backend = echo_backend().await;
    control.apply(&service_yaml(backend.addr.port())).await;
    let inbound = free_addr();
    let server = control
        .ready_server("httpbin", backend.addr, inbound, &[])
        .await;

    let (mesh_listen, plain_listen) = (free_addr(), free_addr());
    let (mesh, _plain) = tokio::join!(
        control.ready_client("sleep", "sleep", mesh_listen, true),
        control.ready_client("legacy", "legacy", plain_listen, false),
    );
    let mtls = format!("xfcc=By={SERVER_ID};URI={CLIENT_ID}");

    // No policy: PERMISSIVE. Auto-mTLS for the mesh client, plaintext for
    // the other, both served.
    let reply = eventually(mesh_listen, "/", |r| {
        r.status == 200 && r.text().starts_with(&mtls)
    })
    .await;
    assert!(
        reply.is_ok(),
        "mesh client uses mTLS: {reply:?}\n{}",
        mesh.logs()
    );
    let reply = eventually(plain_listen, "/", |r| r.status == 200).await;
    assert!(
        reply.as_ref().is_ok_and(|r| r.text().starts_with("xfcc=-")),
        "plaintext client served without identity: {reply:?}"
    );

    // STRICT, namespace-wide: the plaintext caller is refused.
    control
        .apply(
            "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: default}\nspec: {mtls: {mode: STRICT}}\n",
        )
        .await;
    let refused = eventually(plain_listen, "/", |r| r.status == 503).await;
    assert!(
        refused.is_ok(),
        "STRICT refuses plaintext: {refused:?}\n{}",
        server.admin_get("/config_dump").await.expect("dump").text()
    );
    let reply = get(mesh_listen, "/").await.expect("mesh under STRICT");
    assert!(reply.text().starts_with(&mtls), "{}", reply.text());
    assert!(
        server
            .logs()
            .contains("STRICT mTLS: closing a plaintext connection")
    );

    // Port level (with a selector) overrides the namespace: PERMISSIVE.
    let port_level = format!(
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {{name: httpbin, namespace: default}}\nspec:\n  selector: {{matchLabels: {{app: httpbin}}}}\n  portLevelMtls:\n    '{}': {{mode: PERMISSIVE}}\n",
        backend.addr.port()
    );
    control.apply(&port_level).await;
    let reply = eventually(plain_listen, "/", |r| r.status == 200).await;
    assert!(
        reply.is_ok(),
        "port-level PERMISSIVE admits plaintext: {reply:?}"
    );

    // DISABLE: auto-mTLS stops, the mesh client sends plaintext too.
    control
        .apply(
            "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: httpbin, namespace: default}\nspec:\n  selector: {matchLabels: {app: httpbin}}\n  mtls: {mode: DISABLE}\n",
        )
        .await;
    let reply = eventually(mesh_listen, "/", |r| {
        r.status == 200 && r.text().starts_with("xfcc=-")
    })
    .await;
    assert!(reply.is_ok(), "DISABLE serves plaintext only: {reply:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_certificate_from_another_ca_is_refused() {
    let control = Control::start(&[]).await;
    let backend = echo_backend().await;
    control.apply(&service_yaml(backend.addr.port())).await;
    let inbound = free_addr();
    let server = control
        .ready_server("httpbin", backend.addr, inbound, &[])
        .await;

    // A rogue CA issuing the very identity the mesh trusts.
    let ca_key = rcgen::KeyPair::generate().expect("key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).expect("ca");
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.subject_alt_names = vec![rcgen::SanType::URI(CLIENT_ID.try_into().expect("uri"))];
    let cert = params.signed_by(&key, &issuer).expect("leaf");

    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca_cert.der().clone()).expect("root");
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("tls13")
        .dangerous()
        .with_custom_certificate_verifier(std::sync::Arc::new(AnyServer))
        .with_client_auth_cert(
            vec![cert.der().clone()],
            rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .expect("client cert");
    config.alpn_protocols = vec![b"istio-h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(inbound)
        .await
        .expect("connect");
    let name = rustls_pki_types::ServerName::try_from("httpbin").expect("name");
    let outcome = async {
        let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
            .connect(name, tcp)
            .await?;
        let (mut sender, connection) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(tls),
        )
        .await?;
        tokio::spawn(connection);
        let request = http::Request::get("http://httpbin/")
            .body(http_body_util::Empty::<bytes::Bytes>::new())?;
        let response = sender.send_request(request).await?;
        anyhow::Ok(response.status())
    };
    let result = tokio::time::timeout(Duration::from_secs(10), outcome)
        .await
        .expect("no hang");
    assert!(
        result.is_err(),
        "a foreign CA's certificate got through: {result:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(3);
    while !server.logs().contains("mTLS handshake with") && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        server.logs().contains("mTLS handshake with"),
        "{}",
        server.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_tokens_get_no_certificate_and_the_proxy_stays_unready() {
    let control = Control::start(&[]).await;
    let backend = echo_backend().await;
    let garbage = control.dir.path().join("garbage.token");
    std::fs::write(&garbage, "weft1.0000.0000").expect("write");
    let mut forged = server_proxy(
        &control,
        "forged",
        backend.addr,
        free_addr(),
        Some(&garbage),
        &[],
    );
    // A well-formed token for the right account, minted by another weftd.
    let elsewhere = Control::start(&[]).await;
    let other = elsewhere.token_file("httpbin").await;
    let mut borrowed = server_proxy(
        &control,
        "borrowed",
        backend.addr,
        free_addr(),
        Some(&other),
        &[],
    );

    for proxy in [&forged, &borrowed] {
        let up = Instant::now() + Duration::from_secs(10);
        while proxy.admin_get("/ready").await.is_err() && Instant::now() < up {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        for proxy in [&forged, &borrowed] {
            let ready = proxy.admin_get("/ready").await.expect("/ready");
            assert_eq!(ready.status, 503, "never ready without a certificate");
            assert!(
                ready.text().contains("no workload certificate"),
                "{}",
                ready.text()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        forged.logs().contains("bootstrap token refused"),
        "{}",
        forged.logs()
    );
    assert!(
        borrowed
            .logs()
            .contains("the token's signature does not verify"),
        "{}",
        borrowed.logs()
    );
    assert!(cert_field(&certs(&borrowed).await, "serialNumber").is_none());
    let _ = (
        forged.wait_exit(Duration::ZERO).await,
        borrowed.wait_exit(Duration::ZERO).await,
    );
}

/// The test's rogue client accepts whatever the proxy presents: only the
/// proxy's check of the client is under test.
#[derive(Debug)]
struct AnyServer;

impl rustls::client::danger::ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _: &rustls_pki_types::CertificateDer<'_>,
        _: &[rustls_pki_types::CertificateDer<'_>],
        _: &rustls_pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &rustls_pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &rustls_pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::aws_lc_rs::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn raw_tcp_is_carried_inside_mtls_under_strict() {
    let control = Control::start(&[]).await;
    let echo = weft_testkit::backend::TcpEcho::start().await;
    control
        .apply(&format!(
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: tcpecho}}\nspec:\n  hosts: [tcpecho.default.svc.cluster.local]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports: [{{number: 9000, name: tcp, protocol: TCP, targetPort: {}}}]\n  workloadSelector: {{labels: {{app: tcpecho}}}}\n---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {{name: default, namespace: istio-system}}\nspec: {{mtls: {{mode: STRICT}}}}\n",
            echo.addr.port()
        ))
        .await;
    let port = format!("{}/tcp", echo.addr.port());
    let inbound = format!("{}={}", free_addr(), echo.addr.port());
    let _server = control
        .ready_proxy(
            "tcpecho",
            &[
                "--label",
                "app=tcpecho",
                "--port",
                &port,
                "--inbound",
                &inbound,
            ],
        )
        .await;
    let listen = free_addr();
    let listen_flag = format!("{listen}=tcpecho:9000");
    let client = control
        .ready_proxy("sleep", &["--listen", &listen_flag])
        .await;

    let deadline = Instant::now() + Duration::from_secs(15);
    let echoed = loop {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let attempt = async {
            let mut stream = tokio::net::TcpStream::connect(listen).await?;
            stream.write_all(b"hello over mtls").await?;
            stream.shutdown().await?;
            let mut out = Vec::new();
            stream.read_to_end(&mut out).await?;
            anyhow::Ok(out)
        };
        match tokio::time::timeout(Duration::from_secs(5), attempt).await {
            Ok(Ok(out)) if !out.is_empty() => break out,
            _ if Instant::now() > deadline => panic!("no echo through mTLS\n{}", client.logs()),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    assert_eq!(
        echoed, b"hello over mtlsbye",
        "echo and half-close through TLS"
    );
}
