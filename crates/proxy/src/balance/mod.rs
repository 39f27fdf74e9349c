//! Endpoint selection for a cluster (DestinationRule `loadBalancer`):
//! weighted round robin, least request, random, passthrough, and consistent
//! hashing over a ketama ring or a maglev table, within the priority level
//! (locality) chosen by health.
//!
//! Hash tables are built once per config load; a request only hashes its
//! key and looks it up.
//!
//! This folder is the clusters' runtime, built from the snapshot's plain
//! data and kept beside it ([`cluster`]): the balancer (here), the
//! connection-pool counters ([`limits`]), and outlier ejection
//! ([`outlier`]).

pub mod cluster;
pub mod limits;
pub mod outlier;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use http::HeaderMap;

pub use self::cluster::{Clusters, Live};
use crate::config::{Algorithm, HashKey, MAX_MAGLEV_SIZE, MAX_RING_SIZE, Policy, Warmup};

/// Envoy's overprovisioning factor, in percent: a priority level keeps all
/// traffic until fewer than 1/1.4 (~71%) of its endpoints are healthy.
const OVERPROVISIONING_PERCENT: u64 = 140;
/// A consistent-hash lookup table: endpoint indexes by hash.
enum Table {
    /// Sorted (point, endpoint) pairs; a key belongs to the next point.
    Ring(Vec<(u64, usize)>),
    /// A key belongs to slot `key % len`.
    Maglev(Vec<usize>),
}

pub struct Balancer {
    policy: Policy,
    hash: Option<(HashKey, Table)>,
    /// Per priority level (one level without priorities): endpoint
    /// indexes repeated by weight, the ring round robin walks, and its
    /// position.
    rotations: Vec<(Vec<usize>, AtomicUsize)>,
    /// Per priority level: its endpoints' indexes.
    members: Vec<Vec<usize>>,
    weights: Vec<u64>,
    /// Requests in flight per endpoint (least request reads them).
    active: Arc<[AtomicUsize]>,
    by_addr: HashMap<SocketAddr, usize>,
    /// Priority level per endpoint; empty when all share one level.
    priorities: Vec<u32>,
    warmup: Option<Warmup>,
    /// Per endpoint: when it joined the running cluster (slow start);
    /// `None` for endpoints that need no warm-up.
    joined: Vec<Option<Instant>>,
}

impl Warmup {
    /// The weight factor of an endpoint that joined at `joined`; `None`
    /// once it is warm.
    fn factor(&self, joined: Instant, now: Instant) -> Option<f64> {
        let age = now.saturating_duration_since(joined);
        if age >= self.duration || self.duration.is_zero() {
            return None;
        }
        let progress = age.as_secs_f64() / self.duration.as_secs_f64();
        let curve = progress.powf(1.0 / self.aggression.max(f64::MIN_POSITIVE));
        Some(curve.max(self.minimum).min(1.0))
    }
}

/// Holds one request in flight on an endpoint until dropped.
pub struct Load {
    active: Arc<[AtomicUsize]>,
    index: usize,
}

