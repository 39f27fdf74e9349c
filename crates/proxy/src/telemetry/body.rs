//! Counting bodies as they stream: bytes, and for gRPC the length-prefixed
//! messages (1 flag byte, 4 length bytes, then the message), whatever way
//! the frames split them.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use crate::body::{BoxError, ProxyBody};

/// Counts gRPC messages in a byte stream.
#[derive(Debug, Default, Clone)]
pub struct MessageCounter {
    /// Prefix bytes of the current message seen so far (0..5).
    prefix_seen: u8,
    length: [u8; 4],
    /// Message bytes still to skip.
    remaining: u64,
    pub messages: u64,
}

impl MessageCounter {
    pub fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.remaining > 0 {
                let skip = (self.remaining as usize).min(data.len());
                self.remaining -= skip as u64;
                data = &data[skip..];
                continue;
            }
            // Byte 0 is the compression flag, bytes 1..5 the length.
            if self.prefix_seen > 0 {
                self.length[usize::from(self.prefix_seen) - 1] = data[0];
            }
            self.prefix_seen += 1;
            data = &data[1..];
            if self.prefix_seen == 5 {
                self.prefix_seen = 0;
                self.messages += 1;
                self.remaining = u64::from(u32::from_be_bytes(self.length));
            }
        }
    }
}

/// What a request body carried, shared with the request's record.
#[derive(Debug, Default)]
pub struct Counts {
    pub bytes: AtomicU64,
    pub messages: AtomicU64,
}

/// A request body counted into [`Counts`] on the way upstream.
pub struct CountedRequest {
    inner: ProxyBody,
    counts: Arc<Counts>,
    grpc: Option<MessageCounter>,
}

impl CountedRequest {
    pub fn new(inner: ProxyBody, counts: Arc<Counts>, grpc: bool) -> Self {
        Self {
            inner,
            counts,
            grpc: grpc.then(MessageCounter::default),
        }
    }
}

impl Body for CountedRequest {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            this.counts
                .bytes
                .fetch_add(data.len() as u64, Ordering::Relaxed);
            if let Some(counter) = &mut this.grpc {
                let before = counter.messages;
                counter.feed(data);
                this.counts
                    .messages
                    .fetch_add(counter.messages - before, Ordering::Relaxed);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(len: u32) -> Vec<u8> {
        let mut out = vec![0];
        out.extend_from_slice(&len.to_be_bytes());
        out.extend(std::iter::repeat_n(7u8, len as usize));
        out
    }

    #[test]
    fn messages_are_counted_however_frames_split_them() {
        let stream: Vec<u8> = [message(3), message(0), message(300), message(1)].concat();
        for chunk in [1, 2, 4, 5, 7, 64, 1000] {
            let mut counter = MessageCounter::default();
            for piece in stream.chunks(chunk) {
                counter.feed(piece);
            }
            assert_eq!(counter.messages, 4, "chunks of {chunk}");
        }
    }
}
