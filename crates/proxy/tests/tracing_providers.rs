//! Tracing providers pushed in the proxy's config, through real weft-proxy
//! processes: spans reach an OTLP/gRPC collector (the OpenTelemetry
//! exporter) with Telemetry `customTags` from a literal, a request header
//! and the proxy's environment; a Zipkin provider gets Zipkin v2 JSON at
//! its path; a config change switches the exporter live; a provider Weft
//! cannot export to means no spans (not spans to the `--otlp` fallback),
//! and without a pushed provider the fallback gets them.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use http::Method;
use weft_testkit::backend::HttpBackend;
use weft_testkit::client::{self, Http1Client};
use weft_testkit::free_addr;
use weft_testkit::otlp::Collector;
use weft_testkit::proxy::{ProxyOptions, ProxyProcess};
use weft_testkit::zipkin::ZipkinCollector;

const BIN: &str = env!("CARGO_BIN_EXE_weft-proxy");

/// A proxy for service `web` (→ `backend`) whose pushed telemetry is
/// `telemetry` (YAML flow fields) and whose clusters include `tracer` →
/// `collector`.
fn config(
    version: &str,
    web: SocketAddr,
    backend: SocketAddr,
    collector: SocketAddr,
    telemetry: &str,
) -> String {
    format!(
        r#"
version: {version}
telemetry: {{randomSamplingPercentage: 100, hasRandomSamplingPercentage: true, {telemetry}}}
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
- {{name: c, endpoints: [{{address: "{backend}"}}]}}
- {{name: tracer, endpoints: [{{address: "{collector}"}}]}}
"#
    )
}

async fn start(config: &str, prefix: &[&str], args: &[&str]) -> ProxyProcess {
    let mut options = ProxyOptions::new(Path::new(BIN), config);
    options.prefix = prefix.iter().map(|s| s.to_string()).collect();
    options.args = args.iter().map(|s| s.to_string()).collect();
    ProxyProcess::spawn_ready(options, Duration::from_secs(20))
        .await
        .unwrap_or_else(|err| panic!("{err:#}"))
}

/// One GET through the proxy with extra headers; 200 expected.
async fn get(web: SocketAddr, headers: &[(&str, &str)]) {
    let request = client::request_with_headers(Method::GET, "web", "/", headers, client::empty());
    let mut client = Http1Client::connect(web).await.expect("connect");
    let reply = client.send(request).await.expect("request");
    assert_eq!(reply.status, http::StatusCode::OK, "{}", reply.text());
}

