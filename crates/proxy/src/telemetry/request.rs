//! One HTTP request's telemetry, from its arrival to the end of its
//! response body: peer metadata and trace context on the way in, then at
//! the end the Istio metrics, the access-log line and the span.
//!
//! [`RequestRecord::start`] edits the request headers (peer metadata,
//! trace context, `x-request-id`); [`RequestRecord::respond`] edits the
//! response headers and wraps the body so that everything is recorded when
//! the last byte has been handed to the client (or the client is gone). A
//! record dropped without a response counts as a downstream disconnect (DC).

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderMap};
use http::{Request, Response, Version};
use http_body::{Body, Frame, SizeHint};

use super::access_log::Entry;
use super::body::{CountedRequest, Counts, MessageCounter};
use super::custom::{Facts, RequestFacts};
use super::labels::{Call, Labels};
use super::peer::{PEER_HEADER, SERVICE_HEADER};
use super::span::{self as span_data, Facts as SpanFacts};
use super::trace::{self, SpanContext};
use super::{Downstream, Recorder, Telemetry};
use crate::body::{BoxError, ProxyBody};
use crate::config::telemetry::Side;
use crate::config::{Cluster, PASSTHROUGH_CLUSTER};
use crate::flags::{ResponseFlag, ResponseFlags};
use crate::reply::LocalReply;
use crate::telemetry::metrics::{Reporter, RequestSample};
use crate::workload::Workload;

/// The endpoint that answered, put in the response's extensions by the
/// upstream try (for the access log's `%UPSTREAM_HOST%`).
#[derive(Debug, Clone, Copy)]
pub struct UpstreamHost(pub SocketAddr);

/// What the access log and the span say about the request, captured only
/// when one of them wants it.
struct Detail {
    method: String,
    path: String,
    protocol: &'static str,
    authority: Option<String>,
    forwarded_for: Option<String>,
    user_agent: Option<String>,
    request_id: Option<String>,
    start_wall: SystemTime,
    log: bool,
    /// The request headers, when an access-log format reads them (shared
    /// with the expressions' facts).
    headers: Option<Arc<HeaderMap>>,
    /// Telemetry `customTags`, when the span is reported.
    tags: Vec<opentelemetry::KeyValue>,
}

pub struct RequestRecord {
    state: Arc<dyn Recorder>,
    reporter: Reporter,
    pub grpc: bool,
    /// The routed service (FQDN); empty until routing names one.
    pub service: String,
    /// Flags for whatever answer is given (DI after an injected delay).
    pub extra: ResponseFlags,
    start: Instant,
    downstream: Downstream,
    /// Destination side: who called, from `x-weft-peer`.
    source_peer: Option<Arc<Workload>>,
    /// Destination side: the caller sent peer metadata (it is a Weft
    /// proxy), so the answer carries ours; nobody else gets it.
    caller_is_mesh: bool,
    /// Destination side: the request's authority host.
    authority_host: Option<String>,
    span: SpanContext,
    counts: Arc<Counts>,
    detail: Option<Box<Detail>>,
    route_name: Option<String>,
    cluster: Option<Arc<Cluster>>,
    /// This side has Telemetry overrides or an access-log filter.
    custom: bool,
    /// The request's attributes, when an expression of this side reads them.
    facts: Option<Box<RequestFacts>>,
    done: bool,
}

