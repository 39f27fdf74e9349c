//! Outlier detection (Istio's `outlierDetection`, Envoy's consecutive 5xx
//! and gateway-error detectors): endpoints that fail several times in a row
//! are ejected from load balancing for a while.
//!
//! Decisions, following Envoy's documented behaviour:
//! - Connect failures and resets count as 503, a per-try timeout as 504
//!   (Envoy maps local-origin errors so when they are not split out).
//! - An ejection lasts `base_ejection_time × times ejected`, capped at
//!   max(300s, base) (Envoy's `max_ejection_time` default).
//! - `max_ejection_percent` caps how many endpoints may be ejected at once,
//!   but one endpoint may always be ejected ("will eject at least one host
//!   regardless of the value"): Istio's default 10% of 2 endpoints still
//!   ejects one.
//! - When fewer than `min_health_percent` of the endpoints are un-ejected,
//!   ejections are ignored and all endpoints are balanced over (panic mode).
//!   With Istio's default 0 this never happens, so a cluster whose every
//!   endpoint is ejected answers "no healthy upstream" (UH).
//! - `splitExternalLocalOriginErrors`: connect failures, resets and
//!   timeouts (local origin: the proxy saw them, the upstream answered
//!   nothing) are counted apart, ejecting after
//!   `consecutiveLocalOriginFailures` in a row, and no longer count towards
//!   the 5xx or gateway-error runs; any HTTP response ends a local-origin run
//!   (Envoy resets the counter on a successful connect).
//! - Ejections end lazily: an endpoint whose time is up returns on the next
//!   pick after it (no timer task); its consecutive counters restart.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::OutlierPolicy;

/// Envoy's `max_ejection_time` default (or the base, when longer).
const MAX_EJECTION_TIME: Duration = Duration::from_secs(300);

/// What one try to an endpoint came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TryResult {
    Status(u16),
    ConnectFailure,
    Reset,
    Timeout,
}

impl TryResult {
    /// Whether the proxy, not the upstream's answer, saw the failure.
    fn is_local_origin(self) -> bool {
        !matches!(self, Self::Status(_))
    }

    /// The HTTP status Envoy's detector counts it as.
    fn code(self) -> u16 {
        match self {
            Self::Status(code) => code,
            Self::ConnectFailure | Self::Reset => 503,
            Self::Timeout => 504,
        }
    }
}

#[derive(Debug, Default, Clone)]
struct Host {
    consecutive_5xx: u32,
    consecutive_gateway: u32,
    /// Local-origin failures in a row (only counted when split out).
    consecutive_local: u32,
    /// Times ejected so far: the ejection time multiplier.
    ejections: u32,
    ejected_until: Option<Instant>,
}

/// The detector's state for one cluster, indexed like its endpoints.
pub struct Outlier {
    pub policy: OutlierPolicy,
    index: HashMap<SocketAddr, usize>,
    hosts: Mutex<Vec<Host>>,
}

/// Which endpoints a pick may use.
pub enum Eligible {
    All,
    /// Per endpoint index: `true` when ejected.
    Except(Vec<bool>),
    /// Every endpoint is ejected and panic mode does not apply.
    None,
}

impl Outlier {
    pub fn new(policy: OutlierPolicy, addresses: impl Iterator<Item = SocketAddr>) -> Self {
        let addresses: Vec<SocketAddr> = addresses.collect();
        // Indexed like the endpoints; a repeated address shares the first's
        // state.
        let index: HashMap<SocketAddr, usize> = addresses
            .iter()
            .enumerate()
            .rev()
            .map(|(i, a)| (*a, i))
            .collect();
        let hosts = vec![Host::default(); addresses.len()];
        Self {
            policy,
            index,
            hosts: Mutex::new(hosts),
        }
    }

    /// Takes over what `before` (the same cluster in the config being
    /// replaced) knew of the endpoints both have: a config change must not
    /// end ejections or reset counters.
    pub fn carry_from(&self, before: &Outlier) {
        let old = before.hosts.lock().unwrap_or_else(|p| p.into_inner());
        let mut hosts = self.hosts.lock().unwrap_or_else(|p| p.into_inner());
        for (addr, position) in &self.index {
            let kept = before.index.get(addr).and_then(|i| old.get(*i));
            if let (Some(kept), Some(host)) = (kept, hosts.get_mut(*position)) {
                *host = kept.clone();
            }
        }
    }