async fn wait_for_version(proxy: &ProxyProcess, version: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let dump = proxy.admin_get("/config_dump").await.expect("config_dump");
        if dump.text().contains(&format!("\"version\": \"{version}\"")) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{version} not loaded:\n{}",
            proxy.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

const OTEL: &str = "tracingProvider: {name: otel, protocol: OTLP_GRPC, cluster: tracer}";

#[tokio::test]
async fn an_opentelemetry_provider_gets_spans_with_custom_tags() {
    let collector = Collector::start().await;
    // The flag's collector: the pushed provider wins over it.
    let fallback = Collector::start().await;
    let backend = HttpBackend::start("web").await;
    let web = free_addr();
    let tags = "customTags: [\
        {tag: team, literal: checkout}, \
        {tag: user, header: {name: x-user, defaultValue: anonymous}}, \
        {tag: region, environment: {name: WEFT_TEST_REGION, defaultValue: nowhere}}, \
        {tag: zone, environment: {name: WEFT_TEST_UNSET_ZONE, defaultValue: zone-a}}]";
    let config = config(
        "otel",
        web,
        backend.addr,
        collector.addr,
        &format!("{OTEL}, {tags}"),
    );
    let fallback_flag = fallback.addr.to_string();
    let proxy = start(
        &config,
        &["env", "WEFT_TEST_REGION=eu-west-1"],
        &["--otlp", &fallback_flag],
    )
    .await;

    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let traceparent = format!("00-{trace}-00f067aa0ba902b7-01");
    get(web, &[("traceparent", &traceparent), ("x-user", "ada")]).await;
    get(web, &[]).await;
    let spans = collector.wait_for(2, Duration::from_secs(10)).await;
    assert_eq!(spans.len(), 2, "{spans:#?}\n{}", proxy.logs());
    let traced = spans
        .iter()
        .find(|s| s.trace_id() == trace)
        .unwrap_or_else(|| panic!("the caller's trace: {spans:#?}"));
    assert_eq!(traced.parent_span_id(), "00f067aa0ba902b7");
    for (key, value) in [
        ("team", "checkout"),
        ("user", "ada"),
        ("region", "eu-west-1"),
        ("zone", "zone-a"),
        ("http.method", "GET"),
        ("http.status_code", "200"),
        ("upstream_cluster", "c"),
    ] {
        assert_eq!(
            traced.attribute(key).as_deref(),
            Some(value),
            "{key}: {traced:#?}"
        );
    }
    let other = spans
        .iter()
        .find(|s| s.trace_id() != trace)
        .expect("second");
    assert_eq!(other.attribute("user").as_deref(), Some("anonymous"));
    assert!(
        !other
            .attribute("guid:x-request-id")
            .unwrap_or_default()
            .is_empty()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(fallback.spans().is_empty(), "{:#?}", fallback.spans());
}

#[tokio::test]
async fn a_zipkin_provider_gets_v2_json_at_its_path() {
    let zipkin = ZipkinCollector::start().await;
    let backend = HttpBackend::start("web").await;
    let web = free_addr();
    let config = config(
        "zipkin",
        web,
        backend.addr,
        zipkin.addr,
        "tracingProvider: {name: zipkin, protocol: ZIPKIN, cluster: tracer, path: /api/v2/spans}, \
         customTags: [{tag: team, literal: checkout}]",
    );
    let proxy = start(&config, &[], &[]).await;
    // B3 in: the trace continues with the caller's ids.
    let trace = "80f198ee56343ba864fe8b2a57d3eff7";
    get(web, &[("b3", &format!("{trace}-e457b5a2e4d86bd1-1"))]).await;
    let spans = zipkin.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(spans.len(), 1, "{spans:#?}\n{}", proxy.logs());
    let span = &spans[0];
    assert_eq!(span.path, "/api/v2/spans");
    assert_eq!(span.trace_id(), trace, "{:#}", span.span);
    assert_eq!(span.span["parentId"], "e457b5a2e4d86bd1", "{:#}", span.span);
    assert_eq!(span.span["kind"], "CLIENT", "{:#}", span.span);
    assert_eq!(span.tag("http.method"), Some("GET"), "{:#}", span.span);
    assert_eq!(span.tag("team"), Some("checkout"), "{:#}", span.span);
    assert_eq!(span.span["name"], "web.test.svc.cluster.local/*");
}

#[tokio::test]
async fn a_config_change_switches_the_exporter_live() {
    let (first, second, fallback) = (
        Collector::start().await,
        Collector::start().await,
        Collector::start().await,
    );
    let backend = HttpBackend::start("web").await;
    let web = free_addr();
    let fallback_flag = fallback.addr.to_string();
    let proxy = start(
        &config("v1", web, backend.addr, first.addr, OTEL),
        &[],
        &["--otlp", &fallback_flag],
    )
    .await;
    get(web, &[]).await;
    assert_eq!(first.wait_for(1, Duration::from_secs(10)).await.len(), 1);

    // The provider's endpoint moves: the next spans go to the new one.
    proxy
        .write_config(&config("v2", web, backend.addr, second.addr, OTEL))
        .expect("write v2");
    wait_for_version(&proxy, "v2").await;
    get(web, &[]).await;
    assert_eq!(second.wait_for(1, Duration::from_secs(10)).await.len(), 1);

    // A provider Weft cannot export to (skywalking): no spans at all, not
    // even to the flag's collector.
    let unsupported = "tracingProvider: {name: sky, protocol: UNSUPPORTED}";
    proxy
        .write_config(&config("v3", web, backend.addr, second.addr, unsupported))
        .expect("write v3");
    wait_for_version(&proxy, "v3").await;
    get(web, &[]).await;
    // Client spans only: this proxy's requests are outbound (CLIENT).
    let server_only = format!("{OTEL}, traceMode: SERVER");
    tokio::time::sleep(Duration::from_millis(700)).await;
    proxy
        .write_config(&config("v4", web, backend.addr, second.addr, &server_only))
        .expect("write v4");
    wait_for_version(&proxy, "v4").await;
    get(web, &[]).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(first.spans().len(), 1);
    assert_eq!(second.spans().len(), 1, "{:#?}", second.spans());
    assert!(fallback.spans().is_empty(), "{:#?}", fallback.spans());

    // No provider pushed: the --otlp flag's collector.
    proxy
        .write_config(&config(
            "v5",
            web,
            backend.addr,
            second.addr,
            "accessLog: DISABLED",
        ))
        .expect("write v5");
    wait_for_version(&proxy, "v5").await;
    get(web, &[]).await;
    assert_eq!(fallback.wait_for(1, Duration::from_secs(10)).await.len(), 1);
    assert_eq!(second.spans().len(), 1);
}

/// B3 multi headers in: both proxies continue the caller's trace in B3,
/// their spans are linked, and the application behind the second proxy
/// sees that proxy's span as the B3 parent.
#[tokio::test]
async fn b3_multi_context_crosses_two_proxies_linked() {
    use std::convert::Infallible;

    use bytes::Bytes;
    use http::{Request, Response};
    use http_body_util::Full;
    use hyper::body::Incoming;

    let collector = Collector::start().await;
    // The app answers with the B3 headers it received.
    let app = weft_testkit::backend::serve(|request: Request<Incoming>| async move {
        let seen: Vec<String> = [
            "x-b3-traceid",
            "x-b3-spanid",
            "x-b3-parentspanid",
            "x-b3-sampled",
        ]
        .iter()
        .map(|name| {
            let value = request.headers().get(*name).and_then(|v| v.to_str().ok());
            format!("{name}={}", value.unwrap_or("-"))
        })
        .collect();
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(seen.join(" ")))))
    })
    .await;
    let telemetry = format!(
        "telemetry: {{randomSamplingPercentage: 0, hasRandomSamplingPercentage: true, {OTEL}}}"
    );
    let inbound = free_addr();
    let server = format!(
        r#"
version: server
{telemetry}
listeners:
- {{name: inbound, address: "{inbound}", kind: INBOUND_CAPTURE}}
inboundPorts: [{{port: {port}, protocol: HTTP, target: "{app}"}}]
clusters:
- {{name: tracer, endpoints: [{{address: "{collector}"}}]}}
"#,
        port = inbound.port(),
        app = app.addr,
        collector = collector.addr
    );
    let listen = free_addr();
    let service = "reviews.shop.svc.cluster.local";
    let client = format!(
        r#"
version: client
{telemetry}
listeners:
- {{name: out, address: "{listen}", kind: EXPLICIT, service: {service}}}
services:
- {{name: {service}, ports: [{{port: 9080, protocol: HTTP}}]}}
clusters:
- {{name: "outbound|9080||{service}", endpoints: [{{address: "{inbound}", mesh: true}}]}}
- {{name: tracer, endpoints: [{{address: "{collector}"}}]}}
"#,
        collector = collector.addr
    );
    let workload = |name: &'static str| ["--workload", name, "--namespace", "shop"];
    let _server = start(&server, &[], &workload("reviews-v1")).await;
    let _client = start(&client, &[], &workload("productpage-v1")).await;

    let request = client::request_with_headers(
        Method::GET,
        "reviews",
        "/",
        &[
            ("x-b3-traceid", "463ac35c9f6413ad"),
            ("x-b3-spanid", "a2fb4a1d1a96d312"),
            ("x-b3-sampled", "1"),
        ],
        client::empty(),
    );
    let mut http = Http1Client::connect(listen).await.expect("connect");
    let reply = http.send(request).await.expect("request");
    assert_eq!(reply.status, http::StatusCode::OK, "{}", reply.text());

    let spans = collector.wait_for(2, Duration::from_secs(10)).await;
    assert_eq!(
        spans.len(),
        2,
        "sampled by the caller despite 0%: {spans:#?}"
    );
    let trace = "0000000000000000463ac35c9f6413ad";
    const SERVER: i32 = 2;
    const CLIENT: i32 = 3;
    let find = |kind: i32| {
        spans
            .iter()
            .find(|s| s.span.kind == kind)
            .unwrap_or_else(|| panic!("no span of kind {kind}: {spans:#?}"))
    };
    let (outbound, inbound_span) = (find(CLIENT), find(SERVER));
    assert_eq!(outbound.trace_id(), trace);
    assert_eq!(inbound_span.trace_id(), trace);
    assert_eq!(outbound.parent_span_id(), "a2fb4a1d1a96d312");
    assert_eq!(inbound_span.parent_span_id(), outbound.span_id());
    assert_eq!(
        reply.text(),
        format!(
            "x-b3-traceid={trace} x-b3-spanid={} x-b3-parentspanid={} x-b3-sampled=1",
            inbound_span.span_id(),
            outbound.span_id()
        )
    );
}
