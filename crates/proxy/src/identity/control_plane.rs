//! Connections to weftd: TLS verified against the held root, or the
//! opt-in plaintext port.
//!
//! With `--control-plane` the proxy verifies weftd's serving certificate
//! against the held root (`--ca-root`, never a bundle weftd sent) and the
//! name `--control-plane-name` (default `weftd`). It presents its workload
//! certificate when it holds one (discovery, renewals) and none for its
//! first certificate (the bootstrap token proves who it is then). With
//! `--plaintext-control-plane` nothing is verified nor presented.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::Context as _;
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls::client::{ResolvesClientCert, WebPkiServerVerifier};
use rustls::sign::CertifiedKey;
use rustls_pki_types::ServerName;
use tonic::codegen::Service;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::identity::trust::HeldRoot;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Where weftd is and how to know it is weftd.
#[derive(Clone, Debug)]
pub struct ControlPlane {
    /// host:port.
    pub address: String,
    pub security: Security,
}

#[derive(Clone, Debug)]
pub enum Security {
    /// TLS: weftd's certificate must chain to `held` and name `server_name`.
    Tls {
        held: Arc<HeldRoot>,
        server_name: ServerName<'static>,
    },
    /// `--plaintext-control-plane`: weftd's `--plaintext-grpc` port.
    Plaintext,
}

impl ControlPlane {
    /// A connected channel; `client` is the certificate to present (None:
    /// anonymous, for a first certificate).
    pub async fn channel(
        &self,
        client: Option<Arc<CertifiedKey>>,
        call_timeout: Option<Duration>,
    ) -> anyhow::Result<Channel> {
        let mut endpoint = Endpoint::from_shared(format!("http://{}", self.address))?
            .connect_timeout(CONNECT_TIMEOUT);
        if let Some(timeout) = call_timeout {
            endpoint = endpoint.timeout(timeout);
        }
        let (held, server_name) = match &self.security {
            Security::Plaintext => {
                return endpoint
                    .connect()
                    .await
                    .map_err(|err| anyhow::anyhow!("cannot connect: {}", chain(&err)));
            }
            Security::Tls { held, server_name } => (held, server_name),
        };
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let verifier = WebPkiServerVerifier::builder_with_provider(
            held.anchors().store.clone(),
            provider.clone(),
        )
        .build()
        .context("the held root cannot verify servers")?;
        let builder = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_webpki_verifier(verifier);
        let mut config = match client {
            Some(key) => builder.with_client_cert_resolver(Arc::new(Presented(key))),
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"h2".to_vec()];
        let connector = TlsConnector {
            address: self.address.clone(),
            server_name: server_name.clone(),
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
        };
        endpoint
            .connect_with_connector(connector)
            .await
            .map_err(|err| {
                let why = chain(&err);
                if why.contains("invalid peer certificate") {
                    anyhow::anyhow!(
                        "weftd at {} is not trusted: {why} (its certificate must be signed by the \
                     held root {} and name {server_name:?}; is --ca-root weftd's \
                     root-cert.pem?)",
                        self.address,
                        held.path().display(),
                    )
                } else {
                    anyhow::anyhow!("cannot connect: {why}")
                }
            })
    }
}

/// An error and its sources, `: `-joined (tonic's own text is only
/// "transport error").
fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(inner) = source {
        let inner_text = inner.to_string();
        // Wrappers often repeat their source's text.
        if !text.contains(&inner_text) {
            text.push_str(": ");
            text.push_str(&inner_text);
        }
        source = inner.source();
    }
    text
}

/// The workload certificate held when the connection was made.
#[derive(Debug)]
struct Presented(Arc<CertifiedKey>);

impl ResolvesClientCert for Presented {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// TCP to weftd, then TLS; what tonic's channel runs HTTP/2 over.
#[derive(Clone)]
struct TlsConnector {
    address: String,
    server_name: ServerName<'static>,
    tls: tokio_rustls::TlsConnector,
}

type Connecting = Pin<
    Box<
        dyn Future<
                Output = std::io::Result<
                    TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>,
                >,
            > + Send,
    >,
>;

impl Service<Uri> for TlsConnector {
    type Response = TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;
    type Error = std::io::Error;
    type Future = Connecting;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let tcp = tokio::net::TcpStream::connect(&this.address).await?;
            let _ = tcp.set_nodelay(true);
            let tls = this.tls.connect(this.server_name, tcp).await?;
            Ok(TokioIo::new(tls))
        })
    }
}