    /// Counts one try's result; returns how long the endpoint is ejected
    /// for when this result ejects it.
    pub fn record(&self, addr: SocketAddr, result: TryResult, now: Instant) -> Option<Duration> {
        let position = *self.index.get(&addr)?;
        let mut hosts = self.hosts.lock().unwrap_or_else(|p| p.into_inner());
        let host = hosts.get_mut(position)?;
        if host.ejected_until.is_some_and(|until| until > now) {
            // Only reached in panic mode; an ejected host is not re-judged.
            return None;
        }
        let policy = &self.policy;
        let tripped = match policy.local_origin {
            Some(limit) if result.is_local_origin() => {
                host.consecutive_local += 1;
                limit > 0 && host.consecutive_local >= limit
            }
            split => {
                if split.is_some() {
                    // The upstream answered: the connection worked.
                    host.consecutive_local = 0;
                }
                count_status(host, policy, result.code())
            }
        };
        if !tripped {
            return None;
        }
        let ejected = hosts
            .iter()
            .filter(|h| h.ejected_until.is_some_and(|until| until > now))
            .count();
        if !may_eject(ejected, hosts.len(), policy.max_ejection_percent) {
            return None;
        }
        let host = hosts.get_mut(position)?;
        host.ejections = host.ejections.saturating_add(1);
        let time = ejection_time(policy.base_ejection_time, host.ejections);
        host.ejected_until = Some(now + time);
        host.consecutive_5xx = 0;
        host.consecutive_gateway = 0;
        host.consecutive_local = 0;
        Some(time)
    }

    /// Ends ejections whose time is up, then says which endpoints a pick
    /// may use.
    pub fn eligible(&self, now: Instant) -> Eligible {
        let mut hosts = self.hosts.lock().unwrap_or_else(|p| p.into_inner());
        let mut ejected = Vec::with_capacity(hosts.len());
        for host in hosts.iter_mut() {
            match host.ejected_until {
                Some(until) if until > now => ejected.push(true),
                Some(_) => {
                    host.ejected_until = None;
                    host.consecutive_5xx = 0;
                    host.consecutive_gateway = 0;
                    host.consecutive_local = 0;
                    ejected.push(false);
                }
                None => ejected.push(false),
            }
        }
        let count = ejected.iter().filter(|e| **e).count();
        if count == 0 || panics(count, ejected.len(), self.policy.min_health_percent) {
            Eligible::All
        } else if count == ejected.len() {
            Eligible::None
        } else {
            Eligible::Except(ejected)
        }
    }

    /// Ejected endpoints now, for `/clusters`.
    pub fn is_ejected(&self, addr: SocketAddr, now: Instant) -> bool {
        let Some(position) = self.index.get(&addr) else {
            return false;
        };
        let hosts = self.hosts.lock().unwrap_or_else(|p| p.into_inner());
        hosts
            .get(*position)
            .and_then(|h| h.ejected_until)
            .is_some_and(|until| until > now)
    }
}

/// Counts an HTTP status (or a local-origin failure mapped to one) towards
/// the 5xx and gateway-error runs; `true` when one of them trips.
fn count_status(host: &mut Host, policy: &OutlierPolicy, code: u16) -> bool {
    if !(500..600).contains(&code) {
        host.consecutive_5xx = 0;
        host.consecutive_gateway = 0;
        return false;
    }
    host.consecutive_5xx += 1;
    if matches!(code, 502..=504) {
        host.consecutive_gateway += 1;
    } else {
        host.consecutive_gateway = 0;
    }
    (policy.consecutive_5xx > 0 && host.consecutive_5xx >= policy.consecutive_5xx)
        || (policy.consecutive_gateway > 0
            && host.consecutive_gateway >= policy.consecutive_gateway)
}

/// Whether one more endpoint may be ejected when `ejected` of `total` are:
/// within `max_percent`, or none is ejected yet (Envoy always allows one).
fn may_eject(ejected: usize, total: usize, max_percent: u32) -> bool {
    ejected == 0 || (ejected + 1) * 100 <= total * max_percent.min(100) as usize
}

/// Whether too few endpoints are left for ejections to be honoured.
fn panics(ejected: usize, total: usize, min_health_percent: u32) -> bool {
    (total - ejected.min(total)) * 100 < total * min_health_percent.min(100) as usize
}

