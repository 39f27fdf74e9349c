//! A small blocking client for weftd's HTTP API: one request per call, on
//! its own connection (TCP with the admin bearer token, or the unix
//! socket), answered as JSON.
//!
//! Which weftd, and with which credential ([`Target::resolve`]), first
//! match wins:
//! 0. `--kubeconfig`/`--context`: weftd on that cluster, through its API
//!    server, with the token of weftd's Secret (see [`crate::cluster`]);
//! 1. `--weftd`/`$WEFT_ADDR`: an address (with `--token-file`/
//!    `$WEFT_TOKEN_FILE`), or a socket path (`/...` or `unix:...`);
//! 2. the running `weft up` mesh's state file (its socket, else its
//!    address and token file);
//! 3. `.weft/state/api.sock` (a `weftd` started here with the defaults);
//! 4. 127.0.0.1:15014 with `.weft/state/admin-token` if readable.
//!
//! Errors say which of these was used and what else was tried.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};
use tokio::runtime::Runtime;
use weft_api::wire::ErrorReply;
use weft_kube::kube::Client;

use crate::cluster::Cluster;

/// weftd answers from memory; anything slower than this is a hung server,
/// and a command line must not hang with it.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// weftd's API when nothing says otherwise (weftd's own default).
pub const DEFAULT_ADDRESS: &str = "127.0.0.1:15014";
/// weftd's default state directory, relative to where it was started.
const DEFAULT_STATE_DIR: &str = ".weft/state";

/// Where weftd's API is and how to prove the right to use it.
#[derive(Debug, Clone)]
pub struct Target {
    pub endpoint: Endpoint,
    /// The admin bearer token (TCP only).
    pub token: Option<String>,
    /// How this target was chosen, and what was tried before (for errors).
    pub how: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Tcp(String),
    Socket(PathBuf),
    /// Through a Kubernetes API server (the token is read on connecting).
    Cluster(Cluster),
}

/// What the running `weft up` mesh recorded about its weftd.
#[derive(Debug, Clone, Default)]
pub struct Running {
    pub api: Option<String>,
    pub socket: Option<PathBuf>,
    pub token_file: Option<PathBuf>,
}

impl Target {
    /// See the module doc for the order. `given`: `--weftd`/`$WEFT_ADDR`;
    /// `token_file`: `--token-file`/`$WEFT_TOKEN_FILE`; `running`: the one
    /// running `weft up` mesh, if exactly one runs.
    pub fn resolve(
        cluster: Option<Cluster>,
        given: Option<&str>,
        token_file: Option<&Path>,
        running: impl FnOnce() -> Option<Running>,
    ) -> anyhow::Result<Self> {
        if let Some(cluster) = cluster {
            if given.is_some() {
                bail!(
                    "--weftd (or $WEFT_ADDR) and --kubeconfig/--context both say where weftd is: \
                     give one"
                );
            }
            return Ok(Self {
                how: cluster.describe(),
                endpoint: Endpoint::Cluster(cluster),
                token: None,
            });
        }
        if let Some(given) = given {
            return Self::given(given, token_file);
        }
        let mut tried = Vec::new();
        if let Some(running) = running() {
            if let Some(socket) = running.socket.filter(|socket| socket.exists()) {
                return Ok(Self {
                    how: format!("the running `weft up` mesh's socket {}", socket.display()),
                    endpoint: Endpoint::Socket(socket),
                    token: None,
                });
            }
            if let Some(api) = running.api {
                let token = token_file
                    .or(running.token_file.as_deref())
                    .map(read_token)
                    .transpose()?;
                return Ok(Self {
                    how: format!("the running `weft up` mesh's API {api}"),
                    endpoint: Endpoint::Tcp(api),
                    token,
                });
            }
            tried.push("the running `weft up` mesh (it records no API)".to_string());
        } else {
            tried.push("a running `weft up` mesh (none, or more than one)".to_string());
        }
        let socket = Path::new(DEFAULT_STATE_DIR).join("api.sock");
        if socket.exists() {
            return Ok(Self {
                how: format!(
                    "the socket {} (tried {})",
                    socket.display(),
                    tried.join(", ")
                ),
                endpoint: Endpoint::Socket(socket),
                token: None,
            });
        }
        tried.push(format!("{} (absent)", socket.display()));
        let default_token = Path::new(DEFAULT_STATE_DIR).join("admin-token");
        let token = match token_file {
            Some(file) => Some(read_token(file)?),
            None => std::fs::read_to_string(&default_token)
                .ok()
                .map(|text| text.trim().to_string()),
        };
        if token.is_none() {
            tried.push(format!("{} (unreadable)", default_token.display()));
        }
        Ok(Self {
            how: format!("the default {DEFAULT_ADDRESS} (tried {})", tried.join(", ")),
            endpoint: Endpoint::Tcp(DEFAULT_ADDRESS.to_string()),
            token,
        })
    }

