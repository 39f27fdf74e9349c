//! Locality-aware load balancing, decided per proxy: the same cluster gets
//! different endpoint priorities (failover) or weights (distribute) for a
//! proxy in `us-east/a` than for one in `eu-west/b`.
//!
//! As in Istio:
//! - `distribute` rules (the first whose `from` matches the proxy) set the
//!   share of traffic each locality gets; localities no `to` entry names get
//!   none. They need no outlier detection.
//! - Otherwise, when the cluster has outlier detection (without it a proxy
//!   cannot tell that a locality failed), endpoints are ranked nearest
//!   first: same region/zone/subzone, same zone, same region, the
//!   `failover` target region of the proxy's region, then the rest.
//!   `failoverPriority` labels rank before locality: an endpoint agreeing
//!   with the proxy on more of the leading labels comes first.
//! - `enabled: false` turns all of it off.

use std::collections::BTreeMap;

use weft_proto::discovery::v1::Node;
use weft_proto::proxy::v1 as pb;

/// Endpoint weights under `distribute` are locality shares scaled by this,
/// so integer weights keep the split exact to a hundredth of a share while
/// the proxy's round-robin ring (sum of weights / their gcd) stays small.
const SHARE_SCALE: u64 = 100;

/// Adjusts `cluster` for a proxy at `node`'s locality and labels.
pub(super) fn apply(cluster: &mut pb::Cluster, node: &Node) {
    let setting = cluster
        .load_balancer
        .as_ref()
        .and_then(|lb| lb.locality.clone())
        .unwrap_or_default();
    if setting.disabled || cluster.endpoints.is_empty() {
        return;
    }
    if !node.locality.is_empty()
        && let Some(rule) = setting
            .distribute
            .iter()
            .find(|rule| matches(&rule.from, &node.locality))
    {
        distribute(cluster, rule);
        return;
    }
    if cluster.outlier_detection.is_none()
        || (node.locality.is_empty() && setting.failover_priority.is_empty())
    {
        return;
    }
    let proxy = Parts::of(&node.locality);
    let failover_to: Vec<&str> = setting
        .failover
        .iter()
        .filter(|f| f.from == proxy.region)
        .map(|f| f.to.as_str())
        .collect();
    for endpoint in &mut cluster.endpoints {
        let label_rank = label_rank(&setting.failover_priority, &node.labels, &endpoint.labels);
        let locality_rank = if node.locality.is_empty() {
            0
        } else {
            proxy.distance(&Parts::of(&endpoint.locality), &failover_to)
        };
        endpoint.priority = label_rank * (MAX_DISTANCE + 1) + locality_rank;
    }
    compact_priorities(&mut cluster.endpoints);
}

const MAX_DISTANCE: u32 = 4;

/// `region/zone/subzone`, missing parts empty.
struct Parts<'a> {
    region: &'a str,
    zone: &'a str,
    subzone: &'a str,
}

impl<'a> Parts<'a> {
    fn of(locality: &'a str) -> Self {
        let mut parts = locality.splitn(3, '/');
        Self {
            region: parts.next().unwrap_or(""),
            zone: parts.next().unwrap_or(""),
            subzone: parts.next().unwrap_or(""),
        }
    }

    /// 0: same subzone, 1: same zone, 2: same region, 3: a failover
    /// region named for ours, 4: anywhere else (or unknown).
    fn distance(&self, other: &Parts<'_>, failover_to: &[&str]) -> u32 {
        if other.region.is_empty() || other.region != self.region {
            // Without failover rules every other region is equally far;
            // with them, the regions named for ours come first.
            return if failover_to.is_empty() || failover_to.contains(&other.region) {
                3
            } else {
                MAX_DISTANCE
            };
        }
        if other.zone != self.zone {
            2
        } else if other.subzone != self.subzone {
            1
        } else {
            0
        }
    }
}

