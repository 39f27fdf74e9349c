//! A route's retry policy and fault injection, compiled and validated (every
//! problem with its field path), so the data path only reads them.

use std::time::Duration;

use http::StatusCode;
use weft_proto::proxy::v1 as pb;

use super::snapshot::{Problems, duration};

/// Envoy's default first backoff.
const DEFAULT_BACKOFF: Duration = Duration::from_millis(25);

/// When a try's outcome allows another try (Envoy's `retry_on`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetryOn {
    /// Any 5xx, reset, connect failure or per-try timeout.
    pub server_error: bool,
    /// 502, 503, 504, reset, connect failure or per-try timeout.
    pub gateway_error: bool,
    /// The connection closed or reset before a response (or a per-try timeout).
    pub reset: bool,
    pub connect_failure: bool,
    /// HTTP/2 REFUSED_STREAM: the upstream did not process the request.
    pub refused_stream: bool,
    /// 409.
    pub retriable_4xx: bool,
    /// The policy's `retriable_status_codes`.
    pub status_codes: bool,
    /// gRPC statuses (in a trailers-only response's headers).
    pub grpc_cancelled: bool,
    pub grpc_deadline_exceeded: bool,
    pub grpc_internal: bool,
    pub grpc_resource_exhausted: bool,
    pub grpc_unavailable: bool,
}

impl RetryOn {
    fn set(&mut self, name: &str) -> bool {
        let field = match name {
            "5xx" => &mut self.server_error,
            "gateway-error" => &mut self.gateway_error,
            "reset" => &mut self.reset,
            "connect-failure" => &mut self.connect_failure,
            "refused-stream" => &mut self.refused_stream,
            "retriable-4xx" => &mut self.retriable_4xx,
            "retriable-status-codes" => &mut self.status_codes,
            "cancelled" => &mut self.grpc_cancelled,
            "deadline-exceeded" => &mut self.grpc_deadline_exceeded,
            "internal" => &mut self.grpc_internal,
            "resource-exhausted" => &mut self.grpc_resource_exhausted,
            "unavailable" => &mut self.grpc_unavailable,
            _ => return false,
        };
        *field = true;
        true
    }
}

#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Retries after the first try.
    pub attempts: u32,
    pub per_try_timeout: Option<Duration>,
    pub on: RetryOn,
    pub status_codes: Vec<StatusCode>,
    /// The first backoff; later ones double, capped at 10×.
    pub backoff: Duration,
    /// `retryRemoteLocalities`: later retries leave out the priority
    /// levels already tried (`http/retry.rs`).
    pub remote_localities: bool,
}

#[derive(Debug, Clone, Default)]
pub struct Fault {
    pub delay: Option<FaultDelay>,
    pub abort: Option<FaultAbort>,
}

#[derive(Debug, Clone)]
pub struct FaultDelay {
    pub delay: Duration,
    /// 0..=100.
    pub percentage: f64,
}

#[derive(Debug, Clone)]
pub struct FaultAbort {
    pub http_status: Option<StatusCode>,
    /// 1..=16.
    pub grpc_status: Option<u32>,
    /// 0..=100.
    pub percentage: f64,
}

pub(super) fn compile_retries(
    policy: Option<&pb::RetryPolicy>,
    path: &str,
    problems: &mut Problems,
) -> Option<RetryPolicy> {
    let policy = policy?;
    let mut on = RetryOn::default();
    for (index, name) in policy.retry_on.iter().enumerate() {
        if !on.set(name) {
            problems.push(
                format!("{path}.retryOn[{index}]"),
                format!("unknown retry condition {name:?}"),
            );
        }
    }
    let mut status_codes = Vec::new();
    for (index, code) in policy.retriable_status_codes.iter().enumerate() {
        match u16::try_from(*code)
            .ok()
            .filter(|c| (100..=599).contains(c))
            .and_then(|c| StatusCode::from_u16(c).ok())
        {
            Some(code) => status_codes.push(code),
            None => problems.push(
                format!("{path}.retriableStatusCodes[{index}]"),
                format!("must be 100..599, got {code}"),
            ),
        }
    }
    let per_try_timeout = duration(
        policy.per_try_timeout.as_ref(),
        &format!("{path}.perTryTimeout"),
        problems,
    )
    .filter(|d| !d.is_zero());
    let backoff = duration(
        policy.backoff.as_ref(),
        &format!("{path}.backoff"),
        problems,
    )
    .filter(|d| !d.is_zero())
    .unwrap_or(DEFAULT_BACKOFF);
    // Zero retries is no policy at all.
    (policy.attempts > 0).then_some(RetryPolicy {
        attempts: policy.attempts,
        per_try_timeout,
        on,
        status_codes,
        backoff,
        remote_localities: policy.retry_remote_localities,
    })
}

