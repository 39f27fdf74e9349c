//! Istio's merged metrics endpoint (15020 `/stats/prometheus`): the
//! proxy's own series followed by the application's, scraped from the
//! workload on loopback, so one Prometheus target covers both (Istio does
//! this for pods annotated `prometheus.io/scrape`).
//!
//! The application's endpoint is only ever on 127.0.0.1 (`--app-metrics
//! PORT[/PATH]`): the proxy never fetches from anywhere else. When the app
//! does not answer, the proxy's own metrics are still served, with a
//! comment saying why the app's are missing.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, header};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// A scrape waits this long for the app, as Prometheus would time out.
const APP_TIMEOUT: Duration = Duration::from_secs(5);
/// Larger app metrics are cut, so a runaway app cannot exhaust memory.
const APP_LIMIT: usize = 16 * 1024 * 1024;

/// Where the application serves its metrics, on loopback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppMetrics {
    pub port: u16,
    pub path: String,
}

/// `PORT` or `PORT/PATH` (path defaults to `/metrics`).
pub fn parse_app_metrics(text: &str) -> Result<AppMetrics, String> {
    let (port, path) = match text.split_once('/') {
        Some((port, path)) => (port, format!("/{path}")),
        None => (text, "/metrics".to_string()),
    };
    let port = port
        .parse::<u16>()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("{text:?}: expected PORT or PORT/PATH, e.g. 9090/metrics"))?;
    Ok(AppMetrics { port, path })
}

/// The proxy's metrics (`own`) with the app's appended.
pub async fn merged(own: String, app: Option<&AppMetrics>) -> String {
    let Some(app) = app else {
        return own;
    };
    let fetched = tokio::time::timeout(APP_TIMEOUT, fetch(app)).await;
    let mut out = own;
    match fetched {
        Ok(Ok(text)) => {
            if !out.ends_with('\n') {
                out.push('\n');
            }
            out.push_str(&text);
        }
        Ok(Err(err)) => out.push_str(&format!(
            "# application metrics on 127.0.0.1:{}{} unavailable: {err}\n",
            app.port, app.path
        )),
        Err(_) => out.push_str(&format!(
            "# application metrics on 127.0.0.1:{}{} timed out after {APP_TIMEOUT:?}\n",
            app.port, app.path
        )),
    }
    out
}

async fn fetch(app: &AppMetrics) -> anyhow::Result<String> {
    let stream = TcpStream::connect(("127.0.0.1", app.port)).await?;
    let (mut sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let request = Request::get(app.path.as_str())
        .header(header::HOST, format!("127.0.0.1:{}", app.port))
        .header(header::ACCEPT, "text/plain")
        .body(Empty::<Bytes>::new())?;
    let response = sender.send_request(request).await?;
    if !response.status().is_success() {
        anyhow::bail!("the app answered {}", response.status());
    }
    let limited = http_body_util::Limited::new(response.into_body(), APP_LIMIT);
    let body = limited
        .collect()
        .await
        .map_err(|err| anyhow::anyhow!("reading the app's answer: {err}"))?
        .to_bytes();
    Ok(String::from_utf8_lossy(&body).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_metrics_flag_parses_port_and_path() {
        assert_eq!(
            parse_app_metrics("9090"),
            Ok(AppMetrics {
                port: 9090,
                path: "/metrics".into()
            })
        );
        assert_eq!(
            parse_app_metrics("8080/stats/prometheus").map(|a| a.path),
            Ok("/stats/prometheus".into())
        );
        assert!(parse_app_metrics("0").is_err());
        assert!(parse_app_metrics("host:9090").is_err());
    }
}
