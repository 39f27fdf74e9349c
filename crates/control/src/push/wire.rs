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

/// The response body: each push's chunks as they are, then the trailers
/// with the stream's status.
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
                let chunk = frame.chunk(*next);
                *next += 1;
                match chunk {
                    Some(chunk) if !chunk.has_remaining() => continue,
                    Some(chunk) => return Poll::Ready(Some(Ok(BodyFrame::data(chunk)))),
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
