//! Admin (15000), health (15021) and metrics (15090) endpoints, on Istio's
//! ports so tools and habits carry over. They run on the small control
//! runtime, never on the data path's threads.
//!
//! - admin: `/config_dump`, `/ready`, `/clusters`, `/stats/prometheus`,
//!   `POST /quitquitquit` (start draining), `POST /logging?access=on|off|default`
//!   (access logs, without a restart);
//! - health: `/healthz/ready`;
//! - metrics: `/stats/prometheus`;
//! - status (Istio's 15020): with `--merged-metrics`, the proxy's and the
//!   application's metrics in one scrape; with `--app-probers`, the app's
//!   probes replayed from inside the pod (`/app-health/...`).

pub mod app_probes;
mod grpc_health;
pub mod merged_metrics;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use self::app_probes::AppProbers;
use self::merged_metrics::AppMetrics;
use crate::state::ProxyState;
use crate::telemetry::Override;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    Admin,
    Health,
    Metrics,
}

/// Binds now (so a taken port fails start-up), then serves until the
/// returned future is dropped.
pub async fn bind(
    surface: Surface,
    address: SocketAddr,
    state: Arc<ProxyState>,
) -> std::io::Result<impl Future<Output = ()>> {
    let listener = TcpListener::bind(address).await?;
    tracing::info!(%address, "{surface:?} endpoint listening");
    Ok(serve(listener, move |request| {
        let response = respond(surface, &state, request);
        async move { response }
    }))
}

/// What Istio's status port (15020) serves.
#[derive(Debug, Clone)]
pub struct StatusPort {
    /// Serve `/stats/prometheus`: the proxy's metrics plus the
    /// application's (see [`crate::admin::merged_metrics`]).
    pub merged_metrics: bool,
    /// Where the application's metrics are, if it has any.
    pub app_metrics: Option<AppMetrics>,
    /// `/app-health/...` (see [`crate::admin::app_probes`]).
    pub probers: AppProbers,
}

/// The status port (15020): merged metrics and app probes.
pub async fn bind_status(
    address: SocketAddr,
    state: Arc<ProxyState>,
    status: StatusPort,
) -> std::io::Result<impl Future<Output = ()>> {
    let listener = TcpListener::bind(address).await?;
    tracing::info!(
        %address,
        merged_metrics = status.merged_metrics,
        app_probes = ?status.probers.paths().collect::<Vec<_>>(),
        "status endpoint listening"
    );
    let status = Arc::new(status);
    Ok(serve(listener, move |request: Request<Incoming>| {
        let (state, status) = (state.clone(), status.clone());
        async move {
            let path = request.uri().path();
            let not_found = || {
                let message = format!("no {} {path} here\n", request.method());
                text(StatusCode::NOT_FOUND, "text/plain", message)
            };
            if request.method() != Method::GET {
                return not_found();
            }
            if path == "/stats/prometheus" && status.merged_metrics {
                let own = state.metrics.encode(&state.snapshot(), &state.clusters());
                let body = merged_metrics::merged(own, status.app_metrics.as_ref()).await;
                return text(StatusCode::OK, PROMETHEUS_TEXT, body);
            }
            match status.probers.answer(path).await {
                Some(verdict) => text(
                    verdict.status(),
                    "text/plain",
                    format!("{}\n", verdict.text()),
                ),
                None => not_found(),
            }
        }
    }))
}

