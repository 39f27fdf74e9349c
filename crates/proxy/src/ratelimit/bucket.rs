//! Local rate limits: one token bucket per rule and proxy, shared by every
//! worker thread without a lock.
//!
//! Contract: a bucket starts full (`max_tokens`), gains `tokens_per_fill`
//! at each whole `fill_interval` since it was created (Envoy's refill
//! timing, not a continuous drip), never holds more than `max_tokens`, and
//! admits a request by taking one token. The state (fills counted, tokens
//! left) is one `AtomicU64` updated by compare-and-swap, so a take costs a
//! load and one CAS in the common case.
//!
//! Buckets outlive config changes: [`Buckets`] keeps them by rule name and
//! shape, so a push that does not touch a rule does not refill its bucket;
//! a changed shape starts a new, full bucket (as Envoy does).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use crate::config::ratelimit::TokenBucketSpec;

/// A lock-free token bucket.
#[derive(Debug)]
pub struct TokenBucket {
    spec: TokenBucketSpec,
    start: Instant,
    /// High 32 bits: fill intervals counted so far; low 32: tokens left.
    state: AtomicU64,
}

fn pack(fills: u32, tokens: u32) -> u64 {
    (u64::from(fills) << 32) | u64::from(tokens)
}

fn unpack(state: u64) -> (u32, u32) {
    ((state >> 32) as u32, state as u32)
}

impl TokenBucket {
    pub fn new(spec: TokenBucketSpec) -> Self {
        Self::starting_at(spec, Instant::now())
    }

    fn starting_at(spec: TokenBucketSpec, start: Instant) -> Self {
        Self {
            spec,
            start,
            state: AtomicU64::new(pack(0, spec.max_tokens)),
        }
    }

    /// Takes a token if there is one: true admits the request.
    pub fn try_take(&self) -> bool {
        self.try_take_at(Instant::now())
    }

    fn try_take_at(&self, now: Instant) -> bool {
        let interval = self.spec.fill_interval.as_nanos().max(1);
        // Counted modulo 2^32: at the 50 ms minimum interval that wraps
        // after six years, and the comparison below is wrapping too.
        let fills_now = (now.saturating_duration_since(self.start).as_nanos() / interval) as u32;
        let mut current = self.state.load(Ordering::Acquire);
        loop {
            let (fills, tokens) = unpack(current);
            let elapsed = fills_now.wrapping_sub(fills);
            // A thread that read the clock later may already have stored a
            // newer count: nothing to add then, and the count is kept.
            let (fills, added) = if elapsed > u32::MAX / 2 {
                (fills, 0)
            } else {
                (
                    fills_now,
                    u64::from(elapsed) * u64::from(self.spec.tokens_per_fill),
                )
            };
            let tokens = (u64::from(tokens) + added).min(u64::from(self.spec.max_tokens)) as u32;
            if tokens == 0 {
                return false;
            }
            match self.state.compare_exchange_weak(
                current,
                pack(fills, tokens - 1),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(actual) => current = actual,
            }
        }
    }
}

/// Every local bucket of a proxy, by rule name.
#[derive(Debug, Default)]
pub struct Buckets {
    by_rule: RwLock<HashMap<String, Arc<TokenBucket>>>,
}

impl Buckets {
    /// The bucket of `rule` with shape `spec`: the one already in use when
    /// the shape is unchanged, else a new full one replacing it. Creating
    /// one (the first request after a config change) also drops the buckets
    /// of rules for which `current` is false, so removed or renamed rules
    /// do not accumulate.
    pub fn get(
        &self,
        rule: &str,
        spec: TokenBucketSpec,
        current: impl Fn(&str) -> bool,
    ) -> Arc<TokenBucket> {
        {
            let map = self.by_rule.read().unwrap_or_else(|p| p.into_inner());
            if let Some(bucket) = map.get(rule).filter(|b| b.spec == spec) {
                return bucket.clone();
            }
        }
        let mut map = self.by_rule.write().unwrap_or_else(|p| p.into_inner());
        // Another worker may have replaced it meanwhile.
        if let Some(bucket) = map.get(rule).filter(|b| b.spec == spec) {
            return bucket.clone();
        }
        map.retain(|name, _| current(name));
        let bucket = Arc::new(TokenBucket::new(spec));
        map.insert(rule.to_string(), bucket.clone());
        bucket
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn spec(max: u32, per_fill: u32, ms: u64) -> TokenBucketSpec {
        TokenBucketSpec {
            max_tokens: max,
            tokens_per_fill: per_fill,
            fill_interval: Duration::from_millis(ms),
        }
    }

    #[test]
    fn a_bucket_starts_full_and_refills_per_whole_interval() {
        let start = Instant::now();
        let bucket = TokenBucket::starting_at(spec(3, 2, 100), start);
        let taken = (0..5).filter(|_| bucket.try_take_at(start)).count();
        assert_eq!(taken, 3);
        // Not a whole interval yet: nothing added.
        assert!(!bucket.try_take_at(start + Duration::from_millis(99)));
        // One interval: two tokens.
        let at = start + Duration::from_millis(100);
        assert_eq!((0..5).filter(|_| bucket.try_take_at(at)).count(), 2);
        // Ten intervals later: capped at max_tokens.
        let at = start + Duration::from_millis(1100);
        assert_eq!((0..10).filter(|_| bucket.try_take_at(at)).count(), 3);
    }

    #[test]
    fn an_earlier_clock_reading_adds_nothing() {
        let start = Instant::now();
        let bucket = TokenBucket::starting_at(spec(1, 1, 100), start);
        assert!(bucket.try_take_at(start + Duration::from_millis(250)));
        // A racing thread's older reading must not look like 2^32 fills.
        assert!(!bucket.try_take_at(start + Duration::from_millis(120)));
    }

    #[test]
    fn workers_share_one_bucket_without_losing_tokens() {
        let bucket = Arc::new(TokenBucket::new(spec(1000, 1, 60_000)));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let bucket = bucket.clone();
                std::thread::spawn(move || (0..500).filter(|_| bucket.try_take()).count())
            })
            .collect();
        let admitted: usize = threads.into_iter().map(|t| t.join().unwrap_or(0)).sum();
        assert_eq!(admitted, 1000);
    }

    #[test]
    fn buckets_survive_an_unchanged_rule_and_restart_on_a_new_shape() {
        let buckets = Buckets::default();
        let all = |_: &str| true;
        let first = buckets.get("ns/a[0]", spec(1, 1, 60_000), all);
        assert!(first.try_take());
        assert!(!buckets.get("ns/a[0]", spec(1, 1, 60_000), all).try_take());
        assert!(buckets.get("ns/a[0]", spec(2, 1, 60_000), all).try_take());
        assert!(buckets.get("ns/a[0]", spec(2, 1, 60_000), all).try_take());
        assert!(!buckets.get("ns/a[0]", spec(2, 1, 60_000), all).try_take());
        // A rule gone from the config loses its (empty) bucket when another
        // is made: coming back, it starts full.
        let _ = buckets.get("ns/b[0]", spec(1, 1, 60_000), |name| name == "ns/b[0]");
        assert!(buckets.get("ns/a[0]", spec(2, 1, 60_000), all).try_take());
    }
}
