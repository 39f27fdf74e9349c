//! Shared by the gateway TLS tests: a test CA issuing server and client
//! certificates into PEM files, a TLS client that reports the certificate
//! the gateway presented, TLS backends for passthrough, and weftd plus a
//! gateway proxy started for one set of resources.

#![allow(dead_code)] // Each test file uses a different part.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use weft_testkit::proxy::ProxyProcess;
use weft_testkit::weftd::WeftdProcess;

pub const WEFTD: &str = env!("CARGO_BIN_EXE_weftd");

/// A certificate authority of the test, and where its files go.
pub struct Pki {
    pub dir: PathBuf,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    pub ca_der: CertificateDer<'static>,
    pub ca_pem: String,
}

/// One issued certificate, as DER (for clients) and PEM (for files).
pub struct Issued {
    pub der: CertificateDer<'static>,
    pub key_der: Vec<u8>,
    pub cert_pem: String,
    pub key_pem: String,
}

impl Issued {
    pub fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(self.key_der.clone().into())
    }
}

impl Pki {
    pub fn new(dir: &Path, name: &str) -> Self {
        let key = rcgen::KeyPair::generate().expect("ca key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let cert = params.self_signed(&key).expect("ca");
        let ca_pem = cert.pem();
        std::fs::write(dir.join(format!("{name}-ca.pem")), &ca_pem).expect("write ca");
        Self {
            dir: dir.to_path_buf(),
            issuer: rcgen::Issuer::new(params, key),
            ca_der: cert.der().clone(),
            ca_pem,
        }
    }

    pub fn ca_file(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}-ca.pem"))
    }

    /// A certificate for DNS names (server) or with `sans` (client).
    pub fn issue(&self, sans: &[&str]) -> Issued {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.subject_alt_names = sans
            .iter()
            .map(|san| match san.strip_prefix("spiffe://") {
                Some(_) => rcgen::SanType::URI((*san).try_into().expect("uri")),
                None => rcgen::SanType::DnsName((*san).try_into().expect("dns")),
            })
            .collect();
        let cert = params.signed_by(&key, &self.issuer).expect("leaf");
        Issued {
            der: cert.der().clone(),
            key_der: key.serialize_der(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    /// Writes `issued` as `<stem>.crt` / `<stem>.key` (atomically, by
    /// rename, as certificate tools do) and returns both paths.
    pub fn write(&self, stem: &str, issued: &Issued) -> (PathBuf, PathBuf) {
        let cert = self.dir.join(format!("{stem}.crt"));
        let key = self.dir.join(format!("{stem}.key"));
        for (path, pem) in [(&key, &issued.key_pem), (&cert, &issued.cert_pem)] {
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, pem).expect("write pem");
            std::fs::rename(&tmp, path).expect("rename pem");
        }
        (cert, key)
    }
}

/// How a test client speaks TLS to the gateway.
pub struct Client {
    pub sni: Option<String>,
    pub trust: Vec<CertificateDer<'static>>,
    pub cert: Option<(CertificateDer<'static>, PrivateKeyDer<'static>)>,
    pub alpn: Vec<Vec<u8>>,
}

impl Client {
    pub fn new(sni: &str, trust: &Pki) -> Self {
        Self {
            sni: Some(sni.to_string()),
            trust: vec![trust.ca_der.clone()],
            cert: None,
            alpn: vec![b"http/1.1".to_vec()],
        }
    }

    pub fn config(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        for der in &self.trust {
            roots.add(der.clone()).expect("root");
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots);
        let mut config = match &self.cert {
            Some((cert, key)) => builder
                .with_client_auth_cert(vec![cert.clone()], key.clone_key())
                .expect("client cert"),
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = self.alpn.clone();
        // Each connection is a full handshake: the tests look at the
        // certificate the gateway presents now.
        config.resumption = rustls::client::Resumption::disabled();
        config.enable_sni = self.sni.is_some();
        Arc::new(config)
    }

    /// A TLS connection to `addr`; the server certificate it was shown.
    pub async fn connect(
        &self,
        addr: SocketAddr,
    ) -> anyhow::Result<(
        tokio_rustls::client::TlsStream<TcpStream>,
        CertificateDer<'static>,
    )> {
        let tcp = TcpStream::connect(addr).await?;
        // Without SNI rustls still needs a name to verify: an IP address
        // (never sent as SNI) that the test certificates do not carry is
        // checked against the certificate's SANs, so use the default name.
        let name = match &self.sni {
            Some(sni) => ServerName::try_from(sni.clone())?,
            None => ServerName::try_from("default.example.com")?,
        };
        let stream = tokio::time::timeout(
            Duration::from_secs(10),
            TlsConnector::from(self.config()).connect(name, tcp),
        )
        .await??;
        let presented = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("no server certificate"))?;
        Ok((stream, presented))
    }

    /// One GET over a new connection (HTTP/2 when the gateway chose h2).
    pub async fn get(&self, addr: SocketAddr, host: &str, path: &str) -> anyhow::Result<Answer> {
        let (stream, presented) = self.connect(addr).await?;
        let mut conn = Conn::over(stream).await?;
        let mut answer = conn.get(host, path).await?;
        answer.presented = Some(presented);
        Ok(answer)
    }
}

/// What came back.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub version: http::Version,
    pub headers: http::HeaderMap,
    pub body: String,
    pub presented: Option<CertificateDer<'static>>,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// An HTTP connection over TLS, kept alive across requests.
pub enum Conn {
    H1(hyper::client::conn::http1::SendRequest<Empty<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Empty<Bytes>>),
}

impl Conn {
    pub async fn over(stream: tokio_rustls::client::TlsStream<TcpStream>) -> anyhow::Result<Self> {
        let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
        let io = TokioIo::new(stream);
        Ok(if h2 {
            let (sender, connection) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
            tokio::spawn(connection);
            Self::H2(sender)
        } else {
            let (sender, connection) = hyper::client::conn::http1::handshake(io).await?;
            tokio::spawn(connection);
            Self::H1(sender)
        })
    }

    pub async fn get(&mut self, host: &str, path: &str) -> anyhow::Result<Answer> {
        let step = async {
            let response = match self {
                Self::H1(sender) => {
                    let request = Request::get(path)
                        .header(http::header::HOST, host)
                        .body(Empty::new())?;
                    sender.ready().await?;
                    sender.send_request(request).await?
                }
                Self::H2(sender) => {
                    let request =
                        Request::get(format!("https://{host}{path}")).body(Empty::new())?;
                    sender.ready().await?;
                    sender.send_request(request).await?
                }
            };
            let (parts, body) = response.into_parts();
            let body = body.collect().await?.to_bytes();
            Ok(Answer {
                status: parts.status,
                version: parts.version,
                headers: parts.headers,
                body: String::from_utf8_lossy(&body).into_owned(),
                presented: None,
            })
        };
        tokio::time::timeout(Duration::from_secs(10), step)
            .await
            .map_err(|_| anyhow::anyhow!("request timed out"))?
    }
}

/// A TLS server that answers each connection with `name\n` and closes:
/// which backend a passthrough connection reached, end to end encrypted.
pub struct TlsBackend {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl TlsBackend {
    pub async fn start(name: &'static str, issued: &Issued) -> Self {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(vec![issued.der.clone()], issued.key())
            .expect("server cert");
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    if let Ok(mut tls) = acceptor.accept(tcp).await {
                        let _ = tls.write_all(format!("{name}\n").as_bytes()).await;
                        let _ = tls.shutdown().await;
                    }
                });
            }
        });
        Self { addr, task }
    }
}

