//! Admission: each claim a credential does not cover is refused with a
//! sentence naming it; what is admitted comes from the credential and the
//! WorkloadGroup.

use std::net::{IpAddr, SocketAddr};

use weft_api::{Object, Resource};
use weft_proto::discovery::v1::{ExplicitListener, InboundListener, Node, WorkloadPort};
use weft_proto::proxy::v1::Protocol;

use super::*;
use crate::ca::SpiffeId;
use crate::ca::caller::{Caller, ProvenIdentity};

const GROUPS: &str = "
apiVersion: networking.istio.io/v1
kind: WorkloadGroup
metadata: {name: reviews, namespace: shop}
spec:
  metadata: {labels: {app: reviews, version: v2}}
  template:
    serviceAccount: reviews
    labels: {version: v1, tier: back}
    ports: {http-web: 9080, grpc: 9090}
---
apiVersion: networking.istio.io/v1
kind: WorkloadGroup
metadata: {name: bare, namespace: shop}
spec:
  template: {}
";

fn groups(namespace: &str, name: &str) -> Option<Object<WorkloadGroup>> {
    weft_api::decode_str(GROUPS, "groups.yaml")
        .resources
        .into_iter()
        .find_map(|resource| match resource {
            Resource::WorkloadGroup(object)
                if object.metadata.name == name && object.metadata.namespace == namespace =>
            {
                Some(object)
            }
            _ => None,
        })
}

fn peer() -> SocketAddr {
    "10.0.0.7:40000".parse().expect("addr")
}

fn workload(group: Option<&str>, sa: &str, address: Option<&str>) -> Caller {
    Caller::Workload {
        identity: ProvenIdentity {
            spiffe: SpiffeId {
                trust_domain: "cluster.local".into(),
                namespace: "shop".into(),
                service_account: sa.into(),
            },
            workload_group: group.map(str::to_string),
            address: address.map(|a| a.parse().expect("ip")),
        },
        peer: peer(),
    }
}

fn reviews() -> Caller {
    workload(Some("reviews"), "reviews", None)
}

fn claim() -> Node {
    Node {
        id: "reviews-1".into(),
        ..Node::default()
    }
}

fn refused(caller: &Caller, node: Node) -> String {
    match admit(caller, node, groups) {
        Ok(admitted) => panic!("admitted: {admitted:?}"),
        Err(refusal) => refusal.0,
    }
}

#[test]
fn a_workload_registers_as_its_group_says() {
    let admitted = admit(&reviews(), claim(), groups).expect("admitted");
    let node = &admitted.node;
    assert_eq!(node.namespace, "shop");
    assert_eq!(node.service_account, "reviews");
    assert_eq!(node.workload, "reviews");
    assert_eq!(node.address, "10.0.0.7", "the connection's address");
    assert!(node.mtls);
    // Metadata labels over template labels, as Istio merges them.
    let labels: Vec<_> = node
        .labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    assert_eq!(labels, ["app=reviews", "tier=back", "version=v2"]);
    let ports: Vec<_> = node
        .ports
        .iter()
        .map(|p| (p.name.as_str(), p.port, p.protocol()))
        .collect();
    assert_eq!(
        ports,
        [
            ("grpc", 9090, Protocol::Grpc),
            ("http-web", 9080, Protocol::Http)
        ]
    );
    assert_eq!(
        admitted.owner,
        Owner::Workload {
            spiffe: "spiffe://cluster.local/ns/shop/sa/reviews".into(),
            group: "reviews".into(),
            address: "10.0.0.7".parse::<IpAddr>().expect("ip"),
        }
    );
}

#[test]
fn a_bound_address_wins_over_the_connection() {
    let caller = workload(Some("reviews"), "reviews", Some("10.1.1.1"));
    let admitted = admit(&caller, claim(), groups).expect("admitted");
    assert_eq!(admitted.node.address, "10.1.1.1");
    let claimed = Node {
        address: "10.0.0.7".into(),
        ..claim()
    };
    let why = refused(&caller, claimed);
    assert!(
        why.contains("claims address \"10.0.0.7\", but its certificate is bound to 10.1.1.1"),
        "{why}"
    );
}

#[test]
fn claims_matching_the_credential_are_accepted() {
    let claimed = Node {
        namespace: "shop".into(),
        service_account: "reviews".into(),
        address: "10.0.0.7".into(),
        labels: [("app".to_string(), "reviews".to_string())].into(),
        ports: vec![WorkloadPort {
            port: 9080,
            ..WorkloadPort::default()
        }],
        inbound_listeners: vec![InboundListener {
            address: "10.0.0.7:15006".into(),
            port: 9080,
        }],
        explicit_listeners: vec![ExplicitListener {
            address: "127.0.0.1:18080".into(),
            ..ExplicitListener::default()
        }],
        ..claim()
    };
    let admitted = admit(&reviews(), claimed, groups).expect("admitted");
    assert_eq!(
        admitted.node.ports.len(),
        2,
        "the group's ports, all of them"
    );
    assert_eq!(admitted.node.inbound_listeners.len(), 1);
}

