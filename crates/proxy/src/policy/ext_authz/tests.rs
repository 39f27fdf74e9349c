//! The check requests both kinds of provider send and what their answers
//! do, without a network (the transport is a closure).

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use ::http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use weft_proto::envoy::config::core::v3::{HeaderValue as PbHeader, HeaderValueOption};
use weft_proto::envoy::service::auth::v3::check_response::HttpResponse;
use weft_proto::envoy::service::auth::v3::{CheckResponse, DeniedHttpResponse, OkHttpResponse};
use weft_proto::envoy::r#type::v3::HttpStatus;
use weft_proto::google::rpc::Status;

use super::*;
use crate::flags::ResponseFlag;

fn provider(protocol: Protocol) -> Provider {
    Provider {
        name: "authz".into(),
        protocol,
        cluster: "outbound|9000||authz.default.svc.cluster.local".into(),
        authority: "authz.default.svc.cluster.local".into(),
        timeout: Duration::from_secs(1),
        fail_open: false,
        status_on_error: StatusCode::SERVICE_UNAVAILABLE,
        include_headers: vec![
            Pattern::parse("x-user", true),
            Pattern::parse("x-b3-*", true),
        ],
        additional_headers: vec![(
            HeaderName::from_static("x-check"),
            HeaderValue::from_static("weft"),
        )],
        upstream_on_allow: vec![Pattern::parse("x-auth-user", true)],
        downstream_on_deny: Vec::new(),
        downstream_on_allow: vec![Pattern::parse("x-auth-note", true)],
        path_prefix: "/check".into(),
        body: None,
    }
}

fn parts() -> ::http::request::Parts {
    let request = Request::builder()
        .method(Method::DELETE)
        .uri("/items/7?force=1")
        .header("host", "web.default:8080")
        .header("authorization", "Bearer t")
        .header("x-user", "alice")
        .header("x-b3-traceid", "abc")
        .header("cookie", "secret")
        .header("accept", "a")
        .header("accept", "b")
        .body(())
        .expect("request");
    request.into_parts().0
}

fn peers() -> Peers<'static> {
    Peers {
        source: Some(SocketAddr::from(([127, 0, 0, 9], 0))),
        source_principal: Some("cluster.local/ns/default/sa/client"),
        destination: SocketAddr::from(([127, 0, 0, 1], 8080)),
        destination_principal: None,
    }
}

/// A transport answering `answer` (or failing), recording the call.
struct Fake {
    answer: Mutex<Option<Result<Answer, String>>>,
    seen: Mutex<Option<Call>>,
}

impl Fake {
    fn new(answer: Result<Answer, String>) -> Self {
        Self {
            answer: Mutex::new(Some(answer)),
            seen: Mutex::new(None),
        }
    }
}

impl Transport for Fake {
    async fn call(&self, _: &Provider, call: Call) -> Result<Answer, String> {
        *self.seen.lock().expect("lock") = Some(call);
        self.answer
            .lock()
            .expect("lock")
            .take()
            .unwrap_or_else(|| Err("asked twice".into()))
    }
}

fn option(key: &str, value: &str) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(PbHeader {
            key: key.into(),
            value: value.into(),
            raw_value: Vec::new(),
        }),
        ..Default::default()
    }
}

#[test]
fn grpc_check_carries_the_request_and_the_peers() {
    let check = grpc::check_request(&provider(Protocol::Grpc), &parts(), None, &peers());
    let attributes = check.attributes.expect("attributes");
    let http = attributes.request.and_then(|r| r.http).expect("http");
    assert_eq!(http.method, "DELETE");
    assert_eq!(http.path, "/items/7?force=1");
    assert_eq!(http.host, "web.default:8080");
    assert_eq!(http.headers["accept"], "a,b");
    assert_eq!(http.headers["x-check"], "weft");
    assert_eq!(http.headers[":method"], "DELETE");
    assert_eq!(http.headers["cookie"], "secret", "gRPC sends every header");
    let source = attributes.source.expect("source");
    assert_eq!(
        source.principal,
        "spiffe://cluster.local/ns/default/sa/client"
    );
    let address = source
        .address
        .and_then(|a| a.socket_address)
        .expect("address");
    assert_eq!(address.address, "127.0.0.9");
    let destination = attributes.destination.and_then(|d| d.address);
    assert_eq!(
        destination
            .and_then(|a| a.socket_address)
            .map(|s| s.port_value),
        Some(8080)
    );
}

