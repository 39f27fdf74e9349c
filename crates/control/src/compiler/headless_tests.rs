//! `resolution: NONE` with endpoints (a headless Kubernetes Service, as
//! `registry::kube` maps it; here selected WorkloadEntries): the cluster forwards to the address the
//! client dialled, keeps its endpoints for their mesh TLS, and each
//! endpoint address identifies the service for a caller's proxy.

use weft_proto::discovery::v1::{InboundListener, Node, WorkloadPort};
use weft_proto::proxy::v1 as pb;

use super::MeshIndex;
use super::tests::{config, node, service};
use super::tls::MeshPeers;

/// Istio refuses `endpoints` with NONE; a `workloadSelector` gives the
/// same registry shape as a headless Service with its pods.
const DB: &str = "
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: db, namespace: data}
spec:
  hosts: [db.data.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: NONE
  ports: [{number: 5432, name: tcp, protocol: TCP}]
  workloadSelector: {labels: {app: db}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: db-0, namespace: data}
spec: {address: 10.1.0.5, labels: {app: db}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: db-1, namespace: data}
spec: {address: 10.1.0.6, labels: {app: db}, serviceAccount: db}
";
const HOST: &str = "db.data.svc.cluster.local";
const CLUSTER: &str = "outbound|5432||db.data.svc.cluster.local";

fn index(peers: &MeshPeers) -> MeshIndex {
    let decoded = weft_api::decode_str(DB, "test.yaml");
    assert!(decoded.problems.is_empty(), "{:?}", decoded.problems);
    MeshIndex::build_with_peers(&decoded.resources, &[], peers)
}

fn db_cluster(config: &pb::ProxyConfig) -> &pb::Cluster {
    config
        .clusters
        .iter()
        .find(|c| c.name == CLUSTER)
        .unwrap_or_else(|| panic!("no {CLUSTER} in {:?}", config.clusters))
}

#[test]
fn none_with_endpoints_is_passthrough_matched_by_each_endpoint_address() {
    let config = config(&index(&MeshPeers::default()), &node("front", &[]));
    let cluster = db_cluster(&config);
    let policy = cluster.load_balancer.as_ref().map(|lb| lb.policy());
    assert_eq!(policy, Some(pb::load_balancer::Policy::Passthrough));
    let addresses: Vec<&str> = cluster
        .endpoints
        .iter()
        .map(|e| e.address.as_str())
        .collect();
    assert_eq!(addresses, ["10.1.0.5:5432", "10.1.0.6:5432"]);
    let db = service(&config, HOST).expect("db service");
    assert_eq!(db.cidrs, ["10.1.0.5/32", "10.1.0.6/32"]);
}

/// A pod whose proxy listens for mesh callers on its own inbound listener:
/// the endpoint leads there, secured with the pod's identity, and still
/// says which address clients dial for it.
#[test]
fn a_mesh_pod_endpoint_keeps_its_dialled_address_and_identity() {
    let pod = Node {
        id: "db-1".into(),
        namespace: "data".into(),
        service_account: "db".into(),
        address: "10.1.0.6".into(),
        ports: vec![WorkloadPort {
            port: 5432,
            ..Default::default()
        }],
        inbound_listeners: vec![InboundListener {
            address: "10.1.0.6:15432".into(),
            port: 5432,
        }],
        mtls: true,
        ..Default::default()
    };
    let peers = MeshPeers::new("cluster.local", &[pod]);
    let config = config(&index(&peers), &node("front", &[]));
    let cluster = db_cluster(&config);
    let mesh = cluster
        .endpoints
        .iter()
        .find(|e| e.dialled == "10.1.0.6:5432")
        .unwrap_or_else(|| panic!("no endpoint dialled as the pod {:?}", cluster.endpoints));
    assert_eq!(mesh.address, "10.1.0.6:15432");
    assert_eq!(mesh.identity, "spiffe://cluster.local/ns/data/sa/db");
    let plain = cluster
        .endpoints
        .iter()
        .find(|e| e.address == "10.1.0.5:5432")
        .expect("the pod without a proxy");
    assert_eq!((plain.dialled.as_str(), plain.identity.as_str()), ("", ""));
}
