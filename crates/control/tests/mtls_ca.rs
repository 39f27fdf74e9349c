//! weftd's CA over time and in its other modes, with real processes: the
//! root survives a restart, a plug-in CA from `cacerts` files signs the
//! workloads, certificates rotate under a live stream, and a
//! DestinationRule SIMPLE originates TLS to a server outside the mesh.

mod mtls_support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use mtls_support::*;
use weft_testkit::free_addr;

async fn root_of(proxy: &weft_testkit::proxy::ProxyProcess) -> String {
    cert_field(&certs(proxy).await, "rootCertificates").expect("root in /certs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_root_and_issued_tokens_survive_a_weftd_restart() {
    let mut control = Control::start(&[]).await;
    let backend = echo_backend().await;
    // The token is used again after the restart.
    let token = control.token_file("httpbin").await;
    let before = control
        .ready_server_with_token("before", backend.addr, free_addr(), &token, &[])
        .await;
    let root = root_of(&before).await;
    assert!(root.contains("BEGIN CERTIFICATE"), "{root}");

    control.kill_weftd().await;
    control.restart_weftd().await;
    // A token minted before the restart still proves its identity.
    let after = control
        .ready_server_with_token("after", backend.addr, free_addr(), &token, &[])
        .await;
    assert_eq!(
        root_of(&after).await,
        root,
        "same trust chain after a restart"
    );
    drop(before);
}

/// A root and an intermediate made here, in Istio's `cacerts` layout.
fn write_cacerts(dir: &Path) -> (String, String) {
    let root_key = rcgen::KeyPair::generate().expect("key");
    let mut root_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    root_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    root_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Test offline root");
    root_params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
    let root = root_params.self_signed(&root_key).expect("root");
    let root_issuer = rcgen::Issuer::new(root_params, root_key);

    let ca_key = rcgen::KeyPair::generate().expect("key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Test cluster intermediate");
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let ca = ca_params
        .signed_by(&ca_key, &root_issuer)
        .expect("intermediate");
    std::fs::create_dir_all(dir).expect("mkdir");
    std::fs::write(dir.join("ca-cert.pem"), ca.pem()).expect("write");
    std::fs::write(dir.join("ca-key.pem"), ca_key.serialize_pem()).expect("write");
    std::fs::write(dir.join("root-cert.pem"), root.pem()).expect("write");
    std::fs::write(
        dir.join("cert-chain.pem"),
        format!("{}{}", ca.pem(), root.pem()),
    )
    .expect("write");
    (root.pem(), ca.pem())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_plug_in_ca_from_cacerts_signs_the_mesh() {
    let cacerts = tempfile::tempdir().expect("tempdir");
    let (root, intermediate) = write_cacerts(cacerts.path());
    let dir = cacerts.path().display().to_string();
    let control = Control::start(&["--cacerts", &dir]).await;
    let backend = echo_backend().await;
    control.apply(&service_yaml(backend.addr.port())).await;
    let server = control
        .ready_server("httpbin", backend.addr, free_addr(), &[])
        .await;
    let listen = free_addr();
    let client = control.ready_client("sleep", "sleep", listen, true).await;

    let shown = certs(&server).await;
    assert_eq!(
        cert_field(&shown, "rootCertificates").as_deref(),
        Some(root.as_str())
    );
    let chain = cert_field(&shown, "certChain").expect("chain");
    assert!(
        chain.contains(intermediate.trim()),
        "the chain carries the intermediate"
    );
    // Both sidecars' certificates chain through the intermediate to the root.
    let reply = eventually(listen, "/", |r| r.status == 200).await;
    let expected = format!("xfcc=By={SERVER_ID};URI={CLIENT_ID}");
    assert!(
        reply
            .as_ref()
            .is_ok_and(|r| r.text().starts_with(&expected)),
        "{reply:?}\n{}",
        client.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn certificates_rotate_while_a_long_stream_stays_up() {
    let control = Control::start(&["--workload-cert-ttl", "6s"]).await;
    let backend = echo_backend().await;
    control.apply(&service_yaml(backend.addr.port())).await;
    let server = control
        .ready_server("httpbin", backend.addr, free_addr(), &[])
        .await;
    let listen = free_addr();
    let client = control.ready_client("sleep", "sleep", listen, true).await;
    let warm = eventually(listen, "/", |r| {
        r.status == 200 && r.text().contains("URI=")
    })
    .await;
    assert!(warm.is_ok(), "{warm:?}");

    let first = cert_field(&certs(&client).await, "serialNumber").expect("serial");
    let server_first = cert_field(&certs(&server).await, "serialNumber").expect("serial");
    // One request held open across several rotations of both certificates.
    // The app speaks HTTP/2: one stream held open on the sidecars' mTLS
    // connection.
    let h2 = weft_testkit::client::Http2Client::connect(listen)
        .await
        .expect("h2 connect");
    let long = tokio::spawn(async move { h2.get("httpbin:8000", "/slow/8000").await });
    let started = Instant::now();
    let mut rotated = false;
    while started.elapsed() < Duration::from_secs(7) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let client_now = cert_field(&certs(&client).await, "serialNumber");
        let server_now = cert_field(&certs(&server).await, "serialNumber");
        if client_now.is_some_and(|s| s != first) && server_now.is_some_and(|s| s != server_first) {
            rotated = true;
        }
    }
    assert!(rotated, "both certificates replaced within 7s of a 6s TTL");
    let reply = long
        .await
        .expect("join")
        .expect("the long request finished");
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(
        reply.text().contains(&format!("URI={CLIENT_ID}")),
        "{}",
        reply.text()
    );
    // New requests keep working with the new certificates.
    let reply = get(listen, "/after").await.expect("after rotation");
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(client.logs().contains("renewing in"), "{}", client.logs());
}

/// A TLS 1.3/1.2 HTTP server for `name` on loopback, answering with the SNI
/// it saw; returns its address and the CA file that verifies it. With
/// `mutual`, it demands a client certificate from the same CA, written to
/// `client-cert.pem` / `client-key.pem` in `dir`.
async fn external_tls_server(dir: &Path, name: &str, mutual: bool) -> (SocketAddr, String) {
    let ca_key = rcgen::KeyPair::generate().expect("key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).expect("ca");
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec![name.to_string()])
        .expect("params")
        .signed_by(&key, &issuer)
        .expect("cert");
    let ca_path = dir.join("external-ca.pem");
    std::fs::write(&ca_path, ca.pem()).expect("write ca");

    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("versions");
    let builder = if mutual {
        let client_key = rcgen::KeyPair::generate().expect("key");
        let client = rcgen::CertificateParams::new(vec!["client.test".to_string()])
            .expect("params")
            .signed_by(&client_key, &issuer)
            .expect("client cert");
        std::fs::write(dir.join("client-cert.pem"), client.pem()).expect("write");
        std::fs::write(dir.join("client-key.pem"), client_key.serialize_pem()).expect("write");
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.der().clone()).expect("root");
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .expect("verifier");
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let mut config = builder
        .with_single_cert(
            vec![cert.der().clone()],
            rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .expect("server cert");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind(free_addr())
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let sni = tls.get_ref().1.server_name().unwrap_or("-").to_string();
                let service = hyper::service::service_fn(move |_request| {
                    let body = format!("external over TLS, sni={sni}");
                    async move {
                        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                            Bytes::from(body),
                        )))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (addr, ca_path.display().to_string())
}

/// `GET /` for api.external.test through the app-side listener `listen`.
async fn get_external(listen: SocketAddr) -> weft_testkit::client::Reply {
    weft_testkit::client::Http1Client::connect(listen)
        .await
        .expect("connect")
        .get("api.external.test", "/")
        .await
        .expect("request")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn destination_rule_simple_originates_tls_to_an_external_server() {
    let control = Control::start(&[]).await;
    let (server, ca_file) =
        external_tls_server(control.dir.path(), "api.external.test", false).await;
    control
        .apply(&format!(
            r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: external}}
spec:
  hosts: [api.external.test]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [{{number: 80, name: http, protocol: HTTP, targetPort: {port}}}]
  endpoints: [{{address: "{ip}"}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: external}}
spec:
  host: api.external.test
  trafficPolicy:
    tls: {{mode: SIMPLE, caCertificates: "{ca_file}", sni: api.external.test}}
"#,
            port = server.port(),
            ip = server.ip()
        ))
        .await;
    let listen = free_addr();
    let listen_flag = format!("{listen}=api.external.test:80");
    let proxy = control
        .ready_tokenless_proxy(&["--node-id", "app", "--listen", &listen_flag])
        .await;
    let reply = get_external(listen).await;
    assert_eq!(reply.status, 200, "{}\n{}", reply.text(), proxy.logs());
    assert_eq!(reply.text(), "external over TLS, sni=api.external.test");

    // subjectAltNames the server's certificate does not carry: refused.
    control
        .apply(&format!(
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: external}}\nspec:\n  host: api.external.test\n  trafficPolicy:\n    tls: {{mode: SIMPLE, caCertificates: \"{ca_file}\", sni: api.external.test, subjectAltNames: [other.external.test]}}\n"
        ))
        .await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let reply = get_external(listen).await;
        if reply.status == 503 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a wrong subjectAltNames still served: {}",
            reply.text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn destination_rule_mutual_presents_the_client_certificate() {
    let control = Control::start(&[]).await;
    let (server, ca_file) =
        external_tls_server(control.dir.path(), "api.external.test", true).await;
    let dir = control.dir.path().display();
    let entry = format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: external}}\nspec:\n  hosts: [api.external.test]\n  location: MESH_EXTERNAL\n  resolution: STATIC\n  ports: [{{number: 80, name: http, protocol: HTTP, targetPort: {port}}}]\n  endpoints: [{{address: \"{ip}\"}}]\n",
        port = server.port(),
        ip = server.ip()
    );
    let rule = |tls: &str| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: external}}\nspec:\n  host: api.external.test\n  trafficPolicy:\n    tls: {tls}\n"
        )
    };
    // SIMPLE first: the server wants a client certificate, so it fails.
    control
        .apply(&format!(
            "{entry}---\n{}",
            rule(&format!("{{mode: SIMPLE, caCertificates: \"{ca_file}\"}}"))
        ))
        .await;
    let listen = free_addr();
    let listen_flag = format!("{listen}=api.external.test:80");
    let proxy = control
        .ready_tokenless_proxy(&["--node-id", "app", "--listen", &listen_flag])
        .await;
    let get = || get_external(listen);
    assert_eq!(get().await.status, 503, "no client certificate, no service");

    control
        .apply(&rule(&format!(
            "{{mode: MUTUAL, caCertificates: \"{ca_file}\", clientCertificate: \"{dir}/client-cert.pem\", privateKey: \"{dir}/client-key.pem\"}}"
        )))
        .await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let reply = get().await;
        if reply.status == 200 {
            assert_eq!(reply.text(), "external over TLS, sni=api.external.test");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "MUTUAL never worked: {}\n{}",
            reply.text(),
            proxy.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_root_reaches_proxies_over_the_stream_and_they_renew_at_once() {
    let mut control = Control::start(&[]).await;
    let backend = echo_backend().await;
    let proxy = control
        .ready_server("httpbin", backend.addr, free_addr(), &[])
        .await;
    let old_root = root_of(&proxy).await;
    let old_serial = cert_field(&certs(&proxy).await, "serialNumber").expect("serial");

    // A new root, same token key: weftd comes back with another CA, and
    // the operator hands proxies the new root out of band (here the proxy's
    // --ca-root is weftd's own published root-cert.pem, which it rewrites
    // at start; the proxy re-reads it every 5 s).
    control.kill_weftd().await;
    let ca_dir = control.dir.path().join("state/ca");
    std::fs::remove_file(ca_dir.join("root-cert.pem")).expect("remove root");
    std::fs::remove_file(ca_dir.join("root-key.pem")).expect("remove key");
    control.restart_weftd().await;

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let shown = certs(&proxy).await;
        let root = cert_field(&shown, "rootCertificates").expect("root");
        let serial = cert_field(&shown, "serialNumber").expect("serial");
        if root != old_root && serial != old_serial {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no new root and certificate after the CA changed\n{}\nweftd:\n{}",
            proxy.logs(),
            control.weftd.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        proxy.logs().contains("trust bundle changed: renewing"),
        "{}",
        proxy.logs()
    );
}
