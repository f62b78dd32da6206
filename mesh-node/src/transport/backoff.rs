//! Reconnect delays: exponential backoff with jitter between a floor and a ceiling. It computes
//! delays; it never sleeps.
//!
//! The jitter (up to half the current step, on top of it) spreads the redials of many nodes that
//! lost the same peer at the same moment. The randomness comes from a seed argument, so a test
//! can reproduce a sequence.

use std::time::Duration;

/// The delay before each successive attempt: `min`, doubling, capped at `max`, each plus jitter,
/// never outside `[min, max]`.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    min: Duration,
    max: Duration,
    step: Duration,
    rng: u64,
}

impl Backoff {
    /// A backoff starting at `min` and never exceeding `max` (which is raised to `min` if lower).
    pub(crate) fn new(min: Duration, max: Duration, seed: u64) -> Self {
        Self {
            min,
            max: max.max(min),
            step: min,
            rng: seed,
        }
    }

    /// The delay to wait before the next attempt; each call doubles the step.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let step = self.step;
        self.step = step.saturating_mul(2).min(self.max);
        let jitter_cap = u64::try_from(step.as_nanos() / 2).unwrap_or(u64::MAX);
        let jitter = match jitter_cap {
            0 => 0,
            cap => self.next_random() % (cap + 1),
        };
        (step + Duration::from_nanos(jitter)).min(self.max)
    }

    /// Back to the first step, after a connection proved healthy.
    pub(crate) fn reset(&mut self) {
        self.step = self.min;
    }

    /// splitmix64: tiny, fast, and good enough to decorrelate timers.
    fn next_random(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_millis(50);
    const MAX: Duration = Duration::from_secs(5);

    #[test]
    fn grows_within_bounds_and_resets() {
        let mut backoff = Backoff::new(MIN, MAX, 7);
        let delays: Vec<_> = (0..20).map(|_| backoff.next_delay()).collect();
        assert!(delays.iter().all(|d| (MIN..=MAX).contains(d)), "{delays:?}");
        assert!(delays[0] <= MIN + MIN / 2);
        assert!(delays[6] >= MIN * 32, "doubles: {delays:?}");
        assert_eq!(
            delays[19], MAX,
            "capped, and the jitter cannot exceed the cap"
        );
        backoff.reset();
        assert!(backoff.next_delay() <= MIN + MIN / 2);
    }

    #[test]
    fn seeds_decorrelate() {
        let run = |seed| {
            let mut b = Backoff::new(MIN, MAX, seed);
            (0..5).map(|_| b.next_delay()).collect::<Vec<_>>()
        };
        assert_eq!(run(1), run(1));
        assert_ne!(run(1), run(2));
    }
}