impl Drop for Load {
    fn drop(&mut self) {
        if let Some(count) = self.active.get(self.index) {
            count.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// What the balancer knows of an endpoint: its address, weight and
/// priority level (0 is the highest). The config's endpoints are turned
/// into these when a snapshot is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    pub address: SocketAddr,
    pub weight: u32,
    pub priority: u32,
}

impl Balancer {
    pub fn new(endpoints: &[Member], policy: Policy, hash: Option<(HashKey, Algorithm)>) -> Self {
        let weights: Vec<u64> = endpoints
            .iter()
            .map(|e| u64::from(e.weight.max(1)))
            .collect();
        let hash = hash.map(|(key, algorithm)| {
            let table = match algorithm {
                Algorithm::Ring { minimum_size } => {
                    Table::Ring(build_ring(endpoints, minimum_size))
                }
                Algorithm::Maglev { table_size } => {
                    Table::Maglev(build_maglev(endpoints, table_size))
                }
            };
            (key, table)
        });
        let mut by_addr = HashMap::new();
        for (index, endpoint) in endpoints.iter().enumerate() {
            by_addr.entry(endpoint.address).or_insert(index);
        }
        let mut priorities: Vec<u32> = endpoints.iter().map(|e| e.priority).collect();
        if priorities.windows(2).all(|w| w[0] == w[1]) {
            priorities.clear();
        }
        let levels = priorities.iter().max().map_or(1, |top| *top as usize + 1);
        let members: Vec<Vec<usize>> = (0..levels)
            .map(|level| {
                (0..endpoints.len())
                    .filter(|i| priorities.get(*i).is_none_or(|p| *p as usize == level))
                    .collect()
            })
            .collect();
        let rotations = members
            .iter()
            .map(|indexes| {
                let level_weights: Vec<u64> = indexes.iter().map(|i| weights[*i]).collect();
                let ring = weighted_rotation(&level_weights)
                    .into_iter()
                    .map(|at| indexes[at])
                    .collect();
                (ring, AtomicUsize::new(0))
            })
            .collect();
        Self {
            warmup: None,
            joined: Vec::new(),
            priorities,
            members,
            rotations,
            policy,
            hash,
            weights,
            active: endpoints.iter().map(|_| AtomicUsize::new(0)).collect(),
            by_addr,
        }
    }

    /// Turns on slow start; `joined[i]` is when endpoint `i` joined the
    /// running cluster (`None`: no warm-up, e.g. it was there from the
    /// start). Consistent hashing and RANDOM ignore it, as in Istio.
    pub fn with_warmup(mut self, warmup: Warmup, joined: Vec<Option<Instant>>) -> Self {
        if matches!(self.policy, Policy::RoundRobin | Policy::LeastRequest) {
            self.warmup = Some(warmup);
            self.joined = joined;
        }
        self
    }

    /// When the endpoint at `addr` joined, if it is (or was) warming up.
    pub fn joined(&self, addr: SocketAddr) -> Option<Instant> {
        self.joined.get(self.index_of(addr)?).copied().flatten()
    }

    pub fn policy(&self) -> Policy {
        self.policy
    }

    pub fn index_of(&self, addr: SocketAddr) -> Option<usize> {
        self.by_addr.get(&addr).copied()
    }

    /// The priority level of endpoint `index`; `None` when all share one.
    pub fn level_of(&self, index: usize) -> Option<u32> {
        self.priorities.get(index).copied()
    }

    /// Counts a request in flight on `addr` until the guard is dropped.
    pub fn track(&self, addr: SocketAddr) -> Option<Load> {
        let index = self.index_of(addr)?;
        self.active.get(index)?.fetch_add(1, Ordering::Relaxed);
        Some(Load {
            active: self.active.clone(),
            index,
        })
    }

    /// The request's hash key, and the `set-cookie` value to send back when
    /// a cookie key was absent and one was generated. No hash policy or a
    /// missing key: `None`, and the cluster's policy picks.
    pub fn affinity(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
        peer: Option<IpAddr>,
    ) -> (Option<u64>, Option<String>) {
        let Some((key, _)) = &self.hash else {
            return (None, None);
        };
        match key {
            HashKey::Header(name) => {
                let mut values = headers.get_all(name.as_str()).iter().peekable();
                if values.peek().is_none() {
                    return (None, None);
                }
                let joined: Vec<&[u8]> = values.map(|v| v.as_bytes()).collect();
                (Some(hash64(&joined.join(&b","[..]))), None)
            }
            HashKey::Cookie { name, path, ttl } => match cookie(headers, name) {
                Some(value) => (Some(hash64(value.as_bytes())), None),
                None => {
                    // Envoy generates the cookie so the client's next
                    // requests carry it and stick to the same endpoint.
                    let value = format!("{:016x}", random_u64());
                    let mut set = format!("{name}={value}");
                    if !path.is_empty() {
                        set.push_str(&format!("; Path={path}"));
                    }
                    // A zero TTL makes a session cookie: no Max-Age.
                    if !ttl.is_zero() {
                        set.push_str(&format!("; Max-Age={}", ttl.as_secs()));
                    }
                    (Some(hash64(value.as_bytes())), Some(set))
                }
            },
            HashKey::SourceIp => (peer.map(|ip| hash64(ip.to_string().as_bytes())), None),
            HashKey::QueryParameter(name) => (
                query.and_then(|q| {
                    q.split('&')
                        .find_map(|pair| match pair.split_once('=') {
                            Some((n, v)) if n == name => Some(v),
                            None if pair == name => Some(""),
                            _ => None,
                        })
                        .map(|v| hash64(v.as_bytes()))
                }),
                None,
            ),
        }
    }

    /// An endpoint index for one try. `ejected` is outlier detection's view
    /// (`None`: all in); `tried` holds endpoints earlier tries used, which
    /// are avoided when another eligible endpoint exists.
    pub fn pick(
        &self,
        ejected: Option<&[bool]>,
        hash: Option<u64>,
        tried: &[usize],
    ) -> Option<usize> {
        self.pick_among(ejected, hash, tried, &[])
    }

    /// As [`Self::pick`], with the priority levels in `skip` taking no load
    /// (retryRemoteLocalities); when that leaves nothing healthy, all
    /// levels count again, as Envoy's previous_priorities resets.
    pub fn pick_among(
        &self,
        ejected: Option<&[bool]>,
        hash: Option<u64>,
        tried: &[usize],
        skip: &[u32],
    ) -> Option<usize> {
        let ejected_at =
            |index: usize| ejected.is_some_and(|e| e.get(index).copied().unwrap_or(false));
        let level = self.pick_level(&ejected_at, skip);
        let out = |index: usize| {
            ejected_at(index) || level.is_some_and(|l| self.priorities.get(index) != Some(&l))
        };
        if let (Some(hash), Some((_, table))) = (hash, &self.hash) {
            return table.lookup(hash, &out, tried);
        }
        let level = level.map_or(0, |l| l as usize);
        if let Some(warming) = self.pick_warming(level, &out) {
            return Some(warming);
        }
        match self.policy {
            // Passthrough without an original destination (an explicit
            // listener) has no address of its own to use: round robin.
            Policy::RoundRobin | Policy::Passthrough => self.round_robin(level, &out),
            Policy::LeastRequest => self.least_request(level, &out),
            Policy::Random => self.random(&out),
        }
    }

    /// The priority level this pick uses, as Envoy spreads load over
    /// levels: each level takes up to its health (healthy share × 1.4) of
    /// what the levels above left, and when all levels together are under
    /// 100% the loads are scaled up proportionally. `None` with one level.
    fn pick_level(&self, ejected: &dyn Fn(usize) -> bool, skip: &[u32]) -> Option<u32> {
        if self.priorities.is_empty() {
            return None;
        }
        // Per level: its healthy share × 1.4, at most 100 %. Read from the
        // level member lists, so a pick allocates nothing.
        let skipped = |members: &Vec<usize>| {
            members
                .first()
                .and_then(|i| self.priorities.get(*i))
                .is_some_and(|level| skip.contains(level))
        };
        let health = |members: &Vec<usize>| -> u64 {
            if members.is_empty() || skipped(members) {
                return 0;
            }
            let healthy = members.iter().filter(|i| !ejected(**i)).count() as u64;
            (healthy * OVERPROVISIONING_PERCENT / members.len() as u64).min(100)
        };
        let sum: u64 = self.members.iter().map(health).sum();
        if sum == 0 && !skip.is_empty() {
            return self.pick_level(ejected, &[]);
        }
        if sum == 0 {
            // Nothing healthy anywhere: the nearest level, whose ejected
            // endpoints outlier detection already reports as UH.
            return Some(0);
        }
        let scale = sum.min(100);
        let mut point = random_u64() % scale;
        let mut left = scale;
        for (level, members) in self.members.iter().enumerate() {
            let load = health(members).min(left);
            if point < load {
                return u32::try_from(level).ok();
            }
            point -= load;
            left -= load;
        }
        u32::try_from(self.members.len().saturating_sub(1)).ok()
    }

    /// While some endpoint of the level is warming up: a weighted random
    /// pick with warm-up factors applied. `None` when none is warming (the
    /// policy picks as usual) or nothing is eligible.
    fn pick_warming(&self, level: usize, out: &dyn Fn(usize) -> bool) -> Option<usize> {
        let warmup = self.warmup.as_ref()?;
        let now = Instant::now();
        let members = self.members.get(level)?;
        // (weight with its warm-up factor, still warming)
        let weight = |index: usize| {
            let factor = self
                .joined
                .get(index)
                .copied()
                .flatten()
                .and_then(|joined| warmup.factor(joined, now));
            (
                self.weights[index] as f64 * factor.unwrap_or(1.0),
                factor.is_some(),
            )
        };
        let eligible = || members.iter().copied().filter(|i| !out(*i));
        let (mut total, mut any_warming) = (0.0, false);
        for index in eligible() {
            let (w, warming) = weight(index);
            total += w;
            any_warming |= warming;
        }
        if !any_warming {
            return None;
        }
        let mut point = (random_u64() as f64 / u64::MAX as f64) * total;
        let mut last = None;
        for index in eligible() {
            let (w, _) = weight(index);
            if point < w {
                return Some(index);
            }
            point -= w;
            last = Some(index);
        }
        last
    }

    fn round_robin(&self, level: usize, out: &dyn Fn(usize) -> bool) -> Option<usize> {
        let (ring, next) = self.rotations.get(level)?;
        let len = ring.len();
        if len == 0 {
            return None;
        }
        let start = next.fetch_add(1, Ordering::Relaxed);
        // The next turn in the ring that belongs to an endpoint still in.
        (0..len)
            .map(|step| ring[start.wrapping_add(step) % len])
            .find(|index| !out(*index))
    }

    /// Power of two choices: the round-robin turn against a random other
    /// endpoint of the level, keeping the one with fewer requests in flight
    /// per unit of weight (Envoy divides active requests by weight). Taking
    /// the first choice from the rotation makes an idle cluster behave
    /// exactly like weighted round robin.
    fn least_request(&self, level: usize, out: &dyn Fn(usize) -> bool) -> Option<usize> {
        let first = self.round_robin(level, out)?;
        let members = self.members.get(level)?;
        let others = members.len().saturating_sub(1);
        if others == 0 {
            return Some(first);
        }
        let at = members.iter().position(|m| *m == first).unwrap_or(0);
        let offset = 1 + (random_u64() % others as u64) as usize;
        let second = members[(at + offset) % members.len()];
        if out(second) {
            return Some(first);
        }
        let load = |i: usize| {
            let active = self.active.get(i).map_or(0, |a| a.load(Ordering::Relaxed)) as u64;
            (active, self.weights.get(i).copied().unwrap_or(1))
        };
        let ((a1, w1), (a2, w2)) = (load(first), load(second));
        // a2/w2 < a1/w1 without division.
        Some(if a2 * w1 < a1 * w2 { second } else { first })
    }

    fn random(&self, out: &dyn Fn(usize) -> bool) -> Option<usize> {
        let total: u64 = (0..self.weights.len())
            .filter(|i| !out(*i))
            .map(|i| self.weights[i])
            .sum();
        if total == 0 {
            return None;
        }
        let mut point = random_u64() % total;
        for (index, weight) in self.weights.iter().enumerate() {
            if out(index) {
                continue;
            }
            if point < *weight {
                return Some(index);
            }
            point -= weight;
        }
        None
    }
}

impl Table {
    /// The key's entry, walking on past ejected endpoints (deterministic:
    /// every request with this key lands on the same next healthy one) and,
    /// for a retry, past endpoints already tried when another is healthy.
    fn lookup(&self, hash: u64, out: &dyn Fn(usize) -> bool, tried: &[usize]) -> Option<usize> {
        let (len, start) = match self {
            Self::Ring(ring) => (ring.len(), ring.partition_point(|(point, _)| *point < hash)),
            Self::Maglev(table) => (table.len(), (hash % table.len().max(1) as u64) as usize),
        };
        let at = |i: usize| match self {
            Self::Ring(ring) => ring[i].1,
            Self::Maglev(table) => table[i],
        };
        let mut healthy = None;
        for step in 0..len {
            let index = at((start + step) % len);
            if out(index) {
                continue;
            }
            if !tried.contains(&index) {
                return Some(index);
            }
            healthy.get_or_insert(index);
        }
        healthy
    }
}

/// Ketama: each endpoint gets points in proportion to its weight, at least
/// `minimum_size` in all, each at the hash of `address_n`.
fn build_ring(endpoints: &[Member], minimum_size: u64) -> Vec<(u64, usize)> {
    let total: u64 = endpoints.iter().map(|e| u64::from(e.weight.max(1))).sum();
    if total == 0 {
        return Vec::new();
    }
    let size = minimum_size.clamp(1, MAX_RING_SIZE);
    let mut ring = Vec::new();
    for (index, endpoint) in endpoints.iter().enumerate() {
        let points = (size * u64::from(endpoint.weight.max(1))).div_ceil(total);
        for n in 0..points.max(1) {
            ring.push((
                hash64(format!("{}_{n}", endpoint.address).as_bytes()),
                index,
            ));
        }
    }
    ring.sort_unstable();
    ring
}

/// Maglev (Eisenbud et al.), weighted as Envoy does: each round an endpoint
/// claims its next preferred free slot once its accumulated weight reaches
/// the largest weight. `size` should be prime so every preference list is a
/// full permutation; a list that runs out simply stops claiming.
fn build_maglev(endpoints: &[Member], size: u64) -> Vec<usize> {
    let size = size.clamp(1, MAX_MAGLEV_SIZE);
    if endpoints.is_empty() {
        return Vec::new();
    }
    let weights: Vec<u64> = endpoints
        .iter()
        .map(|e| u64::from(e.weight.max(1)))
        .collect();
    let max = weights.iter().copied().max().unwrap_or(1);
    let prefs: Vec<(u64, u64)> = endpoints
        .iter()
        .map(|e| {
            let name = e.address.to_string();
            let offset = hash64(name.as_bytes()) % size;
            let skip =
                hash64(format!("{name}#skip").as_bytes()) % size.saturating_sub(1).max(1) + 1;
            (offset, skip)
        })
        .collect();
    let mut table = vec![usize::MAX; size as usize];
    let mut next = vec![0u64; endpoints.len()];
    let mut credit = vec![0u64; endpoints.len()];
    let mut filled = 0u64;
    while filled < size {
        let mut progressed = false;
        for index in 0..endpoints.len() {
            credit[index] += weights[index];
            if credit[index] < max {
                progressed = true;
                continue;
            }
            credit[index] -= max;
            let (offset, skip) = prefs[index];
            while next[index] < size {
                let slot = ((offset + next[index] * skip) % size) as usize;
                next[index] += 1;
                if table[slot] == usize::MAX {
                    table[slot] = index;
                    filled += 1;
                    progressed = true;
                    break;
                }
            }
            if filled == size {
                break;
            }
        }
        if !progressed {
            break;
        }
    }
    // Slots a non-prime size left unclaimed go round robin.
    for (slot, entry) in table.iter_mut().enumerate() {
        if *entry == usize::MAX {
            *entry = slot % endpoints.len();
        }
    }
    table
}

/// Spreads each endpoint's turns through the ring (weights reduced by their
/// common divisor) instead of giving one endpoint a long run.
fn weighted_rotation(weights: &[u64]) -> Vec<usize> {
    let divisor = weights.iter().copied().fold(0, gcd).max(1);
    let weights: Vec<u64> = weights.iter().map(|w| w / divisor).collect();
    let max = weights.iter().copied().max().unwrap_or(0);
    let mut ring = Vec::new();
    for round in 0..max {
        for (index, weight) in weights.iter().enumerate() {
            if round < *weight {
                ring.push(index);
            }
        }
    }
    ring
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// The value of cookie `name` from the request's `cookie` headers.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (n, v) = pair.trim().split_once('=')?;
            (n == name).then(|| v.trim_matches('"'))
        })
}

/// FNV-1a then a splitmix64 finaliser: stable across runs and builds (unlike
/// a randomly keyed hasher), with the high bits mixed for ring placement.
pub fn hash64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// A random pick: the thread's `rand` generator (fast, reseeded by rand).
fn random_u64() -> u64 {
    rand::random()
}

#[cfg(test)]
mod tests;
