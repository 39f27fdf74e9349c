//! The connection to one upstream endpoint, secured as the snapshot's
//! decision for it says (`config::UpstreamTls`): plaintext, mesh mTLS with
//! this proxy's workload certificate, or TLS origination.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::{ALPN_H2, ALPN_HTTP1, ALPN_TCP, MeshTls};
pub use crate::config::{Origination, UpstreamTls};

/// What an upstream connection will carry (decides the ALPN offered).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carries {
    Tcp,
    Http1,
    Http2,
}

impl MeshTls {
    /// The decision as this proxy can carry it out: a workload without
    /// identity is plaintext-only. (One whose certificate is not there yet
    /// fails the connection rather than fall back to plaintext.)
    pub fn effective(&self, decided: UpstreamTls) -> UpstreamTls {
        match decided {
            UpstreamTls::Mesh { .. } if self.identity.is_none() => UpstreamTls::Plain,
            other => other,
        }
    }
}

/// A connection to an upstream, plaintext or TLS.
pub enum UpstreamIo {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl UpstreamIo {
    /// The ALPN protocol agreed, if any.
    pub fn alpn(&self) -> Option<&[u8]> {
        match self {
            Self::Plain(_) => None,
            Self::Tls(tls) => tls.get_ref().1.alpn_protocol(),
        }
    }
}

/// Secures `stream` as `tls` says; the handshake must finish within
/// `timeout`.
pub async fn secure(
    stream: TcpStream,
    addr: SocketAddr,
    tls: &UpstreamTls,
    carries: Carries,
    timeout: Duration,
    mesh: &MeshTls,
) -> io::Result<UpstreamIo> {
    let (config, server_name) = match tls {
        UpstreamTls::Plain => return Ok(UpstreamIo::Plain(stream)),
        UpstreamTls::Mesh { identity, sni } => {
            let alpn = match carries {
                Carries::Tcp => ALPN_TCP,
                Carries::Http1 => ALPN_HTTP1,
                Carries::Http2 => ALPN_H2,
            };
            let config = mesh
                .client_config(identity, alpn)
                .ok_or_else(|| io::Error::other("mTLS: this proxy holds no certificate"))?;
            // The identity is checked by SPIFFE id, never by this name:
            // the SNI only tells a gateway which of its servers is meant.
            let name = match sni {
                Some(sni) => ServerName::try_from(sni.to_string()).map_err(|_| {
                    io::Error::other(format!(
                        "mTLS: DestinationRule sni {sni:?} is not a valid server name"
                    ))
                })?,
                None => ServerName::IpAddress(addr.ip().into()),
            };
            (config, name)
        }
        UpstreamTls::Originate(origination) => {
            let config = mesh.origination_config(origination, carries)?;
            let name = ServerName::try_from(origination.server_name.clone()).map_err(|_| {
                io::Error::other(format!(
                    "TLS origination: {:?} is not a valid server name",
                    origination.server_name
                ))
            })?;
            (config, name)
        }
    };
    let connecting = TlsConnector::from(config).connect(server_name, stream);
    let stream = tokio::time::timeout(timeout, connecting)
        .await
        .map_err(|_| io::Error::other(format!("TLS handshake timed out after {timeout:?}")))?
        .map_err(|err| io::Error::other(format!("TLS handshake failed: {err}")))?;
    Ok(UpstreamIo::Tls(Box::new(stream)))
}

impl AsyncRead for UpstreamIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpstreamIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(s) => s.is_write_vectored(),
            Self::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
