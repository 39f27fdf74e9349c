//! Tests of the balancer: weights, consistent hashing (ring and Maglev, by
//! header, cookie and query), ejected endpoints skipped, least request,
//! random, priority levels chosen by health, and slow start.

use std::time::Duration;

use super::*;

fn endpoints(weights: &[u32]) -> Vec<Member> {
    weights
        .iter()
        .enumerate()
        .map(|(i, weight)| Member {
            address: SocketAddr::from(([10, 0, 0, i as u8 + 1], 8080)),
            weight: *weight,
            priority: 0,
        })
        .collect()
}

const RING: Algorithm = Algorithm::Ring { minimum_size: 1024 };
const MAGLEV: Algorithm = Algorithm::Maglev { table_size: 65537 };

fn hashed(weights: &[u32], algorithm: Algorithm) -> Balancer {
    Balancer::new(
        &endpoints(weights),
        Policy::RoundRobin,
        Some((HashKey::Header("x-user".to_string()), algorithm)),
    )
}

fn picks(balancer: &Balancer, keys: u64) -> Vec<Option<usize>> {
    (0..keys)
        .map(|k| balancer.pick(None, Some(hash64(&k.to_le_bytes())), &[]))
        .collect()
}

#[test]
fn adding_an_endpoint_keeps_most_keys() {
    for algorithm in [RING, MAGLEV] {
        let before = picks(&hashed(&[1, 1, 1], algorithm), 10_000);
        let after = picks(&hashed(&[1, 1, 1, 1], algorithm), 10_000);
        let kept = before.iter().zip(&after).filter(|(a, b)| a == b).count();
        // Ideal: 3/4 stay. The ring also thins every endpoint's points to
        // keep its size (as Envoy's does), which moves a few more.
        assert!(kept > 6_000, "{algorithm:?}: only {kept} of 10000 kept");
    }
}

#[test]
fn weights_are_respected() {
    for algorithm in [RING, MAGLEV] {
        let got = picks(&hashed(&[1, 3], algorithm), 10_000);
        let heavy = got.iter().filter(|p| **p == Some(1)).count();
        assert!(
            (6_800..=8_200).contains(&heavy),
            "{algorithm:?}: weight 3 of 4 got {heavy} of 10000"
        );
    }
}

#[test]
fn ejected_endpoints_are_skipped_deterministically() {
    let balancer = hashed(&[1, 1, 1], RING);
    let key = Some(hash64(b"alice"));
    let home = balancer.pick(None, key, &[]).expect("endpoint");
    let mut ejected = vec![false; 3];
    ejected[home] = true;
    let moved = balancer.pick(Some(&ejected), key, &[]);
    assert!(moved.is_some() && moved != Some(home));
    assert_eq!(balancer.pick(Some(&ejected), key, &[]), moved);
    // A retry goes to the next distinct entry.
    let retry = balancer.pick(None, key, &[home]);
    assert!(retry.is_some() && retry != Some(home));
}

#[test]
fn keys_come_from_header_cookie_and_query() {
    let header = hashed(&[1, 1], RING);
    let mut headers = HeaderMap::new();
    assert_eq!(header.affinity(&headers, None, None), (None, None));
    headers.insert("x-user", "alice".parse().expect("value"));
    assert_eq!(
        header.affinity(&headers, None, None),
        (Some(hash64(b"alice")), None)
    );

    let cookie = Balancer::new(
        &endpoints(&[1, 1]),
        Policy::RoundRobin,
        Some((
            HashKey::Cookie {
                name: "sticky".to_string(),
                path: "/".to_string(),
                ttl: Duration::from_secs(60),
            },
            RING,
        )),
    );
    let (hash, set) = cookie.affinity(&HeaderMap::new(), None, None);
    let set = set.expect("generated cookie");
    assert!(
        set.starts_with("sticky=") && set.ends_with("; Path=/; Max-Age=60"),
        "{set}"
    );
    let value = set
        .split(';')
        .next()
        .and_then(|kv| kv.strip_prefix("sticky="))
        .expect("value");
    assert_eq!(hash, Some(hash64(value.as_bytes())));
    let mut headers = HeaderMap::new();
    headers.insert(
        http::header::COOKIE,
        format!("a=b; sticky={value}").parse().expect("value"),
    );
    assert_eq!(cookie.affinity(&headers, None, None), (hash, None));

    let query = Balancer::new(
        &endpoints(&[1]),
        Policy::Random,
        Some((HashKey::QueryParameter("u".to_string()), MAGLEV)),
    );
    assert_eq!(
        query.affinity(&HeaderMap::new(), Some("a=1&u=bob"), None).0,
        Some(hash64(b"bob"))
    );
    assert_eq!(query.affinity(&HeaderMap::new(), Some("a=1"), None).0, None);
}