#[test]
fn http_check_keeps_the_method_prefixes_the_path_and_filters_headers() {
    let request = http::check_request(&provider(Protocol::Http), &parts(), None);
    assert_eq!(request.method(), Method::DELETE);
    assert_eq!(request.uri(), "/check/items/7?force=1");
    let headers = request.headers();
    assert_eq!(headers["host"], "web.default:8080");
    assert_eq!(headers["authorization"], "Bearer t");
    assert_eq!(headers["x-user"], "alice");
    assert_eq!(headers["x-b3-traceid"], "abc");
    assert_eq!(headers["x-check"], "weft");
    assert_eq!(headers["content-length"], "0");
    assert!(headers.get("cookie").is_none(), "not named: not sent");
    assert!(headers.get("accept").is_none());
}

#[tokio::test]
async fn grpc_ok_adds_headers_and_denied_carries_status_headers_and_body() {
    let p = provider(Protocol::Grpc);
    let ok = CheckResponse {
        status: Some(Status::default()),
        http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
            headers: vec![option("x-auth-user", "alice")],
            headers_to_remove: vec!["authorization".into()],
            response_headers_to_add: vec![option("x-auth-note", "ok")],
        })),
    };
    let fake = Fake::new(Ok(Answer::Grpc(ok)));
    let allowed = check(&fake, &p, &parts(), None, &peers())
        .await
        .expect("allowed");
    let mut headers = parts().headers;
    allowed.apply(&mut headers);
    assert_eq!(headers["x-auth-user"], "alice");
    assert!(headers.get("authorization").is_none());
    assert_eq!(allowed.downstream[0].1, "ok");
    assert!(matches!(
        *fake.seen.lock().expect("lock"),
        Some(Call::Grpc(_))
    ));

    let denied = CheckResponse {
        status: Some(Status {
            code: 7,
            message: "no".into(),
        }),
        http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
            status: Some(HttpStatus { code: 451 }),
            headers: vec![option("x-why", "policy")],
            body: "go away".into(),
        })),
    };
    let fake = Fake::new(Ok(Answer::Grpc(denied)));
    let (reply, flags) = check(&fake, &p, &parts(), None, &peers())
        .await
        .expect_err("denied");
    assert_eq!(reply.status(), 451);
    assert_eq!(reply.headers()["x-why"], "policy");
    assert!(flags.contains(ResponseFlag::UnauthorizedExternalService));
    let body = http_body_util::BodyExt::collect(reply.into_body())
        .await
        .expect("body")
        .to_bytes();
    assert_eq!(body, "go away");

    // A denial without a DeniedHttpResponse is a plain 403.
    let bare = CheckResponse {
        status: Some(Status {
            code: 16,
            message: String::new(),
        }),
        http_response: None,
    };
    let fake = Fake::new(Ok(Answer::Grpc(bare)));
    let (reply, _) = check(&fake, &p, &parts(), None, &peers())
        .await
        .expect_err("denied");
    assert_eq!(reply.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn http_answers_pass_only_the_named_headers() {
    let p = provider(Protocol::Http);
    let (head, _) = Response::builder()
        .status(200)
        .header("x-auth-user", "alice")
        .header("x-auth-note", "ok")
        .header("x-internal", "no")
        .body(())
        .expect("response")
        .into_parts();
    let fake = Fake::new(Ok(Answer::Http(head, Bytes::new())));
    let allowed = check(&fake, &p, &parts(), None, &peers())
        .await
        .expect("allowed");
    assert_eq!(allowed.upstream.len(), 1);
    assert_eq!(allowed.upstream[0].0, "x-auth-user");
    assert_eq!(allowed.downstream.len(), 1);
    assert_eq!(allowed.downstream[0].0, "x-auth-note");

    // Denied: the status, every header but framing, and the body.
    let (head, _) = Response::builder()
        .status(401)
        .header("www-authenticate", "Basic")
        .header("content-length", "6")
        .body(())
        .expect("response")
        .into_parts();
    let fake = Fake::new(Ok(Answer::Http(head, Bytes::from_static(b"log in"))));
    let (reply, flags) = check(&fake, &p, &parts(), None, &peers())
        .await
        .expect_err("denied");
    assert_eq!(reply.status(), 401);
    assert_eq!(reply.headers()["www-authenticate"], "Basic");
    assert!(flags.contains(ResponseFlag::UnauthorizedExternalService));
}

#[tokio::test]
async fn failures_follow_fail_open_and_status_on_error() {
    let mut p = provider(Protocol::Grpc);
    let fake = Fake::new(Err("connection refused".into()));
    let (reply, flags) = check(&fake, &p, &parts(), None, &peers())
        .await
        .expect_err("closed");
    assert_eq!(reply.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(flags.contains(ResponseFlag::UnauthorizedExternalService));
    p.fail_open = true;
    let fake = Fake::new(Err("timeout".into()));
    let allowed = check(&fake, &p, &parts(), None, &peers())
        .await
        .expect("open");
    assert!(allowed.upstream.is_empty());
}

#[test]
fn grpc_header_options_follow_append_and_append_action() {
    use weft_proto::envoy::config::core::v3::header_value_option::HeaderAppendAction;
    let with = |key: &str, append: Option<bool>, action: HeaderAppendAction| HeaderValueOption {
        append: append.map(|value| pbjson_types::BoolValue { value }),
        append_action: action as i32,
        ..option(key, "authz")
    };
    let ok = CheckResponse {
        status: Some(Status::default()),
        http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
            headers: vec![
                // Unset: replaces (OkHttpResponse's documented default).
                with("x-user", None, HeaderAppendAction::AppendIfExistsOrAdd),
                with(
                    "accept",
                    Some(true),
                    HeaderAppendAction::AppendIfExistsOrAdd,
                ),
                // `append` wins over the action.
                with("x-b3-traceid", Some(false), HeaderAppendAction::AddIfAbsent),
                with("cookie", None, HeaderAppendAction::AddIfAbsent),
                with("x-new", None, HeaderAppendAction::AddIfAbsent),
                with("x-missing", None, HeaderAppendAction::OverwriteIfExists),
                with("authorization", None, HeaderAppendAction::OverwriteIfExists),
            ],
            response_headers_to_add: vec![
                with("x-note", None, HeaderAppendAction::AppendIfExistsOrAdd),
                with(
                    "x-only",
                    Some(false),
                    HeaderAppendAction::AppendIfExistsOrAdd,
                ),
            ],
            ..Default::default()
        })),
    };
    let Outcome::Allow(allowed) = grpc::outcome(ok) else {
        panic!("denied");
    };
    let mut headers = parts().headers;
    allowed.apply(&mut headers);
    let all = |name: &str| -> Vec<&str> {
        headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().expect("ascii"))
            .collect()
    };
    assert_eq!(all("x-user"), ["authz"]);
    assert_eq!(all("accept"), ["a", "b", "authz"]);
    assert_eq!(all("x-b3-traceid"), ["authz"]);
    assert_eq!(all("cookie"), ["secret"]);
    assert_eq!(all("x-new"), ["authz"]);
    assert!(all("x-missing").is_empty());
    assert_eq!(all("authorization"), ["authz"]);
    let mut response = ::http::HeaderMap::new();
    response.insert("x-note", HeaderValue::from_static("app"));
    response.insert("x-only", HeaderValue::from_static("app"));
    apply_edits(&allowed.downstream, &mut response);
    assert_eq!(response.get_all("x-note").iter().count(), 2);
    assert_eq!(
        response.get_all("x-only").iter().collect::<Vec<_>>(),
        ["authz"]
    );
}

