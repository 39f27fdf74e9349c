//! Telemetry through real weft-proxy processes on loopback: two sidecars
//! (a client-side proxy → a server-side proxy's inbound listener → a
//! backend) report Istio metrics from both sides with each other's
//! workload labels learnt through `x-weft-peer`; gRPC streams count their
//! messages; a trace through three proxies reaches a real OTLP collector;
//! access logs carry UO/UH and switch off and on without a restart.
//!
//! Without iptables, a client dials the server-side proxy's inbound
//! listener directly; it serves the workload port of the same number.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use weft_testkit::backend::{Served, serve};
use weft_testkit::client::{self, Http1Client, Reply};
use weft_testkit::free_addr;
use weft_testkit::grpc::{self, pb::EchoRequest};
use weft_testkit::otlp::Collector;
use weft_testkit::prometheus::sample;
use weft_testkit::proxy::{ProxyOptions, ProxyProcess};

const BIN: &str = env!("CARGO_BIN_EXE_weft-proxy");
const SERVICE: &str = "reviews.bookinfo.svc.cluster.local";

/// Starts a proxy with `config` and extra flags, and waits until it is ready.
async fn start_proxy(config: &str, args: &[&str]) -> ProxyProcess {
    let mut options = ProxyOptions::new(Path::new(BIN), config);
    options.args = args.iter().map(|a| a.to_string()).collect();
    let mut proxy = ProxyProcess::spawn(options).unwrap_or_else(|err| panic!("{err:#}"));
    proxy
        .wait_ready(Duration::from_secs(20))
        .await
        .unwrap_or_else(|err| panic!("{err:#}"));
    proxy
}

/// The workload flags of productpage-v1 (the caller) and reviews-v1.
const PRODUCTPAGE: &[&str] = &[
    "--workload",
    "productpage-v1",
    "--namespace",
    "bookinfo",
    "--label",
    "app=productpage",
    "--label",
    "version=v1",
];
const REVIEWS: &[&str] = &[
    "--workload",
    "reviews-v1",
    "--namespace",
    "bookinfo",
    "--label",
    "app=reviews",
    "--label",
    "version=v1",
];

fn flags(workload: &[&'static str], more: &[&'static str]) -> Vec<&'static str> {
    workload.iter().chain(more).copied().collect()
}

/// A server-side sidecar config: inbound listener `inbound` serving the
/// workload port of the same number, which is `backend`.
fn server_config(inbound: SocketAddr, backend: SocketAddr, protocol: &str) -> String {
    format!(
        r#"
version: server
listeners:
- {{name: inbound, address: "{inbound}", kind: INBOUND_CAPTURE}}
inboundPorts: [{{port: {port}, protocol: {protocol}, target: "{backend}"}}]
"#,
        port = inbound.port()
    )
}

/// A client-side sidecar config: `listen` goes to `service` (port 9080),
/// whose one endpoint is `upstream` (another proxy's inbound listener);
/// `extra` is more config (listeners, services and clusters lists).
fn client_config(
    listen: SocketAddr,
    service: &str,
    upstream: SocketAddr,
    protocol: &str,
) -> String {
    format!(
        r#"
version: client
listeners:
- {{name: out, address: "{listen}", kind: EXPLICIT, service: {service}}}
services:
- {{name: {service}, ports: [{{port: 9080, protocol: {protocol}}}]}}
clusters:
- {{name: "outbound|9080||{service}", endpoints: [{{address: "{upstream}", mesh: true, labels: {{app: reviews, version: v1}}}}]}}
"#
    )
}

/// `/status/<code>` answers with that code; the body says whether the
/// request still carried Weft's own headers (it must not).
async fn status_backend() -> Served {
    serve(|request: Request<Incoming>| async move {
        let leaked = ["x-weft-peer", "x-weft-service"]
            .iter()
            .any(|h| request.headers().contains_key(*h));
        let code = request
            .uri()
            .path()
            .strip_prefix("/status/")
            .and_then(|c| c.parse().ok())
            .unwrap_or(200);
        let mut response = Response::new(Full::new(Bytes::from(format!("leaked={leaked}"))));
        *response.status_mut() = StatusCode::from_u16(code).expect("status");
        Ok::<_, Infallible>(response)
    })
    .await
}