impl Drop for TlsBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What a passthrough connection with `sni` reads (the backend's name).
pub async fn passthrough_read(addr: SocketAddr, sni: &str, trust: &Pki) -> anyhow::Result<String> {
    let client = Client {
        alpn: Vec::new(),
        ..Client::new(sni, trust)
    };
    let (mut stream, _) = client.connect(addr).await?;
    let mut text = String::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut text)).await??;
    Ok(text.trim().to_string())
}

/// A ServiceEntry + WorkloadEntry named `name` whose one port (`protocol`)
/// reaches 127.0.0.1:`backend_port`.
pub fn service(name: &str, protocol: &str, backend_port: u16) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {name}}}
spec:
  hosts: [{name}.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 9080, name: main, protocol: {protocol}}}]
  workloadSelector: {{labels: {{app: {name}}}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: {name}}}
spec:
  address: 127.0.0.1
  ports: {{main: {backend_port}}}
  labels: {{app: {name}}}
---
"
    )
}

/// weftd with `yaml` applied and a gateway proxy it programs.
pub struct Mesh {
    pub weftd: WeftdProcess,
    pub gateway: ProxyProcess,
    _state: tempfile::TempDir,
}

impl Mesh {
    pub async fn start(yaml: &str) -> Self {
        let state = tempfile::tempdir().expect("tempdir");
        let weftd = WeftdProcess::start_in(Path::new(WEFTD), state.path())
            .await
            .expect("weftd");
        let reply = weftd.apply(yaml).await.expect("apply");
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        let gateway = spawn_gateway(&weftd, "istio=ingressgateway").await;
        Self {
            weftd,
            gateway,
            _state: state,
        }
    }
}

impl Mesh {
    /// weftd's state directory (its `credentials/` live there).
    pub fn state_dir(&self) -> &Path {
        &self.weftd.state_dir
    }
}

/// A gateway proxy in istio-system labelled `label`, ready.
pub async fn spawn_gateway(weftd: &WeftdProcess, label: &str) -> ProxyProcess {
    weftd
        .ingress_gateway(label, &[])
        .await
        .expect("gateway ready")
}

/// Writes a credential as weftd's directory source reads it.
pub fn write_credential(state: &Path, name: &str, files: &[(&str, &str)]) {
    let dir = state.join("credentials/istio-system").join(name);
    std::fs::create_dir_all(&dir).expect("mkdir credential");
    for (file, pem) in files {
        let tmp = dir.join(format!("{file}.tmp"));
        std::fs::write(&tmp, pem).expect("write credential");
        std::fs::rename(&tmp, dir.join(file)).expect("rename credential");
    }
}

/// Retries `probe` until it returns Some, for at most 10 s (config
/// reaches the gateway shortly after it reports ready).
pub async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(found) = probe().await {
            return found;
        }
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub fn local(port: u16) -> SocketAddr {
    ([127, 0, 0, 1], port).into()
}
