//! Gateway servers that speak TLS: HTTPS (SIMPLE, MUTUAL, OPTIONAL_MUTUAL)
//! with certificates from files chosen by SNI, certificate renewal under
//! load, TLS passthrough by SNI, TCP servers and httpsRedirect. Real
//! weftd, real weft-proxy --router, certificates made here with rcgen.

mod gateway_tls_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http::StatusCode;
use weft_testkit::backend::{HttpBackend, TcpEcho};
use weft_testkit::free_wildcard_port;

use gateway_tls_support::{
    Client, Mesh, Pki, TlsBackend, eventually, local, passthrough_read, service, spawn_gateway,
    write_credential,
};

/// A VirtualService for `hosts` on the edge Gateway, HTTP to `to`.
fn http_vs(name: &str, hosts: &str, to: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {name}}}
spec:
  hosts: {hosts}
  gateways: [istio-system/edge]
  http: [{{route: [{{destination: {{host: {to}}}}}]}}]
---
"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_servers_are_chosen_by_sni_and_serve_http1_and_h2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(dir.path(), "edge");
    let bookinfo = pki.issue(&["bookinfo.example.com"]);
    let wildcard = pki.issue(&["*.example.org"]);
    let (bookinfo_crt, bookinfo_key) = pki.write("bookinfo", &bookinfo);
    let (wildcard_crt, wildcard_key) = pki.write("wildcard", &wildcard);
    let productpage = HttpBackend::start("productpage").await;
    let reviews = HttpBackend::start("reviews").await;
    let port = free_wildcard_port();
    // Istio's secure-ingress shape: one port, two hosts, two certificates.
    let yaml = service("productpage", "HTTP", productpage.addr.port())
        + &service("reviews", "HTTP", reviews.addr.port())
        + &format!(
            "apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: edge, namespace: istio-system}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: {port}, name: https-bookinfo, protocol: HTTPS}}
    hosts: [bookinfo.example.com]
    tls:
      mode: SIMPLE
      serverCertificate: {}
      privateKey: {}
      minProtocolVersion: TLSV1_2
  - port: {{number: {port}, name: https-org, protocol: HTTPS}}
    hosts: ['*.example.org']
    tls:
      mode: SIMPLE
      serverCertificate: {}
      privateKey: {}
      cipherSuites: [ECDHE-ECDSA-AES128-GCM-SHA256, ECDHE-RSA-AES128-GCM-SHA256]
---
",
            bookinfo_crt.display(),
            bookinfo_key.display(),
            wildcard_crt.display(),
            wildcard_key.display()
        )
        + &http_vs("bookinfo", "[bookinfo.example.com]", "productpage")
        + &http_vs("org", "['*.example.org']", "reviews");
    let mesh = Mesh::start(&yaml).await;
    let edge = local(port);

    let client = Client::new("bookinfo.example.com", &pki);
    let answer = eventually("HTTPS served", || async {
        client
            .get(edge, "bookinfo.example.com", "/productpage")
            .await
            .ok()
            .filter(|a| a.status == StatusCode::OK)
    })
    .await;
    assert_eq!(answer.header("x-backend"), Some("productpage"));
    assert_eq!(answer.version, http::Version::HTTP_11);
    assert_eq!(answer.presented.as_ref(), Some(&bookinfo.der));

    // A wildcard server's certificate for a name under it; ALPN h2 gives
    // HTTP/2 (so gRPC works too).
    let client = Client {
        alpn: vec![b"h2".to_vec(), b"http/1.1".to_vec()],
        ..Client::new("api.example.org", &pki)
    };
    let answer = client
        .get(edge, "api.example.org", "/reviews")
        .await
        .expect("h2 over TLS");
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.version, http::Version::HTTP_2);
    assert_eq!(answer.header("x-backend"), Some("reviews"));
    assert_eq!(answer.presented.as_ref(), Some(&wildcard.der));

    // A name no server lists gets no certificate at all.
    let err = Client::new("shop.example.net", &pki)
        .get(edge, "shop.example.net", "/")
        .await
        .expect_err("no server for that SNI");
    assert!(!err.to_string().is_empty());

    // Plaintext HTTP to the TLS port is not served.
    let plain = weft_testkit::client::get(edge, "bookinfo.example.com", "/productpage").await;
    assert!(plain.is_err(), "{plain:?}");
    drop(mesh);
}

