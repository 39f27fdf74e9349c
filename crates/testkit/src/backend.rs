//! Backends the proxy forwards to, each on its own loopback port.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

type Body = BoxBody<Bytes, Infallible>;

/// A hyper server (HTTP/1.1 and HTTP/2) on a loopback port that answers
/// every request with `handler` and counts connections; stops when dropped.
/// The building block for a backend one test file needs.
pub struct Served {
    pub addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Served {
    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub async fn serve<H, Fut, B>(handler: H) -> Served
where
    H: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<B>, Infallible>> + Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|err| panic!("test backend cannot bind: {err}"));
    let addr = listener
        .local_addr()
        .unwrap_or_else(|err| panic!("test backend address: {err}"));
    let connections = Arc::new(AtomicUsize::new(0));
    let counter = connections.clone();
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            let handler = handler.clone();
            tokio::spawn(async move {
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service_fn(handler))
                    .await;
            });
        }
    });
    Served {
        addr,
        connections,
        task,
    }
}

/// An HTTP/1.1 + HTTP/2 server that says who it is and what it received.
///
/// - any path: `<name> <METHOD> <path> host=<host> version=<HTTP/x>`
/// - `/slow/<ms>`: answers after a delay
/// - `/bytes/<n>`: `n` bytes, streamed in 64 KiB chunks
/// - `POST /count`: reads the body, answers `bytes=<n> sum=<wrapping byte sum>`
///
/// Every response carries `x-backend: <name>`.
pub struct HttpBackend {
    pub addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl HttpBackend {
    pub async fn start(name: &str) -> Self {
        Self::start_on(
            "127.0.0.1:0".parse().unwrap_or_else(|_| unreachable!()),
            name,
        )
        .await
    }

    pub async fn start_on(addr: SocketAddr, name: &str) -> Self {
        let listener = TcpListener::bind(addr)
            .await
            .unwrap_or_else(|err| panic!("backend {name} cannot bind {addr}: {err}"));
        let addr = listener.local_addr().unwrap_or(addr);
        let connections = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let name: Arc<str> = name.into();
        let task = tokio::spawn({
            let (connections, requests) = (connections.clone(), requests.clone());
            async move {
                while let Ok((stream, _)) = listener.accept().await {
                    connections.fetch_add(1, Ordering::SeqCst);
                    let (name, requests) = (name.clone(), requests.clone());
                    tokio::spawn(async move {
                        let service = service_fn(move |request| {
                            requests.fetch_add(1, Ordering::SeqCst);
                            respond(name.clone(), request)
                        });
                        let _ = auto::Builder::new(TokioExecutor::new())
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            }
        });
        Self {
            addr,
            connections,
            requests,
            task,
        }
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for HttpBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn respond(name: Arc<str>, request: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let path = request.uri().path().to_string();
    let mut response = if let Some(ms) = path.strip_prefix("/slow/") {
        tokio::time::sleep(Duration::from_millis(ms.parse().unwrap_or(1000))).await;
        text(format!("{name} slow {ms}ms"))
    } else if let Some(n) = path.strip_prefix("/bytes/") {
        streamed_bytes(n.parse().unwrap_or(0))
    } else if path == "/count" {
        let mut body = request.into_body();
        let (mut bytes, mut sum) = (0u64, 0u32);
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { break };
            if let Ok(data) = frame.into_data() {
                bytes += data.len() as u64;
                sum = data.iter().fold(sum, |s, b| s.wrapping_add(u32::from(*b)));
            }
        }
        text(format!("bytes={bytes} sum={sum}"))
    } else {
        let host = request
            .headers()
            .get(http::header::HOST)
            .and_then(|v| v.to_str().ok())
            .or_else(|| request.uri().authority().map(|a| a.as_str()))
            .unwrap_or("-")
            .to_string();
        text(format!(
            "{name} {} {path} host={host} version={:?}",
            request.method(),
            request.version()
        ))
    };
    if let Ok(value) = name.parse() {
        response.headers_mut().insert("x-backend", value);
    }
    Ok(response)
}

fn text(body: String) -> Response<Body> {
    Response::new(Full::new(Bytes::from(body)).boxed())
}

/// The byte at offset `i` of a `/bytes/<n>` body, so clients can verify it.
pub fn pattern_byte(i: u64) -> u8 {
    (i % 251) as u8
}

fn streamed_bytes(total: u64) -> Response<Body> {
    const CHUNK: u64 = 64 * 1024;
    let chunks = futures_util::stream::iter((0..total.div_ceil(CHUNK)).map(move |index| {
        let start = index * CHUNK;
        let end = (start + CHUNK).min(total);
        let data: Vec<u8> = (start..end).map(pattern_byte).collect();
        Ok::<_, Infallible>(Frame::data(Bytes::from(data)))
    }));
    let mut response = Response::new(BodyExt::boxed(StreamBody::new(chunks)));
    *response.status_mut() = StatusCode::OK;
    response
}

/// A TCP server that echoes what it reads and, after the client half-closes,
/// writes `bye` and closes: a test of half-close in both directions.
pub struct TcpEcho {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl TcpEcho {
    pub async fn start() -> Self {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    pub async fn start_on(addr: SocketAddr) -> Self {
        let listener = TcpListener::bind(addr)
            .await
            .unwrap_or_else(|err| panic!("echo cannot bind {addr}: {err}"));
        let addr = listener.local_addr().unwrap_or_else(|err| panic!("{err}"));
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 16 * 1024];
                    loop {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                if stream.write_all(&buf[..n]).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                    let _ = stream.write_all(b"bye").await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        Self { addr, task }
    }
}

impl Drop for TcpEcho {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A WebSocket server that echoes each text message prefixed with `echo: `.
pub struct WebSocketEcho {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl WebSocketEcho {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|err| panic!("websocket echo cannot bind: {err}"));
        let addr = listener.local_addr().unwrap_or_else(|err| panic!("{err}"));
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let Ok(mut socket) = tokio_tungstenite::accept_async(stream).await else {
                        return;
                    };
                    while let Some(Ok(message)) = socket.next().await {
                        if message.is_text() {
                            let reply = format!("echo: {}", message.to_text().unwrap_or(""));
                            if socket.send(reply.into()).await.is_err() {
                                return;
                            }
                        } else if message.is_close() {
                            return;
                        }
                    }
                });
            }
        });
        Self { addr, task }
    }
}

impl Drop for WebSocketEcho {
    fn drop(&mut self) {
        self.task.abort();
    }
}
