//! One `ShouldRateLimit` call to a global rate-limit service, Envoy's API
//! (`envoy.service.ratelimit.v3.RateLimitService`), so the standard service
//! (envoyproxy/ratelimit) answers unchanged.
//!
//! The call is a gRPC unary request sent through the proxy's own pool, so
//! it gets what any upstream gets: pooled HTTP/2 connections, the cluster's
//! connection limits, and mesh mTLS when the service is a mesh workload.
//! gRPC framing is written here (five bytes, uncompressed) rather than by a
//! second HTTP client beside the pool.
//!
//! Contract: `Ok` only for a gRPC status 0 answer that decodes; every other
//! outcome (connect failure, timeout, non-zero status, bad frame) is an
//! `Err` naming the cause, for the caller's failure mode to decide.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Uri, Version, header};
use http_body_util::{BodyExt, Full};
use prost::Message;
use weft_proto::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use weft_proto::envoy::service::ratelimit::v3::{
    RateLimitRequest, RateLimitResponse, rate_limit_response::Code,
};

use crate::body::ProxyBody;
use crate::config::UpstreamTls;
use crate::upstream::{Breaker, HttpVersion, Pool};

/// The gRPC method's path: package, service and method are Envoy's.
pub const SHOULD_RATE_LIMIT: &str = "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit";

/// Largest answer read: a verdict with a few headers, never megabytes.
const MAX_RESPONSE: usize = 64 * 1024;

/// Headers the service asks to add (Envoy's `*_headers_to_add`).
pub type Headers = Vec<(HeaderName, HeaderValue)>;

/// The service's verdict.
#[derive(Debug)]
pub enum Verdict {
    /// Admit, adding `request` headers to the upstream request and
    /// `response` headers to the response (the service's budget, as
    /// `x-ratelimit-*`), as Envoy does.
    Admit { request: Headers, response: Headers },
    /// Refuse with 429, adding these headers to the reply.
    OverLimit(Headers),
}

/// Where to send one call.
pub struct Target<'a> {
    pub pool: &'a Arc<Pool>,
    pub breaker: &'a Arc<Breaker>,
    pub addr: SocketAddr,
    pub tls: UpstreamTls,
    pub connect_timeout: Duration,
    /// The call's `:authority`; None: `addr`.
    pub authority: Option<&'a str>,
}

/// Asks the service about `descriptors` in `domain`, within `timeout`.
pub async fn should_rate_limit(
    target: Target<'_>,
    domain: &str,
    descriptors: Vec<RateLimitDescriptor>,
    timeout: Duration,
) -> Result<Verdict, String> {
    let message = RateLimitRequest {
        domain: domain.to_string(),
        descriptors,
        hits_addend: 0,
    };
    let call = unary::<_, RateLimitResponse>(target, SHOULD_RATE_LIMIT, &message);
    match tokio::time::timeout(timeout, call).await {
        Ok(result) => result.map(verdict),
        Err(_) => Err(format!("no answer within {timeout:?}")),
    }
}

