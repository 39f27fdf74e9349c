//! Fault injection (Istio's `fault`): after the route matched and before an
//! upstream is chosen, delay the request and/or answer it locally.

use http::{Response, StatusCode};

use crate::body::ProxyBody;
use crate::config::{Fault, FaultAbort};
use crate::flags::{ResponseFlag, ResponseFlags};
use crate::reply::{self, LocalReply};

/// What the fault filter decided for one request.
pub(super) struct Injected {
    /// Sleep this long first.
    pub delay: Option<std::time::Duration>,
    /// Then answer with this instead of forwarding.
    pub abort: Option<FaultAbort>,
}

/// The phase: sleeps for an injected delay (flag DI in `extra`), then
/// `Err` with the abort's answer when one is injected (flag FI).
pub(super) async fn inject(
    fault: &Fault,
    grpc: bool,
    extra: &mut ResponseFlags,
) -> Result<(), Response<ProxyBody>> {
    let injected = decide(fault);
    if let Some(delay) = injected.delay {
        tokio::time::sleep(delay).await;
        *extra = extra.with(ResponseFlag::DelayInjected);
    }
    match injected.abort {
        Some(abort) => Err(abort_response(&abort, grpc, *extra).1),
        None => Ok(()),
    }
}

/// Rolls the dice for both faults; they act independently, as in Istio.
pub(super) fn decide(fault: &Fault) -> Injected {
    Injected {
        delay: fault
            .delay
            .as_ref()
            .filter(|d| hit(d.percentage))
            .map(|d| d.delay),
        abort: fault.abort.clone().filter(|a| hit(a.percentage)),
    }
}

/// The local answer for an abort: for gRPC requests with a gRPC status, a
/// trailers-only response (HTTP 200, `grpc-status`), as Envoy's fault filter
/// sends; otherwise the HTTP status (from the gRPC status if that is all
/// there is).
pub(super) fn abort_response(
    abort: &FaultAbort,
    grpc: bool,
    extra: ResponseFlags,
) -> (StatusCode, Response<ProxyBody>) {
    const MESSAGE: &str = "fault filter abort";
    let flags = extra.with(ResponseFlag::FaultInjected);
    match (grpc, abort.grpc_status, abort.http_status) {
        (true, Some(code), _) => (StatusCode::OK, reply::grpc_status(code, MESSAGE, flags)),
        (_, _, http_status) => {
            let status = http_status
                .or_else(|| abort.grpc_status.map(grpc_to_http))
                .unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            let mut reply = LocalReply::new(status, ResponseFlag::FaultInjected, MESSAGE);
            reply.extra = extra;
            (status, reply.into_response())
        }
    }
}

/// gRPC's status → HTTP mapping (as Envoy's `grpcToHttpStatus`).
fn grpc_to_http(code: u32) -> StatusCode {
    match code {
        1 => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        3 | 9 | 11 => StatusCode::BAD_REQUEST,
        4 => StatusCode::GATEWAY_TIMEOUT,
        5 | 12 => StatusCode::NOT_FOUND,
        6 | 10 => StatusCode::CONFLICT,
        7 => StatusCode::FORBIDDEN,
        8 => StatusCode::TOO_MANY_REQUESTS,
        14 => StatusCode::SERVICE_UNAVAILABLE,
        16 => StatusCode::UNAUTHORIZED,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// True with probability `percentage` / 100.
pub(super) fn hit(percentage: f64) -> bool {
    percentage >= 100.0 || (percentage > 0.0 && random_fraction() * 100.0 < percentage)
}

/// Uniform in [0, 1), from the thread's `rand` generator.
pub(super) fn random_fraction() -> f64 {
    rand::random::<f64>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_hit_about_that_often() {
        assert!(hit(100.0));
        assert!(!hit(0.0));
        let hits = (0..10_000).filter(|_| hit(25.0)).count();
        assert!((2_000..3_000).contains(&hits), "{hits}");
        assert!((0..1000).all(|_| (0.0..1.0).contains(&random_fraction())));
    }
}