async fn metrics(proxy: &ProxyProcess) -> String {
    client::get(proxy.metrics, "metrics", "/stats/prometheus")
        .await
        .expect("metrics")
        .text()
}

/// Polls until `check` holds for the proxy's metrics (recording happens as
/// the response ends, a moment after the client has it).
async fn metrics_until(proxy: &ProxyProcess, check: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = metrics(proxy).await;
        if check(&text) || Instant::now() > deadline {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn two_sidecars_report_requests_from_both_sides_with_peer_labels() {
    let backend = status_backend().await;
    let inbound = free_addr();
    let server = start_proxy(
        &server_config(inbound, backend.addr, "HTTP"),
        &flags(REVIEWS, &[]),
    )
    .await;
    let listen = free_addr();
    let client_proxy = start_proxy(
        &client_config(listen, SERVICE, inbound, "HTTP"),
        &flags(PRODUCTPAGE, &[]),
    )
    .await;

    let mut client = Http1Client::connect(listen).await.expect("connect");
    for _ in 0..6 {
        // An application cannot pass itself off as another workload.
        let request = client::request_with_headers(
            Method::GET,
            "reviews",
            "/",
            &[("x-weft-peer", "n=impostor;ns=evil")],
            client::empty(),
        );
        let reply = client.send(request).await.expect("request");
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.text(), "leaked=false");
        assert_eq!(reply.header("x-weft-peer"), None, "stripped before the app");
    }
    for _ in 0..2 {
        let reply = client.get("reviews", "/status/503").await.expect("request");
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    }

    let both_sides = [
        ("source_workload", "productpage-v1"),
        ("source_workload_namespace", "bookinfo"),
        ("source_app", "productpage"),
        ("source_version", "v1"),
        ("source_canonical_service", "productpage"),
        ("source_canonical_revision", "v1"),
        ("source_cluster", "Kubernetes"),
        ("destination_workload", "reviews-v1"),
        ("destination_workload_namespace", "bookinfo"),
        ("destination_app", "reviews"),
        ("destination_version", "v1"),
        ("destination_canonical_service", "reviews"),
        ("destination_service", SERVICE),
        ("destination_service_name", "reviews"),
        ("destination_service_namespace", "bookinfo"),
        ("request_protocol", "http"),
        ("response_flags", "-"),
        ("source_principal", "unknown"),
        ("connection_security_policy", "unknown"),
    ];
    for (proxy, reporter) in [(&client_proxy, "source"), (&server, "destination")] {
        let with = |code: &'static str| {
            let mut labels = both_sides.to_vec();
            labels.push(("reporter", reporter));
            labels.push(("response_code", code));
            labels
        };
        let text = metrics_until(proxy, |t| {
            sample(t, "istio_requests_total", &with("503")) == 2.0
        })
        .await;
        assert_eq!(
            sample(&text, "istio_requests_total", &with("200")),
            6.0,
            "{reporter}:\n{text}"
        );
        assert_eq!(
            sample(&text, "istio_requests_total", &with("503")),
            2.0,
            "{reporter}:\n{text}"
        );
        assert_eq!(
            sample(
                &text,
                "istio_request_duration_milliseconds_count",
                &with("200")
            ),
            6.0,
            "{reporter}:\n{text}"
        );
        // "leaked=false" is 12 bytes, each time.
        assert_eq!(
            sample(&text, "istio_response_bytes_sum", &with("200")),
            72.0,
            "{reporter}:\n{text}"
        );
        assert!(text.contains("weft_config_info{version=\""), "{text}");
    }
}

