//! hyper's timer for server connections, with deadlines on a coarse grid
//! and one timer entry per connection, reused from request to request.
//!
//! hyper arms the header-read timeout anew for every request on a
//! keep-alive connection (it drops the last request's sleep once a head is
//! read). With tokio's timer each new sleep is a new entry in the timer
//! wheel, and registering it may wake the I/O driver through its eventfd:
//! one `write` for about every second request (`bench/syscalls`). So:
//! - deadlines are rounded up to a grid step (an eighth of the timeout, at
//!   most a second): a timeout fires between its duration and one step
//!   later, and re-arms within one step land on the deadline already set;
//! - the tokio sleep under a sleep hyper drops goes back to its connection's
//!   timer, and the next request's sleep moves that entry's deadline
//!   instead of registering a new one. tokio extends a registered entry's
//!   deadline without touching the wheel (the entry is re-filed, by the
//!   driver itself, only when the old deadline comes), so a request costs
//!   no timer syscall and no allocation for the entry.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::rt::{Sleep, Timer};

/// The largest step: a timeout fires at most this much late.
const MAX_STEP: Duration = Duration::from_secs(1);

type Entry = Pin<Box<tokio::time::Sleep>>;

/// One per connection (hyper keeps it in the connection's state).
pub struct CoarseTimer {
    /// The grid's origin.
    origin: Instant,
    step: Duration,
    /// The tokio sleep of the connection's last dropped sleep, if any.
    spare: Arc<Mutex<Option<Entry>>>,
}

impl CoarseTimer {
    /// A grid fine enough for `timeout`.
    pub fn for_timeout(timeout: Duration) -> Self {
        Self {
            origin: Instant::now(),
            step: (timeout / 8).clamp(Duration::from_millis(1), MAX_STEP),
            spare: Arc::default(),
        }
    }

    /// The first grid point at or after `deadline`.
    fn round_up(&self, deadline: Instant) -> Instant {
        let since = deadline.saturating_duration_since(self.origin);
        let step = self.step.as_nanos();
        let steps = since.as_nanos().div_ceil(step);
        // Saturates rather than panics for absurd deadlines.
        let nanos = u64::try_from(steps.saturating_mul(step)).unwrap_or(u64::MAX);
        self.origin + Duration::from_nanos(nanos)
    }

    /// A tokio sleep until `deadline` (on the grid): the spare one moved,
    /// or a new one.
    fn entry(&self, deadline: Instant) -> Entry {
        let spare = self
            .spare
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        match spare {
            Some(mut entry) => {
                if entry.deadline().into_std() != deadline {
                    entry.as_mut().reset(deadline.into());
                }
                entry
            }
            None => Box::pin(tokio::time::sleep_until(deadline.into())),
        }
    }
}

struct CoarseSleep {
    deadline: Instant,
    /// Always `Some` until dropped.
    inner: Option<Entry>,
    /// Where `inner` goes when this is dropped.
    spare: Arc<Mutex<Option<Entry>>>,
}

impl Future for CoarseSleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        match self.inner.as_mut() {
            Some(inner) => inner.as_mut().poll(cx),
            None => Poll::Ready(()),
        }
    }
}

impl Drop for CoarseSleep {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.take() {
            *self.spare.lock().unwrap_or_else(PoisonError::into_inner) = Some(inner);
        }
    }
}

impl Sleep for CoarseSleep {}

impl Timer for CoarseTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Sleep>> {
        self.sleep_until(Instant::now() + duration)
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn Sleep>> {
        let deadline = self.round_up(deadline);
        Box::pin(CoarseSleep {
            deadline,
            inner: Some(self.entry(deadline)),
            spare: self.spare.clone(),
        })
    }

