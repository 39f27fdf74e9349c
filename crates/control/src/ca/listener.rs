//! The listeners discovery and signing are served on, and who each
//! connection proves to be.
//!
//! - `--xds` (Istio's 15012): TLS with a serving certificate from weftd's
//!   own CA. A client certificate is optional; when one is presented it
//!   must chain to the mesh roots (rustls' `WebPkiClientVerifier`), and its
//!   SPIFFE id and binding ([`super::binding`]) become
//!   [`Caller::Workload`]. Without one the caller is
//!   [`Caller::Anonymous`]: it may only ask for its first certificate.
//! - `--plaintext-grpc` (opt-in, Istio's 15010): every connection is
//!   [`Caller::Plaintext`].
//!
//! The [`Caller`] is decided once per connection, here, and tonic puts it
//! in every request's extensions ([`CallerIo`] implements `Connected`):
//! `request.extensions().get::<Caller>()` in both services.

use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::Context as _;
use rcgen::SanType;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;
use tonic::{Request, Status};

use super::caller::Caller;
use super::{Ca, SERVING_TTL, binding};

/// A client that opens a connection and never finishes the handshake is
/// dropped after this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections handed to tonic but not yet picked up.
const BACKLOG: usize = 64;

/// One accepted connection and the [`Caller`] it proved.
pub struct CallerIo<IO> {
    io: IO,
    caller: Caller,
}

impl<IO> Connected for CallerIo<IO> {
    type ConnectInfo = Caller;

    fn connect_info(&self) -> Caller {
        self.caller.clone()
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for CallerIo<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for CallerIo<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// The SANs of weftd's serving certificate: the names a proxy may check
/// (`--control-plane-name`, default `weftd`), loopback, the listen IP and
/// the operator's `--xds-san` entries (an IP, or else a DNS name).
pub fn serving_names(listen: IpAddr, extra: &[String]) -> anyhow::Result<Vec<SanType>> {
    let mut names = Vec::new();
    for dns in ["weftd", "weftd.weft-system.svc", "localhost"]
        .iter()
        .map(|s| s.to_string())
        .chain(
            extra
                .iter()
                .filter(|e| e.parse::<IpAddr>().is_err())
                .cloned(),
        )
    {
        let valid = !dns.is_empty()
            && dns.len() <= 253
            && dns
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'*');
        if !valid {
            anyhow::bail!("--xds-san {dns:?}: neither an IP nor a DNS name");
        }
        let name = dns
            .clone()
            .try_into()
            .map_err(|_| anyhow::anyhow!("--xds-san {dns:?}: not a DNS name"))?;
        names.push(SanType::DnsName(name));
    }
    let mut ips: Vec<IpAddr> = vec![
        IpAddr::from([127, 0, 0, 1]),
        IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
    ];
    if !listen.is_unspecified() {
        ips.push(listen);
    }
    ips.extend(extra.iter().filter_map(|e| e.parse::<IpAddr>().ok()));
    for ip in ips {
        if !names.contains(&SanType::IpAddress(ip)) {
            names.push(SanType::IpAddress(ip));
        }
    }
    Ok(names)
}

/// weftd's serving certificate, swapped in place when renewed: new
/// handshakes get the new one, open streams keep theirs.
#[derive(Debug)]
pub struct ServingCert {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ServingCert {
    /// Issues the first certificate for `names`.
    pub fn issue(ca: &Ca, names: &[SanType], provider: &CryptoProvider) -> anyhow::Result<Self> {
        Ok(Self {
            current: RwLock::new(Arc::new(certified(ca, names, provider)?)),
        })
    }

    /// Re-issues at half the lifetime, forever (a weftd that runs for more
    /// than six months never serves an expired certificate).
    pub async fn renew_loop(
        self: Arc<Self>,
        ca: Arc<Ca>,
        names: Vec<SanType>,
        provider: Arc<CryptoProvider>,
    ) {
        loop {
            tokio::time::sleep(SERVING_TTL / 2).await;
            match certified(&ca, &names, &provider) {
                Ok(key) => {
                    *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(key);
                    tracing::info!("serving certificate for --xds renewed");
                }
                Err(err) => tracing::error!(
                    "cannot renew the serving certificate for --xds (the current one keeps \
                     serving): {err:#}"
                ),
            }
        }
    }
}

impl ResolvesServerCert for ServingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        )
    }
}

fn certified(
    ca: &Ca,
    names: &[SanType],
    provider: &CryptoProvider,
) -> anyhow::Result<CertifiedKey> {
    let (chain_pem, key) = ca.issue_serving(names)?;
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(chain_pem.as_bytes()).collect::<Result<_, _>>()?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    CertifiedKey::from_der(chain, key, provider).context("serving certificate")
}

