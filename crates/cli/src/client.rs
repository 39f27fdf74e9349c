//! A small blocking client for weftd's HTTP API: one request per call, on
//! its own connection, answered as JSON.

use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::runtime::Runtime;

/// weftd answers from memory; anything slower than this is a hung server,
/// and a command line must not hang with it.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// weftd's API when nothing says otherwise (weftd's own default).
pub const DEFAULT_ADDRESS: &str = "127.0.0.1:15014";

/// Which weftd a command talks to: the one given (`--weftd`, `$WEFT_ADDR`),
/// else the running `weft up`'s (`running`: `None` unless exactly one
/// mesh runs), else [`DEFAULT_ADDRESS`].
pub fn weftd_address(given: Option<&str>, running: impl FnOnce() -> Option<String>) -> String {
    given
        .map(str::to_string)
        .or_else(running)
        .unwrap_or_else(|| DEFAULT_ADDRESS.to_string())
}

/// A weftd answer: its status and JSON body.
pub struct Answer {
    pub status: StatusCode,
    pub body: Value,
}

impl Answer {
    /// The server's `{"error": ...}` text, or the status if there is none.
    pub fn error(&self) -> String {
        match self.body.get("error").and_then(Value::as_str) {
            Some(message) => message.to_string(),
            None => format!("weftd answered {}", self.status),
        }
    }
}

pub struct Weftd {
    address: String,
    runtime: Runtime,
}

impl Weftd {
    pub fn new(address: &str) -> anyhow::Result<Self> {
        // Accept a URL too: users paste what they see in docs and logs.
        let address = address
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the I/O runtime")?;
        Ok(Self { address, runtime })
    }

    pub fn get(&self, path: &str) -> anyhow::Result<Answer> {
        self.call(Method::GET, path, None)
    }

    /// Sends `body` as the text of `source` (named in weftd's messages).
    pub fn post(&self, path: &str, body: String, source: &str) -> anyhow::Result<Answer> {
        self.call(Method::POST, path, Some((body, source)))
    }

    pub fn delete(&self, path: &str) -> anyhow::Result<Answer> {
        self.call(Method::DELETE, path, None)
    }

    fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<(String, &str)>,
    ) -> anyhow::Result<Answer> {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, &self.address);
        let body = match body {
            Some((text, source)) => {
                // Header values must be visible ASCII; a file name that is
                // not would only lose its name in messages, so fall back.
                let source = if source.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
                    source
                } else {
                    "request"
                };
                request = request.header("x-weft-source", source);
                Full::new(Bytes::from(text))
            }
            None => Full::new(Bytes::new()),
        };
        let request = request.body(body).context("cannot build the request")?;
        self.runtime.block_on(self.send(request))
    }

    async fn send(&self, request: Request<Full<Bytes>>) -> anyhow::Result<Answer> {
        let connect = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&self.address));
        let stream = match connect.await {
            Ok(Ok(stream)) => stream,
            Ok(Err(err)) => return Err(self.unreachable(&err.to_string())),
            Err(_) => return Err(self.unreachable("no answer within 5s")),
        };
        let (status, body) = tokio::time::timeout(REQUEST_TIMEOUT, exchange(stream, request))
            .await
            .map_err(|_| anyhow!("weftd at {} did not answer within 60s", self.address))?
            .with_context(|| format!("talking to weftd at {}", self.address))?;
        let body = match serde_json::from_slice(&body) {
            Ok(value) => value,
            Err(_) => bail!(
                "{} answered {status} with something that is not weftd's JSON; is --weftd pointing at weftd?",
                self.address
            ),
        };
        Ok(Answer { status, body })
    }

    fn unreachable(&self, why: &str) -> anyhow::Error {
        anyhow!(
            "cannot reach weftd at {} ({why}); is weftd running? start it with `weftd`",
            self.address
        )
    }
}

/// One HTTP/1.1 request on an open connection: the status and the whole
/// body. Callers bound it with their own timeout and say whom they asked.
pub async fn exchange(
    stream: TcpStream,
    request: Request<Full<Bytes>>,
) -> Result<(StatusCode, Bytes), hyper::Error> {
    let (mut sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let response = sender.send_request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, body))
}
