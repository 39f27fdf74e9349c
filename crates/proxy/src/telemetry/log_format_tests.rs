use std::time::{Duration, UNIX_EPOCH};

use http::HeaderMap;

use super::*;
use crate::flags::ResponseFlag;

fn entry<'a>(headers: Option<&'a HeaderMap>) -> Entry<'a> {
    Entry {
        start: Some(UNIX_EPOCH + Duration::from_millis(1_700_000_000_123)),
        method: Some("GET"),
        path: Some("/status/418"),
        protocol: Some("HTTP/1.1"),
        response_code: 503,
        response_flags: ResponseFlag::UpstreamOverflow.into(),
        response_code_details: Some("via_upstream"),
        bytes_received: 7,
        bytes_sent: 81,
        duration_ms: 2,
        upstream_service_time_ms: Some(1),
        authority: Some("web:80"),
        upstream_cluster: Some("outbound|80||web"),
        downstream_remote: Some("127.0.0.9:4000".parse().expect("addr")),
        route_name: Some("default"),
        request_headers: headers,
        ..Entry::default()
    }
}

#[test]
fn text_format_renders_operators_and_dashes() {
    let format = LogFormat::text(
        "[%START_TIME%] %REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL% \
         %RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %DURATION% \
         %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% %BYTES_RECEIVED%/%BYTES_SENT% %UPSTREAM_HOST% \
         %UPSTREAM_CLUSTER% %DOWNSTREAM_REMOTE_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% \
         %UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_PEER_URI_SAN% %REQUESTED_SERVER_NAME% \
         %ROUTE_NAME% %UPSTREAM_TRANSPORT_FAILURE_REASON% %CONNECTION_TERMINATION_DETAILS% \
         %REQ(USER-AGENT)% %RESP(CONTENT-TYPE)%",
    )
    .expect("parses");
    assert_eq!(
        format.render(&entry(None)),
        "[2023-11-14T22:13:20.123Z] GET /status/418 HTTP/1.1 503 UO via_upstream 2 1 7/81 - \
         outbound|80||web 127.0.0.9:4000 - - - - default - - - -"
    );
}

#[test]
fn request_headers_alternatives_and_length_limits() {
    let mut headers = HeaderMap::new();
    headers.insert("x-tenant", "acme-corporation".parse().expect("value"));
    let format = LogFormat::text("%REQ(X-TENANT):4% %REQ(X-MISSING?X-TENANT)% %REQ(:AUTHORITY):3%")
        .expect("parses");
    assert!(format.reads_headers());
    assert_eq!(
        format.render(&entry(Some(&headers))),
        "acme acme-corporation web"
    );
    // Without the header map a header the entry does not know is `-`.
    assert_eq!(format.render(&entry(None)), "- - web");
}

#[test]
fn start_time_pattern() {
    let format = LogFormat::text("%START_TIME(%Y/%m/%d %H:%M:%S.%3f %s)%").expect("parses");
    assert_eq!(
        format.render(&entry(None)),
        "2023/11/14 22:13:20.123 1700000000"
    );
}

#[test]
fn json_labels_keep_value_types() {
    let format = LogFormat::json([
        ("code", "%RESPONSE_CODE%"),
        ("upstream", "%UPSTREAM_HOST%"),
        ("line", "%REQ(:METHOD)% %REQ(:PATH)%"),
        ("flags", "%RESPONSE_FLAGS%"),
    ])
    .expect("parses");
    assert_eq!(
        format.render(&entry(None)),
        r#"{"code":503,"flags":"UO","line":"GET /status/418","upstream":null}"#
    );
}

#[test]
fn unknown_or_malformed_operators_are_errors() {
    for (format, wanted) in [
        ("%PATH%", "unknown command operator PATH"),
        ("x %DURATION", "unterminated"),
        ("%REQ%", "needs (header)"),
        ("%REQ(:PATH):abc%", "is not a number"),
        ("%DURATION(1)%", "takes no argument"),
    ] {
        let err = LogFormat::text(format).expect_err(format);
        assert!(err.contains(wanted), "{format}: {err}");
    }
    let err = LogFormat::json([("who", "%NOPE%")]).expect_err("json");
    assert!(err.starts_with("who: "), "{err}");
}
