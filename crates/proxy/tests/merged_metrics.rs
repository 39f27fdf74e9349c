//! Istio's merged metrics endpoint (15020): one scrape returns the proxy's
//! series and the application's, fetched from the app on loopback.

use std::convert::Infallible;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use weft_testkit::backend::serve;
use weft_testkit::client;
use weft_testkit::free_addr;
use weft_testkit::proxy::{ProxyOptions, ProxyProcess};

const BIN: &str = env!("CARGO_BIN_EXE_weft-proxy");

const CONFIG: &str = "version: merged\n";

async fn proxy_with(merged: std::net::SocketAddr, app_port: u16) -> ProxyProcess {
    let mut options = ProxyOptions::new(Path::new(BIN), CONFIG);
    options.args = vec![
        "--merged-metrics".into(),
        merged.to_string(),
        "--app-metrics".into(),
        format!("{app_port}/custom/metrics"),
    ];
    let mut proxy = ProxyProcess::spawn(options).expect("spawn");
    proxy
        .wait_ready(Duration::from_secs(20))
        .await
        .expect("ready");
    proxy
}

#[tokio::test]
async fn one_scrape_returns_the_proxys_and_the_apps_metrics() {
    // The app's metrics must be served on 127.0.0.1: bind one there.
    let app = serve(|request: http::Request<hyper::body::Incoming>| async move {
        let body = if request.uri().path() == "/custom/metrics" {
            "# TYPE shop_orders_total counter\nshop_orders_total 7\n"
        } else {
            "wrong path\n"
        };
        Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from(body))))
    })
    .await;
    assert_eq!(
        app.addr.ip().to_string(),
        "127.0.0.1",
        "served on {}",
        app.addr
    );
    let merged = free_addr();
    let proxy = proxy_with(merged, app.addr.port()).await;
    let text = client::get(merged, "metrics", "/stats/prometheus")
        .await
        .expect("scrape")
        .text();
    assert!(text.contains("weft_config_reloads_total"), "{text}");
    assert!(text.contains("shop_orders_total 7"), "{text}");
    // The proxy's own endpoint is unchanged.
    let own = client::get(proxy.metrics, "metrics", "/stats/prometheus")
        .await
        .expect("scrape")
        .text();
    assert!(!own.contains("shop_orders_total"), "{own}");
}

#[tokio::test]
async fn the_proxys_metrics_survive_an_app_that_does_not_answer() {
    let merged = free_addr();
    // Nothing listens on this port on 127.0.0.1.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = dead.local_addr().expect("addr").port();
    drop(dead);
    let _proxy = proxy_with(merged, port).await;
    let reply = client::get(merged, "metrics", "/stats/prometheus")
        .await
        .expect("scrape");
    assert_eq!(reply.status, 200);
    let text = reply.text();
    assert!(text.contains("weft_config_reloads_total"), "{text}");
    assert!(
        text.contains(&format!(
            "# application metrics on 127.0.0.1:{port}/custom/metrics unavailable"
        )),
        "{text}"
    );
}