/// Accepts HTTP/1 connections and answers each request with `handler`.
async fn serve<H, F>(listener: TcpListener, handler: H)
where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let handler = handler.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let answer = handler(request);
                async move { Ok::<_, Infallible>(answer.await) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

fn respond(
    surface: Surface,
    state: &ProxyState,
    request: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let path = request.uri().path();
    let method = request.method();
    match (surface, method, path) {
        (Surface::Admin, &Method::GET, "/ready")
        | (Surface::Health, &Method::GET, "/healthz/ready") => readiness(state),
        (Surface::Admin | Surface::Metrics, &Method::GET, "/stats/prometheus") => text(
            StatusCode::OK,
            PROMETHEUS_TEXT,
            state.metrics.encode(&state.snapshot(), &state.clusters()),
        ),
        (Surface::Admin, &Method::GET, "/config_dump") => config_dump(state),
        (Surface::Admin, &Method::POST, "/logging") => logging(state, request.uri().query()),
        (Surface::Admin, &Method::GET, "/clusters") => clusters(state),
        (Surface::Admin, &Method::GET, "/certs") => certs(state),
        (Surface::Admin, &Method::POST, "/quitquitquit") => {
            tracing::info!("drain requested through /quitquitquit");
            state.drain.start();
            text(StatusCode::OK, "text/plain", "OK\n".into())
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "text/plain",
            format!("no {method} {path} here\n"),
        ),
    }
}

/// `POST /logging?access=on|off|default`: switches access logs without a
/// restart, over what the pushed config and the flags say (`default`
/// hands the decision back to them).
fn logging(state: &ProxyState, query: Option<&str>) -> Response<Full<Bytes>> {
    let access = query
        .unwrap_or("")
        .split('&')
        .find_map(|pair| pair.strip_prefix("access="));
    let choice = match access {
        Some("on") => Override::On,
        Some("off") => Override::Off,
        Some("default") => Override::Default,
        _ => {
            return text(
                StatusCode::BAD_REQUEST,
                "text/plain",
                "expected /logging?access=on|off|default\n".into(),
            );
        }
    };
    state.metrics.telemetry.set_access_override(choice);
    tracing::info!("access logs switched to {choice:?} through the admin endpoint");
    let snapshot = state.snapshot();
    let telemetry = &state.metrics.telemetry;
    // On when either side writes lines.
    let on = [true, false]
        .into_iter()
        .any(|client| telemetry.access_log(&snapshot, client).is_some());
    text(
        StatusCode::OK,
        "text/plain",
        format!("access logs {}\n", if on { "on" } else { "off" }),
    )
}

fn readiness(state: &ProxyState) -> Response<Full<Bytes>> {
    if state.is_ready() {
        text(StatusCode::OK, "text/plain", "LIVE\n".into())
    } else if state.drain.is_draining() {
        text(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "DRAINING\n".into(),
        )
    } else if let Some(identity) = state
        .tls
        .identity
        .as_ref()
        .filter(|i| i.current().is_none())
    {
        let why = identity
            .last_error()
            .unwrap_or_else(|| "not issued yet".into());
        text(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            format!("PRE_INITIALIZING: no workload certificate: {why}\n"),
        )
    } else {
        text(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "PRE_INITIALIZING: no config yet\n".into(),
        )
    }
}

/// The workload certificate and trust anchors (Envoy's `/certs`).
fn certs(state: &ProxyState) -> Response<Full<Bytes>> {
    let identity = state.tls.identity.as_ref();
    let body = identity.map_or_else(
        || serde_json::json!({ "identity": null, "note": "plaintext-only: started without --token-file" }),
        |identity| identity.describe(),
    );
    match serde_json::to_string_pretty(&body) {
        Ok(body) => text(StatusCode::OK, "application/json", body + "\n"),
        Err(err) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain",
            format!("cannot encode certificates: {err}\n"),
        ),
    }
}

fn config_dump(state: &ProxyState) -> Response<Full<Bytes>> {
    let snapshot = state.snapshot_full();
    let status = state.status();
    // Private keys pushed by weftd (gateway servers, DestinationRule
    // credentials) stay out of the dump, as Envoy redacts secrets in its own.
    let mut config = snapshot.config.clone();
    let keys = config
        .listeners
        .iter_mut()
        .flat_map(|listener| &mut listener.tls_servers)
        .map(|server| &mut server.private_key_pem)
        .chain(
            config
                .clusters
                .iter_mut()
                .filter_map(|cluster| cluster.tls.as_mut())
                .map(|tls| &mut tls.private_key_pem),
        );
    for key in keys.filter(|key| !key.is_empty()) {
        *key = "[redacted]".into();
    }
    let dump = serde_json::json!({
        "source": status.source,
        "version": snapshot.version(),
        "lastRejected": status.last_rejected,
        "config": config,
    });
    match serde_json::to_string_pretty(&dump) {
        Ok(body) => text(StatusCode::OK, "application/json", body + "\n"),
        Err(err) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain",
            format!("cannot encode config: {err}\n"),
        ),
    }
}

/// One line per endpoint, Envoy-like: `cluster::address::field::value`.
fn clusters(state: &ProxyState) -> Response<Full<Bytes>> {
    let snapshot = state.snapshot_full();
    let runtime = state.clusters();
    let mut names: Vec<_> = snapshot.clusters().collect();
    names.sort_by(|a, b| a.name.cmp(&b.name));
    let mut out = String::new();
    for cluster in names {
        for endpoint in &cluster.endpoints {
            let idle = state.pool.idle_http1(endpoint.address);
            out.push_str(&format!(
                "{}::{}::weight::{}\n",
                cluster.name, endpoint.address, endpoint.weight
            ));
            out.push_str(&format!(
                "{}::{}::idle_http1_connections::{idle}\n",
                cluster.name, endpoint.address
            ));
            // Envoy's flag names, read by `weft proxy-config endpoints`.
            let outlier = runtime
                .named(&cluster.name)
                .and_then(|l| l.outlier.as_ref());
            let ejected = outlier.is_some_and(|outlier| {
                outlier.is_ejected(endpoint.address, std::time::Instant::now())
            });
            let health = if ejected {
                "/failed_outlier_check"
            } else {
                "healthy"
            };
            out.push_str(&format!(
                "{}::{}::health_flags::{health}\n",
                cluster.name, endpoint.address
            ));
        }
    }
    text(StatusCode::OK, "text/plain", out)
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    response
}