async fn read_ahead(max_bytes: usize, pack_as_bytes: bool, sent: &'static [u8]) -> Buffered {
    use http_body_util::BodyExt as _;
    let limit = BodyLimit {
        max_bytes,
        allow_partial: true,
        pack_as_bytes,
    };
    let mut body = http_body_util::Full::new(bytes::Bytes::from_static(sent))
        .map_err(|never| match never {})
        .boxed_unsync();
    body::buffer(&::http::HeaderMap::new(), &mut body, limit)
        .await
        .expect("read")
}

#[tokio::test]
async fn checks_carry_the_body_read_ahead() {
    let mut p = provider(Protocol::Grpc);
    let read = read_ahead(4, false, b"caf\xc3\xa9!").await;
    p.body = Some(BodyLimit {
        max_bytes: 4,
        allow_partial: true,
        pack_as_bytes: false,
    });
    let check = grpc::check_request(&p, &parts(), Some(&read), &peers());
    let http = check
        .attributes
        .and_then(|a| a.request?.http)
        .expect("http");
    // Cut at 4 bytes, inside the é: the string replaces the half byte.
    assert_eq!(http.body, "caf\u{fffd}");
    assert!(http.raw_body.is_empty());
    assert_eq!(http.headers["x-envoy-auth-partial-body"], "true");

    p.body = p.body.map(|b| BodyLimit {
        pack_as_bytes: true,
        ..b
    });
    let read = read_ahead(16, true, b"\x00\xff").await;
    let check = grpc::check_request(&p, &parts(), Some(&read), &peers());
    let http = check
        .attributes
        .and_then(|a| a.request?.http)
        .expect("http");
    assert_eq!(http.raw_body, b"\x00\xff");
    assert!(http.body.is_empty());
    assert_eq!(http.headers["x-envoy-auth-partial-body"], "false");

    let read = read_ahead(16, false, b"name=alice").await;
    let request = http::check_request(&provider(Protocol::Http), &parts(), Some(&read));
    assert_eq!(request.headers()["content-length"], "10");
    assert_eq!(request.headers()["x-envoy-auth-partial-body"], "false");
    let sent = http_body_util::BodyExt::collect(request.into_body())
        .await
        .expect("body")
        .to_bytes();
    assert_eq!(sent, "name=alice");
}

