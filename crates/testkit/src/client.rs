//! Small HTTP clients over one real connection each, so tests can see
//! connection reuse and pick the protocol exactly.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

pub type Body = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// No test request may hang a test run: each step gives up after this.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(30);

async fn within<T>(what: &str, step: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::time::timeout(STEP_TIMEOUT, step)
        .await
        .map_err(|_| anyhow::anyhow!("{what} took longer than {STEP_TIMEOUT:?}"))?
}

/// A whole response, body collected.
#[derive(Debug)]
pub struct Reply {
    pub version: http::Version,
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

pub fn empty() -> Body {
    Full::new(Bytes::new())
        .map_err(|never| match never {})
        .boxed()
}

pub fn full(data: impl Into<Bytes>) -> Body {
    Full::new(data.into())
        .map_err(|never| match never {})
        .boxed()
}

/// One HTTP/1.1 keep-alive connection.
pub struct Http1Client {
    sender: http1::SendRequest<Body>,
}

impl Http1Client {
    pub async fn connect(addr: SocketAddr) -> anyhow::Result<Self> {
        let stream = within("connect", async {
            TcpStream::connect(addr)
                .await
                .with_context(|| format!("connect {addr}"))
        })
        .await?;
        Self::over(stream).await
    }

    /// One connection to a unix socket (weftd's API socket).
    pub async fn connect_unix(path: &std::path::Path) -> anyhow::Result<Self> {
        let stream = within("connect", async {
            tokio::net::UnixStream::connect(path)
                .await
                .with_context(|| format!("connect {}", path.display()))
        })
        .await?;
        Self::over(stream).await
    }

    async fn over<S>(stream: S) -> anyhow::Result<Self>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = connection.with_upgrades().await;
        });
        Ok(Self { sender })
    }

    pub async fn send(&mut self, request: Request<Body>) -> anyhow::Result<Reply> {
        within("HTTP/1.1 request", async {
            self.sender.ready().await?;
            let response = self.sender.send_request(request).await?;
            collect(response).await
        })
        .await
    }

    pub async fn get(&mut self, host: &str, path: &str) -> anyhow::Result<Reply> {
        self.send(request(Method::GET, host, path, empty())).await
    }
}

/// One HTTP/2 (prior knowledge) connection.
pub struct Http2Client {
    sender: http2::SendRequest<Body>,
}

impl Http2Client {
    pub async fn connect(addr: SocketAddr) -> anyhow::Result<Self> {
        let stream = within("connect", async {
            TcpStream::connect(addr)
                .await
                .with_context(|| format!("connect {addr}"))
        })
        .await?;
        let (sender, connection) =
            http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Self { sender })
    }

    /// Takes `&self`: concurrent calls are multiplexed on the connection.
    pub async fn get(&self, authority: &str, path: &str) -> anyhow::Result<Reply> {
        let request = Request::get(format!("http://{authority}{path}")).body(empty())?;
        let mut sender = self.sender.clone();
        within("HTTP/2 request", async {
            sender.ready().await?;
            let response = sender.send_request(request).await?;
            collect(response).await
        })
        .await
    }
}

/// An HTTP/1.1 request with a Host header and origin-form path.
pub fn request(method: Method, host: &str, path: &str, body: Body) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, host)
        .body(body)
        .unwrap_or_else(|err| panic!("bad test request: {err}"))
}

/// [`request`] with extra headers (`name`, `value`), appended in order.
pub fn request_with_headers(
    method: Method,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Body,
) -> Request<Body> {
    let mut built = request(method, host, path, body);
    for (name, value) in headers {
        let name = http::HeaderName::from_bytes(name.as_bytes())
            .unwrap_or_else(|err| panic!("bad test header name {name:?}: {err}"));
        let value = http::HeaderValue::from_str(value)
            .unwrap_or_else(|err| panic!("bad test header value {value:?}: {err}"));
        built.headers_mut().append(name, value);
    }
    built
}

async fn collect(response: http::Response<hyper::body::Incoming>) -> anyhow::Result<Reply> {
    let (parts, body) = response.into_parts();
    let body = body.collect().await?.to_bytes();
    Ok(Reply {
        version: parts.version,
        status: parts.status,
        headers: parts.headers,
        body,
    })
}

/// GET over a fresh HTTP/1.1 connection.
pub async fn get(addr: SocketAddr, host: &str, path: &str) -> anyhow::Result<Reply> {
    Http1Client::connect(addr).await?.get(host, path).await
}
