//! Bookinfo's reviews service, in Rust: `GET /reviews/<id>` answers two
//! reviews of the book. The version decides what else it does:
//!
//! - v1: no ratings (the product page shows no stars);
//! - v2: asks ratings and colours the stars black;
//! - v3: asks ratings and colours the stars red.
//!
//! Environment: `SERVICE_VERSION` (v1), `ENABLE_RATINGS` (true unless v1),
//! `STAR_COLOR` (black), `RATINGS_HOSTNAME` (ratings) + `SERVICES_DOMAIN`
//! (empty) + `RATINGS_PORT` (9080), `LISTEN_ADDR` (0.0.0.0:9080), `POD_NAME`
//! (else the host name). The tracing headers, `end-user` and `user-agent`
//! of each request go on to ratings, and the answer echoes what it saw
//! (`seen`, and ratings' own echo as `ratings_seen`) so a user can check
//! that propagation works.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONTENT_TYPE, COOKIE, HOST, HeaderMap, HeaderValue};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::{Map, Value, json};
use tokio::net::{TcpListener, TcpStream};

/// Headers passed from the incoming request to the ratings call: the
/// tracing headers of the common tracers plus the user Bookinfo routes on.
const PROPAGATED: [&str; 15] = [
    "x-request-id",
    "traceparent",
    "tracestate",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
    "b3",
    "x-ot-span-context",
    "x-cloud-trace-context",
    "grpc-trace-bin",
    "sw8",
    "end-user",
    "user-agent",
];

/// How long v2/v3 wait for ratings before reporting it unavailable.
const RATINGS_TIMEOUT: Duration = Duration::from_secs(10);
const RATINGS_UNAVAILABLE: &str = "Ratings service is currently unavailable";
const REVIEWS: [(&str, &str); 2] = [
    (
        "Reviewer1",
        "A patient, funny book: every chapter ties a new knot and none of them slip.",
    ),
    (
        "Reviewer2",
        "Slow to start, but the last hundred pages read like a thriller. Worth it.",
    ),
];

struct Config {
    listen: SocketAddr,
    version: String,
    ratings_enabled: bool,
    star_color: String,
    /// `host:port` of the ratings service.
    ratings: String,
    pod_name: String,
}

impl Config {
    fn from_env() -> Result<Self, String> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let listen = var("LISTEN_ADDR").unwrap_or_else(|| "0.0.0.0:9080".into());
        let listen = listen
            .parse()
            .map_err(|err| format!("LISTEN_ADDR={listen:?} is not an address: {err}"))?;
        let version = var("SERVICE_VERSION").unwrap_or_else(|| "v1".into());
        let ratings_enabled = match var("ENABLE_RATINGS").as_deref() {
            None => version != "v1",
            Some("true") => true,
            Some("false") => false,
            Some(other) => return Err(format!("ENABLE_RATINGS={other:?}: use true or false")),
        };
        let host = var("RATINGS_HOSTNAME").unwrap_or_else(|| "ratings".into());
        let domain = var("SERVICES_DOMAIN").unwrap_or_default();
        let port = var("RATINGS_PORT").unwrap_or_else(|| "9080".into());
        port.parse::<u16>()
            .map_err(|err| format!("RATINGS_PORT={port:?} is not a port: {err}"))?;
        let pod_name = var("POD_NAME")
            .or_else(|| var("HOSTNAME"))
            .or_else(|| {
                std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .ok()
                    .map(|name| name.trim().to_string())
            })
            .unwrap_or_else(|| format!("reviews-{version}"));
        Ok(Self {
            listen,
            ratings_enabled,
            star_color: var("STAR_COLOR").unwrap_or_else(|| "black".into()),
            ratings: format!("{host}{domain}:{port}"),
            pod_name,
            version,
        })
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let config = match Config::from_env() {
        Ok(config) => Arc::new(config),
        Err(problem) => {
            eprintln!("bookinfo-reviews: {problem}");
            return ExitCode::from(2);
        }
    };
    let listener = match TcpListener::bind(config.listen).await {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!(
                "bookinfo-reviews: cannot listen on {}: {err}",
                config.listen
            );
            return ExitCode::FAILURE;
        }
    };
    eprintln!(
        "bookinfo-reviews {} ({}) on {}, ratings {}",
        config.version,
        config.pod_name,
        config.listen,
        if config.ratings_enabled {
            config.ratings.as_str()
        } else {
            "off"
        }
    );
    tokio::select! {
        () = serve(listener, config) => ExitCode::SUCCESS,
        () = shutdown_signal() => ExitCode::SUCCESS,
    }
}