#[tokio::test]
async fn grpc_stream_messages_are_counted_on_both_sides() {
    let (backend, _task) = grpc::start("reviews").await;
    let inbound = free_addr();
    let server = start_proxy(
        &server_config(inbound, backend, "GRPC"),
        &flags(REVIEWS, &[]),
    )
    .await;
    let listen = free_addr();
    let client_proxy = start_proxy(
        &client_config(listen, SERVICE, inbound, "GRPC"),
        &flags(PRODUCTPAGE, &[]),
    )
    .await;

    let mut echo = grpc::connect(listen).await;
    let requests = tokio_stream::iter((0..5).map(|i| EchoRequest {
        message: format!("m{i}"),
    }));
    let mut replies = echo.bidi(requests).await.expect("bidi").into_inner();
    let mut received = 0;
    while let Some(reply) = replies.message().await.expect("reply") {
        assert_eq!(reply.server, "reviews");
        received += 1;
    }
    assert_eq!(received, 5);

    for (proxy, reporter) in [(&client_proxy, "source"), (&server, "destination")] {
        let labels = [
            ("reporter", reporter),
            ("request_protocol", "grpc"),
            ("grpc_response_status", "0"),
            ("source_workload", "productpage-v1"),
            ("destination_workload", "reviews-v1"),
        ];
        let text = metrics_until(proxy, |t| {
            sample(t, "istio_response_messages_total", &labels) == 5.0
        })
        .await;
        assert_eq!(
            sample(&text, "istio_request_messages_total", &labels),
            5.0,
            "{reporter}:\n{text}"
        );
        assert_eq!(
            sample(&text, "istio_response_messages_total", &labels),
            5.0,
            "{reporter}:\n{text}"
        );
        assert_eq!(
            sample(&text, "istio_requests_total", &labels),
            1.0,
            "{reporter}:\n{text}"
        );
    }
}

/// The middle service of the trace test: calls `next` (its own proxy's
/// outbound listener) forwarding the trace headers, as Istio asks of apps.
async fn forwarding_app(next: SocketAddr) -> Served {
    serve(move |request: Request<Incoming>| async move {
        let forwarded: Vec<(String, String)> = ["traceparent", "tracestate", "x-request-id"]
            .iter()
            .filter_map(|name| {
                let value = request.headers().get(*name)?.to_str().ok()?;
                Some((name.to_string(), value.to_string()))
            })
            .collect();
        let headers: Vec<(&str, &str)> = forwarded
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        let call =
            client::request_with_headers(Method::GET, "ratings", "/", &headers, client::empty());
        let body = match Http1Client::connect(next).await {
            Ok(mut client) => match client.send(call).await {
                Ok(reply) => format!("next said {}", reply.status),
                Err(err) => format!("next failed: {err}"),
            },
            Err(err) => format!("next unreachable: {err}"),
        };
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body))))
    })
    .await
}

