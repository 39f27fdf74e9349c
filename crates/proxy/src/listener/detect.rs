//! Protocol detection on a connection's first bytes.
//!
//! Contract: reads until the bytes decide between HTTP/1.x (a request line
//! with a known method), HTTP/2 (the prior-knowledge preface), TLS (a
//! handshake record) and anything else, or until the timeout. On timeout or
//! EOF the connection is opaque TCP: availability over precision, so a
//! server-first protocol on an undeclared port is delayed, never broken.
//! Bytes read are returned, to be replayed with [`PrefixedIo`].

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HTTP1_METHODS: &[&[u8]] = &[
    b"GET ",
    b"POST ",
    b"PUT ",
    b"DELETE ",
    b"HEAD ",
    b"OPTIONS ",
    b"PATCH ",
    b"CONNECT ",
    b"TRACE ",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detected {
    Http1,
    Http2,
    Tls,
    Opaque,
}

enum Verdict {
    Decided(Detected),
    NeedMore,
}

fn classify(buf: &[u8]) -> Verdict {
    let mut undecided = false;
    // A candidate is still possible while the bytes so far are its prefix.
    let mut candidate = |signature: &[u8]| -> bool {
        let n = buf.len().min(signature.len());
        if buf[..n] != signature[..n] {
            return false;
        }
        if buf.len() < signature.len() {
            undecided = true;
            return false;
        }
        true
    };
    if candidate(H2_PREFACE) {
        return Verdict::Decided(Detected::Http2);
    }
    if HTTP1_METHODS.iter().any(|m| candidate(m)) {
        return Verdict::Decided(Detected::Http1);
    }
    // TLS record header: handshake (22), version 3.x.
    if candidate(&[0x16, 0x03]) {
        return Verdict::Decided(Detected::Tls);
    }
    if undecided {
        Verdict::NeedMore
    } else {
        Verdict::Decided(Detected::Opaque)
    }
}

/// Reads from `io` until the protocol is known or `timeout` passes.
pub async fn detect<S: AsyncRead + Unpin>(
    io: &mut S,
    timeout: Duration,
) -> io::Result<(Detected, Bytes)> {
    let mut buf = BytesMut::with_capacity(1024);
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, io.read_buf(&mut buf)).await {
            Err(_elapsed) => return Ok((Detected::Opaque, buf.freeze())),
            Ok(Ok(0)) => return Ok((Detected::Opaque, buf.freeze())),
            Ok(Ok(_)) => {}
            Ok(Err(err)) => return Err(err),
        }
        if let Verdict::Decided(detected) = classify(&buf) {
            return Ok((detected, buf.freeze()));
        }
    }
}

/// What the bytes of a TLS connection say about its SNI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sni {
    /// A complete ClientHello naming this host (lower-cased).
    Host(String),
    /// A complete ClientHello without server_name, or bytes that are not a
    /// ClientHello at all: waiting longer would not help.
    Absent,
    /// The ClientHello is not complete yet.
    NeedMore,
}

/// Bound on the ClientHello bytes buffered before giving up on SNI: far
/// above real hellos (a few KB with post-quantum key shares), small enough
/// that a client cannot make the proxy hold much per connection.
pub const MAX_CLIENT_HELLO: usize = 64 * 1024;

const RECORD_HEADER: usize = 5;
const CONTENT_HANDSHAKE: u8 = 0x16;
const HANDSHAKE_CLIENT_HELLO: u8 = 1;
const EXTENSION_SERVER_NAME: u16 = 0;
const NAME_TYPE_HOST: u8 = 0;

/// Finds the SNI in the first bytes of a TLS connection. The ClientHello
/// may span several handshake records; their fragments are joined.
pub fn parse_sni(buf: &[u8]) -> Sni {
    match parse_client_hello(buf) {
        Hello::NeedMore => Sni::NeedMore,
        Hello::Invalid => Sni::Absent,
        Hello::Complete(hello) => hello.sni.map_or(Sni::Absent, Sni::Host),
    }
}

/// What a complete ClientHello says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientHelloInfo {
    /// Lower-cased host name, if any.
    pub sni: Option<String>,
    /// ALPN protocol ids offered, in the client's order.
    pub alpn: Vec<Vec<u8>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hello {
    Complete(ClientHelloInfo),
    /// Not a ClientHello (or a malformed one).
    Invalid,
    NeedMore,
}

