//! Local replies: responses the proxy makes itself. Each names the cause in
//! words and carries its response flag in `x-weft-response-flags`, so a 503
//! says *why* without a trip to the logs.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};

use super::ProxyBody;
use crate::flags::ResponseFlag;

pub const FLAGS_HEADER: &str = "x-weft-response-flags";

#[derive(Debug, Clone)]
pub struct LocalReply {
    pub status: StatusCode,
    pub flag: ResponseFlag,
    pub message: String,
}

impl LocalReply {
    pub fn new(status: StatusCode, flag: ResponseFlag, message: impl Into<String>) -> Self {
        Self {
            status,
            flag,
            message: message.into(),
        }
    }

    pub fn into_response(self) -> Response<ProxyBody> {
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
        headers.insert(FLAGS_HEADER, HeaderValue::from_static(self.flag.code()));
        response
    }
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