impl RequestRecord {
    pub fn start<B>(
        state: Arc<dyn Recorder>,
        reporter: Reporter,
        downstream: &Downstream,
        request: &mut Request<B>,
    ) -> Self {
        let telemetry = &state.metrics().telemetry;
        let snapshot = state.snapshot();
        let headers = request.headers_mut();
        let grpc = headers
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
        let mut source_peer = None;
        let mut caller_is_mesh = false;
        match reporter {
            // Whatever the application sent is not to be believed.
            Reporter::Source => {
                headers.remove(PEER_HEADER);
                headers.remove(SERVICE_HEADER);
                let local = telemetry.local();
                if !local.header.is_empty() {
                    headers.insert(PEER_HEADER, local.header.clone());
                }
            }
            Reporter::Destination => {
                let sent = headers.remove(PEER_HEADER);
                caller_is_mesh = sent.is_some();
                source_peer = sent.and_then(|value| telemetry.peers.get(&value));
            }
        }
        let span = trace::continue_or_start(headers, telemetry.sampling(&snapshot));
        let side = snapshot.custom_telemetry.side(reporter == Reporter::Source);
        let custom = side.is_custom();
        let logger = telemetry.access_log(&snapshot, reporter == Reporter::Source);
        let log = logger.is_some() && !side.log_disabled;
        // A custom format reading arbitrary headers needs them at the end.
        let keep_headers = log && logger.is_some_and(|l| l.reads_headers());
        let traced = span.sampled && telemetry.exporter(&snapshot, reporter).is_some();
        let authority = (log || traced || reporter == Reporter::Destination)
            .then(|| {
                request
                    .uri()
                    .authority()
                    .map(|a| a.as_str().to_string())
                    .or_else(|| header_text(request.headers(), header::HOST))
            })
            .flatten();
        // The service the caller's proxy routed to, else the authority.
        let authority_host = match reporter {
            Reporter::Destination => request
                .headers_mut()
                .remove(SERVICE_HEADER)
                .and_then(|v| v.to_str().ok().map(str::to_string))
                .or_else(|| authority.as_deref().map(host_of)),
            Reporter::Source => None,
        };
        // One copy of the headers (as the application gets them) for both
        // the expressions and a format reading them.
        let shared =
            (side.needs_facts() || keep_headers).then(|| Arc::new(request.headers().clone()));
        let facts = side.needs_facts().then(|| {
            Box::new(RequestFacts {
                method: request.method().as_str().to_string(),
                path: request
                    .uri()
                    .path_and_query()
                    .map_or_else(|| "/".to_string(), |p| p.as_str().to_string()),
                host: request
                    .uri()
                    .authority()
                    .map(|a| a.as_str().to_string())
                    .or_else(|| header_text(request.headers(), header::HOST))
                    .unwrap_or_default(),
                scheme: request.uri().scheme_str().unwrap_or("http").to_string(),
                protocol: protocol_name(request.version()),
                headers: shared.clone().unwrap_or_default(),
            })
        });
        let detail = (log || traced).then(|| {
            let headers = request.headers();
            Box::new(Detail {
                method: request.method().as_str().to_string(),
                path: header_text(headers, "x-envoy-original-path").unwrap_or_else(|| {
                    request
                        .uri()
                        .path_and_query()
                        .map_or_else(|| "/".to_string(), |p| p.as_str().to_string())
                }),
                protocol: protocol_name(request.version()),
                authority,
                forwarded_for: header_text(headers, "x-forwarded-for"),
                user_agent: header_text(headers, header::USER_AGENT),
                request_id: header_text(headers, trace::REQUEST_ID),
                start_wall: SystemTime::now(),
                log,
                headers: shared.filter(|_| keep_headers),
                tags: match snapshot.config.telemetry.as_ref() {
                    Some(pushed) if traced => span_data::custom_tags(&pushed.custom_tags, headers),
                    _ => Vec::new(),
                },
            })
        });
        Self {
            state,
            reporter,
            grpc,
            service: String::new(),
            extra: ResponseFlags::default(),
            start: Instant::now(),
            downstream: downstream.clone(),
            source_peer,
            caller_is_mesh,
            authority_host,
            span,
            counts: Arc::default(),
            detail,
            route_name: None,
            cluster: None,
            custom,
            facts,
            done: false,
        }
    }

    /// The route and cluster chosen (for the access log); on the source
    /// side the routed service is told to the destination's proxy.
    pub fn routed(
        &mut self,
        route_name: Option<&str>,
        cluster: &Arc<Cluster>,
        headers: &mut HeaderMap,
    ) {
        self.route_name = route_name.filter(|n| !n.is_empty()).map(str::to_string);
        self.cluster = Some(cluster.clone());
        // Traffic leaving the mesh does not learn who the caller is.
        if self.reporter == Reporter::Source && cluster.name == PASSTHROUGH_CLUSTER {
            headers.remove(PEER_HEADER);
            return;
        }
        if self.reporter == Reporter::Source
            && let Ok(value) = http::HeaderValue::from_str(&self.service)
            && !self.service.is_empty()
        {
            headers.insert(SERVICE_HEADER, value);
        }
    }

