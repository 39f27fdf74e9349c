//! Local replies: responses the proxy makes itself. Each names the cause in
//! words and carries its response flag in `x-weft-response-flags`, so a 503
//! says *why* without a trip to the logs.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};

use super::ProxyBody;
use crate::flags::{ResponseFlag, ResponseFlags};

pub const FLAGS_HEADER: &str = "x-weft-response-flags";

#[derive(Debug, Clone)]
pub struct LocalReply {
    pub status: StatusCode,
    pub flag: ResponseFlag,
    /// Flags besides the main one (URX after retries, DI after a delay).
    pub extra: ResponseFlags,
    pub message: String,
}

impl LocalReply {
    pub fn new(status: StatusCode, flag: ResponseFlag, message: impl Into<String>) -> Self {
        Self {
            status,
            flag,
            extra: ResponseFlags::default(),
            message: message.into(),
        }
    }

    pub fn with(mut self, flag: ResponseFlag) -> Self {
        self.extra = self.extra.with(flag);
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
    headers.insert("grpc-status", HeaderValue::from(code));
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