    fn given(given: &str, token_file: Option<&Path>) -> anyhow::Result<Self> {
        if let Some(path) = given
            .strip_prefix("unix:")
            .or(given.starts_with('/').then_some(given))
        {
            return Ok(Self {
                how: format!("the socket {path} (--weftd or $WEFT_ADDR)"),
                endpoint: Endpoint::Socket(PathBuf::from(path)),
                token: None,
            });
        }
        // Accept a URL too: users paste what they see in docs and logs.
        let address = given
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        let token = token_file.map(read_token).transpose()?;
        Ok(Self {
            how: format!(
                "{address} (--weftd or $WEFT_ADDR){}",
                if token.is_some() {
                    ""
                } else {
                    " without a token: no --token-file or $WEFT_TOKEN_FILE"
                }
            ),
            endpoint: Endpoint::Tcp(address),
            token,
        })
    }

    /// Where the API is, for messages.
    pub fn describe(&self) -> String {
        match &self.endpoint {
            Endpoint::Tcp(address) => address.clone(),
            Endpoint::Socket(path) => format!("unix:{}", path.display()),
            Endpoint::Cluster(cluster) => cluster.describe(),
        }
    }

    /// The cluster, when weftd is reached through one.
    pub fn cluster(&self) -> Option<&Cluster> {
        match &self.endpoint {
            Endpoint::Cluster(cluster) => Some(cluster),
            _ => None,
        }
    }
}

fn read_token(file: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read the admin token file {}", file.display()))?;
    Ok(text.trim().to_string())
}

/// A weftd answer: its status and JSON body.
pub struct Answer {
    pub status: StatusCode,
    pub body: Value,
}

impl Answer {
    /// The server's `{"error": ...}` text, or the status if there is none.
    pub fn error(&self) -> String {
        match weft_api::wire::decode::<ErrorReply>("", &self.body) {
            Ok(reply) => reply.error,
            Err(_) => format!("weftd answered {}", self.status),
        }
    }

    /// The body as its wire type; `what` names it in the error, which
    /// names the field that does not fit ("weftd's proxy list is not
    /// understood: field proxies[1].connected: ...").
    pub fn decode<T: serde::de::DeserializeOwned>(&self, what: &str) -> anyhow::Result<T> {
        Ok(weft_api::wire::decode(what, &self.body)?)
    }
}

pub struct Weftd {
    target: Target,
    runtime: Runtime,
    /// Through a cluster: its client and weftd's token from the Secret.
    kube: Option<(Client, String)>,
}

