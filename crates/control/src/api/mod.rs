//! The weftd HTTP API (HTTP/1.1 + JSON), behind `weft apply`, `get`,
//! `delete`, `token` and `proxy-status`. Served on a unix socket
//! (`<state-dir>/api.sock`, 0600: its permissions are the credential) and on
//! TCP (`--api`, default 127.0.0.1:15014, with the admin bearer token); see
//! [`auth`] for who may call and what is refused before any route runs.
//!
//! | request                                   | does                                  |
//! |-------------------------------------------|---------------------------------------|
//! | `POST /v1/apply` (JSON, see below)        | applies every object, or none (422)   |
//! | `POST /v1/delete` (JSON, see below)       | deletes every object named in it      |
//! | `GET /v1/resources?kind=K&namespace=N`    | lists stored objects                  |
//! | `GET /v1/resources/<Kind>/<ns>/<name>`    | one object, or 404                    |
//! | `DELETE /v1/resources/<Kind>/<ns>/<name>` | deletes one object, or 404            |
//! | `GET /v1/proxies`                         | what each proxy holds (ACK/NACK)      |
//! | `POST /v1/tokens` (`{"namespace", "workloadGroup", "address"?, "ttl"?}`) | a bootstrap token |
//! | `GET /v1/tokens`, `DELETE /v1/tokens/<id>` | list / revoke bootstrap tokens       |
//! | `POST /v1/analyze` (JSON, optional)       | analyzer messages over the store      |
//! | `GET /v1/describe?service=S&namespace=N`  | what applies to a service, and why    |
//! | `GET /v1/proxies/<id>/config`             | the config last pushed to that proxy  |
//!
//! Apply and delete bodies are JSON: either the objects themselves (one
//! object, or a `List`), or `{"text": "<YAML or JSON documents>", "source":
//! "<file name>"}` (what `weft apply` sends, so messages keep the file's
//! name and line numbers).
//!
//! An accepted apply answers `{"applied": [...], "warnings": [...]}`
//! (`weft_api::wire::ApplyReply`): one warning per field Weft accepts
//! without honouring it (`weft_api::unimplemented`), as Kubernetes returns
//! warnings with an accepted request.
//!
//! Contract: every answer is JSON (errors as `{"error": "..."}`, invalid
//! config as `{"problems": [...]}`); bodies over [`MAX_BODY`] get a 413;
//! nothing a client sends can panic the server; every mutating call is
//! logged (target `audit`) with who made it, what it was and the outcome.
//! Kinds in paths and queries take any form istioctl users type
//! ([`canonical_kind`]).

pub mod auth;
mod handlers;
mod inspect;
mod kinds;
mod tokens;

use std::convert::Infallible;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::task::JoinSet;

use crate::ca::Ca;
use crate::status::StatusBoard;
use crate::store::Store;

pub use auth::{AdminToken, Peer};
pub use kinds::{KINDS, canonical_kind, known_kinds};

/// The address weftd serves the API on unless told otherwise (istiod's
/// monitoring port, so habits carry over).
pub const DEFAULT_ADDRESS: &str = "127.0.0.1:15014";

/// The socket's and the admin token's names in weftd's state directory.
pub const SOCKET_FILE: &str = "api.sock";
pub const ADMIN_TOKEN_FILE: &str = "admin-token";

/// Largest request body accepted: far above any real config (an apply of
/// 110,000 objects is ~30 MiB), low enough that a runaway client cannot
/// exhaust weftd's memory. Shared with `weft apply`, which checks it first.
pub const MAX_BODY: usize = weft_api::wire::MAX_REQUEST_BODY;

/// Header naming the file an apply or delete body came from, for messages
/// (the `source` field of a `{"text", "source"}` body does the same).
pub const SOURCE_HEADER: &str = "x-weft-source";

type Reply = Response<Full<Bytes>>;

