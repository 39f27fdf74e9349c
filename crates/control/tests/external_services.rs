//! The way out of the mesh: ServiceEntries for hosts outside it, with real
//! weftd and weft-proxy processes, "external" servers on 127.0.0.x and a
//! DNS server this test answers itself on loopback (the proxy is pointed at
//! it with `--dns-server`).

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record, RecordType};
use http::StatusCode;
use weft_testkit::backend::HttpBackend;
use weft_testkit::client::Http1Client;
use weft_testkit::free_addr;
use weft_testkit::proxy::{ProxyOptions, ProxyProcess};
use weft_testkit::weftd::WeftdProcess;

const WEFTD: &str = env!("CARGO_BIN_EXE_weftd");
/// The TTL of every answer the test server gives.
const TTL_SECONDS: u32 = 1;

/// A DNS server on loopback answering A queries from a table the test
/// changes; other names are NXDOMAIN, AAAA queries for known names empty.
struct DnsServer {
    addr: SocketAddr,
    table: Arc<Mutex<HashMap<String, Vec<Ipv4Addr>>>>,
    queries: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl DnsServer {
    async fn start() -> Self {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind DNS");
        let addr = socket.local_addr().expect("addr");
        let table: Arc<Mutex<HashMap<String, Vec<Ipv4Addr>>>> = Arc::default();
        let queries: Arc<Mutex<Vec<String>>> = Arc::default();
        let task = tokio::spawn({
            let (table, queries) = (table.clone(), queries.clone());
            async move {
                let mut buffer = vec![0u8; 4096];
                while let Ok((len, from)) = socket.recv_from(&mut buffer).await {
                    let Ok(query) = Message::from_vec(&buffer[..len]) else {
                        continue;
                    };
                    let reply = answer(&query, &table, &queries);
                    if let Ok(bytes) = reply.to_vec() {
                        let _ = socket.send_to(&bytes, from).await;
                    }
                }
            }
        });
        Self {
            addr,
            table,
            queries,
            task,
        }
    }

    fn set(&self, name: &str, addresses: &[Ipv4Addr]) {
        let mut table = self.table.lock().expect("table");
        table.insert(name.to_string(), addresses.to_vec());
    }

    fn queries_for(&self, name: &str) -> usize {
        let queries = self.queries.lock().expect("queries");
        queries.iter().filter(|q| q.as_str() == name).count()
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn answer(
    query: &Message,
    table: &Mutex<HashMap<String, Vec<Ipv4Addr>>>,
    queries: &Mutex<Vec<String>>,
) -> Message {
    let mut reply = Message::new(query.metadata.id, MessageType::Response, OpCode::Query);
    reply.metadata.recursion_desired = query.metadata.recursion_desired;
    reply.metadata.recursion_available = true;
    reply.metadata.authoritative = true;
    let Some(question) = query.queries.first() else {
        reply.metadata.response_code = ResponseCode::FormErr;
        return reply;
    };
    reply.add_query(question.clone());
    let name = question.name().to_string();
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    queries.lock().expect("queries").push(name.clone());
    let table = table.lock().expect("table");
    let Some(addresses) = table.get(&name) else {
        reply.metadata.response_code = ResponseCode::NXDomain;
        return reply;
    };
    if question.query_type() == RecordType::A {
        for address in addresses {
            reply.add_answer(Record::from_rdata(
                question.name().clone(),
                TTL_SECONDS,
                RData::A(A(*address)),
            ));
        }
    }
    reply
}

struct Mesh {
    weftd: WeftdProcess,
    /// The caller's proxy listener, routing by HTTP authority.
    listen: SocketAddr,
    proxy: ProxyProcess,
    _state: tempfile::TempDir,
}

async fn mesh(yaml: &str, dns: &DnsServer) -> Mesh {
    let state = tempfile::tempdir().expect("tempdir");
    let weftd = WeftdProcess::start_in(Path::new(WEFTD), state.path())
        .await
        .expect("weftd");
    let reply = weftd.apply(yaml).await.expect("apply");
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let listen = free_addr();
    let listen_flag = listen.to_string();
    let dns_flag = dns.addr.to_string();
    let binary: PathBuf = weft_testkit::cli::sibling(WEFTD, "weft-proxy");
    let flags = [
        "--node-id",
        "caller",
        "--workload",
        "caller",
        "--listen",
        &listen_flag,
        "--dns-server",
        &dns_flag,
    ];
    let proxy = ProxyProcess::spawn_ready(
        ProxyOptions::control_plane(&binary, weftd.grpc, &flags),
        Duration::from_secs(20),
    )
    .await
    .expect("ready");
    Mesh {
        weftd,
        listen,
        proxy,
        _state: state,
    }
}

/// A free port on both 127.0.0.2 and 127.0.0.3: a DNS answer names an
/// address only, so both "external" servers share the entry's port.
async fn two_backends(first: &str, second: &str) -> (HttpBackend, HttpBackend) {
    for _ in 0..20 {
        let a = HttpBackend::start_on("127.0.0.2:0".parse().expect("addr"), first).await;
        let port = a.addr.port();
        let second_addr: SocketAddr = format!("127.0.0.3:{port}").parse().expect("addr");
        if std::net::TcpListener::bind(second_addr).is_ok() {
            let b = HttpBackend::start_on(second_addr, second).await;
            return (a, b);
        }
    }
    panic!("no port free on both 127.0.0.2 and 127.0.0.3");
}

/// The backend that answers `host` through the proxy, or the status and
/// body when none did.
async fn who_answers(listen: SocketAddr, host: &str) -> Result<String, String> {
    let mut client = Http1Client::connect(listen)
        .await
        .map_err(|err| format!("connect: {err}"))?;
    let reply = client
        .get(host, "/")
        .await
        .map_err(|err| format!("request: {err}"))?;
    match reply.header("x-backend") {
        Some(name) if reply.status == StatusCode::OK => Ok(name.to_string()),
        _ => Err(format!("{} {}", reply.status, reply.text())),
    }
}

async fn wait_for_backend(listen: SocketAddr, host: &str, want: &str, limit: Duration) -> Duration {
    let started = Instant::now();
    let mut last = Err(String::new());
    while started.elapsed() < limit {
        last = who_answers(listen, host).await;
        if last.as_deref() == Ok(want) {
            return started.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{host} never reached {want} within {limit:?}; last: {last:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dns_service_entry_follows_its_answer_within_the_ttl() {
    let dns = DnsServer::start().await;
    let (a, _b) = two_backends("api-a", "api-b").await;
    let port = a.addr.port();
    dns.set("api.example.test", &[Ipv4Addr::new(127, 0, 0, 2)]);
    let yaml = format!(
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: api}}
spec:
  hosts: [api.example.test]
  location: MESH_EXTERNAL
  resolution: DNS
  ports: [{{number: {port}, name: http, protocol: HTTP}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: missing}}
spec:
  hosts: [missing.example.test]
  location: MESH_EXTERNAL
  resolution: DNS
  ports: [{{number: {port}, name: http, protocol: HTTP}}]
"
    );
    let mesh = mesh(&yaml, &dns).await;

    // The first answer is followed once the proxy has resolved it.
    wait_for_backend(
        mesh.listen,
        "api.example.test",
        "api-a",
        Duration::from_secs(10),
    )
    .await;
    for _ in 0..5 {
        assert_eq!(
            who_answers(mesh.listen, "api.example.test")
                .await
                .as_deref(),
            Ok("api-a")
        );
    }

    // The address changes in DNS: the proxy follows within the TTL (plus
    // the lookup and a config swap), with no push from weftd.
    dns.set("api.example.test", &[Ipv4Addr::new(127, 0, 0, 3)]);
    let moved = wait_for_backend(
        mesh.listen,
        "api.example.test",
        "api-b",
        Duration::from_secs(10),
    )
    .await;
    assert!(
        moved <= Duration::from_secs(u64::from(TTL_SECONDS)) + Duration::from_millis(1500),
        "followed the new address only after {moved:?} (TTL {TTL_SECONDS}s)"
    );
    eprintln!("new DNS answer followed after {moved:?} (TTL {TTL_SECONDS}s)");
    assert!(
        dns.queries_for("api.example.test") >= 2,
        "the name was looked up again"
    );

    // The server stops answering: the last good answer keeps serving.
    dns.table.lock().expect("table").remove("api.example.test");
    tokio::time::sleep(Duration::from_millis(u64::from(TTL_SECONDS) * 2500)).await;
    assert_eq!(
        who_answers(mesh.listen, "api.example.test")
            .await
            .as_deref(),
        Ok("api-b"),
        "a failed lookup keeps the last good answer"
    );

    // A name that never resolved: 503 naming it.
    let failed = who_answers(mesh.listen, "missing.example.test")
        .await
        .expect_err("no address");
    assert!(failed.starts_with("503"), "{failed}");
    assert!(failed.contains("missing.example.test"), "{failed}");
    let metrics = weft_testkit::client::get(mesh.proxy.metrics, "proxy", "/stats/prometheus")
        .await
        .expect("metrics")
        .text();
    let count = |host: &str, result: &str| {
        weft_testkit::prometheus::sample(
            &metrics,
            "weft_dns_lookups_total",
            &[("host", host), ("result", result)],
        )
    };
    assert!(count("missing.example.test", "failed") >= 1.0, "{metrics}");
    assert!(count("api.example.test", "ok") >= 2.0, "{metrics}");
    assert!(count("api.example.test", "failed") >= 1.0, "{metrics}");
    drop(mesh.weftd);
    drop(mesh.proxy);
}

/// A TLS server on `addr` for `name` (self-signed): after the handshake it
/// says "hello from <name>" and closes. Returns its address and certificate.
async fn tls_server(
    addr: SocketAddr,
    name: &str,
) -> (SocketAddr, rustls::pki_types::CertificateDer<'static>) {
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec![name.to_string()])
        .expect("params")
        .self_signed(&key)
        .expect("cert");
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .expect("server cert");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let greeting = format!("hello from {name}");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (acceptor, greeting) = (acceptor.clone(), greeting.clone());
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(stream).await {
                    use tokio::io::AsyncWriteExt;
                    let _ = tls.write_all(greeting.as_bytes()).await;
                    let _ = tls.shutdown().await;
                }
            });
        }
    });
    (addr, cert.der().clone())
}

