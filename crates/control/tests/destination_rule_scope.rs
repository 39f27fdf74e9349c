//! DestinationRules in the caller's, the service's and the root namespace
//! competing for one host, through weftd and real proxies: four callers in
//! four namespaces route to the same subset name `pick`, and each reaches
//! the backend the rule Istio gives it selects (caller's namespace, else
//! the service's when exported to the caller, else the root namespace's).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::Full;
use weft_testkit::backend::{Served, serve};
use weft_testkit::client::Http1Client;
use weft_testkit::free_addr;
use weft_testkit::proxy::ProxyProcess;
use weft_testkit::weftd::WeftdProcess;

const WEFTD: &str = env!("CARGO_BIN_EXE_weftd");
const HOST: &str = "shop.default.svc.cluster.local";

async fn backend(name: &'static str) -> Served {
    serve(move |_request| async move {
        Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from(name))))
    })
    .await
}

fn rules(v1: u16, v2: u16, v3: u16) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: shop, namespace: default}}
spec:
  hosts: [{HOST}]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  endpoints:
  - {{address: 127.0.0.1, ports: {{http: {v1}}}, labels: {{app: shop, version: v1}}}}
  - {{address: 127.0.0.1, ports: {{http: {v2}}}, labels: {{app: shop, version: v2}}}}
  - {{address: 127.0.0.1, ports: {{http: {v3}}}, labels: {{app: shop, version: v3}}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: shop, namespace: default}}
spec:
  hosts: [{HOST}]
  http: [{{route: [{{destination: {{host: {HOST}, subset: pick}}}}]}}]
---
# The caller's own namespace.
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: shop, namespace: front}}
spec:
  host: {HOST}
  exportTo: [.]
  subsets: [{{name: pick, labels: {{version: v1}}}}]
---
# The service's namespace, exported to itself and team only.
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: shop, namespace: default}}
spec:
  host: shop
  exportTo: [., team]
  subsets: [{{name: pick, labels: {{version: v2}}}}]
---
# The root namespace, for everyone.
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: default-namespace, namespace: istio-system}}
spec:
  host: '*.default.svc.cluster.local'
  subsets: [{{name: pick, labels: {{version: v3}}}}]
"
    )
}

async fn caller(weftd: &WeftdProcess, namespace: &str) -> (ProxyProcess, SocketAddr) {
    let listen = free_addr();
    let listen_flag = format!("{listen}={HOST}:80");
    let id = format!("caller-{namespace}");
    let flags = [
        "--node-id",
        &id,
        "--workload",
        &id,
        "--namespace",
        namespace,
        "--listen",
        &listen_flag,
    ];
    let proxy = weftd.plaintext_proxy(&flags).await.expect("proxy ready");
    (proxy, listen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_caller_gets_the_destination_rule_istio_gives_it() {
    let (v1, v2, v3) = (
        backend("v1").await,
        backend("v2").await,
        backend("v3").await,
    );
    let state = tempfile::tempdir().expect("tempdir");
    let weftd = WeftdProcess::start_in(Path::new(WEFTD), state.path())
        .await
        .expect("weftd");
    let reply = weftd
        .apply(&rules(v1.addr.port(), v2.addr.port(), v3.addr.port()))
        .await
        .expect("apply");
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());

    for (namespace, expected) in [
        // Its own namespace's rule, though the service's exists too.
        ("front", "v1"),
        // The service's namespace: its own rule.
        ("default", "v2"),
        // Exported to team by the service's namespace.
        ("team", "v2"),
        // Not exported to elsewhere: the root namespace's rule.
        ("elsewhere", "v3"),
    ] {
        let (proxy, listen) = caller(&weftd, namespace).await;
        let mut client = Http1Client::connect(listen).await.expect("connect");
        for _ in 0..3 {
            let reply = client.get(HOST, "/").await.expect("request");
            assert_eq!(
                reply.status,
                StatusCode::OK,
                "{namespace}: {}",
                proxy.logs()
            );
            assert_eq!(reply.text(), expected, "caller in {namespace}");
        }
    }
}