/// One unary gRPC call of `path` (no timeout: the caller bounds it). Also
/// used by external authorization (`http::ext_authz`), which speaks
/// another Envoy API the same way.
pub async fn unary<Req: Message, Resp: Message + Default>(
    target: Target<'_>,
    path: &'static str,
    message: &Req,
) -> Result<Resp, String> {
    let uri = Uri::builder()
        .scheme("http")
        .authority(
            target
                .authority
                .map_or_else(|| target.addr.to_string(), str::to_string),
        )
        .path_and_query(path)
        .build()
        .map_err(|err| format!("bad request URI: {err}"))?;
    let mut request = Request::new(
        Full::new(frame(message))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *request.method_mut() = Method::POST;
    *request.uri_mut() = uri;
    *request.version_mut() = Version::HTTP_2;
    let headers = request.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.insert(header::TE, HeaderValue::from_static("trailers"));
    let addr = target.addr;
    let response = target
        .pool
        .send(
            addr,
            HttpVersion::Http2,
            target.breaker,
            target.connect_timeout,
            target.tls,
            request,
        )
        .await
        .map_err(|err| format!("calling {addr}: {err}"))?;
    let (parts, body) = response.into_parts();
    if parts.status != http::StatusCode::OK {
        return Err(format!("{addr} answered HTTP {}", parts.status));
    }
    let (data, trailers) = read_all(body)
        .await
        .map_err(|err| format!("reading the answer of {addr}: {err}"))?;
    // Trailers-only answers carry the status in the headers.
    let status = trailers
        .get("grpc-status")
        .or_else(|| parts.headers.get("grpc-status"))
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if status != "0" {
        let message = trailers
            .get("grpc-message")
            .or_else(|| parts.headers.get("grpc-message"))
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        return Err(format!("{addr} answered gRPC status {status:?} {message}"));
    }
    unframe(data)
        .and_then(|bytes| Resp::decode(bytes).map_err(|err| err.to_string()))
        .map_err(|err| format!("{addr} sent an unreadable answer: {err}"))
}

fn verdict(answer: RateLimitResponse) -> Verdict {
    let headers = |list: &[weft_proto::envoy::config::core::v3::HeaderValue]| -> Headers {
        list.iter()
            .filter_map(|h| {
                let value = if h.raw_value.is_empty() {
                    h.value.as_bytes()
                } else {
                    &h.raw_value
                };
                Some((
                    HeaderName::from_bytes(h.key.as_bytes()).ok()?,
                    HeaderValue::from_bytes(value).ok()?,
                ))
            })
            .collect()
    };
    match answer.overall_code() {
        Code::OverLimit => Verdict::OverLimit(headers(&answer.response_headers_to_add)),
        // UNKNOWN is not a refusal (Envoy admits it too).
        Code::Ok | Code::Unknown => Verdict::Admit {
            request: headers(&answer.request_headers_to_add),
            response: headers(&answer.response_headers_to_add),
        },
    }
}

/// The whole (small) answer body and its trailers, at most
/// [`MAX_RESPONSE`] bytes.
pub async fn read_all(mut body: ProxyBody) -> Result<(Bytes, HeaderMap), String> {
    let mut data = BytesMut::new();
    let mut trailers = HeaderMap::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|err| err.to_string())?;
        match frame.into_data() {
            Ok(chunk) => {
                data.extend_from_slice(&chunk);
                if data.len() > MAX_RESPONSE {
                    return Err(format!("answer larger than {MAX_RESPONSE} bytes"));
                }
            }
            Err(frame) => {
                if let Ok(found) = frame.into_trailers() {
                    trailers = found;
                }
            }
        }
    }
    Ok((data.freeze(), trailers))
}

/// One uncompressed gRPC message frame.
fn frame<M: Message>(message: &M) -> Bytes {
    let len = message.encoded_len();
    let mut buf = BytesMut::with_capacity(5 + len);
    buf.put_u8(0);
    buf.put_u32(len as u32);
    // Encoding into a buffer of the encoded length cannot fail.
    let _ = message.encode(&mut buf);
    buf.freeze()
}

fn unframe(mut bytes: Bytes) -> Result<Bytes, String> {
    if bytes.len() < 5 {
        return Err("no gRPC message".into());
    }
    if bytes.get_u8() != 0 {
        return Err("compressed messages are not supported".into());
    }
    let len = bytes.get_u32() as usize;
    if bytes.len() < len {
        return Err("truncated gRPC message".into());
    }
    Ok(bytes.split_to(len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_proto::envoy::config::core::v3::HeaderValue as PbHeader;

    #[test]
    fn frames_round_trip() {
        let request = RateLimitRequest {
            domain: "d".into(),
            ..Default::default()
        };
        let framed = frame(&request);
        assert_eq!(framed[0], 0);
        let body = unframe(framed).expect("frame");
        assert_eq!(RateLimitRequest::decode(body).expect("decode"), request);
        assert!(unframe(Bytes::from_static(&[0, 0, 0, 0, 9, 1])).is_err());
    }

    #[test]
    fn over_limit_carries_the_response_headers() {
        let answer = RateLimitResponse {
            overall_code: Code::OverLimit as i32,
            response_headers_to_add: vec![PbHeader {
                key: "x-ratelimit-limit".into(),
                value: "5".into(),
                raw_value: Vec::new(),
            }],
            ..Default::default()
        };
        match verdict(answer) {
            Verdict::OverLimit(headers) => assert_eq!(headers[0].1, "5"),
            other => panic!("{other:?}"),
        }
    }
}
