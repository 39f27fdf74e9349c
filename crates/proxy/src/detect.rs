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
}