#[test]
fn least_request_prefers_the_less_busy_endpoint() {
    let eps = endpoints(&[1, 1]);
    let balancer = Balancer::new(&eps, Policy::LeastRequest, None);
    let _busy: Vec<Load> = (0..3)
        .filter_map(|_| balancer.track(eps[0].address))
        .collect();
    for _ in 0..20 {
        assert_eq!(balancer.pick(None, None, &[]), Some(1));
    }
}

#[test]
fn random_follows_weights() {
    let balancer = Balancer::new(&endpoints(&[1, 3]), Policy::Random, None);
    let heavy = (0..4_000)
        .filter(|_| balancer.pick(None, None, &[]) == Some(1))
        .count();
    assert!((2_700..=3_300).contains(&heavy), "{heavy}");
}

/// Four endpoints: two at priority 0 (the proxy's locality), one each at
/// 1 and 2.
fn prioritized() -> Balancer {
    let mut list = endpoints(&[1, 1, 1, 1]);
    for (endpoint, priority) in list.iter_mut().zip([0, 0, 1, 2]) {
        endpoint.priority = priority;
    }
    Balancer::new(&list, Policy::RoundRobin, None)
}

fn shares(balancer: &Balancer, ejected: &[bool], n: usize) -> [usize; 4] {
    let mut counts = [0; 4];
    for _ in 0..n {
        if let Some(index) = balancer.pick(Some(ejected), None, &[]) {
            counts[index] += 1;
        }
    }
    counts
}

#[test]
fn healthy_nearest_level_takes_everything() {
    let counts = shares(&prioritized(), &[false; 4], 1_000);
    assert_eq!(counts, [500, 500, 0, 0]);
}

#[test]
fn load_spills_to_the_next_level_as_health_drops() {
    // One of two healthy: 50% × 1.4 = 70% stays, 30% spills to level 1.
    let counts = shares(&prioritized(), &[true, false, false, false], 10_000);
    assert_eq!(counts[0], 0);
    assert!((6_500..=7_500).contains(&counts[1]), "{counts:?}");
    assert!((2_500..=3_500).contains(&counts[2]), "{counts:?}");
    assert_eq!(counts[3], 0, "{counts:?}");
    // The whole nearest level out: the next one takes it all.
    let counts = shares(&prioritized(), &[true, true, false, false], 1_000);
    assert_eq!(counts, [0, 0, 1_000, 0]);
    let counts = shares(&prioritized(), &[true, true, true, false], 1_000);
    assert_eq!(counts, [0, 0, 0, 1_000]);
}

#[test]
fn a_joining_endpoint_warms_up_from_the_minimum_share() {
    let warmup = Warmup {
        duration: Duration::from_secs(10),
        minimum: 0.1,
        aggression: 1.0,
    };
    let now = Instant::now();
    let share_of_new = |joined: Instant| {
        let balancer = Balancer::new(&endpoints(&[1, 1]), Policy::RoundRobin, None)
            .with_warmup(warmup, vec![None, Some(joined)]);
        let picks = (0..10_000)
            .filter(|_| balancer.pick(None, None, &[]) == Some(1))
            .count();
        picks as f64 / 100.0
    };
    // Just joined: weight × 10% → 1/11 of the traffic.
    let fresh = share_of_new(now);
    assert!((6.0..=12.5).contains(&fresh), "{fresh}%");
    // Half way: weight × 50% → 1/3.
    let half = share_of_new(now - Duration::from_secs(5));
    assert!((29.0..=38.0).contains(&half), "{half}%");
    // Warm: round robin again, exactly half.
    let warm = share_of_new(now - Duration::from_secs(11));
    assert_eq!(warm, 50.0);
}
