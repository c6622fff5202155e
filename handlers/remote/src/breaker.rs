//! A circuit breaker: after a few consecutive transport failures, calls fail
//! at once for a while (doubling up to a limit); then one call is let
//! through, whose outcome closes the circuit or opens it again.

use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

const TRIP_AFTER: u32 = 3;
const FIRST_OPEN: Duration = Duration::from_millis(500);
const MAX_OPEN: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant, backoff: Duration },
    HalfOpen { backoff: Duration },
}

#[derive(Debug)]
pub struct Breaker {
    state: Mutex<State>,
}

impl Default for Breaker {
    fn default() -> Self {
        Breaker { state: Mutex::new(State::Closed { failures: 0 }) }
    }
}

impl Breaker {
    /// `Err` with the time left while the circuit is open.
    pub fn check(&self) -> Result<(), Duration> {
        let mut state = self.state.lock();
        match *state {
            State::Open { until, backoff } => {
                let now = Instant::now();
                if now < until {
                    return Err(until - now);
                }
                *state = State::HalfOpen { backoff };
                Ok(())
            }
            _ => Ok(()),
        }
    }

    pub fn success(&self) {
        *self.state.lock() = State::Closed { failures: 0 };
    }

    pub fn failure(&self) {
        let mut state = self.state.lock();
        *state = match *state {
            State::Closed { failures } if failures + 1 < TRIP_AFTER => State::Closed { failures: failures + 1 },
            State::Closed { .. } => State::Open { until: Instant::now() + FIRST_OPEN, backoff: FIRST_OPEN },
            State::HalfOpen { backoff } | State::Open { backoff, .. } => {
                let backoff = (backoff * 2).min(MAX_OPEN);
                State::Open { until: Instant::now() + backoff, backoff }
            }
        };
    }

    pub fn describe(&self) -> &'static str {
        match *self.state.lock() {
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
    async fn trips_then_probes_then_closes() {
        let b = Breaker::default();
        for _ in 0..TRIP_AFTER {
            assert!(b.check().is_ok());
            b.failure();
        }
        assert_eq!(b.describe(), "open");
        assert!(b.check().is_err(), "fails fast while open");
        tokio::time::advance(FIRST_OPEN).await;
        assert!(b.check().is_ok(), "one probe after the backoff");
        b.failure();
        assert!(b.check().is_err(), "opened again, for longer");
        tokio::time::advance(FIRST_OPEN * 2).await;
        assert!(b.check().is_ok());
        b.success();
        assert_eq!(b.describe(), "closed");
    }
}