/// What a TLS client with `sni`, trusting `root`, reads through the proxy.
async fn tls_get(
    listen: SocketAddr,
    sni: &str,
    root: &rustls::pki_types::CertificateDer<'static>,
) -> Result<String, String> {
    use tokio::io::AsyncReadExt;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root.clone()).map_err(|err| err.to_string())?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|err| err.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(listen)
        .await
        .map_err(|err| err.to_string())?;
    let name =
        rustls::pki_types::ServerName::try_from(sni.to_string()).map_err(|e| e.to_string())?;
    let attempt = async {
        let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(|err| format!("handshake: {err}"))?;
        let mut text = String::new();
        tls.read_to_string(&mut text)
            .await
            .map_err(|err| format!("read: {err}"))?;
        Ok(text)
    };
    tokio::time::timeout(Duration::from_secs(5), attempt)
        .await
        .map_err(|_| "timed out".to_string())?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_only_admits_exactly_the_declared_hosts_wildcards_included() {
    let dns = DnsServer::start().await;
    let (a, _b) = two_backends("api-a", "wild-b").await;
    let http_port = a.addr.port();
    let (tls_addr, root) =
        tls_server("127.0.0.2:0".parse().expect("addr"), "secure.example.test").await;
    let tls_port = tls_addr.port();
    let (_, other_root) =
        tls_server("127.0.0.2:0".parse().expect("addr"), "other.example.test").await;
    dns.set("api.example.test", &[Ipv4Addr::new(127, 0, 0, 2)]);
    dns.set("secure.example.test", &[Ipv4Addr::new(127, 0, 0, 2)]);
    dns.set("wild-backend.example.test", &[Ipv4Addr::new(127, 0, 0, 3)]);
    let yaml = format!(
        "apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{name: default}}
spec:
  outboundTrafficPolicy: {{mode: REGISTRY_ONLY}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: api}}
spec:
  hosts: [api.example.test]
  location: MESH_EXTERNAL
  resolution: DNS
  ports: [{{number: {http_port}, name: http, protocol: HTTP}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: secure}}
spec:
  hosts: [secure.example.test]
  location: MESH_EXTERNAL
  resolution: DNS
  ports: [{{number: {tls_port}, name: tls, protocol: TLS}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: wild}}
spec:
  hosts: [\"*.wild.example.test\"]
  location: MESH_EXTERNAL
  resolution: DNS
  endpoints: [{{address: wild-backend.example.test}}]
  ports: [{{number: {http_port}, name: http, protocol: HTTP}}]
"
    );
    let mesh = mesh(&yaml, &dns).await;
    wait_for_backend(
        mesh.listen,
        "api.example.test",
        "api-a",
        Duration::from_secs(10),
    )
    .await;

    // A wildcard host matches any name under it, by HTTP Host.
    wait_for_backend(
        mesh.listen,
        "v1.wild.example.test",
        "wild-b",
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(
        who_answers(mesh.listen, "deep.er.wild.example.test")
            .await
            .as_deref(),
        Ok("wild-b")
    );

    // HTTPS/TLS by SNI: the declared host passes, end to end with the
    // external server's certificate (the proxy never terminates it).
    let mut reached = Err(String::new());
    for _ in 0..50 {
        reached = tls_get(mesh.listen, "secure.example.test", &root).await;
        if reached.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(reached.as_deref(), Ok("hello from secure.example.test"));

    // Undeclared: HTTP gets 502 (Istio's BlackHoleCluster), TLS is closed.
    let refused = who_answers(mesh.listen, "undeclared.example.test")
        .await
        .expect_err("refused");
    assert!(refused.starts_with("502"), "{refused}");
    assert!(refused.contains("REGISTRY_ONLY"), "{refused}");
    let refused = who_answers(mesh.listen, "wild.example.test")
        .await
        .expect_err("the wildcard's own suffix is not under it");
    assert!(refused.starts_with("502"), "{refused}");
    let closed = tls_get(mesh.listen, "other.example.test", &other_root).await;
    assert!(
        closed.is_err(),
        "an undeclared SNI must not pass: {closed:?}"
    );
    drop(mesh.weftd);
    drop(mesh.proxy);
}

/// An HTTPS server on 127.0.0.2 for `name` (self-signed; the certificate
/// is also written to `ca_file`) answering `sni=<the client's SNI>`.
async fn https_server(name: &str, ca_file: &Path) -> SocketAddr {
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec![name.to_string()])
        .expect("params")
        .self_signed(&key)
        .expect("cert");
    std::fs::write(ca_file, cert.pem()).expect("write CA");
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .expect("server cert");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.2:0")
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
                    let body = format!("sni={sni}");
                    async move {
                        let mut response = http::Response::new(http_body_util::Full::new(
                            bytes::Bytes::from(body),
                        ));
                        response
                            .headers_mut()
                            .insert("x-backend", http::HeaderValue::from_static("https"));
                        Ok::<_, std::convert::Infallible>(response)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_origination_to_a_dns_host_verifies_its_name() {
    let dns = DnsServer::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = dir.path().join("ca.pem");
    let server = https_server("secure.example.test", &ca).await;
    let port = server.port();
    let ca = ca.display();
    for host in [
        "secure.example.test",
        "wrong.example.test",
        "right.example.test",
    ] {
        dns.set(host, &[Ipv4Addr::new(127, 0, 0, 2)]);
    }
    // The app speaks plain HTTP; the sidecar originates TLS (Istio's egress
    // TLS origination). `wrong` asks for a SAN the server lacks, `right`
    // for the one it has, both sending the server's name as SNI.
    let mut yaml = String::new();
    for (host, tls) in [
        ("secure.example.test", String::new()),
        (
            "wrong.example.test",
            ", sni: secure.example.test, subjectAltNames: [other.example.test]".to_string(),
        ),
        (
            "right.example.test",
            ", sni: secure.example.test, subjectAltNames: [secure.example.test]".to_string(),
        ),
    ] {
        let name = host.split('.').next().unwrap_or(host);
        yaml.push_str(&format!(
            "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {name}}}
spec:
  hosts: [{host}]
  location: MESH_EXTERNAL
  resolution: DNS
  ports: [{{number: {port}, name: http, protocol: HTTP}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: {name}}}
spec:
  host: {host}
  trafficPolicy:
    tls: {{mode: SIMPLE, caCertificates: {ca}{tls}}}
---
"
        ));
    }
    let mesh = mesh(&yaml, &dns).await;
    let get = |host: &'static str| async move {
        let mut client = Http1Client::connect(mesh.listen).await.expect("connect");
        client.get(host, "/").await.expect("request")
    };
    let mut reply = get("secure.example.test").await;
    for _ in 0..50 {
        if reply.status == StatusCode::OK {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        reply = get("secure.example.test").await;
    }
    // SNI defaults to the ServiceEntry host, as Istio's auto SNI.
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.text(), "sni=secure.example.test");
    let right = get("right.example.test").await;
    assert_eq!(right.status, StatusCode::OK, "{}", right.text());
    let wrong = get("wrong.example.test").await;
    assert_eq!(
        wrong.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "a server without the required SAN is refused: {}",
        wrong.text()
    );
    drop(mesh.weftd);
    drop(mesh.proxy);
}