    /// The request body, counted (bytes, gRPC messages) as it streams.
    pub fn count_request(&self, body: ProxyBody) -> ProxyBody {
        ProxyBody::new(CountedRequest::new(body, self.counts.clone(), self.grpc))
    }

    /// A local reply, logged at debug and recorded with its flags.
    pub fn local_reply(&mut self, mut reply: LocalReply) -> Response<ProxyBody> {
        reply.extra = reply.extra.union(self.extra);
        tracing::debug!(
            flag = reply.flag.code(),
            status = reply.status.as_u16(),
            source = ?reply.source,
            retry = ?reply.retry,
            "{}",
            reply.message
        );
        let flags = reply.flags();
        self.respond(reply.into_response(), flags)
    }

    /// The response to send, with peer metadata exchanged and its body
    /// wrapped so the request is recorded when the body ends.
    pub fn respond(
        &mut self,
        mut response: Response<ProxyBody>,
        flags: ResponseFlags,
    ) -> Response<ProxyBody> {
        let telemetry = &self.state.metrics().telemetry;
        let upstream_host = response.extensions().get::<UpstreamHost>().map(|h| h.0);
        let headers = response.headers_mut();
        let answered = match self.reporter {
            Reporter::Source => headers
                .remove(PEER_HEADER)
                .and_then(|value| telemetry.peers.get(&value)),
            Reporter::Destination => {
                let local = telemetry.local();
                if local.header.is_empty() || !self.caller_is_mesh {
                    headers.remove(PEER_HEADER);
                } else {
                    headers.insert(PEER_HEADER, local.header.clone());
                }
                None
            }
        };
        let grpc_status = grpc_status(headers);
        let code = response.status().as_u16();
        let finish = self.finish(code, grpc_status, flags, upstream_host, answered);
        if response.body().is_end_stream() {
            finish.complete(0);
            return response;
        }
        let grpc = self.grpc;
        response.map(|inner| {
            ProxyBody::new(CountedResponse {
                inner,
                messages: grpc.then(MessageCounter::default),
                finish: Some(finish),
            })
        })
    }

    /// The labels and what else the end of the request needs; the record
    /// is done after this.
    fn finish(
        &mut self,
        response_code: u16,
        grpc_status: Option<u16>,
        flags: ResponseFlags,
        upstream_host: Option<SocketAddr>,
        answered: Option<Arc<Workload>>,
    ) -> Finish {
        self.done = true;
        let telemetry = &self.state.metrics().telemetry;
        let (source, destination, destination_service): (_, _, Arc<str>) = match self.reporter {
            Reporter::Source => (
                telemetry.local().workload.clone(),
                answered
                    .or_else(|| self.endpoint_workload(upstream_host))
                    .unwrap_or_else(|| telemetry.unknown()),
                self.service.as_str().into(),
            ),
            Reporter::Destination => (
                self.source_peer
                    .take()
                    .unwrap_or_else(|| telemetry.unknown()),
                telemetry.local().workload.clone(),
                self.authority_host.take().unwrap_or_default().into(),
            ),
        };
        let principal = self.downstream.principal.clone();
        let labels = Labels {
            reporter: self.reporter,
            source,
            source_principal: principal
                .clone()
                .filter(|_| self.reporter == Reporter::Destination),
            destination,
            destination_principal: None,
            destination_service,
            call: Call::Http {
                grpc: self.grpc,
                response_code,
                grpc_status,
            },
            response_flags: flags.union(self.extra),
            mutual_tls: principal.is_some(),
            custom: None,
        };
        Finish {
            state: self.state.clone(),
            labels,
            start: self.start,
            upstream_time: self.start.elapsed(),
            counts: self.counts.clone(),
            response_bytes: 0,
            detail: self.detail.take(),
            span: self.span.clone(),
            route_name: self.route_name.take(),
            cluster: self.cluster.take(),
            upstream_host,
            downstream: std::mem::take(&mut self.downstream),
            custom: self.custom,
            facts: self.facts.take(),
        }
    }