#[test]
fn claims_beyond_the_credential_are_refused_with_the_reason() {
    let cases = [
        (
            Node {
                namespace: "bank".into(),
                ..claim()
            },
            "claims namespace \"bank\", but its certificate is for namespace \"shop\"",
        ),
        (
            Node {
                service_account: "admin".into(),
                ..claim()
            },
            "claims service account \"admin\"",
        ),
        (
            Node {
                labels: [("app".to_string(), "ratings".to_string())].into(),
                ..claim()
            },
            "claims label app=ratings, but WorkloadGroup shop/reviews gives app=reviews",
        ),
        (
            Node {
                labels: [("role".to_string(), "admin".to_string())].into(),
                ..claim()
            },
            "claims label role=admin, which WorkloadGroup shop/reviews does not give",
        ),
        (
            Node {
                address: "10.9.9.9".into(),
                ..claim()
            },
            "claims address \"10.9.9.9\", but it connects from 10.0.0.7",
        ),
        (
            Node {
                ports: vec![WorkloadPort {
                    port: 22,
                    ..WorkloadPort::default()
                }],
                ..claim()
            },
            "claims port 22, which WorkloadGroup shop/reviews does not declare",
        ),
        (
            Node {
                inbound_listeners: vec![InboundListener {
                    address: "10.9.9.9:9080".into(),
                    port: 9080,
                }],
                ..claim()
            },
            "inbound listener 10.9.9.9:9080 is not on its registration address 10.0.0.7 nor on loopback",
        ),
        (
            Node {
                explicit_listeners: vec![ExplicitListener {
                    address: "192.168.1.1:80".into(),
                    ..ExplicitListener::default()
                }],
                ..claim()
            },
            "listener 192.168.1.1:80 is not on its registration address",
        ),
    ];
    for (node, expected) in cases {
        let why = refused(&reviews(), node);
        assert!(why.contains(expected), "expected {expected:?} in {why:?}");
        assert!(
            why.starts_with("node \"reviews-1\" (spiffe://cluster.local/ns/shop/sa/reviews)"),
            "{why}"
        );
    }
}

#[test]
fn the_group_must_exist_and_name_the_account() {
    let why = refused(&workload(Some("ratings"), "reviews", None), claim());
    assert!(
        why.contains(
            "WorkloadGroup shop/ratings, which its certificate is bound to, does not exist"
        ),
        "{why}"
    );
    let why = refused(&workload(None, "reviews", None), claim());
    assert!(why.contains("bound to no WorkloadGroup"), "{why}");
    let why = refused(&workload(Some("reviews"), "default", None), claim());
    assert!(
        why.contains(
            "WorkloadGroup shop/reviews is for service account \"reviews\", not \"default\""
        ),
        "{why}"
    );
}

#[test]
fn a_group_without_ports_keeps_the_claimed_numbers_without_names() {
    let claimed = Node {
        ports: vec![WorkloadPort {
            port: 8080,
            protocol: Protocol::Http as i32,
            name: "http".into(),
        }],
        ..claim()
    };
    let admitted =
        admit(&workload(Some("bare"), "default", None), claimed, groups).expect("admitted");
    assert_eq!(admitted.node.ports.len(), 1);
    assert_eq!(admitted.node.ports[0].port, 8080);
    assert_eq!(admitted.node.ports[0].protocol(), Protocol::Http);
    assert_eq!(
        admitted.node.ports[0].name, "",
        "a name would remap a service port"
    );
    assert!(admitted.node.labels.is_empty());
}

#[test]
fn plaintext_is_taken_at_its_word_and_anonymous_is_refused() {
    let claimed = Node {
        namespace: "bank".into(),
        labels: [("app".to_string(), "anything".to_string())].into(),
        ..claim()
    };
    let admitted = admit(&Caller::Plaintext { peer: peer() }, claimed.clone(), groups)
        .expect("plaintext is trusted");
    // Taken at its word; what it left out is the default account and the
    // address it connects from.
    assert_eq!(
        admitted.node,
        Node {
            service_account: "default".into(),
            address: "10.0.0.7".into(),
            ..claimed
        }
    );
    assert_eq!(
        admitted.owner,
        Owner::Plaintext {
            namespace: "bank".into(),
            service_account: "default".into(),
            address: "10.0.0.7".into()
        }
    );
    let why = refused(&Caller::Anonymous { peer: peer() }, claim());
    assert!(why.contains("needs a workload certificate"), "{why}");
    let why = refused(&reviews(), Node::default());
    assert_eq!(why, "Hello.node.id is required");
}

#[test]
fn port_names_choose_the_protocol_as_istio_does() {
    for (name, protocol) in [
        ("http", Protocol::Http),
        ("http2-x", Protocol::Http2),
        ("grpc-web", Protocol::Grpc),
        ("tcp-db", Protocol::Tcp),
        ("mysql", Protocol::Tcp),
        ("https", Protocol::Tls),
        ("metrics", Protocol::Unspecified),
    ] {
        assert_eq!(protocol_of_port_name(name), protocol, "{name}");
    }
}