/// Parses the ClientHello at the start of a TLS connection, joining the
/// fragments of several handshake records.
pub fn parse_client_hello(buf: &[u8]) -> Hello {
    let mut handshake = Vec::new();
    let mut rest = buf;
    loop {
        if rest.len() < RECORD_HEADER {
            return Hello::NeedMore;
        }
        if rest[0] != CONTENT_HANDSHAKE || rest[1] != 0x03 {
            return Hello::Invalid;
        }
        let len = usize::from(u16::from_be_bytes([rest[3], rest[4]]));
        let Some(fragment) = rest.get(RECORD_HEADER..RECORD_HEADER + len) else {
            return Hello::NeedMore;
        };
        handshake.extend_from_slice(fragment);
        rest = &rest[RECORD_HEADER + len..];
        if handshake.len() < 4 {
            continue;
        }
        if handshake[0] != HANDSHAKE_CLIENT_HELLO {
            return Hello::Invalid;
        }
        let body_len = usize::from(handshake[1]) << 16
            | usize::from(handshake[2]) << 8
            | usize::from(handshake[3]);
        if let Some(body) = handshake.get(4..4 + body_len) {
            return client_hello_info(body).map_or(Hello::Invalid, Hello::Complete);
        }
    }
}

/// A bounds-checked reader over a ClientHello body.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, tail) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = tail;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    fn u16(&mut self) -> Option<u16> {
        let b = self.take(2)?;
        Some(u16::from_be_bytes([b[0], b[1]]))
    }

    /// A vector with a one- or two-byte length prefix.
    fn vec8(&mut self) -> Option<Reader<'a>> {
        let n = usize::from(self.u8()?);
        Some(Reader(self.take(n)?))
    }

    fn vec16(&mut self) -> Option<Reader<'a>> {
        let n = usize::from(self.u16()?);
        Some(Reader(self.take(n)?))
    }
}

const EXTENSION_ALPN: u16 = 16;

/// `None`: malformed.
fn client_hello_info(body: &[u8]) -> Option<ClientHelloInfo> {
    let mut r = Reader(body);
    r.take(2 + 32)?; // legacy_version, random
    r.vec8()?; // session id
    r.vec16()?; // cipher suites
    r.vec8()?; // compression methods
    let mut info = ClientHelloInfo::default();
    if r.0.is_empty() {
        // No extensions at all (TLS 1.0-era hello).
        return Some(info);
    }
    let mut extensions = r.vec16()?;
    while !extensions.0.is_empty() {
        let kind = extensions.u16()?;
        let mut data = extensions.vec16()?;
        match kind {
            EXTENSION_SERVER_NAME => {
                let mut names = data.vec16()?;
                while !names.0.is_empty() {
                    let name_type = names.u8()?;
                    let name = names.vec16()?.0;
                    if name_type == NAME_TYPE_HOST && info.sni.is_none() {
                        let host = std::str::from_utf8(name).ok()?;
                        if !host.is_empty() && host.is_ascii() {
                            info.sni = Some(host.to_ascii_lowercase());
                        }
                    }
                }
            }
            EXTENSION_ALPN => {
                let mut protocols = data.vec16()?;
                while !protocols.0.is_empty() {
                    info.alpn.push(protocols.vec8()?.0.to_vec());
                }
            }
            _ => {}
        }
    }
    Some(info)
}

/// Reads on from `prefix` (bytes already read from `io`) until the
/// ClientHello is complete, `timeout` passes, EOF or [`MAX_CLIENT_HELLO`];
/// an incomplete hello means no SNI. Returns the SNI and every byte read,
/// to be replayed untouched (passthrough).
pub async fn peek_sni<S: AsyncRead + Unpin>(
    io: &mut S,
    prefix: Bytes,
    timeout: Duration,
) -> io::Result<(Option<String>, Bytes)> {
    let (hello, read) = peek_client_hello(io, prefix, timeout).await?;
    Ok((hello.and_then(|hello| hello.sni), read))
}

