//! A Gateway server with `tls.mode: AUTO_PASSTHROUGH` (Istio's east-west
//! gateway): the caller's mesh mTLS, whose SNI is
//! `outbound_.8000_._.httpbin.default.svc.cluster.local`, crosses the
//! gateway untouched to httpbin's cluster, with no VirtualService bound to
//! the gateway. Real weftd with its CA, the httpbin and sleep sidecars and
//! the gateway proxy all holding workload certificates. What proves the
//! pass-through: the app sees `x-forwarded-client-cert` written by
//! httpbin's own sidecar (`By=` httpbin, `URI=` sleep), so the mTLS ended
//! there and not at the gateway; and a client without a mesh certificate,
//! though the gateway forwards its bytes, is refused by httpbin's sidecar.

mod egress_support;
mod mtls_support;

use std::net::SocketAddr;
use std::time::Duration;

use weft_testkit::proxy::ProxyProcess;
use weft_testkit::{free_addr, free_wildcard_port};

use egress_support::rogue_tls;
use mtls_support::{Control, echo_backend, eventually, proxy_binary, service_yaml};

const SNI: &str = "outbound_.8000_._.httpbin.default.svc.cluster.local";

fn yaml(gateway_port: u16) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: WorkloadGroup
metadata: {{name: istio-eastwestgateway, namespace: istio-system}}
spec:
  metadata: {{labels: {{istio: eastwestgateway}}}}
  template: {{serviceAccount: istio-eastwestgateway}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: istio-eastwestgateway, namespace: istio-system}}
spec:
  hosts: [istio-eastwestgateway.istio-system.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: {gateway_port}, name: tls, protocol: TLS}}]
  workloadSelector: {{labels: {{istio: eastwestgateway}}}}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: cross-network-gateway, namespace: istio-system}}
spec:
  selector: {{istio: eastwestgateway}}
  servers:
  - port: {{number: {gateway_port}, name: tls, protocol: TLS}}
    tls: {{mode: AUTO_PASSTHROUGH}}
    hosts: ['*.local']
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: via-eastwest}}
spec:
  host: istio-eastwestgateway.istio-system.svc.cluster.local
  trafficPolicy:
    tls: {{mode: ISTIO_MUTUAL, sni: {SNI}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: httpbin-via-eastwest}}
spec:
  hosts: [httpbin.default.svc.cluster.local]
  http:
  - route:
    - destination: {{host: istio-eastwestgateway.istio-system.svc.cluster.local, port: {{number: {gateway_port}}}}}
"
    )
}

async fn spawn_gateway(control: &Control) -> ProxyProcess {
    let token = control
        .weftd
        .mint_token_with(
            "istio-system",
            "istio-eastwestgateway",
            Some("127.0.0.1".parse().expect("address")),
            None,
        )
        .await
        .expect("gateway token")
        .token;
    let token_file = control.dir.path().join("eastwest.token");
    std::fs::write(&token_file, token).expect("write token");
    let args = [
        "--router",
        "--node-id",
        "istio-eastwestgateway",
        "--workload",
        "istio-eastwestgateway",
        "--namespace",
        "istio-system",
        "--service-account",
        "istio-eastwestgateway",
        "--label",
        "istio=eastwestgateway",
    ];
    let binary = proxy_binary();
    let options = control.secure_options(&binary, &token_file, &args);
    ProxyProcess::spawn_ready(options, Duration::from_secs(20))
        .await
        .unwrap_or_else(|err| panic!("east-west gateway ready: {err:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_passthrough_carries_mesh_mtls_to_the_service_its_sni_names() {
    let control = Control::start(&[]).await;
    let backend = echo_backend().await;
    let gateway_port = free_wildcard_port();
    control.apply(&service_yaml(backend.addr.port())).await;
    control.apply(&yaml(gateway_port)).await;
    let inbound = free_addr();
    let server = control
        .ready_server("httpbin", backend.addr, inbound, &[])
        .await;
    let gateway = spawn_gateway(&control).await;
    let listen = free_addr();
    let client = control.ready_client("sleep", "sleep", listen, true).await;

    let reply = eventually(listen, "/through", |r| r.status == 200)
        .await
        .unwrap_or_else(|last| {
            panic!(
                "never through the east-west gateway: {last}\n--- gateway\n{}\n--- client\n{}\n--- server\n{}",
                gateway.logs(),
                client.logs(),
                server.logs()
            )
        });
    assert!(
        reply.text().starts_with(
            "xfcc=By=spiffe://cluster.local/ns/default/sa/httpbin;URI=spiffe://cluster.local/ns/default/sa/sleep"
        ),
        "{}",
        reply.text()
    );

    // The gateway only forwards: a client without a mesh certificate is
    // refused where the mTLS ends, at httpbin's sidecar.
    let gateway_addr: SocketAddr = ([127, 0, 0, 1], gateway_port).into();
    let anonymous = rogue_tls(gateway_addr, SNI, None).await;
    assert!(anonymous.is_err(), "{anonymous:?}");
    // An SNI naming no admitted service is closed by the gateway.
    let unknown = rogue_tls(gateway_addr, "outbound_.8000_._.nothing.example.com", None).await;
    assert!(unknown.is_err(), "{unknown:?}");
}