impl Weftd {
    pub fn new(target: &Target) -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the I/O runtime")?;
        let kube = match target.cluster() {
            Some(cluster) => Some(runtime.block_on(async {
                let client = cluster.client().await?;
                let token = cluster.admin_token(&client).await?;
                anyhow::Ok((client, token))
            })?),
            None => None,
        };
        Ok(Self {
            target: target.clone(),
            runtime,
            kube,
        })
    }

    /// The cluster's client, when weftd is reached through one.
    pub fn kube_client(&self) -> Option<&Client> {
        self.kube.as_ref().map(|(client, _)| client)
    }

    /// Runs `work` on this client's runtime (cluster look-ups).
    pub fn block_on<T>(&self, work: impl Future<Output = T>) -> T {
        self.runtime.block_on(work)
    }

    pub fn get(&self, path: &str) -> anyhow::Result<Answer> {
        self.call(Method::GET, path, None)
    }

    /// Sends `body` as the text of `source` (named in weftd's messages).
    /// weftd takes JSON only: a body that is not JSON (YAML) travels as
    /// `{"text": body, "source": source}`.
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
        let host = match &self.target.endpoint {
            Endpoint::Tcp(address) => address.as_str(),
            Endpoint::Socket(_) | Endpoint::Cluster(_) => "localhost",
        };
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, host);
        if let Some(token) = &self.target.token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let body = match body {
            Some((text, source)) => {
                // Header values must be visible ASCII; a file name that is
                // not would only lose its name in messages, so fall back.
                let source = if source.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
                    source
                } else {
                    "request"
                };
                let text = if serde_json::from_str::<serde::de::IgnoredAny>(&text).is_ok() {
                    text
                } else {
                    serde_json::json!({ "text": text, "source": source }).to_string()
                };
                request = request
                    .header("x-weft-source", source)
                    .header(header::CONTENT_TYPE, "application/json");
                Full::new(Bytes::from(text))
            }
            None => Full::new(Bytes::new()),
        };
        let request = request.body(body).context("cannot build the request")?;
        let answer = self.runtime.block_on(self.send(request))?;
        if answer.status == StatusCode::UNAUTHORIZED {
            bail!(
                "weftd at {} refused the credential: {} (using {})",
                self.target.describe(),
                answer.error(),
                self.target.how
            );
        }
        Ok(answer)
    }

    async fn send(&self, request: Request<Full<Bytes>>) -> anyhow::Result<Answer> {
        let target = self.target.describe();
        // A large apply is validated and journaled whole before weftd
        // answers: a second more per MiB sent (110,000 objects, ~30 MiB).
        let size = hyper::body::Body::size_hint(request.body()).lower();
        let timeout = REQUEST_TIMEOUT + Duration::from_secs(size >> 20);
        let exchanged = match &self.target.endpoint {
            Endpoint::Tcp(address) => {
                let stream = self.connect(TcpStream::connect(address)).await?;
                tokio::time::timeout(timeout, exchange(stream, request)).await
            }
            Endpoint::Socket(path) => {
                let stream = self.connect(UnixStream::connect(path)).await?;
                tokio::time::timeout(timeout, exchange(stream, request)).await
            }
            Endpoint::Cluster(cluster) => {
                let (client, token) = self
                    .kube
                    .as_ref()
                    .context("the cluster's client was not made")?;
                let sent = crate::cluster::send(client, &cluster.namespace, token, request);
                let (status, body) =
                    tokio::time::timeout(timeout, sent).await.map_err(|_| {
                        anyhow!(
                            "{target} did not answer within {timeout:?} (the API server keeps \
                             trying while weftd has no ready endpoint: `kubectl -n {} get \
                             endpoints weftd`)",
                            cluster.namespace
                        )
                    })??;
                return answer(status, &body, Some(&cluster.namespace), &target);
            }
        };
        let (status, body) = exchanged
            .map_err(|_| anyhow!("weftd at {target} did not answer within {timeout:?}"))?
            .with_context(|| format!("talking to weftd at {target}"))?;
        answer(status, &body, None, &target)
    }

    async fn connect<S>(
        &self,
        connecting: impl Future<Output = std::io::Result<S>>,
    ) -> anyhow::Result<S> {
        match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
            Ok(Ok(stream)) => Ok(stream),
            Ok(Err(err)) => Err(self.unreachable(&err.to_string())),
            Err(_) => Err(self.unreachable("no answer within 5s")),
        }
    }

    fn unreachable(&self, why: &str) -> anyhow::Error {
        anyhow!(
            "cannot reach weftd at {} ({why}; using {}); is weftd running? start it with \
             `weftd`, or say where it is with --weftd",
            self.target.describe(),
            self.target.how
        )
    }
}

/// weftd's JSON answer; through a cluster (`namespace`), the API server's
/// own refusals as sentences saying what to do.
fn answer(
    status: StatusCode,
    body: &[u8],
    namespace: Option<&str>,
    target: &str,
) -> anyhow::Result<Answer> {
    let body: Value = match serde_json::from_slice(body) {
        Ok(value) => value,
        Err(_) if namespace.is_some() => bail!(
            "{target} answered {status} with something that is not weftd's JSON: {}",
            String::from_utf8_lossy(&body[..body.len().min(200)])
        ),
        Err(_) => bail!(
            "{target} answered {status} with something that is not weftd's JSON; is --weftd pointing at weftd?"
        ),
    };
    if let Some(namespace) = namespace
        && let Some(refusal) = crate::cluster::api_server_refusal(status, &body, namespace)
    {
        bail!("{refusal}");
    }
    Ok(Answer { status, body })
}

/// One HTTP/1.1 request on an open connection: the status and the whole
/// body. Callers bound it with their own timeout and say whom they asked.
pub async fn exchange<S>(
    stream: S,
    request: Request<Full<Bytes>>,
) -> Result<(StatusCode, Bytes), hyper::Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let response = sender.send_request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_wins_over_the_local_defaults_but_not_over_weftd_given_too() {
        let cluster = Cluster {
            kubeconfig: Some("/k".into()),
            context: None,
            namespace: "weft-system".into(),
        };
        let target = Target::resolve(Some(cluster.clone()), None, None, || None).expect("target");
        assert_eq!(target.cluster(), Some(&cluster));
        assert!(
            target
                .how
                .contains("through the API server of kubeconfig /k")
        );
        let both = Target::resolve(Some(cluster), Some("127.0.0.1:15014"), None, || None)
            .expect_err("two answers to where weftd is");
        assert!(both.to_string().contains("give one"), "{both}");
        let local = Target::resolve(None, Some("127.0.0.1:15014"), None, || None).expect("local");
        assert_eq!(local.cluster(), None);
    }
}
