//! The discovery service on the wire, without a per-stream copy of a push.
//!
//! tonic's generated server encodes every message into the stream's own
//! buffer, which then keeps the capacity of the largest push (a full
//! config) for the stream's life: 1,000 proxies held 1,000 copies. This
//! server speaks the same gRPC method (`/weft.discovery.v1.Discovery/Stream`,
//! the generated client and weft-proxy are unchanged) but its response body
//! hands the HTTP/2 stream the resources' shared, already encoded bytes
//! ([`super::shared::Frame`]): what a push costs per stream is a few
//! reference counts and a short head. Requests are decoded with tonic's
//! own [`Streaming`], so framing, limits and errors are tonic's.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use http::header::{CONTENT_TYPE, HeaderValue};
use hyper::body::{Body as HttpBody, Frame as BodyFrame};
use prost::Message;
use tokio::sync::mpsc;
use tonic::Status;
use tonic::codec::{DecodeBuf, Decoder, Streaming};
use tonic::codegen::{BoxFuture, Service, StdError};
use weft_proto::discovery::v1::ProxyMessage;

use super::DiscoveryService;
use super::shared::Frame;

/// The one method served.
pub const STREAM_PATH: &str = "/weft.discovery.v1.Discovery/Stream";
/// Largest message a proxy may send (a Hello lists every resource it
/// holds: about 60 bytes each, so room for a quarter million).
const MAX_PROXY_MESSAGE: usize = 16 << 20;

/// What a session sends down its stream: pushes, then maybe why it ended.
pub type Outbound = mpsc::Sender<Result<Frame, Status>>;

/// The gRPC server for [`DiscoveryService`] (add it to a tonic `Server`).
#[derive(Clone)]
pub struct DiscoveryServer {
    service: Arc<DiscoveryService>,
}

impl DiscoveryServer {
    pub fn new(service: DiscoveryService) -> Self {
        Self::from_arc(Arc::new(service))
    }

    pub fn from_arc(service: Arc<DiscoveryService>) -> Self {
        Self { service }
    }
}

impl tonic::server::NamedService for DiscoveryServer {
    const NAME: &'static str = "weft.discovery.v1.Discovery";
}

impl<B> Service<http::Request<B>> for DiscoveryServer
where
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let service = self.service.clone();
        Box::pin(async move {
            if request.uri().path() != STREAM_PATH {
                return Ok(Status::unimplemented(format!(
                    "{}: weftd's discovery service has only {STREAM_PATH}",
                    request.uri().path()
                ))
                .into_http());
            }
            // Proxies never compress (weft-proxy sends no grpc-encoding);
            // anything else is refused by name rather than misread.
            if let Some(encoding) = request.headers().get("grpc-encoding")
                && encoding != "identity"
            {
                return Ok(Status::unimplemented(format!(
                    "grpc-encoding {encoding:?}: weftd's discovery stream takes uncompressed messages"
                ))
                .into_http());
            }
            let (parts, body) = request.into_parts();
            let messages =
                Streaming::new_request(ProxyMessages, body, None, Some(MAX_PROXY_MESSAGE));
            let request = tonic::Request::from_http(http::Request::from_parts(parts, messages));
            Ok(match service.open(request).await {
                Ok(pushes) => {
                    let mut response = http::Response::new(tonic::body::Body::new(PushBody {
                        pushes,
                        current: None,
                        done: false,
                    }));
                    response
                        .headers_mut()
                        .insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
                    response
                }
                Err(status) => status.into_http(),
            })
        })
    }
}

/// Decodes what proxies send.
struct ProxyMessages;

impl Decoder for ProxyMessages {
    type Item = ProxyMessage;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<ProxyMessage>, Status> {
        ProxyMessage::decode(buf)
            .map(Some)
            .map_err(|err| Status::invalid_argument(format!("undecodable proxy message: {err}")))
    }
}

/// Pieces smaller than this are copied together into one data frame.
const SMALL: usize = 4 * 1024;
/// The size such a gathered frame grows to.
const GATHERED: usize = 16 * 1024;