    /// What the config says about the endpoint that answered.
    fn endpoint_workload(&self, host: Option<SocketAddr>) -> Option<Arc<Workload>> {
        self.cluster.as_ref()?.endpoint(host?)?.workload.clone()
    }
}

impl Drop for RequestRecord {
    fn drop(&mut self) {
        if !self.done {
            // The client left before an answer: no response code.
            let flags = ResponseFlags::from(ResponseFlag::DownstreamDisconnect);
            self.finish(0, None, flags, None, None).complete(0);
        }
    }
}

/// Everything needed to record the request once its response ends.
struct Finish {
    state: Arc<dyn Recorder>,
    labels: Labels,
    start: Instant,
    /// Until the response head was ready (`x-envoy-upstream-service-time`).
    upstream_time: Duration,
    counts: Arc<Counts>,
    response_bytes: u64,
    detail: Option<Box<Detail>>,
    span: SpanContext,
    route_name: Option<String>,
    cluster: Option<Arc<Cluster>>,
    upstream_host: Option<SocketAddr>,
    downstream: Downstream,
    custom: bool,
    facts: Option<Box<RequestFacts>>,
}

impl Finish {
    fn complete(mut self, response_messages: u64) {
        let elapsed = self.start.elapsed();
        let sample = RequestSample {
            duration_ms: elapsed.as_secs_f64() * 1000.0,
            request_bytes: self.counts.bytes.load(Ordering::Relaxed),
            response_bytes: self.response_bytes,
            request_messages: self.counts.messages.load(Ordering::Relaxed),
            response_messages,
        };
        let metrics = &self.state.metrics();
        // One snapshot for the whole finish: metrics, filter, line, span.
        let snapshot = self.state.snapshot();
        let mut logged = true;
        if self.custom {
            let side = snapshot
                .custom_telemetry
                .side(self.labels.reporter == Reporter::Source);
            let facts = self.facts(&snapshot.custom_telemetry.env, side, &sample, elapsed);
            if side.changes_metrics() {
                metrics.record_request_custom(&self.labels, &sample, side, &facts);
            } else {
                metrics.record_request(&self.labels, &sample);
            }
            logged = facts.logs(side);
        } else {
            metrics.record_request(&self.labels, &sample);
        }
        let Some(detail) = self.detail.take() else {
            return;
        };
        let telemetry: &Telemetry = &metrics.telemetry;
        let client = self.labels.reporter == Reporter::Source;
        if detail.log
            && logged
            && let Some(sink) = telemetry.access_log(&snapshot, client)
        {
            sink.log(&self.entry(&detail, &sample, elapsed));
        }
        if self.span.sampled
            && let Some(exporter) = telemetry.exporter(&snapshot, self.labels.reporter)
        {
            exporter.export(self.span(&detail, elapsed, telemetry, exporter.scope()));
        }
    }