#[tokio::test]
async fn a_trace_through_three_proxies_reaches_the_collector_linked() {
    let collector = Collector::start().await;
    let otlp = collector.addr.to_string();
    // Sampling 0%: only the caller's "sampled" decision gets spans exported.
    let tracing: Vec<String> = vec!["--otlp".into(), otlp, "--trace-sampling".into(), "0".into()];
    let with = |workload: &str, app: &str| {
        let mut args: Vec<String> = [
            "--workload",
            workload,
            "--namespace",
            "shop",
            "--label",
            &format!("app={app}"),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(tracing.iter().cloned());
        args
    };
    let start = |config: String, args: Vec<String>| async move {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        start_proxy(&config, &refs).await
    };

    // C: ratings, behind proxy PC.
    let ratings = status_backend().await;
    let pc_inbound = free_addr();
    let _pc = start(
        server_config(pc_inbound, ratings.addr, "HTTP"),
        with("ratings-v1", "ratings"),
    )
    .await;
    // B: reviews, behind proxy PB (inbound) which also carries its calls
    // to ratings (outbound).
    let pb_inbound = free_addr();
    let pb_outbound = free_addr();
    let reviews = forwarding_app(pb_outbound).await;
    let pb_config = format!(
        r#"
version: pb
listeners:
- {{name: inbound, address: "{pb_inbound}", kind: INBOUND_CAPTURE}}
- {{name: out, address: "{pb_outbound}", kind: EXPLICIT, service: ratings.shop.svc.cluster.local}}
inboundPorts: [{{port: {port}, protocol: HTTP, target: "{reviews}"}}]
services:
- {{name: ratings.shop.svc.cluster.local, ports: [{{port: 9080, protocol: HTTP}}]}}
clusters:
- {{name: "outbound|9080||ratings.shop.svc.cluster.local", endpoints: [{{address: "{pc_inbound}", mesh: true}}]}}
"#,
        port = pb_inbound.port(),
        reviews = reviews.addr
    );
    let _pb = start(pb_config, with("reviews-v1", "reviews")).await;
    // A: the caller (this test), with proxy PA.
    let pa_listen = free_addr();
    let _pa = start(
        client_config(
            pa_listen,
            "reviews.shop.svc.cluster.local",
            pb_inbound,
            "HTTP",
        ),
        with("productpage-v1", "productpage"),
    )
    .await;

    // Not sampled by anyone: nothing is exported.
    let reply = client::get(pa_listen, "reviews", "/")
        .await
        .expect("request");
    assert_eq!(reply.text(), "next said 200 OK");

    let caller_trace = "0af7651916cd43dd8448eb211c80319c";
    let caller_span = "b7ad6b7169203331";
    let request = client::request_with_headers(
        Method::GET,
        "reviews",
        "/",
        &[
            (
                "traceparent",
                &format!("00-{caller_trace}-{caller_span}-01"),
            ),
            ("x-request-id", "req-42"),
        ],
        client::empty(),
    );
    let mut client = Http1Client::connect(pa_listen).await.expect("connect");
    let reply = client.send(request).await.expect("request");
    assert_eq!(reply.text(), "next said 200 OK");

    let spans = collector.wait_for(4, Duration::from_secs(10)).await;
    // Give a stray fifth span time to show up before counting.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let spans = if spans.len() == 4 {
        collector.spans()
    } else {
        spans
    };
    assert_eq!(spans.len(), 4, "{spans:#?}");
    for span in &spans {
        assert_eq!(span.trace_id(), caller_trace, "one trace: {spans:#?}");
        assert_eq!(
            span.attribute("guid:x-request-id").as_deref(),
            Some("req-42")
        );
    }
    let find = |service: &str, kind: i32| {
        spans
            .iter()
            .find(|s| s.service == service && s.span.kind == kind)
            .unwrap_or_else(|| panic!("no span kind {kind} from {service}: {spans:#?}"))
    };
    const SERVER: i32 = 2;
    const CLIENT: i32 = 3;
    let pa_client = find("productpage.shop", CLIENT);
    let pb_server = find("reviews.shop", SERVER);
    let pb_client = find("reviews.shop", CLIENT);
    let pc_server = find("ratings.shop", SERVER);
    assert_eq!(pa_client.parent_span_id(), caller_span);
    assert_eq!(pb_server.parent_span_id(), pa_client.span_id());
    assert_eq!(pb_client.parent_span_id(), pb_server.span_id());
    assert_eq!(pc_server.parent_span_id(), pb_client.span_id());
    assert_eq!(
        pc_server.attribute("http.status_code").as_deref(),
        Some("200")
    );
    assert!(pa_client.span.end_time_unix_nano >= pc_server.span.end_time_unix_nano);
}

/// A proxy for service `web` with an access log file; `cluster` is the
/// cluster's YAML fields after its name.
async fn logged_proxy(cluster: &str, telemetry: &str) -> (ProxyProcess, SocketAddr, PathBuf) {
    let web = free_addr();
    let config = web_config(web, cluster, telemetry);
    let dir = std::env::temp_dir().join(format!(
        "weft-telemetry-{}-{}",
        std::process::id(),
        web.port()
    ));
    std::fs::create_dir_all(&dir).expect("log dir");
    let log = dir.join("access.log");
    let log_flag = log.display().to_string();
    let proxy = start_proxy(&config, &["--access-log", &log_flag]).await;
    (proxy, web, log)
}

fn web_config(web: SocketAddr, cluster: &str, telemetry: &str) -> String {
    format!(
        r#"
version: access-log-test
{telemetry}
listeners:
- {{name: web, address: "{web}", kind: EXPLICIT, service: web.test.svc.cluster.local}}
services:
- name: web.test.svc.cluster.local
  hosts: [web]
  ports:
  - port: 80
    protocol: HTTP
    routes: [{{name: web-route, clusters: [{{cluster: c}}]}}]
clusters:
- {{name: c, {cluster}}}
"#
    )
}