async fn serve(listener: TcpListener, config: Arc<Config>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(err) => {
                // Out of descriptors and the like: pass, don't spin.
                eprintln!("bookinfo-reviews: accept: {err}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let config = config.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| handle(config.clone(), request));
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn shutdown_signal() {
    let Ok(mut terminate) =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = terminate.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

async fn handle(
    config: Arc<Config>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = request.uri().path();
    if request.method() != Method::GET {
        return Ok(reply(
            StatusCode::METHOD_NOT_ALLOWED,
            json!({"error": "only GET"}),
        ));
    }
    if path == "/health" {
        return Ok(reply(
            StatusCode::OK,
            json!({"status": "Reviews is healthy"}),
        ));
    }
    let Some(id) = path.strip_prefix("/reviews/") else {
        return Ok(reply(
            StatusCode::NOT_FOUND,
            json!({"error": format!("no such page: {path}")}),
        ));
    };
    let Ok(id) = id.parse::<u32>() else {
        return Ok(reply(
            StatusCode::BAD_REQUEST,
            json!({"error": format!("product id {id:?} is not a number")}),
        ));
    };
    let propagated = propagated(request.headers());
    let cookie = request
        .headers()
        .get(COOKIE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mut answer = reviews(&config, id, &propagated).await;
    // Echoed so a test can tell the product page kept its cookie to itself.
    if let Some(cookie) = cookie {
        answer["seen"]["cookie"] = Value::String(cookie);
    }
    Ok(reply(StatusCode::OK, answer))
}

/// What this version knows of the ratings service's answer.
enum Ratings {
    /// v1: never asks.
    Off,
    /// ratings' JSON: `{"id", "ratings": {reviewer: stars}, "seen"}`
    Got(Value),
    Unavailable,
}

/// The answer for product `id`, with ratings when this version has them.
async fn reviews(config: &Config, id: u32, propagated: &[(String, String)]) -> Value {
    let ratings = if !config.ratings_enabled {
        Ratings::Off
    } else {
        match fetch_ratings(config, id, propagated).await {
            Ok(answer) => Ratings::Got(answer),
            Err(problem) => {
                eprintln!("bookinfo-reviews: ratings for {id}: {problem}");
                Ratings::Unavailable
            }
        }
    };
    let reviews: Vec<Value> = REVIEWS
        .iter()
        .map(|(reviewer, text)| {
            let mut review = json!({"reviewer": reviewer, "text": text});
            match &ratings {
                Ratings::Off => {}
                Ratings::Got(answer) => {
                    let stars = answer["ratings"][reviewer].as_u64();
                    review["rating"] = match stars {
                        Some(stars) => json!({"stars": stars, "color": config.star_color}),
                        None => json!({"error": "no rating from this reviewer"}),
                    };
                }
                Ratings::Unavailable => review["rating"] = json!({"error": RATINGS_UNAVAILABLE}),
            }
            review
        })
        .collect();
    let seen: Map<String, Value> = propagated
        .iter()
        .map(|(name, value)| (name.clone(), Value::String(value.clone())))
        .collect();
    let end_user = seen.get("end-user").cloned().unwrap_or(Value::Null);
    let mut answer = json!({
        "id": id,
        "podname": config.pod_name,
        "version": config.version,
        "end_user": end_user,
        "seen": seen,
        "reviews": reviews,
    });
    if let Ratings::Got(ratings) = &ratings {
        answer["ratings_seen"] = ratings.get("seen").cloned().unwrap_or(Value::Null);
    }
    answer
}

/// The propagated headers of `headers`, in [`PROPAGATED`] order.
fn propagated(headers: &HeaderMap) -> Vec<(String, String)> {
    PROPAGATED
        .iter()
        .filter_map(|name| {
            let value = headers.get(*name)?.to_str().ok()?;
            Some((name.to_string(), value.to_string()))
        })
        .collect()
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// `GET /ratings/<id>` on one fresh HTTP/1.1 connection, within
/// [`RATINGS_TIMEOUT`]. Anything but a 200 with JSON is a failure.
async fn fetch_ratings(
    config: &Config,
    id: u32,
    propagated: &[(String, String)],
) -> Result<Value, BoxError> {
    let call = async {
        let stream = TcpStream::connect(config.ratings.as_str()).await?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        let mut request = Request::get(format!("/ratings/{id}")).header(HOST, &config.ratings);
        for (name, value) in propagated {
            request = request.header(name, value);
        }
        let response = sender.send_request(request.body(Empty::new())?).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        if status != StatusCode::OK {
            return Err(format!("ratings answered {status}").into());
        }
        Ok::<_, BoxError>(serde_json::from_slice(&body)?)
    };
    tokio::time::timeout(RATINGS_TIMEOUT, call)
        .await
        .map_err(|_| format!("no answer within {RATINGS_TIMEOUT:?}"))?
}

fn reply(status: StatusCode, body: Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