/// A request that cannot be served: the status and the words for the user.
/// Small, unlike a whole `Reply`, so `Result`s carrying it stay cheap.
struct Failure(StatusCode, String);

impl Failure {
    fn reply(self) -> Reply {
        error(self.0, self.1)
    }
}

/// What the API serves from, and the credential TCP callers must show.
pub struct Api {
    store: Arc<Store>,
    status: Arc<StatusBoard>,
    ca: Option<Arc<Ca>>,
    admin_token: AdminToken,
    mesh_config: Option<crate::meshconfig::Receiver>,
}

impl Api {
    pub fn new(store: Arc<Store>, status: Arc<StatusBoard>, admin_token: AdminToken) -> Self {
        Self {
            store,
            status,
            ca: None,
            admin_token,
            mesh_config: None,
        }
    }

    /// Serves `/v1/tokens` from `ca`.
    pub fn with_ca(mut self, ca: Arc<Ca>) -> Self {
        self.ca = Some(ca);
        self
    }

    /// Serves `/v1/meshconfig` and adds the MeshConfig's warnings to
    /// `/v1/analyze`.
    pub fn with_mesh_config(mut self, mesh_config: crate::meshconfig::Receiver) -> Self {
        self.mesh_config = Some(mesh_config);
        self
    }
}

/// Where the API listens: TCP (bearer token) or the unix socket.
pub enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl From<TcpListener> for Listener {
    fn from(listener: TcpListener) -> Self {
        Listener::Tcp(listener)
    }
}

impl From<UnixListener> for Listener {
    fn from(listener: UnixListener) -> Self {
        Listener::Unix(listener)
    }
}

