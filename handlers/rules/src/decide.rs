//! The timing of one rule on one binding, epoch by epoch: consecutive
//! counts (`for_epochs`), arming (`clear_when`, the dead zone), cooldown.
//! Pure, so that the engine, explain and the tests agree by construction.

use serde::{Deserialize, Serialize};

/// What is kept per (rule, binding) between epochs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Epochs in a row in which the condition held.
    pub consecutive: u32,
    /// Whether the rule may fire; a firing disarms it until it clears.
    pub armed: bool,
    pub last_fired_ms: Option<i64>,
    /// The last epoch counted: an epoch is never counted twice.
    pub last_epoch: i64,
}

impl Default for Counters {
    fn default() -> Self {
        Self { consecutive: 0, armed: true, last_fired_ms: None, last_epoch: -1 }
    }
}

/// Why a rule did not fire on a binding in an epoch.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum NotFired {
    /// `where` excluded the binding.
    Filtered,
    ConditionFalse,
    ForEpochs {
        have: u32,
        need: u32,
    },
    /// Fired before, and `clear_when` (or, without it, a false condition) has not been seen since.
    NotArmed,
    Cooldown {
        remaining_ms: i64,
    },
    /// Another rule of the same group, with higher priority, fires on this binding.
    LowerPriority {
        winner: String,
    },
    /// Another rule writes the same node in this epoch with higher priority.
    WriteConflict {
        winner: String,
        node: String,
    },
    VerifyFalse,
    /// This epoch was already handled (by this or another evaluator).
    AlreadyCounted,
    Error {
        message: String,
    },
    /// Explain only: the outcome depends on nodes the viewer may not read.
    Hidden,
}

impl NotFired {
    /// The label under `monitoring/blocked`.
    pub fn label(&self) -> &'static str {
        match self {
            NotFired::Filtered => "filtered",
            NotFired::ConditionFalse => "condition_false",
            NotFired::ForEpochs { .. } => "for_epochs",
            NotFired::NotArmed => "not_armed",
            NotFired::Cooldown { .. } => "cooldown",
            NotFired::LowerPriority { .. } => "lower_priority",
            NotFired::WriteConflict { .. } => "write_conflict",
            NotFired::VerifyFalse => "verify_false",
            NotFired::AlreadyCounted => "already_counted",
            NotFired::Error { .. } => "error",
            NotFired::Hidden => "hidden",
        }
    }

    /// Blocks that an operator cares about (not the everyday "condition false").
    pub fn is_block(&self) -> bool {
        !matches!(self, NotFired::Filtered | NotFired::ConditionFalse | NotFired::AlreadyCounted | NotFired::Hidden)
    }
}

/// The timing parameters of a rule.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub for_epochs: u32,
    pub cooldown_ms: Option<i64>,
    pub has_clear: bool,
}

/// Counts one epoch: the counters after it, and whether the rule is a
/// candidate to fire (arbitration and `verify` still follow).
/// `clear` is `clear_when`'s result, evaluated only when the rule is disarmed.
pub fn step(
    before: Counters,
    t: Timing,
    epoch: i64,
    now_ms: i64,
    cond: bool,
    clear: Option<bool>,
) -> (Counters, Result<(), NotFired>) {
    if epoch <= before.last_epoch {
        return (before, Err(NotFired::AlreadyCounted));
    }
    let mut c = before;
    c.last_epoch = epoch;
    c.consecutive = if cond { c.consecutive.saturating_add(1) } else { 0 };
    if !c.armed {
        c.armed = if t.has_clear { clear == Some(true) } else { !cond };
    }
    let verdict = if !cond {
        Err(NotFired::ConditionFalse)
    } else if c.consecutive < t.for_epochs {
        Err(NotFired::ForEpochs { have: c.consecutive, need: t.for_epochs })
    } else if !c.armed {
        Err(NotFired::NotArmed)
    } else if let Some(remaining_ms) = cooling(c, t, now_ms) {
        Err(NotFired::Cooldown { remaining_ms })
    } else {
        Ok(())
    };
    (c, verdict)
}