/// [`peek_sni`], returning the whole ClientHello summary: `None` when
/// the bytes are not a complete ClientHello within `timeout`.
pub async fn peek_client_hello<S: AsyncRead + Unpin>(
    io: &mut S,
    prefix: Bytes,
    timeout: Duration,
) -> io::Result<(Option<ClientHelloInfo>, Bytes)> {
    let mut buf = BytesMut::from(prefix.as_ref());
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match parse_client_hello(&buf) {
            Hello::Complete(info) => return Ok((Some(info), buf.freeze())),
            Hello::Invalid => return Ok((None, buf.freeze())),
            Hello::NeedMore if buf.len() >= MAX_CLIENT_HELLO => return Ok((None, buf.freeze())),
            Hello::NeedMore => {}
        }
        buf.reserve(4096);
        match tokio::time::timeout_at(deadline, io.read_buf(&mut buf)).await {
            Err(_) | Ok(Ok(0)) => return Ok((None, buf.freeze())),
            Ok(Ok(_)) => {}
            Ok(Err(err)) => return Err(err),
        }
    }
}

/// An I/O stream that first yields bytes already read from it.
pub struct PrefixedIo<S> {
    prefix: Bytes,
    inner: S,
}

impl<S> PrefixedIo<S> {
    pub fn new(prefix: Bytes, inner: S) -> Self {
        Self { prefix, inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for PrefixedIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for PrefixedIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn detect_bytes(chunks: &[&[u8]]) -> Detected {
        let (mut client, mut server) = tokio::io::duplex(4096);
        for chunk in chunks {
            tokio::io::AsyncWriteExt::write_all(&mut client, chunk)
                .await
                .expect("write");
        }
        detect(&mut server, Duration::from_millis(50))
            .await
            .expect("detect")
            .0
    }

    #[tokio::test]
    async fn recognises_each_protocol() {
        assert_eq!(
            detect_bytes(&[b"GET / HTTP/1.1\r\n"]).await,
            Detected::Http1
        );
        assert_eq!(detect_bytes(&[H2_PREFACE]).await, Detected::Http2);
        assert_eq!(
            detect_bytes(&[&[0x16, 0x03, 0x01, 0x02]]).await,
            Detected::Tls
        );
        assert_eq!(detect_bytes(&[b"\x00\x01binary"]).await, Detected::Opaque);
        assert_eq!(detect_bytes(&[b"GETX"]).await, Detected::Opaque);
    }

    #[tokio::test]
    async fn waits_for_more_bytes_then_times_out_as_opaque() {
        // "PO" could be POST: undecided until the timeout.
        assert_eq!(detect_bytes(&[b"PO"]).await, Detected::Opaque);
        assert_eq!(
            detect_bytes(&[b"PRI * HTTP/2.0\r\n"]).await,
            Detected::Opaque
        );
        // Silence (a server-first protocol): opaque after the timeout.
        assert_eq!(detect_bytes(&[]).await, Detected::Opaque);
    }

    #[tokio::test]
    async fn prefixed_io_replays_detected_bytes() {
        let (mut client, server) = tokio::io::duplex(64);
        tokio::io::AsyncWriteExt::write_all(&mut client, b" world")
            .await
            .expect("write");
        drop(client);
        let mut io = PrefixedIo::new(Bytes::from_static(b"hello"), server);
        let mut out = String::new();
        io.read_to_string(&mut out).await.expect("read");
        assert_eq!(out, "hello world");
    }

    /// A minimal ClientHello in one record.
    fn client_hello(sni: Option<&str>) -> Vec<u8> {
        let mut ext = Vec::new();
        // An unrelated extension first (supported_versions), to skip over.
        ext.extend_from_slice(&[0x00, 0x2b, 0x00, 0x03, 0x02, 0x03, 0x04]);
        if let Some(host) = sni {
            let name = host.as_bytes();
            let list_len = 3 + name.len();
            ext.extend_from_slice(&[0x00, 0x00]);
            ext.extend_from_slice(&((list_len + 2) as u16).to_be_bytes());
            ext.extend_from_slice(&(list_len as u16).to_be_bytes());
            ext.push(0);
            ext.extend_from_slice(&(name.len() as u16).to_be_bytes());
            ext.extend_from_slice(name);
        }
        let mut body = vec![0x03, 0x03];
        body.extend_from_slice(&[7; 32]);
        body.push(0); // session id
        body.extend_from_slice(&[0x00, 0x02, 0x13, 0x01]);
        body.extend_from_slice(&[0x01, 0x00]);
        body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
        body.extend_from_slice(&ext);
        let mut handshake = vec![HANDSHAKE_CLIENT_HELLO];
        handshake.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        handshake.extend_from_slice(&body);
        records(&[&handshake])
    }

    fn records(fragments: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for fragment in fragments {
            out.extend_from_slice(&[CONTENT_HANDSHAKE, 0x03, 0x01]);
            out.extend_from_slice(&(fragment.len() as u16).to_be_bytes());
            out.extend_from_slice(fragment);
        }
        out
    }

    #[test]
    fn sni_from_a_complete_client_hello() {
        let hello = client_hello(Some("A.Example.com"));
        assert_eq!(parse_sni(&hello), Sni::Host("a.example.com".into()));
        assert_eq!(parse_sni(&client_hello(None)), Sni::Absent);
    }

    #[test]
    fn sni_across_records_and_truncated() {
        let hello = client_hello(Some("db.internal"));
        let handshake = &hello[5..];
        let split = records(&[&handshake[..10], &handshake[10..]]);
        assert_eq!(parse_sni(&split), Sni::Host("db.internal".into()));
        for cut in [0, 3, 5, 9, hello.len() - 1] {
            assert_eq!(parse_sni(&hello[..cut]), Sni::NeedMore, "cut at {cut}");
        }
    }

    /// A ClientHello as rustls really writes it, offering `alpn`.
    fn rustls_client_hello(alpn: &[&[u8]]) -> Vec<u8> {
        let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let name = rustls_pki_types::ServerName::try_from("reviews.test").expect("name");
        let mut client =
            rustls::ClientConnection::new(std::sync::Arc::new(config), name).expect("client");
        let mut hello = Vec::new();
        client.write_tls(&mut hello).expect("hello");
        hello
    }

    #[test]
    fn client_hello_names_its_alpn_protocols() {
        let hello = rustls_client_hello(&[b"istio-h2", b"h2"]);
        let Hello::Complete(info) = parse_client_hello(&hello) else {
            panic!("a complete hello");
        };
        assert_eq!(info.sni.as_deref(), Some("reviews.test"));
        assert_eq!(info.alpn, [b"istio-h2".to_vec(), b"h2".to_vec()]);
        assert!(crate::tls::is_mesh_alpn(&info.alpn));
        let Hello::Complete(plain) = parse_client_hello(&rustls_client_hello(&[b"h2"])) else {
            panic!("a complete hello");
        };
        assert!(!crate::tls::is_mesh_alpn(&plain.alpn), "the app's own TLS");
        assert_eq!(parse_client_hello(&hello[..20]), Hello::NeedMore);
    }

    #[test]
    fn sni_of_garbage_is_absent() {
        assert_eq!(parse_sni(b"GET / HTTP/1.1\r\n"), Sni::Absent);
        // A handshake record that is not a ClientHello (ServerHello).
        assert_eq!(parse_sni(&records(&[&[2, 0, 0, 1, 0]])), Sni::Absent);
        // A ClientHello whose body lengths run past its end.
        assert_eq!(
            parse_sni(&records(&[&[1, 0, 0, 3, 3, 3, 0xff]])),
            Sni::Absent
        );
        let mut bad_ext = client_hello(Some("a.b"));
        let last = bad_ext.len() - 1;
        bad_ext.truncate(last);
        // Record and handshake lengths still claim the full hello.
        assert_eq!(parse_sni(&bad_ext), Sni::NeedMore);
    }

    #[tokio::test]
    async fn peek_sni_waits_for_the_rest_then_gives_up() {
        let hello = client_hello(Some("a.example.com"));
        let (mut client, mut server) = tokio::io::duplex(4096);
        tokio::io::AsyncWriteExt::write_all(&mut client, &hello[8..])
            .await
            .expect("write");
        let prefix = Bytes::copy_from_slice(&hello[..8]);
        let (sni, bytes) = peek_sni(&mut server, prefix, Duration::from_millis(200))
            .await
            .expect("peek");
        assert_eq!(sni.as_deref(), Some("a.example.com"));
        assert_eq!(bytes.as_ref(), hello.as_slice());

        let (_client, mut server) = tokio::io::duplex(64);
        let prefix = Bytes::copy_from_slice(&hello[..20]);
        let (sni, bytes) = peek_sni(&mut server, prefix, Duration::from_millis(30))
            .await
            .expect("peek");
        assert_eq!((sni, bytes.len()), (None, 20));
    }
}
