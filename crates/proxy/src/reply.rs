//! The data path's one error type, [`LocalReply`]: everything that stops a
//! request short of an upstream answer. It carries the response flag, where
//! the problem came from ([`Source`]), whether trying again could help
//! ([`RetrySafety`]) and the cause in words; it becomes the response the
//! proxy makes itself, with the flag in `x-weft-response-flags`, so a 503
//! says *why* without a trip to the logs.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};

use crate::body::ProxyBody;
use crate::flags::{ResponseFlag, ResponseFlags};

pub const FLAGS_HEADER: http::HeaderName = http::HeaderName::from_static("x-weft-response-flags");
/// gRPC's status, in a trailers-only response's headers or in trailers.
pub const GRPC_STATUS: http::HeaderName = http::HeaderName::from_static("grpc-status");

/// Where a data-path error came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The client: a request the proxy cannot use, or a client gone.
    Downstream,
    /// The route's own decision: no route, an injected fault.
    Route,
    /// A limit of this proxy (connection-pool overflow).
    Proxy,
    /// The upstream: unreachable, reset, too slow, no healthy endpoint.
    Upstream,
}

/// Whether the request may be tried again, Pingora's `RetryType` in Weft's
/// terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetrySafety {
    /// The upstream never saw the request: another try is safe.
    Safe,
    /// The upstream may have acted on it: only an idempotent request, or a
    /// policy that says so, may be tried again.
    Unsafe,
    /// Trying again gives the same answer (a final decision).
    Pointless,
}

#[derive(Debug, Clone)]
pub struct LocalReply {
    pub status: StatusCode,
    pub flag: ResponseFlag,
    /// Flags besides the main one (URX after retries, DI after a delay).
    pub extra: ResponseFlags,
    pub source: Source,
    pub retry: RetrySafety,
    /// The cause, in words.
    pub message: String,
}

impl LocalReply {
    /// An error with the source and retry safety its flag implies.
    pub fn new(status: StatusCode, flag: ResponseFlag, message: impl Into<String>) -> Self {
        let (source, retry) = classify(flag);
        Self {
            status,
            flag,
            extra: ResponseFlags::default(),
            source,
            retry,
            message: message.into(),
        }
    }

    pub fn with(mut self, flag: ResponseFlag) -> Self {
        self.extra = self.extra.with(flag);
        if flag == ResponseFlag::UpstreamRetryLimitExceeded {
            // The retry policy has spent its tries.
            self.retry = RetrySafety::Pointless;
        }
        self
    }

    pub fn flags(&self) -> ResponseFlags {
        self.extra.with(self.flag)
    }

    pub fn into_response(self) -> Response<ProxyBody> {
        let flags = self.flags().codes();
        let body = format!("weft-proxy: {} ({})\n", self.message, self.flag.code());
        let mut response = Response::new(
            Full::new(Bytes::from(body))
                .map_err(|never| match never {})
                .boxed_unsync(),
        );
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        if let Ok(value) = HeaderValue::from_str(&flags) {
            headers.insert(FLAGS_HEADER, value);
        }
        response
    }
}

/// What a flag says about where a problem came from and whether another
/// try could help.
fn classify(flag: ResponseFlag) -> (Source, RetrySafety) {
    use ResponseFlag as F;
    match flag {
        F::NoRoute | F::FaultInjected | F::DelayInjected => (Source::Route, RetrySafety::Pointless),
        F::DownstreamDisconnect | F::DownstreamProtocolError => {
            (Source::Downstream, RetrySafety::Pointless)
        }
        F::UpstreamOverflow | F::RateLimitServiceError => (Source::Proxy, RetrySafety::Safe),
        // The same bucket or service answers an immediate retry the same.
        F::RateLimited => (Source::Proxy, RetrySafety::Pointless),
        // The authorizer answers the same request the same way.
        F::UnauthorizedExternalService => (Source::Proxy, RetrySafety::Pointless),
        F::UpstreamConnectFailure => (Source::Upstream, RetrySafety::Safe),
        F::NoHealthyUpstream | F::UpstreamRetryLimitExceeded => {
            (Source::Upstream, RetrySafety::Pointless)
        }
        F::UpstreamRequestTimeout | F::UpstreamConnectionTermination => {
            (Source::Upstream, RetrySafety::Unsafe)
        }
    }
}

/// A gRPC "trailers-only" response: HTTP 200 whose headers carry the gRPC
/// status, as Envoy answers gRPC requests it fails itself.
pub fn grpc_status(code: u32, message: &str, flags: ResponseFlags) -> Response<ProxyBody> {
    let mut response = Response::new(
        Full::new(Bytes::new())
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.insert(GRPC_STATUS, HeaderValue::from(code));
    if let Ok(value) = HeaderValue::from_str(message) {
        headers.insert("grpc-message", value);
    }
    if let Ok(value) = HeaderValue::from_str(&flags.codes()) {
        headers.insert(FLAGS_HEADER, value);
    }
    response
}

/// A response a route gives by design (redirect, direct response). It
/// carries no flag, since nothing went wrong (Envoy logs these with `-`).
pub fn answer(status: StatusCode, body: Bytes) -> Response<ProxyBody> {
    let has_body = !body.is_empty();
    let mut response = Response::new(
        Full::new(body)
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *response.status_mut() = status;
    if has_body {
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flag_says_where_and_whether_to_retry() {
        let refused = LocalReply::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ResponseFlag::UpstreamConnectFailure,
            "connection refused",
        );
        assert_eq!(
            (refused.source, refused.retry),
            (Source::Upstream, RetrySafety::Safe)
        );
        let reset = LocalReply::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ResponseFlag::UpstreamConnectionTermination,
            "reset",
        );
        assert_eq!(reset.retry, RetrySafety::Unsafe);
        let spent = refused.with(ResponseFlag::UpstreamRetryLimitExceeded);
        assert_eq!(spent.retry, RetrySafety::Pointless);
        assert_eq!(spent.flags().codes(), "UF,URX");
        let overflow = LocalReply::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ResponseFlag::UpstreamOverflow,
            "full",
        );
        assert_eq!(overflow.source, Source::Proxy);
        let bad = LocalReply::new(
            StatusCode::BAD_REQUEST,
            ResponseFlag::DownstreamProtocolError,
            "bad path",
        );
        assert_eq!(bad.source, Source::Downstream);
        let response = bad.into_response();
        assert_eq!(response.headers()[FLAGS_HEADER], "DPE");
    }
}
