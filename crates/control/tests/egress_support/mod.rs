//! Shared by the egress gateway tests: a DNS server the test answers
//! itself, "external" HTTP and TLS servers on 127.0.0.2 that report what
//! reached them, and TLS clients (one that verifies nothing of the server:
//! only the gateway's check of its callers is under test there).

#![allow(dead_code)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record, RecordType};
use http::{Request, Response};
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

/// A DNS server on loopback answering A queries from a fixed table (TTL
/// 1 s); any other name is NXDOMAIN.
pub struct Dns {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Dns {
    pub async fn start(table: &[(&str, Ipv4Addr)]) -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind DNS");
        let addr = socket.local_addr().expect("addr");
        let table: HashMap<String, Ipv4Addr> =
            table.iter().map(|(n, a)| (n.to_string(), *a)).collect();
        let task = tokio::spawn(async move {
            let mut buffer = vec![0u8; 4096];
            while let Ok((len, from)) = socket.recv_from(&mut buffer).await {
                let Ok(query) = Message::from_vec(&buffer[..len]) else {
                    continue;
                };
                if let Ok(bytes) = answer(&query, &table).to_vec() {
                    let _ = socket.send_to(&bytes, from).await;
                }
            }
        });
        Self { addr, task }
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn answer(query: &Message, table: &HashMap<String, Ipv4Addr>) -> Message {
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
    let Some(address) = table.get(&name) else {
        reply.metadata.response_code = ResponseCode::NXDomain;
        return reply;
    };
    if question.query_type() == RecordType::A {
        reply.add_answer(Record::from_rdata(
            question.name().clone(),
            1,
            RData::A(A(*address)),
        ));
    }
    reply
}

/// An external HTTP server on 127.0.0.2: answers `<name> <path>` and keeps
/// each request's `x-forwarded-client-cert` (None when absent).
pub struct ExternalHttp {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Option<String>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl ExternalHttp {
    pub async fn start(name: &'static str) -> Self {
        let listener = TcpListener::bind("127.0.0.2:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let seen: Arc<Mutex<Vec<Option<String>>>> = Arc::default();
        let task = tokio::spawn({
            let seen = seen.clone();
            async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let seen = seen.clone();
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(move |request: Request<_>| {
                            let xfcc = request
                                .headers()
                                .get("x-forwarded-client-cert")
                                .and_then(|v| v.to_str().ok())
                                .map(str::to_string);
                            seen.lock().expect("seen").push(xfcc);
                            let body = format!("{name} {}", request.uri().path());
                            async move {
                                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body))))
                            }
                        });
                        let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            }
        });
        Self { addr, seen, task }
    }

    pub fn requests(&self) -> Vec<Option<String>> {
        self.seen.lock().expect("seen").clone()
    }
}

impl Drop for ExternalHttp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An external TLS server on `ip` with a certificate for `name` (its own
/// self-signed one, returned): writes `hello from <name>` and closes.
pub async fn external_tls(ip: Ipv4Addr, name: &str) -> (SocketAddr, CertificateDer<'static>) {
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec![name.to_string()])
        .expect("params")
        .self_signed(&key)
        .expect("cert");
    let der = cert.der().clone();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![der.clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind((ip, 0)).await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let greeting = format!("hello from {name}");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (acceptor, greeting) = (acceptor.clone(), greeting.clone());
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(stream).await {
                    let _ = tls.write_all(greeting.as_bytes()).await;
                    let _ = tls.shutdown().await;
                }
            });
        }
    });
    (addr, der)
}

/// What a TLS client with `sni`, trusting only `root`, reads at `addr`.
pub async fn tls_read(
    addr: SocketAddr,
    sni: &str,
    root: &CertificateDer<'static>,
) -> Result<String, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root.clone()).map_err(|e| e.to_string())?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    read_with(addr, sni, Arc::new(config)).await
}

/// A TLS client that takes any server certificate, offering the mesh's
/// HTTP ALPN, with `client` (certificate and key) if given: what it reads
/// after writing a plain HTTP request, or why it failed.
pub async fn rogue_tls(
    addr: SocketAddr,
    sni: &str,
    client: Option<(
        CertificateDer<'static>,
        rustls::pki_types::PrivateKeyDer<'static>,
    )>,
) -> Result<String, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer));
    let mut config = match client {
        Some((cert, key)) => builder
            .with_client_auth_cert(vec![cert], key)
            .map_err(|e| e.to_string())?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"istio-http/1.1".to_vec()];
    read_with(addr, sni, Arc::new(config)).await
}

async fn read_with(
    addr: SocketAddr,
    sni: &str,
    config: Arc<rustls::ClientConfig>,
) -> Result<String, String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let name = ServerName::try_from(sni.to_string()).map_err(|e| e.to_string())?;
    let work = async {
        let mut tls = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        // TLS 1.3 reports a refused client certificate only at the first
        // read: write a request and read the answer.
        let _ = tls
            .write_all(
                format!("GET / HTTP/1.1\r\nhost: {sni}\r\nconnection: close\r\n\r\n").as_bytes(),
            )
            .await;
        let mut text = String::new();
        tls.read_to_string(&mut text)
            .await
            .map_err(|e| format!("read: {e}"))?;
        Ok(text)
    };
    tokio::time::timeout(std::time::Duration::from_secs(5), work)
        .await
        .map_err(|_| "timed out".to_string())?
}

/// The rogue client accepts whatever the gateway presents.
#[derive(Debug)]
struct AnyServer;

impl rustls::client::danger::ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
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