    fn reset(&self, sleep: &mut Pin<Box<dyn Sleep>>, new_deadline: Instant) {
        let deadline = self.round_up(new_deadline);
        match sleep.as_mut().downcast_mut_pin::<CoarseSleep>() {
            // The same grid point: the timer wheel is not touched.
            Some(coarse) if coarse.deadline == deadline => {}
            Some(mut coarse) => {
                coarse.deadline = deadline;
                if let Some(inner) = coarse.inner.as_mut() {
                    inner.as_mut().reset(deadline.into());
                }
            }
            None => *sleep = self.sleep_until(new_deadline),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_round_up_to_the_grid() {
        let timer = CoarseTimer::for_timeout(Duration::from_secs(30));
        assert_eq!(timer.step, MAX_STEP);
        let at = timer.origin + Duration::from_millis(1_200);
        assert_eq!(timer.round_up(at), timer.origin + Duration::from_secs(2));
        let exact = timer.origin + Duration::from_secs(3);
        assert_eq!(timer.round_up(exact), exact);
        // Short timeouts get a finer grid.
        let short = CoarseTimer::for_timeout(Duration::from_millis(200));
        assert_eq!(short.step, Duration::from_millis(25));
    }

    #[tokio::test]
    async fn a_reset_within_one_step_keeps_the_deadline_and_a_later_one_moves_it() {
        let timer = CoarseTimer::for_timeout(Duration::from_millis(80));
        let step = Duration::from_millis(10);
        let start = Instant::now();
        let mut sleep = timer.sleep(Duration::from_millis(80));
        let deadline = |sleep: &mut Pin<Box<dyn Sleep>>| {
            sleep
                .as_mut()
                .downcast_mut_pin::<CoarseSleep>()
                .map(|s| s.deadline)
        };
        let first = deadline(&mut sleep).expect("coarse");
        assert!(first >= start + Duration::from_millis(80));
        assert!(first <= start + Duration::from_millis(80) + step);
        timer.reset(&mut sleep, first - Duration::from_millis(1));
        assert_eq!(deadline(&mut sleep), Some(first));
        timer.reset(&mut sleep, first + Duration::from_millis(1));
        assert_eq!(deadline(&mut sleep), Some(first + step));
        // And it fires, not before its deadline.
        tokio::time::timeout(Duration::from_secs(5), sleep)
            .await
            .expect("fired");
        assert!(Instant::now() >= first + step);
    }

    /// The entry under a dropped sleep is the next sleep's: no new timer
    /// registration per request, and the moved entry still fires on time.
    #[tokio::test]
    async fn a_dropped_sleeps_entry_serves_the_next_sleep_and_fires_at_its_deadline() {
        let timer = CoarseTimer::for_timeout(Duration::from_millis(80));
        let entry_of = |sleep: &mut Pin<Box<dyn Sleep>>| {
            sleep
                .as_mut()
                .downcast_mut_pin::<CoarseSleep>()
                .and_then(|s| s.inner.as_ref().map(|e| &**e as *const tokio::time::Sleep))
        };
        let mut first = timer.sleep(Duration::from_millis(80));
        // Polled once, as hyper does, so the entry is registered.
        let pending = std::future::poll_fn(|cx| Poll::Ready(first.as_mut().poll(cx).is_pending()));
        assert!(pending.await);
        let first_entry = entry_of(&mut first).expect("coarse");
        drop(first);
        assert!(timer.spare.lock().expect("lock").is_some());
        let start = Instant::now();
        let mut second = timer.sleep(Duration::from_millis(80));
        assert_eq!(entry_of(&mut second), Some(first_entry), "reused");
        assert!(timer.spare.lock().expect("lock").is_none());
        let deadline = second
            .as_mut()
            .downcast_mut_pin::<CoarseSleep>()
            .map(|s| s.deadline)
            .expect("coarse");
        assert!(deadline >= start + Duration::from_millis(80));
        tokio::time::timeout(Duration::from_secs(5), second)
            .await
            .expect("fired");
        assert!(Instant::now() >= deadline);
    }
}
