use std::collections::BTreeMap;

use weft_proto::discovery::v1::Node;
use weft_proto::proxy::v1 as pb;

use super::apply;

fn endpoint(address: &str, locality: &str, labels: &[(&str, &str)]) -> pb::Endpoint {
    pb::Endpoint {
        address: address.into(),
        locality: locality.into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    }
}

fn cluster(locality: Option<pb::LocalityLb>, outlier: bool) -> pb::Cluster {
    pb::Cluster {
        name: "c".into(),
        endpoints: vec![
            endpoint("10.0.0.1:80", "us-east/a/1", &[("net", "n1")]),
            endpoint("10.0.0.2:80", "us-east/a/2", &[("net", "n2")]),
            endpoint("10.0.0.3:80", "us-east/b/1", &[("net", "n1")]),
            endpoint("10.0.0.4:80", "eu-west/c/1", &[("net", "n1")]),
            endpoint("10.0.0.5:80", "ap-south/d/1", &[("net", "n1")]),
        ],
        outlier_detection: outlier.then(|| pb::OutlierDetection {
            consecutive_5xx_errors: 5,
            ..Default::default()
        }),
        load_balancer: locality.map(|locality| pb::LoadBalancer {
            locality: Some(locality),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn node(locality: &str, labels: &[(&str, &str)]) -> Node {
    Node {
        locality: locality.into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
        ..Default::default()
    }
}

fn priorities(cluster: &pb::Cluster) -> Vec<u32> {
    cluster.endpoints.iter().map(|e| e.priority).collect()
}

#[test]
fn nearest_first_only_with_outlier_detection() {
    let mut with = cluster(None, true);
    apply(&mut with, &node("us-east/a/1", &[]));
    assert_eq!(priorities(&with), [0, 1, 2, 3, 3]);

    let mut without = cluster(None, true);
    let mut plain = cluster(None, false);
    apply(&mut plain, &node("us-east/a/1", &[]));
    assert_eq!(priorities(&plain), [0, 0, 0, 0, 0]);
    // A proxy that does not know where it runs gets no preference.
    apply(&mut without, &node("", &[]));
    assert_eq!(priorities(&without), [0, 0, 0, 0, 0]);
}

#[test]
fn failover_names_the_next_region_and_disabled_turns_it_off() {
    let failover = pb::LocalityLb {
        failover: vec![pb::LocalityFailover {
            from: "us-east".into(),
            to: "ap-south".into(),
        }],
        ..Default::default()
    };
    let mut c = cluster(Some(failover), true);
    apply(&mut c, &node("us-east/b/1", &[]));
    // us-east/b first, then the rest of us-east, then ap-south, then eu-west.
    assert_eq!(priorities(&c), [1, 1, 0, 3, 2]);

    let off = pb::LocalityLb {
        disabled: true,
        ..Default::default()
    };
    let mut c = cluster(Some(off), true);
    apply(&mut c, &node("us-east/b/1", &[]));
    assert_eq!(priorities(&c), [0, 0, 0, 0, 0]);
}

#[test]
fn failover_priority_labels_rank_before_locality() {
    let by_label = pb::LocalityLb {
        failover_priority: vec!["net".into()],
        ..Default::default()
    };
    let mut c = cluster(Some(by_label), true);
    apply(&mut c, &node("us-east/a/2", &[("net", "n1")]));
    // Same network first (nearest of those first), the other network last
    // even though it is in the proxy's own subzone.
    assert_eq!(priorities(&c), [0, 3, 1, 2, 2]);
}

#[test]
fn distribute_sets_shares_and_drops_unlisted_localities() {
    let distribute = pb::LocalityLb {
        distribute: vec![pb::LocalityDistribute {
            from: "us-east/a/*".into(),
            to: [
                ("us-east/a/*".to_string(), 80),
                ("eu-west/*".to_string(), 20),
            ]
            .into_iter()
            .collect(),
        }],
        ..Default::default()
    };
    let mut c = cluster(Some(distribute.clone()), false);
    apply(&mut c, &node("us-east/a/1", &[]));
    let weights: Vec<(&str, u32)> = c
        .endpoints
        .iter()
        .map(|e| (e.address.as_str(), e.weight))
        .collect();
    // 80% split between the two subzones of us-east/a, 20% to eu-west.
    assert_eq!(
        weights,
        [
            ("10.0.0.1:80", 4_000),
            ("10.0.0.2:80", 4_000),
            ("10.0.0.4:80", 2_000)
        ]
    );
    // A proxy elsewhere is not covered by the rule.
    let mut c = cluster(Some(distribute), false);
    apply(&mut c, &node("eu-west/c/1", &[]));
    assert_eq!(c.endpoints.len(), 5);
}