/// Istio's locality match: each part of `pattern` is equal, `*`, or empty
/// (matching anything).
fn matches(pattern: &str, locality: &str) -> bool {
    let (pattern, locality) = (Parts::of(pattern), Parts::of(locality));
    let part = |want: &str, have: &str| want.is_empty() || want == "*" || want == have;
    (pattern.region == "*" || pattern.region == locality.region)
        && part(pattern.zone, locality.zone)
        && part(pattern.subzone, locality.subzone)
}

/// How many of the leading `failoverPriority` entries the endpoint fails:
/// `key` asks for the proxy's own value of the label, `key=value` for that
/// value. Matching stops at the first entry that fails.
fn label_rank(
    priority: &[String],
    proxy: &BTreeMap<String, String>,
    endpoint: &BTreeMap<String, String>,
) -> u32 {
    let matched = priority
        .iter()
        .take_while(|entry| match entry.split_once('=') {
            Some((key, value)) => endpoint.get(key).is_some_and(|v| v == value),
            None => endpoint
                .get(entry.as_str())
                .is_some_and(|v| proxy.get(entry.as_str()) == Some(v)),
        })
        .count();
    u32::try_from(priority.len() - matched).unwrap_or(u32::MAX)
}

/// Renumbers priorities 0, 1, 2, ... keeping their order, so that empty
/// levels do not exist.
fn compact_priorities(endpoints: &mut [pb::Endpoint]) {
    let mut levels: Vec<u32> = endpoints.iter().map(|e| e.priority).collect();
    levels.sort_unstable();
    levels.dedup();
    for endpoint in endpoints {
        endpoint.priority = levels
            .iter()
            .position(|l| *l == endpoint.priority)
            .and_then(|p| u32::try_from(p).ok())
            .unwrap_or(0);
    }
}

/// Each `to` share is split evenly among the localities it matches, then
/// among a locality's endpoints by their own weights. Endpoints in
/// localities without a share are dropped.
fn distribute(cluster: &mut pb::Cluster, rule: &pb::LocalityDistribute) {
    // Patterns in a stable order; a locality takes the first that matches.
    let patterns: Vec<(&String, &u32)> = rule.to.iter().collect();
    let pattern_of = |locality: &str| patterns.iter().position(|(p, _)| matches(p, locality));
    let mut localities_per_pattern: BTreeMap<usize, Vec<&str>> = BTreeMap::new();
    let mut weight_per_locality: BTreeMap<&str, u64> = BTreeMap::new();
    for endpoint in &cluster.endpoints {
        if let Some(index) = pattern_of(&endpoint.locality) {
            let list = localities_per_pattern.entry(index).or_default();
            if !list.contains(&endpoint.locality.as_str()) {
                list.push(&endpoint.locality);
            }
            *weight_per_locality.entry(&endpoint.locality).or_default() +=
                u64::from(endpoint.weight.max(1));
        }
    }
    let weights: Vec<Option<u32>> = cluster
        .endpoints
        .iter()
        .map(|endpoint| {
            let index = pattern_of(&endpoint.locality)?;
            let share = u64::from(*patterns[index].1);
            let siblings = localities_per_pattern.get(&index)?.len() as u64;
            let locality_total = *weight_per_locality.get(endpoint.locality.as_str())?;
            let weight = share * SHARE_SCALE * u64::from(endpoint.weight.max(1))
                / (siblings * locality_total);
            (weight > 0).then(|| u32::try_from(weight).unwrap_or(u32::MAX))
        })
        .collect();
    let endpoints = std::mem::take(&mut cluster.endpoints);
    cluster.endpoints = endpoints
        .into_iter()
        .zip(weights)
        .filter_map(|(endpoint, weight)| {
            weight.map(|weight| pb::Endpoint {
                weight,
                priority: 0,
                ..endpoint
            })
        })
        .collect();
}

#[cfg(test)]
#[path = "locality_tests.rs"]
mod tests;