/// The TLS config of `--xds`: the serving certificate, and a client
/// certificate that is optional but, when given, must chain to `roots_pem`.
pub fn server_config(
    serving: Arc<ServingCert>,
    roots_pem: &str,
    provider: Arc<CryptoProvider>,
) -> anyhow::Result<Arc<ServerConfig>> {
    let mut roots = RootCertStore::empty();
    for der in CertificateDer::pem_slice_iter(roots_pem.as_bytes()) {
        roots.add(der?)?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(serving);
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// Accepts on `listener`, handshakes each connection in its own task (a
/// slow client holds up no one) and yields those that completed, with
/// their [`Caller`]. Failed handshakes are logged with the peer and why.
pub fn tls_incoming(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    trust_domain: String,
) -> ReceiverStream<io::Result<CallerIo<tokio_rustls::server::TlsStream<TcpStream>>>> {
    let (accepted, incoming) = mpsc::channel(BACKLOG);
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(pair) => pair,
                Err(err) => {
                    tracing::warn!("--xds accept failed: {err}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            // The server is gone (shutting down): stop accepting.
            if accepted.is_closed() {
                return;
            }
            let (acceptor, accepted, trust_domain) =
                (acceptor.clone(), accepted.clone(), trust_domain.clone());
            tokio::spawn(async move {
                // Nagle off: a gRPC answer is several small writes, and
                // with delayed ACKs each would wait ~40 ms.
                let _ = tcp.set_nodelay(true);
                let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await
                {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(err)) => {
                        tracing::warn!("--xds: TLS handshake with {peer} failed: {err}");
                        return;
                    }
                    Err(_) => {
                        tracing::warn!(
                            "--xds: {peer} did not finish the TLS handshake in {HANDSHAKE_TIMEOUT:?}"
                        );
                        return;
                    }
                };
                let caller = match tls.get_ref().1.peer_certificates() {
                    Some([leaf, ..]) => match binding::proven_identity(leaf, &trust_domain) {
                        Ok(identity) => Caller::Workload { identity, peer },
                        Err(why) => {
                            tracing::warn!("--xds: {peer} refused: {why}");
                            return;
                        }
                    },
                    _ => Caller::Anonymous { peer },
                };
                let _ = accepted.send(Ok(CallerIo { io: tls, caller })).await;
            });
        }
    });
    ReceiverStream::new(incoming)
}

/// Accepts on the opt-in plaintext port: every caller is
/// [`Caller::Plaintext`].
pub fn plaintext_incoming(
    listener: TcpListener,
) -> ReceiverStream<io::Result<CallerIo<TcpStream>>> {
    let (accepted, incoming) = mpsc::channel(BACKLOG);
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((tcp, peer)) => {
                    let _ = tcp.set_nodelay(true);
                    let io = CallerIo {
                        io: tcp,
                        caller: Caller::Plaintext { peer },
                    };
                    if accepted.send(Ok(io)).await.is_err() {
                        return;
                    }
                }
                Err(err) => {
                    tracing::warn!("--plaintext-grpc accept failed: {err}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    });
    ReceiverStream::new(incoming)
}

/// Interceptor in front of Discovery on `--xds`: a stream needs a workload
/// certificate; a caller without one is told how to get one.
#[allow(clippy::result_large_err)]
pub fn require_workload(request: Request<()>) -> Result<Request<()>, Status> {
    match request.extensions().get::<Caller>() {
        Some(Caller::Workload { .. } | Caller::Plaintext { .. }) => Ok(request),
        Some(Caller::Anonymous { peer }) => Err(Status::unauthenticated(format!(
            "discovery needs a workload certificate ({peer} presented none): start weft-proxy \
             with --token-file (a bootstrap token from `weft token create`) so it gets one \
             from Certificates.Sign first"
        ))),
        None => Err(Status::internal("the connection's caller is unknown")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serving_names_cover_loopback_the_listen_ip_and_extras() {
        let names = serving_names(
            "10.0.0.5".parse().expect("ip"),
            &["weftd.example".into(), "192.0.2.7".into()],
        )
        .expect("names");
        let text = format!("{names:?}");
        for wanted in [
            "\"weftd\"",
            "weftd.weft-system.svc",
            "localhost",
            "weftd.example",
            "127.0.0.1",
            "::1",
            "10.0.0.5",
            "192.0.2.7",
        ] {
            assert!(text.contains(wanted), "{wanted} missing from {text}");
        }
        assert!(serving_names("0.0.0.0".parse().expect("ip"), &["bad name!".into()]).is_err());
    }
}
