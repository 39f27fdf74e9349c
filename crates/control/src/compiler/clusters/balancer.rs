//! DestinationRule `loadBalancer` → the proxy's [`pb::LoadBalancer`], with
//! the same precedence as the connection pool: subset over rule, a
//! port-level block over the top level (replacing it whole).

use weft_api::networking::{LoadBalancerSettings, LocalityLbSetting, SimpleLb, TrafficPolicy};
use weft_proto::proxy::v1 as pb;

use pb::consistent_hash::{Algorithm, Key};
use pb::load_balancer::Policy;

/// Istio's `warmup.minimumPercent` default.
const DEFAULT_WARMUP_MINIMUM_PERCENT: f64 = 10.0;

/// The most specific `loadBalancer`, mapped; `None` leaves the proxy's
/// default (LEAST_REQUEST). `label` names the cluster in warnings.
pub(super) fn load_balancer(
    policies: &[Option<&TrafficPolicy>],
    port: u32,
    label: &str,
    warnings: &mut Vec<String>,
) -> Option<pb::LoadBalancer> {
    let lb: &LoadBalancerSettings = super::limits::most_specific!(policies, port, load_balancer)?;
    let policy = match lb.simple {
        Some(SimpleLb::RoundRobin) => Policy::RoundRobin,
        Some(SimpleLb::Random) => Policy::Random,
        Some(SimpleLb::Passthrough) => Policy::Passthrough,
        // LEAST_CONN is the deprecated name of LEAST_REQUEST.
        Some(SimpleLb::LeastRequest | SimpleLb::LeastConn) => Policy::LeastRequest,
        Some(SimpleLb::Unspecified) | None => Policy::Unspecified,
    };
    let consistent_hash = lb.consistent_hash.as_ref().and_then(|hash| {
        let key = if let Some(name) = &hash.http_header_name {
            Key::HttpHeaderName(name.clone())
        } else if let Some(cookie) = &hash.http_cookie {
            Key::HttpCookie(pb::HttpCookie {
                name: cookie.name.clone(),
                path: cookie.path.clone(),
                ttl: weft_api::field::parse_duration(&cookie.ttl).map(Into::into),
            })
        } else if hash.use_source_ip == Some(true) {
            Key::UseSourceIp(true)
        } else if let Some(name) = &hash.http_query_parameter_name {
            Key::HttpQueryParameterName(name.clone())
        } else {
            warnings.push(format!(
                "{label}: loadBalancer.consistentHash without a key; ignored"
            ));
            return None;
        };
        let algorithm = match (&hash.maglev, &hash.ring_hash) {
            (Some(maglev), _) => maglev
                .table_size
                .map(Algorithm::MaglevTableSize)
                .or(Some(Algorithm::MaglevTableSize(0))),
            (None, Some(ring)) => ring
                .minimum_ring_size
                .or(hash.minimum_ring_size)
                .map(Algorithm::RingHashMinimumRingSize),
            (None, None) => hash
                .minimum_ring_size
                .map(Algorithm::RingHashMinimumRingSize),
        };
        Some(pb::ConsistentHash {
            key: Some(key),
            algorithm,
        })
    });
    let locality = lb.locality_lb_setting.as_ref().map(locality_lb);
    // `warmup` replaces the deprecated `warmupDurationSecs`.
    let warmup = match (&lb.warmup, lb.warmup_duration_secs.as_str()) {
        (Some(warmup), _) => Some(pb::Warmup {
            duration: weft_api::field::parse_duration(&warmup.duration).map(Into::into),
            minimum_percent: warmup
                .minimum_percent
                .unwrap_or(DEFAULT_WARMUP_MINIMUM_PERCENT),
            aggression: warmup.aggression.unwrap_or(1.0),
        }),
        (None, "") => None,
        (None, seconds) => Some(pb::Warmup {
            duration: weft_api::field::parse_duration(seconds).map(Into::into),
            minimum_percent: DEFAULT_WARMUP_MINIMUM_PERCENT,
            aggression: 1.0,
        }),
    };
    Some(pb::LoadBalancer {
        policy: policy as i32,
        consistent_hash,
        locality,
        warmup,
    })
}

/// A `localityLbSetting` (a DestinationRule's, or MeshConfig's default)
/// as the proxy config carries it.
pub(in crate::compiler) fn locality_lb(setting: &LocalityLbSetting) -> pb::LocalityLb {
    pb::LocalityLb {
        distribute: setting
            .distribute
            .iter()
            .map(|d| pb::LocalityDistribute {
                from: d.from.clone(),
                to: d.to.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            })
            .collect(),
        failover: setting
            .failover
            .iter()
            .map(|f| pb::LocalityFailover {
                from: f.from.clone(),
                to: f.to.clone(),
            })
            .collect(),
        failover_priority: setting.failover_priority.clone(),
        disabled: setting.enabled == Some(false),
    }
}

#[cfg(test)]
mod tests {
    use weft_proto::proxy::v1::consistent_hash::{Algorithm, Key};
    use weft_proto::proxy::v1::load_balancer::Policy;

    use crate::compiler::tests::{REVIEWS, mesh, workload};

    const HOST: &str = "reviews.shop.svc.cluster.local";

    #[test]
    fn load_balancer_maps_with_subset_and_port_precedence() {
        let yaml = format!(
            "{REVIEWS}---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: reviews, namespace: shop}}
spec:
  host: reviews
  trafficPolicy:
    loadBalancer: {{simple: LEAST_CONN, localityLbSetting: {{enabled: true}}}}
  subsets:
  - name: v1
    labels: {{version: v1}}
    trafficPolicy:
      loadBalancer: {{consistentHash: {{httpCookie: {{name: s, path: /, ttl: 10s}}, ringHash: {{minimumRingSize: 2048}}}}}}
  - name: v2
    labels: {{version: v2}}
    trafficPolicy:
      loadBalancer: {{simple: RANDOM}}
      portLevelSettings:
      - port: {{number: 9080}}
        loadBalancer: {{consistentHash: {{httpHeaderName: x-user, maglev: {{}}}}}}
"
        );
        let v2 = workload(
            "reviews-v2",
            "shop",
            "10.0.0.2",
            &[("app", "reviews"), ("version", "v2")],
        );
        let index = mesh(&yaml, &[v2]);
        let lb = |subset: &str| {
            index.clusters[&format!("outbound|9080|{subset}|{HOST}")]
                .load_balancer
                .clone()
                .expect("load balancer")
        };
        let all = lb("");
        assert_eq!(all.policy, Policy::LeastRequest as i32);
        assert!(all.consistent_hash.is_none());
        let v1 = lb("v1").consistent_hash.expect("hash");
        assert!(
            matches!(v1.key, Some(Key::HttpCookie(ref c)) if c.name == "s" && c.ttl.map(|t| t.seconds) == Some(10))
        );
        assert_eq!(v1.algorithm, Some(Algorithm::RingHashMinimumRingSize(2048)));
        let v2 = lb("v2");
        assert_eq!(v2.policy, Policy::Unspecified as i32);
        let hash = v2.consistent_hash.expect("hash");
        assert_eq!(hash.key, Some(Key::HttpHeaderName("x-user".to_string())));
        assert_eq!(hash.algorithm, Some(Algorithm::MaglevTableSize(0)));
    }
}
