//! hyper's timer for server connections, with deadlines on a coarse grid.
//!
//! hyper re-arms the header-read timeout at every request on a keep-alive
//! connection. With tokio's timer, each re-arm moves the entry in the
//! timer wheel and wakes the I/O driver through its eventfd (one `write`
//! per request: `bench/syscalls`). Deadlines rounded up to a grid step
//! (an eighth of the timeout, at most a second) make most re-arms land on
//! the deadline already set, which is then left alone. A timeout fires
//! between its duration and one step later.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::rt::{Sleep, Timer};

/// The largest step: a timeout fires at most this much late.
const MAX_STEP: Duration = Duration::from_secs(1);

pub struct CoarseTimer {
    /// The grid's origin.
    origin: Instant,
    step: Duration,
}

impl CoarseTimer {
    /// A grid fine enough for `timeout`.
    pub fn for_timeout(timeout: Duration) -> Self {
        Self {
            origin: Instant::now(),
            step: (timeout / 8).clamp(Duration::from_millis(1), MAX_STEP),
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
}

struct CoarseSleep {
    deadline: Instant,
    inner: Pin<Box<tokio::time::Sleep>>,
}

impl Future for CoarseSleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.inner.as_mut().poll(cx)
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
            inner: Box::pin(tokio::time::sleep_until(deadline.into())),
        })
    }

    fn reset(&self, sleep: &mut Pin<Box<dyn Sleep>>, new_deadline: Instant) {
        let deadline = self.round_up(new_deadline);
        match sleep.as_mut().downcast_mut_pin::<CoarseSleep>() {
            // The same grid point: the timer wheel is not touched.
            Some(coarse) if coarse.deadline == deadline => {}
            Some(mut coarse) => {
                coarse.deadline = deadline;
                coarse.inner.as_mut().reset(deadline.into());
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
}