pub(super) fn compile_fault(
    fault: Option<&pb::FaultInjection>,
    path: &str,
    problems: &mut Problems,
) -> Option<Fault> {
    let fault = fault?;
    let mut out = Fault::default();
    if let Some(delay) = &fault.delay {
        let d_path = format!("{path}.delay");
        let percentage = percentage(delay.percentage, &format!("{d_path}.percentage"), problems);
        match duration(
            delay.fixed_delay.as_ref(),
            &format!("{d_path}.fixedDelay"),
            problems,
        ) {
            Some(d) => {
                out.delay = Some(FaultDelay {
                    delay: d,
                    percentage,
                })
            }
            None if delay.fixed_delay.is_none() => {
                problems.push(format!("{d_path}.fixedDelay"), "is required")
            }
            None => {}
        }
    }
    if let Some(abort) = &fault.abort {
        let a_path = format!("{path}.abort");
        let percentage = percentage(abort.percentage, &format!("{a_path}.percentage"), problems);
        let http_status = match abort.http_status {
            0 => None,
            status => {
                let parsed = u16::try_from(status)
                    .ok()
                    .filter(|s| (200..=599).contains(s))
                    .and_then(|s| StatusCode::from_u16(s).ok());
                if parsed.is_none() {
                    problems.push(
                        format!("{a_path}.httpStatus"),
                        format!("must be 200..599, got {status}"),
                    );
                }
                parsed
            }
        };
        let grpc_status = match abort.grpc_status {
            0 => None,
            code @ 1..=16 => Some(code),
            code => {
                problems.push(
                    format!("{a_path}.grpcStatus"),
                    format!("must be a gRPC status 1..16, got {code}"),
                );
                None
            }
        };
        if abort.http_status == 0 && abort.grpc_status == 0 {
            problems.push(&a_path, "needs an httpStatus or a grpcStatus");
        }
        out.abort = Some(FaultAbort {
            http_status,
            grpc_status,
            percentage,
        });
    }
    Some(out)
}

fn percentage(value: f64, path: &str, problems: &mut Problems) -> f64 {
    if (0.0..=100.0).contains(&value) {
        value
    } else {
        problems.push(path, format!("must be 0..100, got {value}"));
        0.0
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{Snapshot, parse_config};

    fn problems(route: &str) -> String {
        let config = format!(
            "services: [{{name: s, ports: [{{port: 80, routes: [{{clusters: [{{cluster: a}}], {route}}}]}}]}}]\nclusters: [{{name: a}}]\n"
        );
        match Snapshot::compile(parse_config(&config, "t.yaml").expect("parse"), "t.yaml") {
            Ok(_) => String::new(),
            Err(err) => err.to_string(),
        }
    }

    #[test]
    fn retries_and_faults_are_validated_with_their_paths() {
        let p = "services[0].ports[0].routes[0]";
        let err = problems(
            "retries: {attempts: 2, retryOn: [5xx, bogus], retriableStatusCodes: [700]}, \
             fault: {delay: {percentage: 120}, abort: {percentage: 10}}",
        );
        for expected in [
            format!("{p}.retries.retryOn[1]: unknown retry condition \"bogus\""),
            format!("{p}.retries.retriableStatusCodes[0]: must be 100..599, got 700"),
            format!("{p}.fault.delay.percentage: must be 0..100, got 120"),
            format!("{p}.fault.delay.fixedDelay: is required"),
            format!("{p}.fault.abort: needs an httpStatus or a grpcStatus"),
        ] {
            assert!(err.contains(&expected), "{expected:?} missing from\n{err}");
        }
        assert!(
            problems(
                "retries: {attempts: 3, retryOn: [5xx, gateway-error, unavailable], perTryTimeout: 1s}, \
                 fault: {delay: {fixedDelay: 0.01s, percentage: 50}, abort: {grpcStatus: 14, percentage: 100}}"
            )
            .is_empty()
        );
    }
}