/// A MUTUAL server requiring client certificates from `client-ca` with one
/// of the listed SANs, and an OPTIONAL_MUTUAL one on another port.
fn mutual_yaml(port: u16, optional_port: u16, pki: &Pki, crt: &str, key: &str) -> String {
    let ca = pki.ca_file("clients");
    format!(
        "apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: edge, namespace: istio-system}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: {port}, name: https, protocol: HTTPS}}
    hosts: [secure.example.com]
    tls: {{mode: MUTUAL, serverCertificate: {crt}, privateKey: {key}, caCertificates: {ca}, subjectAltNames: [trusted.client.test, 'spiffe://example.org/ns/ops/sa/admin']}}
  - port: {{number: {optional_port}, name: https-optional, protocol: HTTPS}}
    hosts: [secure.example.com]
    tls: {{mode: OPTIONAL_MUTUAL, serverCertificate: {crt}, privateKey: {key}, caCertificates: {ca}}}
---
",
        ca = ca.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_requires_a_trusted_client_certificate_with_a_listed_san() {
    let dir = tempfile::tempdir().expect("tempdir");
    let servers = Pki::new(dir.path(), "servers");
    let clients = Pki::new(dir.path(), "clients");
    let rogue = Pki::new(dir.path(), "rogue");
    let server = servers.issue(&["secure.example.com"]);
    let (crt, key) = servers.write("secure", &server);
    let backend = HttpBackend::start("vault").await;
    let (port, optional_port) = (free_wildcard_port(), free_wildcard_port());
    let yaml = service("vault", "HTTP", backend.addr.port())
        + &mutual_yaml(
            port,
            optional_port,
            &clients,
            &crt.display().to_string(),
            &key.display().to_string(),
        )
        + &http_vs("vault", "[secure.example.com]", "vault");
    let mesh = Mesh::start(&yaml).await;
    let with_cert = |issued: &gateway_tls_support::Issued| Client {
        cert: Some((issued.der.clone(), issued.key())),
        ..Client::new("secure.example.com", &servers)
    };
    let trusted = clients.issue(&["trusted.client.test"]);
    let spiffe = clients.issue(&["spiffe://example.org/ns/ops/sa/admin"]);
    let unlisted = clients.issue(&["someone.else.test"]);
    let foreign = rogue.issue(&["trusted.client.test"]);

    let answer = eventually("MUTUAL served", || async {
        with_cert(&trusted)
            .get(local(port), "secure.example.com", "/")
            .await
            .ok()
    })
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.header("x-backend"), Some("vault"));
    let answer = with_cert(&spiffe)
        .get(local(port), "secure.example.com", "/")
        .await
        .expect("a listed URI SAN");
    assert_eq!(answer.status, StatusCode::OK);

    // No certificate, one from another CA, or one whose SANs are not
    // listed: refused (TLS 1.3 reports it on the first read).
    let bare = Client::new("secure.example.com", &servers);
    for (what, client) in [
        ("no client certificate", bare),
        ("a certificate of another CA", with_cert(&foreign)),
        ("a certificate without a listed SAN", with_cert(&unlisted)),
    ] {
        let result = client.get(local(port), "secure.example.com", "/").await;
        assert!(result.is_err(), "{what}: {result:?}");
    }

    // OPTIONAL_MUTUAL: served without a certificate and with a trusted
    // one; a certificate that does not verify is still refused.
    let answer = Client::new("secure.example.com", &servers)
        .get(local(optional_port), "secure.example.com", "/")
        .await
        .expect("optional: no certificate");
    assert_eq!(answer.status, StatusCode::OK);
    let answer = with_cert(&unlisted)
        .get(local(optional_port), "secure.example.com", "/")
        .await
        .expect("optional: trusted certificate (no SAN list)");
    assert_eq!(answer.status, StatusCode::OK);
    let result = with_cert(&foreign)
        .get(local(optional_port), "secure.example.com", "/")
        .await;
    assert!(
        result.is_err(),
        "optional: a foreign certificate {result:?}"
    );
    drop(mesh);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_certificate_is_served_without_failing_a_request() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(dir.path(), "edge");
    let first = pki.issue(&["renew.example.com"]);
    let (crt, key) = pki.write("renew", &first);
    let backend = HttpBackend::start("app").await;
    let port = free_wildcard_port();
    let yaml = service("app", "HTTP", backend.addr.port())
        + &format!(
            "apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: edge, namespace: istio-system}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: {port}, name: https, protocol: HTTPS}}
    hosts: [renew.example.com]
    tls: {{mode: SIMPLE, serverCertificate: {}, privateKey: {}}}
---
",
            crt.display(),
            key.display()
        )
        + &http_vs("app", "[renew.example.com]", "app");
    let mesh = Mesh::start(&yaml).await;
    let edge = local(port);
    let client = Arc::new(Client::new("renew.example.com", &pki));
    eventually("HTTPS served", || async {
        client.get(edge, "renew.example.com", "/").await.ok()
    })
    .await;

    // Load: two keep-alive connections and a loop of new connections,
    // all counting failures, while the files are rewritten.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut tasks = Vec::new();
    for keep_alive in [true, true, false] {
        let (client, stop, ok, failed) = (client.clone(), stop.clone(), ok.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            let mut conn = None;
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                let answer = if keep_alive {
                    if conn.is_none() {
                        conn = match client.connect(edge).await {
                            Ok((stream, _)) => gateway_tls_support::Conn::over(stream).await.ok(),
                            Err(_) => None,
                        };
                    }
                    match conn.as_mut() {
                        Some(c) => c.get("renew.example.com", "/").await,
                        None => Err(anyhow::anyhow!("connect failed")),
                    }
                } else {
                    client.get(edge, "renew.example.com", "/").await
                };
                match answer {
                    Ok(a) if a.status == StatusCode::OK => ok.fetch_add(1, Ordering::Relaxed),
                    other => {
                        eprintln!("failed under renewal: {other:?}");
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = ok.load(Ordering::Relaxed);
    let second = pki.issue(&["renew.example.com"]);
    pki.write("renew", &second);
    // New handshakes see the new certificate.
    eventually("the renewed certificate", || async {
        let answer = client.get(edge, "renew.example.com", "/").await.ok()?;
        (answer.presented.as_ref() == Some(&second.der)).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.expect("load task");
    }
    let served = ok.load(Ordering::Relaxed);
    eprintln!("renewal under load: {before} requests before the rewrite, {served} in all");
    assert_eq!(failed.load(Ordering::Relaxed), 0, "no request failed");
    assert!(
        served > before + 10,
        "requests went on across the renewal ({before} before, {served} in all)"
    );
    drop(mesh);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passthrough_tcp_and_https_redirect_servers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(dir.path(), "backends");
    let alpha = TlsBackend::start("alpha", &pki.issue(&["alpha.example.com"])).await;
    let beta = TlsBackend::start("beta", &pki.issue(&["beta.example.com"])).await;
    let echo = TcpEcho::start().await;
    let (tls_port, tcp_port, http_port) = (
        free_wildcard_port(),
        free_wildcard_port(),
        free_wildcard_port(),
    );
    let yaml = service("alpha", "TLS", alpha.addr.port())
        + &service("beta", "TLS", beta.addr.port())
        + &service("echo", "TCP", echo.addr.port())
        + &format!(
            "apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: edge, namespace: istio-system}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: {tls_port}, name: tls, protocol: TLS}}
    hosts: ['*.example.com']
    tls: {{mode: PASSTHROUGH}}
  - port: {{number: {tcp_port}, name: tcp, protocol: TCP}}
    hosts: ['*']
  - port: {{number: {http_port}, name: http, protocol: HTTP}}
    hosts: [shop.example.com]
    tls: {{httpsRedirect: true}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: by-sni}}
spec:
  hosts: ['*.example.com']
  gateways: [istio-system/edge]
  tls:
  - match: [{{port: {tls_port}, sniHosts: [alpha.example.com]}}]
    route: [{{destination: {{host: alpha}}}}]
  - match: [{{port: {tls_port}, sniHosts: [beta.example.com]}}]
    route: [{{destination: {{host: beta}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: echo}}
spec:
  hosts: ['*']
  gateways: [istio-system/edge]
  tcp:
  - match: [{{port: {tcp_port}}}]
    route: [{{destination: {{host: echo}}}}]
---
"
        );
    let mesh = Mesh::start(&yaml).await;

    // PASSTHROUGH: the gateway never terminates; the client sees each
    // backend's own certificate and bytes, chosen by SNI.
    let first = eventually("passthrough", || async {
        passthrough_read(local(tls_port), "alpha.example.com", &pki)
            .await
            .ok()
    })
    .await;
    assert_eq!(first, "alpha");
    let second = passthrough_read(local(tls_port), "beta.example.com", &pki)
        .await
        .expect("beta");
    assert_eq!(second, "beta");
    assert!(
        passthrough_read(local(tls_port), "gamma.example.com", &pki)
            .await
            .is_err(),
        "an SNI no route names is closed"
    );

    // TCP: bytes both ways, half-close honoured.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(local(tcp_port))
        .await
        .expect("tcp");
    tcp.write_all(b"ping").await.expect("write");
    tcp.shutdown().await.expect("half-close");
    let mut back = String::new();
    tokio::time::timeout(Duration::from_secs(10), tcp.read_to_string(&mut back))
        .await
        .expect("in time")
        .expect("read");
    assert_eq!(back, "pingbye");

    // httpsRedirect: 301 to https, same host (without the port) and path.
    let reply = weft_testkit::client::get(
        local(http_port),
        &format!("shop.example.com:{http_port}"),
        "/cart?id=7",
    )
    .await
    .expect("redirect");
    assert_eq!(reply.status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(
        reply.header("location"),
        Some("https://shop.example.com/cart?id=7")
    );
    drop(mesh);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credential_names_come_from_weftd_and_reach_only_the_selected_gateway() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(dir.path(), "edge");
    let clients = Pki::new(dir.path(), "clients");
    let backend = HttpBackend::start("httpbin").await;
    let (port, mutual_port) = (free_wildcard_port(), free_wildcard_port());
    // Istio's secure-ingress task, outside Kubernetes: the Gateway names
    // credentials; weftd holds them (for MUTUAL, the CA in `<name>-cacert`).
    let yaml = service("httpbin", "HTTP", backend.addr.port())
        + &format!(
            "apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: edge, namespace: istio-system}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: {port}, name: https, protocol: HTTPS}}
    hosts: [httpbin.example.com]
    tls: {{mode: SIMPLE, credentialName: httpbin-credential}}
  - port: {{number: {mutual_port}, name: https-mutual, protocol: HTTPS}}
    hosts: [httpbin.example.com]
    tls: {{mode: MUTUAL, credentialName: mutual-credential}}
---
"
        )
        + &http_vs("httpbin", "[httpbin.example.com]", "httpbin");
    let mesh = Mesh::start(&yaml).await;
    let first = pki.issue(&["httpbin.example.com"]);
    write_credential(
        mesh.state_dir(),
        "httpbin-credential",
        &[("tls.crt", &first.cert_pem), ("tls.key", &first.key_pem)],
    );
    write_credential(
        mesh.state_dir(),
        "mutual-credential",
        &[("tls.crt", &first.cert_pem), ("tls.key", &first.key_pem)],
    );
    write_credential(
        mesh.state_dir(),
        "mutual-credential-cacert",
        &[("ca.crt", &clients.ca_pem)],
    );
    let client = Client::new("httpbin.example.com", &pki);
    let answer = eventually("credential served", || async {
        client
            .get(local(port), "httpbin.example.com", "/")
            .await
            .ok()
    })
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.presented.as_ref(), Some(&first.der));

    // MUTUAL with the CA from `mutual-credential-cacert`.
    let trusted = clients.issue(&["client.example.com"]);
    let with_cert = Client {
        cert: Some((trusted.der.clone(), trusted.key())),
        ..Client::new("httpbin.example.com", &pki)
    };
    let answer = eventually("MUTUAL credential served", || async {
        with_cert
            .get(local(mutual_port), "httpbin.example.com", "/")
            .await
            .ok()
    })
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(
        client
            .get(local(mutual_port), "httpbin.example.com", "/")
            .await
            .is_err(),
        "no client certificate"
    );

    // A renewed credential reaches the gateway without a restart.
    let second = pki.issue(&["httpbin.example.com"]);
    write_credential(
        mesh.state_dir(),
        "httpbin-credential",
        &[("tls.key", &second.key_pem), ("tls.crt", &second.cert_pem)],
    );
    eventually("renewed credential", || async {
        let answer = client
            .get(local(port), "httpbin.example.com", "/")
            .await
            .ok()?;
        (answer.presented.as_ref() == Some(&second.der)).then_some(())
    })
    .await;

    // The key is pushed only to the proxy the Gateway selects, and even
    // there it stays out of the config dump.
    let dump = |addr| async move {
        weft_testkit::client::get(addr, "admin", "/config_dump")
            .await
            .expect("config_dump")
            .text()
    };
    let selected = dump(mesh.gateway.admin).await;
    assert!(selected.contains("BEGIN CERTIFICATE"), "{selected}");
    assert!(selected.contains("[redacted]"), "{selected}");
    assert!(!selected.contains("PRIVATE KEY"), "{selected}");
    let other = spawn_gateway(&mesh.weftd, "istio=other").await;
    let unselected = dump(other.admin).await;
    assert!(!unselected.contains("BEGIN CERTIFICATE"), "{unselected}");
    assert!(!unselected.contains("httpbin"), "{unselected}");
    drop(mesh);
}
