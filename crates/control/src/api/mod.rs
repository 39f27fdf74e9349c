//! The weftd HTTP API (HTTP/1.1 + JSON on 127.0.0.1:15014), behind
//! `weft apply`, `get`, `delete` and `proxy-status`.
//!
//! | request                                   | does                                  |
//! |-------------------------------------------|---------------------------------------|
//! | `POST /v1/apply` (YAML/JSON text)         | applies every object, or none (422)   |
//! | `POST /v1/delete` (YAML/JSON text)        | deletes every object named in it      |
//! | `GET /v1/resources?kind=K&namespace=N`    | lists stored objects                  |
//! | `GET /v1/resources/<Kind>/<ns>/<name>`    | one object, or 404                    |
//! | `DELETE /v1/resources/<Kind>/<ns>/<name>` | deletes one object, or 404            |
//! | `GET /v1/proxies`                         | what each proxy holds (ACK/NACK)      |
//! | `POST /v1/tokens` (`{"namespace", "serviceAccount"}`) | a proxy bootstrap token   |
//! | `POST /v1/analyze` (JSON, optional)       | analyzer messages over the store      |
//! | `GET /v1/describe?service=S&namespace=N`  | what applies to a service, and why    |
//! | `GET /v1/proxies/<id>/config`             | the config last pushed to that proxy  |
//!
//! Contract: every answer is JSON (errors as `{"error": "..."}`, invalid
//! config as `{"problems": [...]}`); bodies over [`MAX_BODY`] get a 413;
//! nothing a client sends can panic the server. Kinds in paths and queries
//! take any form istioctl users type ([`canonical_kind`]).

mod handlers;
mod inspect;
mod kinds;
mod tokens;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::ca::Ca;
use crate::status::StatusBoard;
use crate::store::Store;

pub use kinds::{KINDS, canonical_kind, known_kinds};

/// The address weftd serves the API on unless told otherwise (istiod's
/// monitoring port, so habits carry over).
pub const DEFAULT_ADDRESS: &str = "127.0.0.1:15014";

/// Largest request body accepted: far above any real config, low enough
/// that a runaway client cannot exhaust weftd's memory.
pub const MAX_BODY: usize = 16 * 1024 * 1024;

/// Header naming the file an apply or delete body came from, for messages.
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

/// Serves the API on `listener` until the returned future is dropped;
/// dropping it also closes every open connection.
pub async fn serve(listener: TcpListener, store: Arc<Store>, status: Arc<StatusBoard>) {
    serve_with_ca(listener, store, status, None).await
}

/// [`serve`], plus `POST /v1/tokens` when weftd runs a CA.
pub async fn serve_with_ca(
    listener: TcpListener,
    store: Arc<Store>,
    status: Arc<StatusBoard>,
    ca: Option<Arc<Ca>>,
) {
    // Connections live in a JoinSet so they end with `serve`, not after it.
    let mut connections = JoinSet::new();
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => {
                    // Out of file descriptors and the like: retrying at
                    // once would spin; a short pause lets connections end.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            Some(_) = connections.join_next() => continue,
        };
        let (store, status, ca) = (store.clone(), status.clone(), ca.clone());
        connections.spawn(async move {
            let service = service_fn(move |request| {
                let (store, status, ca) = (store.clone(), status.clone(), ca.clone());
                async move { Ok::<_, Infallible>(respond(request, store, status, ca).await) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn respond(
    request: Request<Incoming>,
    store: Arc<Store>,
    status: Arc<StatusBoard>,
    ca: Option<Arc<Ca>>,
) -> Reply {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let query = request.uri().query().unwrap_or("").to_string();
    let segments: Vec<&str> = path
        .trim_start_matches('/')
        .trim_end_matches('/')
        .split('/')
        .collect();
    match (&method, segments.as_slice()) {
        (&Method::POST, ["v1", "apply"]) => {
            let source = source_of(&request);
            match read_body(request).await {
                Ok(text) => handlers::apply(store, text, source).await,
                Err(failure) => failure.reply(),
            }
        }
        (&Method::POST, ["v1", "delete"]) => {
            let source = source_of(&request);
            match read_body(request).await {
                Ok(text) => handlers::delete_named(store, &text, &source).await,
                Err(failure) => failure.reply(),
            }
        }
        (&Method::GET, ["v1", "resources"]) => handlers::list(&store, &query),
        (&Method::GET, ["v1", "resources", kind, namespace, name]) => {
            handlers::get(&store, kind, namespace, name)
        }
        (&Method::DELETE, ["v1", "resources", kind, namespace, name]) => {
            handlers::delete_one(store, kind, namespace, name).await
        }
        (&Method::GET, ["v1", "proxies"]) => handlers::proxies(&status),
        (&Method::POST, ["v1", "tokens"]) => match read_body(request).await {
            Ok(text) => tokens::mint(ca.as_deref(), &text),
            Err(failure) => failure.reply(),
        },
        (&Method::GET, ["v1", "proxies", id, "config"]) => inspect::pushed_config(&status, id),
        (&Method::GET, ["v1", "describe"]) => inspect::describe(&store, &status, &query),
        (&Method::POST, ["v1", "analyze"]) => match read_body(request).await {
            Ok(text) => inspect::analyze(&store, &status, &text),
            Err(failure) => failure.reply(),
        },
        (
            _,
            [
                "v1",
                "apply" | "delete" | "proxies" | "tokens" | "analyze" | "describe",
            ]
            | ["v1", "resources", ..]
            | ["v1", "proxies", _, "config"],
        ) => error(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{method} is not allowed on {path}"),
        ),
        _ => error(StatusCode::NOT_FOUND, format!("no {method} {path} here")),
    }
}

fn source_of(request: &Request<Incoming>) -> String {
    request
        .headers()
        .get(SOURCE_HEADER)
        .and_then(|value| value.to_str().ok())
        .filter(|value| !value.is_empty())
        .unwrap_or("request")
        .to_string()
}

/// The body as text, or the error reply (413 over [`MAX_BODY`], 400 for
/// a broken body or one that is not UTF-8).
async fn read_body(request: Request<Incoming>) -> Result<String, Failure> {
    let too_large = || {
        Failure(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body is over the {} MiB limit", MAX_BODY >> 20),
        )
    };
    // Refuse early when the client says up front how much it will send.
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > MAX_BODY as u64) {
        return Err(too_large());
    }
    let body = match Limited::new(request.into_body(), MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(err) if err.is::<http_body_util::LengthLimitError>() => return Err(too_large()),
        Err(err) => {
            return Err(Failure(
                StatusCode::BAD_REQUEST,
                format!("cannot read the request body: {err}"),
            ));
        }
    };
    String::from_utf8(body.to_vec()).map_err(|_| {
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
    json_reply(status, &json!({ "error": message.into() }))
}

#[cfg(test)]
mod inspect_tests;
#[cfg(test)]
mod tests;
