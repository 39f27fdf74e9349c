//! `includeRequestBodyInCheck`: the request body an authorizer sees, read
//! before the check up to `maxRequestBytes`, and handed on afterwards so
//! the upstream gets every byte the client sent (Envoy's ext_authz
//! buffers the same way).
//!
//! Only a request a CUSTOM policy sends to such a provider is read ahead;
//! every other body streams as before.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt as _;

use crate::body::{BoxError, ProxyBody};

/// The header a check carries saying whether its body was cut at the
/// limit (Envoy's name, which authorizers written for Envoy read).
pub const PARTIAL_HEADER: &str = "x-envoy-auth-partial-body";

/// A provider's `includeRequestBodyInCheck`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyLimit {
    /// More than 0 (checked when the config loaded).
    pub max_bytes: usize,
    /// A longer body: `true` checks its first `max_bytes`; `false` answers
    /// 413 without asking.
    pub allow_partial: bool,
    /// gRPC: the body as `raw_body` bytes rather than the `body` string.
    pub pack_as_bytes: bool,
}

/// What was read of a request body before its check.
#[derive(Debug, Default)]
pub struct Buffered {
    /// The frames read, in order, to forward before the rest.
    chunks: VecDeque<Bytes>,
    /// The request's trailers, when the end came within the limit.
    trailers: Option<HeaderMap>,
    /// The whole body was read (nothing left in the client's stream).
    complete: bool,
    /// The first `max_bytes` at most: what the authorizer is shown.
    shown: Bytes,
}

impl Buffered {
    /// The bytes the check carries.
    pub fn shown(&self) -> &Bytes {
        &self.shown
    }

    /// Whether the body had more than the check carries.
    pub fn partial(&self) -> bool {
        let read: usize = self.chunks.iter().map(Bytes::len).sum();
        !self.complete || read > self.shown.len()
    }

    /// The value of [`PARTIAL_HEADER`].
    pub fn partial_value(&self) -> HeaderValue {
        HeaderValue::from_static(if self.partial() { "true" } else { "false" })
    }

    /// The body to forward: what was read, then what the client has not
    /// sent yet (`rest`, the same stream the frames came from).
    pub fn replay(self, rest: ProxyBody) -> ProxyBody {
        let rest = (!self.complete).then_some(rest);
        Replay {
            chunks: self.chunks,
            trailers: self.trailers,
            rest,
        }
        .boxed_unsync()
    }
}

/// Why a body could not be read for its check.
#[derive(Debug)]
pub enum BodyError {
    /// Longer than the limit and partial messages are not allowed: 413.
    TooLarge,
    /// The client's stream failed while it was read.
    Read(BoxError),
}

impl BodyError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Read(_) => StatusCode::BAD_REQUEST,
        }
    }
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::TooLarge => f.write_str("request body over maxRequestBytes"),
            Self::Read(err) => write!(f, "reading the request body: {err}"),
        }
    }
}

/// Reads `body` until `limit.max_bytes` are in hand or it ends. A
/// `Content-Length` over the limit is refused before anything is read
/// when partial messages are not allowed.
pub async fn buffer<B>(
    headers: &HeaderMap,
    body: &mut B,
    limit: BodyLimit,
) -> Result<Buffered, BodyError>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if !limit.allow_partial && declared.is_some_and(|n| n > limit.max_bytes as u64) {
        return Err(BodyError::TooLarge);
    }
    let mut out = Buffered::default();
    let mut read = 0usize;
    // One byte past the limit tells "exactly the limit" from "more".
    while read <= limit.max_bytes {
        let Some(frame) = body.frame().await else {
            out.complete = true;
            break;
        };
        let frame = frame.map_err(|err| BodyError::Read(err.into()))?;
        match frame.into_data() {
            Ok(data) => {
                read += data.len();
                if !data.is_empty() {
                    out.chunks.push_back(data);
                }
            }
            Err(frame) => {
                // Trailers end the body.
                out.trailers = frame.into_trailers().ok();
                out.complete = true;
                break;
            }
        }
        if body.is_end_stream() {
            out.complete = true;
            break;
        }
    }
    if read > limit.max_bytes && !limit.allow_partial {
        return Err(BodyError::TooLarge);
    }
    out.shown = first_bytes(&out.chunks, limit.max_bytes);
    Ok(out)
}