fn remove_log_dir(log: &Path) {
    if let Some(dir) = log.parent() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

fn log_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Waits until the log has `count` lines (the writer is a thread of its own).
async fn lines_until(path: &Path, count: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let lines = log_lines(path);
        if lines.len() >= count || Instant::now() > deadline {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn get(web: SocketAddr, path: &str) -> Reply {
    client::get(web, "web", path).await.expect("request")
}

#[tokio::test]
async fn access_logs_carry_uo_when_the_breaker_trips_and_uh_without_endpoints() {
    let backend = weft_testkit::backend::HttpBackend::start("web").await;
    let (_proxy, web, log) = logged_proxy(
        &format!(
            r#"endpoints: [{{address: "{}"}}], connectionPool: {{maxRequests: 1}}"#,
            backend.addr
        ),
        "",
    )
    .await;
    let slow = tokio::spawn(async move { get(web, "/slow/1500").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let refused = get(web, "/second").await;
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(slow.await.expect("slow").status, StatusCode::OK);
    let lines = lines_until(&log, 2).await;
    assert_eq!(lines.len(), 2, "{lines:#?}");
    let overflow = lines
        .iter()
        .find(|l| l.contains("\"GET /second HTTP/1.1\""))
        .unwrap_or_else(|| panic!("{lines:#?}"));
    assert!(overflow.contains("\" 503 UO "), "{overflow}");
    assert!(overflow.ends_with(" web-route"), "{overflow}");
    let served = lines
        .iter()
        .find(|l| l.contains("/slow/1500"))
        .unwrap_or_else(|| panic!("{lines:#?}"));
    assert!(served.contains("\" 200 - via_upstream "), "{served}");
    assert!(
        served.contains(&format!("\"{}\" c ", backend.addr)),
        "upstream host and cluster: {served}"
    );

    remove_log_dir(&log);
    let (_proxy, web, log) = logged_proxy("endpoints: []", "").await;
    assert_eq!(get(web, "/").await.status, StatusCode::SERVICE_UNAVAILABLE);
    let lines = lines_until(&log, 1).await;
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(lines[0].contains("\" 503 UH "), "{}", lines[0]);
    assert!(lines[0].starts_with('['), "{}", lines[0]);
    remove_log_dir(&log);
}

async fn admin_post(proxy: &ProxyProcess, path: &str) -> Reply {
    let mut client = Http1Client::connect(proxy.admin).await.expect("admin");
    client
        .send(client::request(
            Method::POST,
            "admin",
            path,
            client::empty(),
        ))
        .await
        .expect("admin request")
}

#[tokio::test]
async fn access_logs_switch_off_and_on_without_a_restart() {
    let backend = weft_testkit::backend::HttpBackend::start("web").await;
    let cluster = format!(r#"endpoints: [{{address: "{}"}}]"#, backend.addr);
    let (mut proxy, web, log) = logged_proxy(&cluster, "").await;
    get(web, "/one").await;
    assert_eq!(lines_until(&log, 1).await.len(), 1);

    // The admin endpoint.
    let reply = admin_post(&proxy, "/logging?access=off").await;
    assert_eq!(reply.text(), "access logs off\n");
    get(web, "/two").await;
    let reply = admin_post(&proxy, "/logging?access=default").await;
    assert_eq!(reply.text(), "access logs on\n");
    get(web, "/three").await;
    let lines = lines_until(&log, 2).await;
    assert_eq!(lines.len(), 2, "{lines:#?}");
    assert!(lines[1].contains("/three"), "{lines:#?}");

    // The pushed config (Istio's Telemetry accessLogging, compiled).
    proxy
        .write_config(&web_config(
            web,
            &cluster,
            "telemetry: {accessLog: DISABLED}",
        ))
        .expect("write config");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let dump = proxy.admin_get("/config_dump").await.expect("dump").text();
        if dump.contains("\"accessLog\": \"DISABLED\"") || Instant::now() > deadline {
            assert!(dump.contains("\"accessLog\": \"DISABLED\""), "{dump}");
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    get(web, "/four").await;
    proxy
        .write_config(&web_config(
            web,
            &cluster,
            "telemetry: {accessLog: ENABLED}",
        ))
        .expect("write config");
    tokio::time::sleep(Duration::from_millis(500)).await;
    get(web, "/five").await;
    let lines = lines_until(&log, 3).await;
    assert_eq!(lines.len(), 3, "{lines:#?}");
    assert!(lines[2].contains("/five"), "{lines:#?}");
    assert!(
        !lines
            .iter()
            .any(|l| l.contains("/two") || l.contains("/four")),
        "{lines:#?}"
    );
    assert!(
        proxy.is_running(),
        "same process throughout: the proxy exited; log:\n{}",
        proxy.logs()
    );
    remove_log_dir(&log);
}

#[tokio::test]
async fn proxy_health_shows_pool_usage_ejections_and_config_version() {
    let backend = status_backend().await;
    let web = free_addr();
    let cluster = format!(
        r#"endpoints: [{{address: "{}"}}], outlierDetection: {{consecutive5xxErrors: 1, interval: 1s, baseEjectionTime: 30s, maxEjectionPercent: 100}}"#,
        backend.addr
    );
    let proxy = start_proxy(&web_config(web, &cluster, ""), &[]).await;
    let mut client = Http1Client::connect(web).await.expect("connect");
    let reply = client.get("web", "/status/503").await.expect("request");
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);

    let text = metrics_until(&proxy, |t| {
        sample(t, "weft_outlier_ejections_total", &[("cluster_name", "c")]) == 1.0
    })
    .await;
    assert_eq!(
        sample(
            &text,
            "weft_outlier_ejections_total",
            &[("cluster_name", "c")]
        ),
        1.0,
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "weft_outlier_ejected_endpoints",
            &[("cluster_name", "c")]
        ),
        1.0,
        "{text}"
    );
    // The client's keep-alive connection, and the pooled one upstream.
    assert_eq!(
        sample(
            &text,
            "weft_upstream_connections_active",
            &[("cluster_name", "c")]
        ),
        1.0,
        "{text}"
    );
    assert!(
        text.contains("weft_downstream_connections_active 1"),
        "{text}"
    );
    assert_eq!(
        sample(&text, "weft_config_info", &[("version", "access-log-test")]),
        1.0,
        "{text}"
    );
    assert!(
        text.contains("weft_certificate_expiry_timestamp_seconds 0"),
        "no certificate yet: {text}"
    );
}

#[tokio::test]
async fn json_access_logs_carry_the_same_fields() {
    let backend = weft_testkit::backend::HttpBackend::start("web").await;
    let web = free_addr();
    let config = web_config(
        web,
        &format!(r#"endpoints: [{{address: "{}"}}]"#, backend.addr),
        "",
    );
    let log = std::env::temp_dir().join(format!(
        "weft-telemetry-json-{}-{}.log",
        std::process::id(),
        web.port()
    ));
    let log_flag = log.display().to_string();
    let _proxy = start_proxy(
        &config,
        &["--access-log", &log_flag, "--access-log-format", "json"],
    )
    .await;
    let request = client::request_with_headers(
        Method::GET,
        "web",
        "/json?x=1",
        &[
            ("user-agent", "telemetry-test"),
            ("x-request-id", "abc-123"),
        ],
        client::empty(),
    );
    let mut client = Http1Client::connect(web).await.expect("connect");
    assert_eq!(
        client.send(request).await.expect("request").status,
        StatusCode::OK
    );
    let lines = lines_until(&log, 1).await;
    let _ = std::fs::remove_file(&log);
    assert_eq!(lines.len(), 1, "{lines:#?}");
    let entry: serde_json::Value =
        serde_json::from_str(&lines[0]).expect("one JSON object per line");
    assert_eq!(entry["method"], "GET");
    assert_eq!(entry["path"], "/json?x=1");
    assert_eq!(entry["response_code"], 200);
    assert_eq!(entry["response_flags"], "-");
    assert_eq!(entry["user_agent"], "telemetry-test");
    assert_eq!(entry["request_id"], "abc-123");
    assert_eq!(entry["upstream_cluster"], "c");
    assert_eq!(entry["upstream_host"], backend.addr.to_string());
    assert_eq!(entry["route_name"], "web-route");
    assert!(
        entry["bytes_sent"].as_u64().is_some_and(|n| n > 0),
        "{entry}"
    );
}