    /// What expressions read about this request.
    fn facts<'a>(
        &'a self,
        env: &'a Arc<cel::Env>,
        side: &Side,
        sample: &RequestSample,
        elapsed: Duration,
    ) -> Facts<'a> {
        Facts {
            env,
            wanted: side.wanted,
            request: self.facts.as_deref(),
            labels: &self.labels,
            duration_ms: elapsed.as_millis() as u64,
            bytes_received: sample.request_bytes,
            bytes_sent: sample.response_bytes,
            downstream_local: self.downstream.local,
            downstream_remote: self.downstream.remote,
            upstream_host: self.upstream_host,
            route_name: self.route_name.as_deref(),
            cluster_name: self.cluster.as_deref().map(|c| c.name.as_str()),
            context: Default::default(),
        }
    }

    fn response_code(&self) -> u16 {
        match self.labels.call {
            Call::Http { response_code, .. } => response_code,
            Call::Tcp => 0,
        }
    }

    fn entry<'a>(
        &'a self,
        detail: &'a Detail,
        sample: &RequestSample,
        elapsed: Duration,
    ) -> Entry<'a> {
        Entry {
            start: Some(detail.start_wall),
            method: Some(&detail.method),
            path: Some(&detail.path),
            protocol: Some(detail.protocol),
            response_code: self.response_code(),
            response_flags: self.labels.response_flags,
            response_code_details: Some(if self.upstream_host.is_some() {
                "via_upstream"
            } else {
                "local_reply"
            }),
            bytes_received: sample.request_bytes,
            bytes_sent: sample.response_bytes,
            duration_ms: elapsed.as_millis() as u64,
            upstream_service_time_ms: self
                .upstream_host
                .map(|_| self.upstream_time.as_millis() as u64),
            forwarded_for: detail.forwarded_for.as_deref(),
            user_agent: detail.user_agent.as_deref(),
            request_id: detail.request_id.as_deref(),
            authority: detail.authority.as_deref(),
            upstream_host: self.upstream_host,
            upstream_cluster: self.cluster.as_deref().map(|c| c.name.as_str()),
            downstream_local: self.downstream.local,
            downstream_remote: self.downstream.remote,
            requested_server_name: None,
            route_name: self.route_name.as_deref(),
            request_headers: detail.headers.as_deref(),
            response_headers: None,
        }
    }

    fn span(
        &self,
        detail: &Detail,
        elapsed: Duration,
        telemetry: &Telemetry,
        scope: &opentelemetry::InstrumentationScope,
    ) -> opentelemetry_sdk::trace::SpanData {
        let host = match &*self.labels.destination_service {
            "" => detail.authority.as_deref().map_or("unknown", host_of_str),
            service => service,
        };
        let facts = SpanFacts {
            context: &self.span,
            reporter: self.labels.reporter,
            name: format!("{host}/*"),
            start: detail.start_wall,
            elapsed,
            method: &detail.method,
            path: &detail.path,
            protocol: detail.protocol,
            status: self.response_code(),
            response_flags: self.labels.response_flags.codes(),
            node_id: &telemetry.local().node_id,
            request_id: detail.request_id.as_deref(),
            cluster: self.cluster.as_deref().map(|c| c.name.as_str()),
            upstream: self.upstream_host,
            tags: &detail.tags,
        };
        span_data::build(facts, scope)
    }
}

/// A response body that counts what it streams and records the request
/// when it ends.
struct CountedResponse {
    inner: ProxyBody,
    messages: Option<MessageCounter>,
    finish: Option<Finish>,
}

impl CountedResponse {
    fn complete(&mut self) {
        if let Some(finish) = self.finish.take() {
            finish.complete(self.messages.as_ref().map_or(0, |m| m.messages));
        }
    }
}

impl Body for CountedResponse {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    if let Some(finish) = &mut this.finish {
                        finish.response_bytes += data.len() as u64;
                    }
                    if let Some(counter) = &mut this.messages {
                        counter.feed(data);
                    }
                } else if let Some(trailers) = frame.trailers_ref()
                    && let Some(finish) = &mut this.finish
                    && let Call::Http { grpc_status, .. } = &mut finish.labels.call
                {
                    *grpc_status = self::grpc_status(trailers).or(*grpc_status);
                }
                if this.inner.is_end_stream() {
                    this.complete();
                }
            }
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => this.complete(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for CountedResponse {
    fn drop(&mut self) {
        self.complete();
    }
}

fn grpc_status(headers: &HeaderMap) -> Option<u16> {
    headers
        .get(crate::reply::GRPC_STATUS)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

fn header_text(headers: &HeaderMap, name: impl header::AsHeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn host_of(authority: &str) -> String {
    host_of_str(authority).to_string()
}

/// `host:port` → `host` (IPv6 brackets kept).
fn host_of_str(authority: &str) -> &str {
    if authority.starts_with('[') {
        return authority.find(']').map_or(authority, |i| &authority[..=i]);
    }
    authority.split(':').next().unwrap_or(authority)
}

fn protocol_name(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/1.1",
    }
}
