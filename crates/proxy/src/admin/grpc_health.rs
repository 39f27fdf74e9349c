//! The kubelet's gRPC probe, replayed: one `grpc.health.v1.Health/Check`
//! over plain-text HTTP/2, healthy only when the app says `SERVING`.
//!
//! The two messages are declared here (one field each) rather than
//! generated from health.proto: that is all of the service a probe uses.

use std::net::SocketAddr;

use http::uri::PathAndQuery;
use tonic::transport::Endpoint;

use super::app_probes::Verdict;

const CHECK: &str = "/grpc.health.v1.Health/Check";
/// `HealthCheckResponse.ServingStatus.SERVING`.
const SERVING: i32 = 1;

#[derive(Clone, PartialEq, prost::Message)]
struct HealthCheckRequest {
    #[prost(string, tag = "1")]
    service: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct HealthCheckResponse {
    #[prost(int32, tag = "1")]
    status: i32,
}

/// Asks the app at `address` about `service` ("" is the whole server).
/// The caller bounds the time taken.
pub async fn check(address: SocketAddr, service: &str) -> Verdict {
    let what = if service.is_empty() {
        format!("gRPC health of {address}")
    } else {
        format!("gRPC health of {service:?} on {address}")
    };
    let endpoint = match Endpoint::from_shared(format!("http://{address}")) {
        Ok(endpoint) => endpoint,
        Err(err) => return Verdict::Failing(format!("{what}: {err}")),
    };
    let channel = match endpoint.connect().await {
        Ok(channel) => channel,
        Err(err) => return Verdict::Unreachable(format!("{what}: cannot connect: {err}")),
    };
    let mut client = tonic::client::Grpc::new(channel);
    if let Err(err) = client.ready().await {
        return Verdict::Unreachable(format!("{what}: {err}"));
    }
    let request = tonic::Request::new(HealthCheckRequest {
        service: service.to_string(),
    });
    let codec = tonic_prost::ProstCodec::<HealthCheckRequest, HealthCheckResponse>::default();
    match client
        .unary(request, PathAndQuery::from_static(CHECK), codec)
        .await
    {
        Ok(answer) if answer.get_ref().status == SERVING => {
            Verdict::Healthy(format!("{what}: SERVING"))
        }
        Ok(answer) => Verdict::Failing(format!("{what}: {}", status_name(answer.get_ref().status))),
        Err(status) => {
            Verdict::Failing(format!("{what}: {:?}: {}", status.code(), status.message()))
        }
    }
}

fn status_name(status: i32) -> String {
    match status {
        0 => "UNKNOWN".into(),
        1 => "SERVING".into(),
        2 => "NOT_SERVING".into(),
        3 => "SERVICE_UNKNOWN".into(),
        other => format!("status {other}"),
    }
}
