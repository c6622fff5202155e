//! One retry policy for every reconnect and retry loop: exponential growth
//! with jitter (backon), reset after a success. The jitter matters: after a
//! broker or remote restart, every worker that lost it must not come back at
//! the same instant.

use std::time::Duration;

use backon::{BackoffBuilder as _, ExponentialBackoff, ExponentialBuilder};

#[derive(Debug)]
pub struct Backoff {
    builder: ExponentialBuilder,
    delays: ExponentialBackoff,
}

/// A copy starts its sequence afresh.
impl Clone for Backoff {
    fn clone(&self) -> Self {
        Self { builder: self.builder, delays: self.builder.build() }
    }
}

impl Backoff {
    /// Delays from `first`, doubling up to `max`, each stretched by a random
    /// factor in [1, 2).
    pub fn new(first: Duration, max: Duration) -> Self {
        let builder = ExponentialBuilder::default()
            .with_min_delay(first)
            .with_max_delay(max)
            .with_factor(2.0)
            .with_jitter()
            .without_max_times();
        Self { delays: builder.build(), builder }
    }

    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        self.delays.next().unwrap_or(Duration::from_secs(1))
    }

    /// After a success: the next failure starts from `first` again.
    pub fn reset(&mut self) {
        self.delays = self.builder.build();
    }

    /// Waits for the next delay.
    pub async fn wait(&mut self) {
        tokio::time::sleep(self.next_delay()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_the_cap_with_jitter_and_resets() {
        let (first, max) = (Duration::from_millis(100), Duration::from_secs(2));
        let mut b = Backoff::new(first, max);
        let delays: Vec<Duration> = (0..12).map(|_| b.next_delay()).collect();
        assert!(delays[0] >= first && delays[0] < first * 2);
        assert!(delays.iter().all(|d| *d < max * 2), "{delays:?}");
        assert!(delays[11] >= max, "reaches the cap: {delays:?}");
        let spread: std::collections::BTreeSet<_> = (0..20).map(|_| Backoff::new(first, max).next_delay()).collect();
        assert!(spread.len() > 1, "jittered: workers do not retry in lockstep");
        b.reset();
        assert!(b.next_delay() < first * 2);
    }
}
