//! A Zipkin collector for tests: a real HTTP server that takes Zipkin v2
//! JSON span lists (`POST` with a JSON array) at any path, and keeps each
//! span with the path it was posted to, so a test can check what a proxy
//! really sent and where.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;

use crate::backend::{Served, serve};

/// One span as received: the request path and the span's JSON object.
#[derive(Debug, Clone)]
pub struct ZipkinSpan {
    pub path: String,
    pub span: serde_json::Value,
}

impl ZipkinSpan {
    pub fn trace_id(&self) -> &str {
        self.span["traceId"].as_str().unwrap_or_default()
    }

    /// A tag's value (Zipkin tags are strings).
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.span["tags"][key].as_str()
    }
}

/// A running collector. Stops when dropped.
pub struct ZipkinCollector {
    pub addr: SocketAddr,
    spans: Arc<Mutex<Vec<ZipkinSpan>>>,
    _served: Served,
}

impl ZipkinCollector {
    pub async fn start() -> Self {
        let spans: Arc<Mutex<Vec<ZipkinSpan>>> = Arc::default();
        let kept = spans.clone();
        let served = serve(move |request: Request<Incoming>| {
            let kept = kept.clone();
            async move { Ok::<_, Infallible>(receive(request, &kept).await) }
        })
        .await;
        Self {
            addr: served.addr,
            spans,
            _served: served,
        }
    }

    pub fn spans(&self) -> Vec<ZipkinSpan> {
        self.spans.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Waits until at least `count` spans arrived (or `timeout` passed) and
    /// returns all received.
    pub async fn wait_for(&self, count: usize, timeout: Duration) -> Vec<ZipkinSpan> {
        let deadline = Instant::now() + timeout;
        loop {
            let spans = self.spans();
            if spans.len() >= count || Instant::now() > deadline {
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn receive(
    request: Request<Incoming>,
    kept: &Mutex<Vec<ZipkinSpan>>,
) -> Response<Full<Bytes>> {
    let path = request.uri().path().to_string();
    let json = request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    let body = match request.into_body().collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => return reply(StatusCode::BAD_REQUEST, "unreadable body"),
    };
    let list = match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(serde_json::Value::Array(list)) if json => list,
        _ => return reply(StatusCode::BAD_REQUEST, "expected a JSON array of spans"),
    };
    let mut spans = kept.lock().unwrap_or_else(|p| p.into_inner());
    for span in list {
        spans.push(ZipkinSpan {
            path: path.clone(),
            span,
        });
    }
    reply(StatusCode::ACCEPTED, "")
}

fn reply(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = status;
    response
}