/// The first `max` bytes of `chunks`, copied only when they span several.
fn first_bytes(chunks: &VecDeque<Bytes>, max: usize) -> Bytes {
    match chunks.len() {
        0 => Bytes::new(),
        1 => chunks[0].slice(..chunks[0].len().min(max)),
        _ => {
            let mut joined = BytesMut::with_capacity(max);
            for chunk in chunks {
                let room = max - joined.len();
                joined.extend_from_slice(&chunk[..chunk.len().min(room)]);
                if joined.len() == max {
                    break;
                }
            }
            joined.freeze()
        }
    }
}

/// The frames read for the check, then the rest of the client's stream.
struct Replay {
    chunks: VecDeque<Bytes>,
    trailers: Option<HeaderMap>,
    rest: Option<ProxyBody>,
}

impl Body for Replay {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(chunk) = self.chunks.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        if let Some(trailers) = self.trailers.take() {
            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
        }
        match self.rest.as_mut() {
            Some(rest) => Pin::new(rest).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty()
            && self.trailers.is_none()
            && self.rest.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        let held: u64 = self.chunks.iter().map(|c| c.len() as u64).sum();
        let rest = self
            .rest
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint);
        // The upper bound first: a lower bound above it would be refused.
        let mut hint = SizeHint::new();
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper + held);
        }
        hint.set_lower(rest.lower() + held);
        hint
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::{BodyExt as _, StreamBody};

    use super::*;

    fn limit(max_bytes: usize, allow_partial: bool) -> BodyLimit {
        BodyLimit {
            max_bytes,
            allow_partial,
            pack_as_bytes: false,
        }
    }

    fn chunked(parts: &[&'static str]) -> ProxyBody {
        let frames: Vec<Result<Frame<Bytes>, BoxError>> = parts
            .iter()
            .map(|p| Ok(Frame::data(Bytes::from_static(p.as_bytes()))))
            .collect();
        StreamBody::new(futures_util::stream::iter(frames)).boxed_unsync()
    }

    async fn collect(body: ProxyBody) -> Bytes {
        body.collect().await.expect("body").to_bytes()
    }

    #[tokio::test]
    async fn a_short_body_is_shown_whole_and_forwarded_once() {
        let mut body = chunked(&["ab", "cd"]);
        let read = buffer(&HeaderMap::new(), &mut body, limit(10, false))
            .await
            .expect("read");
        assert_eq!(read.shown(), "abcd");
        assert!(!read.partial());
        let replay = read.replay(body);
        assert_eq!(replay.size_hint().exact(), Some(4));
        assert_eq!(collect(replay).await, "abcd");
    }

    #[tokio::test]
    async fn a_long_body_is_cut_for_the_check_but_forwarded_whole() {
        let mut body = chunked(&["abc", "def", "ghi", "jkl"]);
        let read = buffer(&HeaderMap::new(), &mut body, limit(5, true))
            .await
            .expect("read");
        assert_eq!(read.shown(), "abcde");
        assert!(read.partial());
        let replay = read.replay(body);
        // What was read is known; the rest of this stream is not.
        assert_eq!(replay.size_hint().lower(), 6);
        assert_eq!(collect(replay).await, "abcdefghijkl");
    }

    #[tokio::test]
    async fn exactly_the_limit_is_not_partial() {
        let mut body = chunked(&["abc", "de"]);
        let read = buffer(&HeaderMap::new(), &mut body, limit(5, false))
            .await
            .expect("read");
        assert_eq!(read.shown(), "abcde");
        assert!(!read.partial());
    }

    #[tokio::test]
    async fn over_the_limit_without_partial_is_413() {
        let mut body = chunked(&["abc", "def"]);
        let err = buffer(&HeaderMap::new(), &mut body, limit(5, false))
            .await
            .expect_err("too large");
        assert_eq!(err.status(), StatusCode::PAYLOAD_TOO_LARGE);
        // A declared length is refused before reading.
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("6"));
        let mut body = chunked(&["abcdef"]);
        let err = buffer(&headers, &mut body, limit(5, false))
            .await
            .expect_err("too large");
        assert!(matches!(err, BodyError::TooLarge));
        assert_eq!(collect(body).await, "abcdef", "nothing was read");
    }
}