/// Binds the API socket at `path`, mode 0600 from its first moment: bound
/// in a fresh 0700 directory beside `path`, tightened, then renamed into
/// place (a chmod after binding in place would leave a window). A stale
/// socket from an earlier run is replaced.
pub fn bind_socket(path: &Path) -> io::Result<UnixListener> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let staging = dir.join(format!(".api-sock.{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::DirBuilder::new().mode(0o700).create(&staging)?;
    let bound = (|| {
        let inner = staging.join("s");
        let listener = UnixListener::bind(&inner)?;
        std::fs::set_permissions(&inner, std::fs::Permissions::from_mode(0o600))?;
        std::fs::rename(&inner, path)?;
        Ok(listener)
    })();
    let _ = std::fs::remove_dir_all(&staging);
    bound
}

/// Serves the API on `listener` until the returned future is dropped;
/// dropping it also closes every open connection.
pub async fn serve(listener: impl Into<Listener>, api: Arc<Api>) {
    let listener = listener.into();
    // Connections live in a JoinSet so they end with `serve`, not after it.
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = accept(&listener) => accepted,
            Some(_) = connections.join_next() => continue,
        };
        match accepted {
            Ok(Accepted::Tcp(stream, peer)) => {
                connections.spawn(serve_connection(stream, peer, api.clone()));
            }
            Ok(Accepted::Unix(stream, peer)) => {
                connections.spawn(serve_connection(stream, peer, api.clone()));
            }
            Err(_) => {
                // Out of file descriptors and the like: retrying at once
                // would spin; a short pause lets connections end.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

enum Accepted {
    Tcp(tokio::net::TcpStream, Peer),
    Unix(tokio::net::UnixStream, Peer),
}

async fn accept(listener: &Listener) -> io::Result<Accepted> {
    match listener {
        Listener::Tcp(listener) => {
            let (stream, remote) = listener.accept().await?;
            let local = stream.local_addr().ok();
            Ok(Accepted::Tcp(stream, Peer::Tcp { remote, local }))
        }
        Listener::Unix(listener) => {
            let (stream, _) = listener.accept().await?;
            let credentials = stream.peer_cred().ok();
            let peer = Peer::Socket {
                uid: credentials.map(|c| c.uid()),
                pid: credentials.and_then(|c| c.pid()),
            };
            Ok(Accepted::Unix(stream, peer))
        }
    }
}

async fn serve_connection<S>(stream: S, peer: Peer, api: Arc<Api>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let peer = Arc::new(peer);
    let service = service_fn(move |request| {
        let (api, peer) = (api.clone(), peer.clone());
        async move { Ok::<_, Infallible>(respond(request, &peer, api).await) }
    });
    let _ = http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

/// Admits the request (see [`auth`]), routes it, and writes the audit line
/// of anything that changes state (or tried to).
async fn respond(request: Request<Incoming>, peer: &Peer, api: Arc<Api>) -> Reply {
    let (parts, body) = request.into_parts();
    let mutating = is_mutating(&parts.method, parts.uri.path());
    let what = format!("{} {}", parts.method, parts.uri.path());
    let reply = match auth::admit(&parts, peer, &api.admin_token) {
        Ok(()) => route(parts, body, peer, api).await,
        Err(failure) => {
            tracing::warn!(target: "audit", who = %peer, "{what}: {}", failure.1);
            return failure.reply();
        }
    };
    if mutating {
        tracing::info!(
            target: "audit",
            who = %peer,
            status = reply.status().as_u16(),
            "{what}: {}",
            if reply.status().is_success() { "done" } else { "failed" }
        );
    }
    reply
}

/// Calls that change the store or the token list (analyze only reads).
fn is_mutating(method: &Method, path: &str) -> bool {
    *method != Method::GET && *method != Method::HEAD && !path.starts_with("/v1/analyze")
}

async fn route(parts: http::request::Parts, body: Incoming, peer: &Peer, api: Arc<Api>) -> Reply {
    let method = parts.method.clone();
    let path = parts.uri.path().to_string();
    let query = parts.uri.query().unwrap_or("").to_string();
    let segments: Vec<&str> = path
        .trim_start_matches('/')
        .trim_end_matches('/')
        .split('/')
        .collect();
    let (store, status, ca) = (api.store.clone(), &api.status, api.ca.clone());
    match (&method, segments.as_slice()) {
        (&Method::POST, ["v1", "apply"]) => match documents(&parts.headers, body).await {
            Ok((text, source)) => {
                let mesh = api.mesh_config.as_ref().map_or_else(
                    || Arc::new(crate::meshconfig::InForce::defaults()),
                    |held| held.borrow().clone(),
                );
                handlers::apply(store, text, source, mesh).await
            }
            Err(failure) => failure.reply(),
        },
        (&Method::POST, ["v1", "delete"]) => match documents(&parts.headers, body).await {
            Ok((text, source)) => handlers::delete_named(store, &text, &source).await,
            Err(failure) => failure.reply(),
        },
        (&Method::GET, ["v1", "resources"]) => handlers::list(&store, &query),
        (&Method::GET, ["v1", "resources", kind, namespace, name]) => {
            handlers::get(&store, kind, namespace, name)
        }
        (&Method::DELETE, ["v1", "resources", kind, namespace, name]) => {
            handlers::delete_one(store, kind, namespace, name).await
        }
        (&Method::GET, ["v1", "proxies"]) => handlers::proxies(status),
        (&Method::POST, ["v1", "tokens"]) => match read_body(&parts.headers, body).await {
            Ok(text) => tokens::mint(ca, &store, &text, peer.to_string()).await,
            Err(failure) => failure.reply(),
        },
        (&Method::GET, ["v1", "tokens"]) => tokens::list(ca.as_deref()),
        (&Method::DELETE, ["v1", "tokens", id]) => tokens::revoke(ca, id).await,
        (&Method::GET, ["v1", "proxies", id, "config"]) => inspect::pushed_config(status, id),
        (&Method::GET, ["v1", "describe"]) => {
            inspect::describe(&store, status, api.mesh_config.as_ref(), &query)
        }
        (&Method::GET, ["v1", "meshconfig"]) => inspect::mesh_config(api.mesh_config.as_ref()),
        (&Method::POST, ["v1", "analyze"]) => match read_body(&parts.headers, body).await {
            Ok(text) => inspect::analyze(&store, status, api.mesh_config.as_ref(), &text),
            Err(failure) => failure.reply(),
        },
        (
            _,
            [
                "v1",
                "apply" | "delete" | "proxies" | "tokens" | "analyze" | "describe" | "meshconfig",
            ]
            | ["v1", "resources" | "tokens", ..]
            | ["v1", "proxies", _, "config"],
        ) => error(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{method} is not allowed on {path}"),
        ),
        _ => error(StatusCode::NOT_FOUND, format!("no {method} {path} here")),
    }
}

/// An apply or delete body: the documents' text and the name of their
/// source (see the module doc for the two shapes).
async fn documents(headers: &HeaderMap, body: Incoming) -> Result<(String, String), Failure> {
    let text = read_body(headers, body).await?;
    let header_source = headers
        .get(SOURCE_HEADER)
        .and_then(|value| value.to_str().ok())
        .filter(|value| !value.is_empty())
        .unwrap_or("request")
        .to_string();
    // Read as the `{"text", "source"}` shape first, without building a
    // JSON tree of the body: an apply of 110,000 objects would otherwise
    // hold its text twice more (the tree's copy and the decoder's).
    #[derive(serde::Deserialize)]
    struct TextBody {
        text: String,
        #[serde(default)]
        source: Option<String>,
        #[serde(default)]
        kind: Option<serde::de::IgnoredAny>,
    }
    match serde_json::from_str::<TextBody>(&text) {
        Ok(body) if body.kind.is_none() => {
            let source = body
                .source
                .filter(|source| !source.is_empty())
                .unwrap_or(header_source);
            return Ok((body.text, source));
        }
        _ => {}
    }
    if let Err(err) = serde_json::from_str::<serde::de::IgnoredAny>(&text) {
        return Err(Failure(
            StatusCode::BAD_REQUEST,
            format!(
                "the body is not JSON ({err}); send objects as JSON, or YAML as {{\"text\": \"...\"}}"
            ),
        ));
    }
    // JSON is YAML: the decoder reads the objects as sent.
    Ok((text, header_source))
}

/// The body as text, or the error reply (413 over [`MAX_BODY`], 400 for
/// a broken body or one that is not UTF-8).
async fn read_body(headers: &HeaderMap, body: Incoming) -> Result<String, Failure> {
    let too_large = || {
        Failure(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body is over the {} MiB limit", MAX_BODY >> 20),
        )
    };
    // Refuse early when the client says up front how much it will send.
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > MAX_BODY as u64) {
        return Err(too_large());
    }
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(err) if err.is::<http_body_util::LengthLimitError>() => return Err(too_large()),
        Err(err) => {
            return Err(Failure(
                StatusCode::BAD_REQUEST,
                format!("cannot read the request body: {err}"),
            ));
        }
    };
    // `Vec::from` takes the collected bytes without a copy when it can.
    String::from_utf8(Vec::from(body)).map_err(|_| {
        Failure(
            StatusCode::BAD_REQUEST,
            "request body is not UTF-8 text".into(),
        )
    })
}

fn json_reply(status: StatusCode, body: &Value) -> Reply {
    // A `Value` always encodes; the fallback only keeps this panic-free.
    let mut text = serde_json::to_string(body).unwrap_or_else(|_| "{}".to_string());
    text.push('\n');
    let mut response = Response::new(Full::new(Bytes::from(text)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

fn error(status: StatusCode, message: impl Into<String>) -> Reply {
    json_reply(
        status,
        &weft_api::wire::to_value(&weft_api::wire::ErrorReply {
            error: message.into(),
        }),
    )
}

#[cfg(test)]
mod inspect_tests;
#[cfg(test)]
mod tests;