fn ejection_time(base: Duration, ejections: u32) -> Duration {
    base.saturating_mul(ejections.max(1))
        .min(MAX_EJECTION_TIME.max(base))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DEFAULT_INTERVAL;

    fn policy() -> OutlierPolicy {
        OutlierPolicy {
            consecutive_5xx: 2,
            consecutive_gateway: 0,
            interval: DEFAULT_INTERVAL,
            base_ejection_time: Duration::from_secs(30),
            max_ejection_percent: 100,
            min_health_percent: 0,
            local_origin: None,
        }
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn ejection_percent_always_allows_one() {
        assert!(may_eject(0, 2, 10));
        assert!(!may_eject(1, 2, 10));
        assert!(may_eject(1, 2, 100));
        assert!(may_eject(1, 10, 20));
        assert!(!may_eject(2, 10, 20));
        assert!(may_eject(0, 1, 0));
    }

    #[test]
    fn panic_below_min_health() {
        assert!(!panics(2, 2, 0));
        assert!(panics(1, 2, 60));
        assert!(!panics(1, 2, 50));
    }

    #[test]
    fn ejection_time_grows_and_is_capped() {
        let base = Duration::from_secs(30);
        assert_eq!(ejection_time(base, 1), base);
        assert_eq!(ejection_time(base, 3), Duration::from_secs(90));
        assert_eq!(ejection_time(base, 50), Duration::from_secs(300));
        let long = Duration::from_secs(600);
        assert_eq!(ejection_time(long, 2), long);
    }

    #[test]
    fn consecutive_failures_eject_and_success_resets() {
        let outlier = Outlier::new(policy(), [addr(1), addr(2)].into_iter());
        let now = Instant::now();
        assert_eq!(outlier.record(addr(1), TryResult::Status(500), now), None);
        assert_eq!(outlier.record(addr(1), TryResult::Status(200), now), None);
        assert_eq!(
            outlier.record(addr(1), TryResult::ConnectFailure, now),
            None
        );
        assert_eq!(
            outlier.record(addr(1), TryResult::Status(503), now),
            Some(Duration::from_secs(30))
        );
        assert!(matches!(outlier.eligible(now), Eligible::Except(e) if e == [true, false]));
        // Back after its time, and the second ejection lasts twice as long.
        let later = now + Duration::from_secs(31);
        assert!(matches!(outlier.eligible(later), Eligible::All));
        outlier.record(addr(1), TryResult::Reset, later);
        assert_eq!(
            outlier.record(addr(1), TryResult::Timeout, later),
            Some(Duration::from_secs(60))
        );
    }

    #[test]
    fn gateway_errors_count_separately() {
        let mut policy = policy();
        policy.consecutive_5xx = 0;
        policy.consecutive_gateway = 2;
        let outlier = Outlier::new(policy, [addr(1), addr(2)].into_iter());
        let now = Instant::now();
        outlier.record(addr(1), TryResult::Status(502), now);
        // A non-gateway 5xx breaks the gateway-error run.
        outlier.record(addr(1), TryResult::Status(500), now);
        assert_eq!(outlier.record(addr(1), TryResult::Status(504), now), None);
        assert!(
            outlier
                .record(addr(1), TryResult::Status(503), now)
                .is_some()
        );
    }

    #[test]
    fn split_local_origin_failures_count_apart_from_5xx() {
        let mut policy = policy();
        policy.consecutive_5xx = 3;
        policy.local_origin = Some(2);
        let outlier = Outlier::new(policy, [addr(1), addr(2)].into_iter());
        let now = Instant::now();
        // 5xx, local, 5xx, local: neither run reaches its limit (unsplit,
        // the third 5xx-like result would have ejected).
        assert_eq!(outlier.record(addr(1), TryResult::Status(503), now), None);
        assert_eq!(
            outlier.record(addr(1), TryResult::ConnectFailure, now),
            None
        );
        assert_eq!(outlier.record(addr(1), TryResult::Status(500), now), None);
        // An HTTP answer ended the local-origin run.
        assert_eq!(outlier.record(addr(1), TryResult::Reset, now), None);
        assert_eq!(outlier.record(addr(1), TryResult::Status(200), now), None);
        assert_eq!(outlier.record(addr(1), TryResult::Timeout, now), None);
        assert_eq!(
            outlier.record(addr(1), TryResult::ConnectFailure, now),
            Some(Duration::from_secs(30))
        );
        // 5xx alone still ejects, without help from local failures.
        for _ in 0..2 {
            assert_eq!(
                outlier.record(addr(2), TryResult::Timeout, now + Duration::from_secs(1)),
                None
            );
            outlier.record(addr(2), TryResult::Status(200), now);
        }
        for _ in 0..2 {
            assert_eq!(outlier.record(addr(2), TryResult::Status(502), now), None);
        }
        assert!(
            outlier
                .record(addr(2), TryResult::Status(502), now)
                .is_some()
        );
    }

    #[test]
    fn split_with_zero_count_never_ejects_for_local_failures() {
        let mut policy = policy();
        policy.local_origin = Some(0);
        let outlier = Outlier::new(policy, [addr(1), addr(2)].into_iter());
        let now = Instant::now();
        for _ in 0..10 {
            assert_eq!(outlier.record(addr(1), TryResult::Reset, now), None);
        }
    }

    #[test]
    fn all_ejected_is_none_unless_panicking() {
        let outlier = Outlier::new(policy(), [addr(1), addr(2)].into_iter());
        let now = Instant::now();
        for port in [1, 2] {
            for _ in 0..2 {
                outlier.record(addr(port), TryResult::Status(500), now);
            }
        }
        assert!(matches!(outlier.eligible(now), Eligible::None));
        let mut panicky = policy();
        panicky.min_health_percent = 50;
        let outlier = Outlier::new(panicky, [addr(1), addr(2)].into_iter());
        for port in [1, 2] {
            for _ in 0..2 {
                outlier.record(addr(port), TryResult::Status(500), now);
            }
        }
        assert!(matches!(outlier.eligible(now), Eligible::All));
    }
}
