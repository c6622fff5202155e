//! A circuit breaker: after a few consecutive transport failures, calls fail
//! at once for a while (growing, with jitter, up to a limit); then exactly one
//! call is let through as a probe, whose outcome closes the circuit or opens
//! it again. A probe that never reports back is replaced after `PROBE_TIMEOUT`.

use std::time::Duration;

use dmtree_core::Backoff;
use parking_lot::Mutex;
use tokio::time::Instant;

const TRIP_AFTER: u32 = 3;
const FIRST_OPEN: Duration = Duration::from_millis(500);
const MAX_OPEN: Duration = Duration::from_secs(30);
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// One probe is out since this instant; everyone else fails fast.
    HalfOpen {
        probe_since: Instant,
    },
}

#[derive(Debug)]
struct Inner {
    state: State,
    open_for: Backoff,
}

#[derive(Debug)]
pub struct Breaker {
    inner: Mutex<Inner>,
}

impl Default for Breaker {
    fn default() -> Self {
        let inner = Inner { state: State::Closed { failures: 0 }, open_for: Backoff::new(FIRST_OPEN, MAX_OPEN) };
        Breaker { inner: Mutex::new(inner) }
    }
}

impl Breaker {
    /// `Err` with the time to wait while the circuit is open, or while another call probes it.
    pub fn check(&self) -> Result<(), Duration> {
        let mut inner = self.inner.lock();
        let now = Instant::now();
        match inner.state {
            State::Closed { .. } => Ok(()),
            State::Open { until } if now < until => Err(until - now),
            State::HalfOpen { probe_since } if now < probe_since + PROBE_TIMEOUT => {
                Err(probe_since + PROBE_TIMEOUT - now)
            }
            // Open and due, or a probe that never reported: this call probes.
            State::Open { .. } | State::HalfOpen { .. } => {
                inner.state = State::HalfOpen { probe_since: now };
                Ok(())
            }
        }
    }

    pub fn success(&self) {
        let mut inner = self.inner.lock();
        inner.state = State::Closed { failures: 0 };
        inner.open_for.reset();
    }

    pub fn failure(&self) {
        let mut inner = self.inner.lock();
        inner.state = match inner.state {
            State::Closed { failures } if failures + 1 < TRIP_AFTER => State::Closed { failures: failures + 1 },
            State::Closed { .. } | State::HalfOpen { .. } | State::Open { .. } => {
                State::Open { until: Instant::now() + inner.open_for.next_delay() }
            }
        };
    }

    pub fn describe(&self) -> &'static str {
        match self.inner.lock().state {
            State::Closed { .. } => "closed",
            State::Open { .. } => "open",
            State::HalfOpen { .. } => "half-open",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn trips_then_lets_exactly_one_probe_through_then_closes() {
        let b = Breaker::default();
        for _ in 0..TRIP_AFTER {
            assert!(b.check().is_ok());
            b.failure();
        }
        assert_eq!(b.describe(), "open");
        assert!(b.check().is_err(), "fails fast while open");
        tokio::time::advance(FIRST_OPEN * 2).await;
        assert!(b.check().is_ok(), "one probe after the open period");
        assert!(b.check().is_err(), "and only one: the others wait for its outcome");
        b.failure();
        assert!(b.check().is_err(), "opened again");
        tokio::time::advance(MAX_OPEN * 2).await;
        assert!(b.check().is_ok());
        b.success();
        assert_eq!(b.describe(), "closed");
        assert!(b.check().is_ok() && b.check().is_ok(), "closed lets everyone through");
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_that_never_reports_is_replaced() {
        let b = Breaker::default();
        for _ in 0..TRIP_AFTER {
            b.failure();
        }
        tokio::time::advance(FIRST_OPEN * 2).await;
        assert!(b.check().is_ok());
        assert!(b.check().is_err());
        tokio::time::advance(PROBE_TIMEOUT).await;
        assert!(b.check().is_ok(), "a new probe once the first one is overdue");
    }
}
