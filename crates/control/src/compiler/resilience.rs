//! VirtualService `retries` and `fault` → the proxy's `RetryPolicy` and
//! `FaultInjection`, with Istio's defaults.

use weft_api::field::parse_duration;
use weft_api::networking::HttpRoute;
use weft_proto::proxy::v1 as pb;

/// Istio's `DefaultPolicy()` retries.
const DEFAULT_ATTEMPTS: u32 = 2;
/// Istio's default `retryOn`. Since 1.24 no status code comes with
/// `retriable-status-codes` (503 is excluded as unsafe to retry).
const DEFAULT_RETRY_ON: [&str; 5] = [
    "connect-failure",
    "refused-stream",
    "unavailable",
    "cancelled",
    "retriable-status-codes",
];
/// The retryOn names the proxy implements. Istio also accepts a few Envoy
/// names the proxy does not (yet): those are dropped with a warning.
const SUPPORTED_RETRY_ON: [&str; 12] = [
    "5xx",
    "gateway-error",
    "reset",
    "connect-failure",
    "refused-stream",
    "retriable-4xx",
    "retriable-status-codes",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];
const RETRIABLE_STATUS_CODES: &str = "retriable-status-codes";

/// Istio's policy for routes whose VirtualService says nothing about
/// retries, and for services without any VirtualService.
pub(super) fn default_retry_policy() -> pb::RetryPolicy {
    pb::RetryPolicy {
        attempts: DEFAULT_ATTEMPTS,
        per_try_timeout: None,
        retry_on: DEFAULT_RETRY_ON.iter().map(|s| s.to_string()).collect(),
        retriable_status_codes: Vec::new(),
        backoff: None,
        retry_remote_localities: false,
    }
}

/// The rule's retry policy: Istio's default without `retries`, none with
/// `attempts: 0`. Like Istio's `ConvertPolicy`, an explicit policy starts
/// from the default, so an empty `retryOn` keeps the default conditions.
pub(super) fn retry_policy(
    http: &HttpRoute,
    at: &str,
    warnings: &mut Vec<String>,
) -> Option<pb::RetryPolicy> {
    let mut policy = default_retry_policy();
    let Some(retries) = &http.retries else {
        return Some(policy);
    };
    if retries.attempts <= 0 {
        return None;
    }
    policy.attempts = retries.attempts as u32;
    policy.per_try_timeout = parse_duration(&retries.per_try_timeout)
        .filter(|d| !d.is_zero())
        .map(Into::into);
    policy.backoff = parse_duration(&retries.backoff)
        .filter(|d| !d.is_zero())
        .map(Into::into);
    policy.retry_remote_localities = retries.retry_remote_localities == Some(true);
    let entries: Vec<&str> = retries
        .retry_on
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    if !entries.is_empty() {
        policy.retry_on.clear();
        let mut ignored = Vec::new();
        for entry in entries {
            if let Ok(code) = entry.parse::<u32>() {
                if !policy.retriable_status_codes.contains(&code) {
                    policy.retriable_status_codes.push(code);
                }
                push_unique(&mut policy.retry_on, RETRIABLE_STATUS_CODES);
            } else if SUPPORTED_RETRY_ON.contains(&entry) {
                push_unique(&mut policy.retry_on, entry);
            } else {
                ignored.push(entry);
            }
        }
        if !ignored.is_empty() {
            warnings.push(format!(
                "{at}: retries.retryOn {} not supported yet; ignored",
                ignored.join(", ")
            ));
        }
    }
    Some(policy)
}

fn push_unique(list: &mut Vec<String>, value: &str) {
    if !list.iter().any(|v| v == value) {
        list.push(value.to_string());
    }
}

/// The rule's fault injection, or `None`. Parts the proxy cannot inject
/// (exponential delays, HTTP/2 errors) are left out with a warning.
pub(super) fn fault(
    http: &HttpRoute,
    at: &str,
    warnings: &mut Vec<String>,
) -> Option<pb::FaultInjection> {
    let fault = http.fault.as_ref()?;
    let mut out = pb::FaultInjection::default();
    if let Some(delay) = &fault.delay {
        // Istio: an unset percentage delays nothing; `percent` is the
        // deprecated integer form.
        let percentage = delay
            .percentage
            .as_ref()
            .map(|p| p.value)
            .or(delay.percent.map(f64::from))
            .unwrap_or(0.0);
        match parse_duration(&delay.fixed_delay) {
            Some(fixed) => {
                out.delay = Some(pb::FaultDelay {
                    fixed_delay: Some(fixed.into()),
                    percentage,
                });
            }
            None => warnings.push(format!(
                "{at}: fault.delay without fixedDelay (exponentialDelay) not supported yet; ignored"
            )),
        }
    }
    if let Some(abort) = &fault.abort {
        let percentage = abort.percentage.as_ref().map_or(0.0, |p| p.value);
        let http_status = abort.http_status.map_or(0, |s| s.max(0) as u32);
        let grpc_status = match abort.grpc_status.as_deref().map(grpc_code) {
            Some(Some(code)) => code,
            Some(None) => {
                warnings.push(format!(
                    "{at}: fault.abort.grpcStatus {:?} is not a gRPC status; ignored",
                    abort.grpc_status.as_deref().unwrap_or_default()
                ));
                0
            }
            None => 0,
        };
        if abort.http2_error.is_some() {
            warnings.push(format!(
                "{at}: fault.abort.http2Error not supported yet; ignored"
            ));
        }
        if http_status != 0 || grpc_status != 0 {
            out.abort = Some(pb::FaultAbort {
                http_status,
                grpc_status,
                percentage,
            });
        }
    }
    (out != pb::FaultInjection::default()).then_some(out)
}

/// A gRPC status by its canonical name (`UNAVAILABLE`) or number.
fn grpc_code(status: &str) -> Option<u32> {
    const NAMES: [&str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    let status = status.trim();
    let code = match status.parse::<u32>() {
        Ok(code) => code,
        Err(_) => NAMES.iter().position(|n| n.eq_ignore_ascii_case(status))? as u32,
    };
    // OK is no fault.
    (1..=16).contains(&code).then_some(code)
}