#[tokio::test]
async fn a_connection_check_carries_only_the_peers_and_follows_the_status() {
    let mut peers = peers();
    peers.destination_principal = Some("cluster.local/ns/default/sa/server");
    let deny = CheckResponse {
        status: Some(Status {
            code: 7,
            message: "no".into(),
        }),
        http_response: None,
    };
    let grpc = provider(Protocol::Grpc);
    let fake = Fake::new(Ok(Answer::Grpc(deny)));
    let refused = check_connection(&fake, &grpc, &peers).await;
    assert_eq!(refused, Err(ResponseFlag::UnauthorizedExternalService));
    let Some(Call::Grpc(sent)) = fake.seen.lock().expect("lock").take() else {
        panic!("no gRPC check sent");
    };
    let attributes = sent.attributes.expect("attributes");
    assert!(attributes.request.is_none(), "a connection has no request");
    assert_eq!(
        attributes.destination.expect("destination").principal,
        "spiffe://cluster.local/ns/default/sa/server"
    );
    assert_eq!(
        attributes.source.expect("source").principal,
        "spiffe://cluster.local/ns/default/sa/client"
    );
    let ok = Fake::new(Ok(Answer::Grpc(CheckResponse::default())));
    assert_eq!(check_connection(&ok, &grpc, &peers).await, Ok(()));
    // No answer: failOpen decides.
    let dead = Fake::new(Err("refused".into()));
    assert_eq!(
        check_connection(&dead, &grpc, &peers).await,
        Err(ResponseFlag::UnauthorizedExternalService)
    );
    let open = Provider {
        fail_open: true,
        ..provider(Protocol::Grpc)
    };
    let dead = Fake::new(Err("refused".into()));
    assert_eq!(check_connection(&dead, &open, &peers).await, Ok(()));
    // An HTTP provider cannot check a connection and is never called.
    let http = Fake::new(Err("must not be called".into()));
    assert_eq!(
        check_connection(&http, &provider(Protocol::Http), &peers).await,
        Ok(())
    );
    assert!(http.seen.lock().expect("lock").is_none());
}
