//! A connection's first bytes ([`super::detect`]) turned into how it is
//! carried: HTTP (which version), opaque TCP, or TLS passed through with
//! its SNI. A port declared TCP (or server-first) is never sniffed: its
//! client may be waiting for the server to speak first.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use bytes::Bytes;
use socket2::SockRef;
use tokio::io::AsyncRead;
use tokio::net::TcpStream;

use super::detect::{Detected, PrefixedIo, detect, peek_sni};
use crate::config::{Cluster, PortProtocol, ServicePort, Snapshot};
use crate::upstream::HttpVersion;

/// How a connection is carried once classified.
pub(crate) enum Carry {
    Http(HttpVersion),
    Opaque,
    /// TLS passed through untouched, with the ClientHello's SNI if any.
    Tls(Option<String>),
}

impl Carry {
    /// The cluster an opaque or TLS connection to `port` goes to; `dst` is
    /// the original destination IP (none through an explicit listener).
    pub(crate) fn cluster(&self, port: &ServicePort, dst: Option<IpAddr>) -> Arc<Cluster> {
        match self {
            Carry::Tls(sni) => port.tls_target(sni.as_deref(), dst),
            _ => port.tcp_target(dst),
        }
    }
}

pub(crate) async fn classify<S: AsyncRead + Unpin>(
    stream: S,
    declared: Option<(PortProtocol, bool)>,
    snapshot: &Snapshot,
) -> Option<(Carry, PrefixedIo<S>)> {
    let mut stream = stream;
    // Both steps share one budget: a slow client delays routing by at most
    // the detection timeout.
    let started = tokio::time::Instant::now();
    let (detected, prefix) = match declared {
        // A declared TLS port is still peeked: its routes need the SNI.
        Some((PortProtocol::Tls, false)) => (Detected::Tls, Bytes::new()),
        Some((protocol, server_first)) if protocol.is_opaque(server_first) => {
            return Some((Carry::Opaque, PrefixedIo::new(Bytes::new(), stream)));
        }
        _ => match detect(&mut stream, snapshot.detect_timeout).await {
            Ok(found) => found,
            Err(err) => {
                tracing::debug!("protocol detection failed: {err}");
                return None;
            }
        },
    };
    let (carry, prefix) = match detected {
        Detected::Http1 => (Carry::Http(HttpVersion::Http1), prefix),
        Detected::Http2 => (Carry::Http(HttpVersion::Http2), prefix),
        Detected::Opaque => (Carry::Opaque, prefix),
        Detected::Tls => {
            let left = snapshot.detect_timeout.saturating_sub(started.elapsed());
            match peek_sni(&mut stream, prefix, left).await {
                Ok((sni, prefix)) => (Carry::Tls(sni), prefix),
                Err(err) => {
                    tracing::debug!("reading the TLS ClientHello failed: {err}");
                    return None;
                }
            }
        }
    };
    Some((carry, PrefixedIo::new(prefix, stream)))
}

/// The destination the client dialled before iptables redirected it.
pub(crate) fn original_dst(stream: &TcpStream) -> std::io::Result<SocketAddr> {
    let socket = SockRef::from(stream);
    let original = if stream.local_addr()?.is_ipv6() {
        socket.original_dst_v6()?
    } else {
        socket.original_dst_v4()?
    };
    original
        .as_socket()
        .ok_or_else(|| std::io::Error::other("original destination is not an IP address"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_config;

    fn snapshot() -> Snapshot {
        let config = parse_config("protocolDetectionTimeout: 0.2s\n", "t.yaml").expect("parses");
        Snapshot::compile(config, "t.yaml").expect("valid")
    }

    async fn carried(bytes: &'static [u8], declared: Option<(PortProtocol, bool)>) -> String {
        match classify(bytes, declared, &snapshot()).await {
            Some((Carry::Http(HttpVersion::Http1), _)) => "http/1".into(),
            Some((Carry::Http(HttpVersion::Http2), _)) => "h2".into(),
            Some((Carry::Opaque, _)) => "opaque".into(),
            Some((Carry::Tls(sni), _)) => format!("tls {sni:?}"),
            None => "none".into(),
        }
    }

    #[tokio::test]
    async fn the_first_bytes_decide_unless_the_port_is_declared() {
        assert_eq!(
            carried(b"GET / HTTP/1.1\r\nhost: a\r\n\r\n", None).await,
            "http/1"
        );
        assert_eq!(
            carried(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", None).await,
            "h2"
        );
        assert_eq!(carried(b"\x00\x01binary", None).await, "opaque");
        // A declared TCP port is never sniffed: its bytes are left unread.
        let declared = Some((PortProtocol::Tcp, false));
        let (carry, mut io) = classify(&b"GET / HTTP/1.1\r\n\r\n"[..], declared, &snapshot())
            .await
            .expect("classified");
        assert!(matches!(carry, Carry::Opaque));
        let mut first = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut io, &mut first)
            .await
            .expect("read");
        assert_eq!(first, "GET / HTTP/1.1\r\n\r\n", "replayed from the start");
    }
}