/// The next data frame of `frame` from piece `next` on, `None` at its end.
/// A large piece goes out as it is (shared); small ones (most resources
/// are a few hundred bytes) are gathered into one frame of about
/// [`GATHERED`] bytes, so a full push is a few hundred HTTP/2 frames
/// rather than tens of thousands. The copy is transient: HTTP/2 polls for
/// the next frame only once the stream may send, so a stream holds at most
/// one gathered frame beyond its flow-control window.
fn gather(frame: &Frame, next: &mut usize) -> Option<Bytes> {
    let mut gathered: Option<bytes::BytesMut> = None;
    while let Some(piece) = frame.chunk(*next) {
        if !piece.has_remaining() {
            *next += 1;
            continue;
        }
        match &mut gathered {
            None if piece.len() >= SMALL => {
                *next += 1;
                return Some(piece);
            }
            None => {
                let mut buffer = bytes::BytesMut::with_capacity(GATHERED + SMALL);
                buffer.extend_from_slice(&piece);
                gathered = Some(buffer);
            }
            // A large piece ends the gathered frame and goes next, alone.
            Some(_) if piece.len() >= SMALL => break,
            Some(buffer) => buffer.extend_from_slice(&piece),
        }
        *next += 1;
        if gathered.as_ref().is_some_and(|b| b.len() >= GATHERED) {
            break;
        }
    }
    gathered.map(bytes::BytesMut::freeze)
}

/// The response body: each push's pieces (see [`gather`]), then the
/// trailers with the stream's status.
struct PushBody {
    pushes: mpsc::Receiver<Result<Frame, Status>>,
    /// The push being sent and the index of its next chunk.
    current: Option<(Frame, usize)>,
    done: bool,
}

impl HttpBody for PushBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<BodyFrame<Bytes>, Status>>> {
        loop {
            if let Some((frame, next)) = &mut self.current {
                match gather(frame, next) {
                    Some(data) => return Poll::Ready(Some(Ok(BodyFrame::data(data)))),
                    None => self.current = None,
                }
            }
            if self.done {
                return Poll::Ready(None);
            }
            let status = match self.pushes.poll_recv(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(frame))) => {
                    self.current = Some((frame, 0));
                    continue;
                }
                Poll::Ready(Some(Err(status))) => status,
                Poll::Ready(None) => Status::ok(""),
            };
            self.done = true;
            let mut trailers = http::HeaderMap::new();
            if let Err(err) = status.add_header(&mut trailers) {
                // Only a message that cannot be a header value fails;
                // the code alone still tells the proxy what happened.
                tracing::debug!("stream status not encodable as trailers: {err}");
                trailers = http::HeaderMap::new();
                trailers.insert("grpc-status", HeaderValue::from(status.code() as i32));
            }
            return Poll::Ready(Some(Ok(BodyFrame::trailers(trailers))));
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.current.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::push::shared::{Delta, Held, Interner};
    use weft_proto::proxy::v1::{Cluster, ProxyConfig};

    /// Gathered frames carry exactly the push's bytes, in order; small
    /// resources share frames, a large one is passed on without a copy.
    #[test]
    fn gathered_frames_are_the_push_and_large_pieces_are_not_copied() {
        let mut clusters: Vec<Cluster> = (0..200)
            .map(|n| Cluster {
                name: format!("c{n:03}"),
                service: format!("s{n}"),
                ..Cluster::default()
            })
            .collect();
        clusters[100].service = "x".repeat(3 * GATHERED);
        let config = Interner::default().encode(ProxyConfig {
            clusters,
            ..ProxyConfig::default()
        });
        let delta = Arc::new(Delta::between(&Held::reported(Default::default()), &config));
        let frame = Frame::new("1", delta, "");
        let mut expected = Vec::new();
        let mut index = 0;
        while let Some(piece) = frame.chunk(index) {
            expected.extend_from_slice(&piece);
            index += 1;
        }
        let large = &config.resources["cluster/c100"].field;
        let (mut sent, mut frames, mut shared) = (Vec::new(), 0, false);
        let mut next = 0;
        while let Some(data) = gather(&frame, &mut next) {
            shared |= data.as_ptr() == large.as_ptr();
            assert!(data.len() <= GATHERED + SMALL || data.len() == large.len());
            sent.extend_from_slice(&data);
            frames += 1;
        }
        assert_eq!(sent, expected);
        assert!(shared, "the large resource went out as its shared bytes");
        assert!(frames < 10, "{index} pieces in {frames} frames");
    }
}