fn cooling(c: Counters, t: Timing, now_ms: i64) -> Option<i64> {
    let (last, period) = (c.last_fired_ms?, t.cooldown_ms?);
    let remaining = last.saturating_add(period) - now_ms;
    (remaining > 0).then_some(remaining)
}

/// The counters once the rule fired.
pub fn fired(mut c: Counters, now_ms: i64) -> Counters {
    c.armed = false;
    c.last_fired_ms = Some(now_ms);
    c
}

/// Whether the disarmed rule needs `clear_when` evaluated this epoch.
pub fn needs_clear(c: Counters, t: Timing) -> bool {
    !c.armed && t.has_clear
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const T: Timing = Timing { for_epochs: 1, cooldown_ms: None, has_clear: false };

    /// Runs a series of (condition, clear) epochs; returns the epochs that fired.
    fn run(t: Timing, series: &[(bool, bool)], epoch_ms: i64) -> Vec<usize> {
        let mut c = Counters::default();
        let mut fired_at = Vec::new();
        for (i, &(cond, clear)) in series.iter().enumerate() {
            let now = i as i64 * epoch_ms;
            let clear = needs_clear(c, t).then_some(clear);
            let (next, verdict) = step(c, t, i as i64, now, cond, clear);
            c = next;
            if verdict.is_ok() {
                c = fired(c, now);
                fired_at.push(i);
            }
        }
        fired_at
    }

    #[test]
    fn for_epochs_needs_consecutive_truths() {
        let t = Timing { for_epochs: 3, ..T };
        let s: Vec<(bool, bool)> = [1, 1, 0, 1, 1, 1, 1].iter().map(|&b| (b == 1, false)).collect();
        assert_eq!(run(t, &s, 1000), vec![5]);
    }

    #[test]
    fn edge_triggered_without_clear() {
        let s: Vec<(bool, bool)> = [1, 1, 1, 0, 1].iter().map(|&b| (b == 1, false)).collect();
        assert_eq!(run(T, &s, 1000), vec![0, 4]);
    }

    #[test]
    fn clear_when_is_a_dead_zone() {
        let t = Timing { has_clear: true, ..T };
        // cond true, false (not clear), true → no re-fire; then clear, true → fires.
        let s = [(true, false), (false, false), (true, false), (false, true), (true, false)];
        assert_eq!(run(t, &s, 1000), vec![0, 4]);
    }

    #[test]
    fn cooldown_spaces_firings() {
        let t = Timing { cooldown_ms: Some(3000), ..T };
        let s: Vec<(bool, bool)> = [1, 0, 1, 0, 1, 0, 1].iter().map(|&b| (b == 1, false)).collect();
        assert_eq!(run(t, &s, 1000), vec![0, 4]);
    }

    #[test]
    fn an_epoch_counts_once() {
        let (c, v) = step(Counters::default(), T, 5, 0, true, None);
        assert!(v.is_ok());
        let (again, v) = step(fired(c, 0), T, 5, 0, true, None);
        assert_eq!(v, Err(NotFired::AlreadyCounted));
        assert_eq!(again.last_fired_ms, Some(0));
    }

    proptest! {
        /// A dead zone never fires more often than plain edge triggering on the same signal,
        /// and a cooldown bounds the firings by the run's length over the period.
        #[test]
        fn hysteresis_and_cooldown_bound_firings(levels in proptest::collection::vec(0.0f64..1.0, 1..200)) {
            let hi: Vec<(bool, bool)> = levels.iter().map(|&l| (l > 0.8, l < 0.6)).collect();
            let plain = run(T, &hi, 1000).len();
            let dead_zone = run(Timing { has_clear: true, ..T }, &hi, 1000).len();
            prop_assert!(dead_zone <= plain);
            let cooled = run(Timing { cooldown_ms: Some(10_000), ..T }, &hi, 1000);
            prop_assert!(cooled.len() <= levels.len() / 10 + 1);
            prop_assert!(cooled.windows(2).all(|w| w[1] - w[0] >= 10));
        }
    }
}
