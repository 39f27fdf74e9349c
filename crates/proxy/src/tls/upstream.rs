//! How a connection to one upstream endpoint is secured, and the
//! connection itself.
//!
//! The decision is per endpoint address, taken from the compiled config:
//! the cluster's `tls` (DestinationRule) and the endpoint's `identity`
//! (auto-mTLS). It is computed once per config snapshot. When two clusters
//! reach the same address with different settings, the first cluster in
//! name order wins (weftd gives every mesh endpoint its own inbound
//! address, so this only concerns hand-written configs).

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use weft_proto::proxy::v1::{self as pb, client_tls::Mode};

use super::{ALPN_H2, ALPN_HTTP1, ALPN_TCP, MeshTls};
use crate::config::Snapshot;
use crate::state::ProxyState;

/// How connections to one endpoint are secured.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum UpstreamTls {
    #[default]
    Plain,
    /// Mesh mTLS; the server must present `identity` (empty: any mesh id).
    Mesh { identity: String },
    /// TLS origination (DestinationRule SIMPLE or MUTUAL).
    Originate(Arc<Origination>),
}

#[derive(Debug, PartialEq)]
pub struct Origination {
    pub settings: pb::ClientTls,
    /// Server name to send and verify: `sni`, else the service host.
    pub server_name: String,
}

/// What an upstream connection will carry (decides the ALPN offered).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carries {
    Tcp,
    Http1,
    Http2,
}

/// Endpoint address → decision, for one snapshot.
type Decisions = Arc<HashMap<SocketAddr, UpstreamTls>>;

#[derive(Default)]
pub(crate) struct Table {
    state: Mutex<Option<Weak<ProxyState>>>,
    cached: Mutex<Option<(Weak<Snapshot>, Decisions)>>,
}

impl MeshTls {
    /// Lets the upstream path read the config snapshots of `state`.
    pub fn attach(&self, state: &Arc<ProxyState>) {
        *self
            .upstream
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(Arc::downgrade(state));
    }

    /// How to secure a connection to `addr` under the current config.
    pub fn decision(&self, addr: SocketAddr) -> UpstreamTls {
        let state = self
            .upstream
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .and_then(Weak::upgrade);
        let Some(state) = state else {
            return UpstreamTls::Plain;
        };
        let snapshot = state.snapshot_full();
        let table = {
            let mut cached = self
                .upstream
                .cached
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            match cached.as_ref() {
                Some((held, table)) if std::ptr::eq(held.as_ptr(), Arc::as_ptr(&snapshot)) => {
                    table.clone()
                }
                _ => {
                    let table = Arc::new(build(&snapshot.config));
                    *cached = Some((Arc::downgrade(&snapshot), table.clone()));
                    table
                }
            }
        };
        let decided = table.get(&addr).cloned().unwrap_or_default();
        match decided {
            // A workload without identity is plaintext-only. One whose
            // certificate is not there yet fails the connection rather
            // than fall back to plaintext.
            UpstreamTls::Mesh { .. } if self.identity.is_none() => UpstreamTls::Plain,
            other => other,
        }
    }
}

fn build(config: &pb::ProxyConfig) -> HashMap<SocketAddr, UpstreamTls> {
    let mut table = HashMap::new();
    let mut clusters: Vec<&pb::Cluster> = config.clusters.iter().collect();
    clusters.sort_by(|a, b| a.name.cmp(&b.name));
    for cluster in clusters {
        let mode = cluster.tls.as_ref().map_or(Mode::Auto, |t| t.mode());
        let origination = match (&cluster.tls, mode) {
            (Some(settings), Mode::Simple | Mode::Mutual) => Some(Arc::new(Origination {
                server_name: if settings.sni.is_empty() {
                    cluster.service.clone()
                } else {
                    settings.sni.clone()
                },
                settings: settings.clone(),
            })),
            _ => None,
        };
        for endpoint in &cluster.endpoints {
            let Ok(addr) = endpoint.address.parse::<SocketAddr>() else {
                continue;
            };
            let decided = match (mode, &origination) {
                (_, Some(origination)) => UpstreamTls::Originate(origination.clone()),
                (Mode::IstioMutual, _) => UpstreamTls::Mesh {
                    identity: endpoint.identity.clone(),
                },
                (Mode::Auto, _) if !endpoint.identity.is_empty() => UpstreamTls::Mesh {
                    identity: endpoint.identity.clone(),
                },
                _ => UpstreamTls::Plain,
            };
            table.entry(addr).or_insert(decided);
        }
    }
    table
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
) -> io::Result<UpstreamIo> {
    let (config, server_name) = match tls {
        UpstreamTls::Plain => return Ok(UpstreamIo::Plain(stream)),
        UpstreamTls::Mesh { identity } => {
            let alpn = match carries {
                Carries::Tcp => ALPN_TCP,
                Carries::Http1 => ALPN_HTTP1,
                Carries::Http2 => ALPN_H2,
            };
            let config = super::context()
                .and_then(|context| context.client_config(identity, alpn))
                .ok_or_else(|| io::Error::other("mTLS: this proxy holds no certificate"))?;
            (config, ServerName::IpAddress(addr.ip().into()))
        }
        UpstreamTls::Originate(origination) => {
            let context = super::context()
                .ok_or_else(|| io::Error::other("TLS origination: no TLS context"))?;
            let config = context.origination_config(origination, carries)?;
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
