//! The replica's hybrid logical clock, driven by a caller-supplied physical time and guarded
//! by the drift bound of CONTRACT §1 "Clocks".

use crate::{ReplicaId, Stamp};
use hlc_gen::HlcGenerator;
use hlc_gen::source::ManualClock;
use std::fmt;

/// Default bound on how far a remote stamp may run ahead of the local physical clock.
pub const DEFAULT_MAX_CLOCK_DRIFT_MS: u64 = 500;

/// Why a stamp was refused or could not be produced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClockError {
    /// The remote stamp is further ahead of the local physical clock than the bound allows.
    #[error("stamp is {ahead_ms} ms ahead of the local clock, over the {max_ms} ms drift bound")]
    DriftExceeded {
        /// How far ahead the stamp is.
        ahead_ms: u64,
        /// The configured bound.
        max_ms: u64,
    },
    /// The physical time is outside what a 42-bit HLC can represent (before 2024 or far future).
    #[error("physical time {0} ms is outside the HLC range")]
    OutOfRange(i64),
}

/// A hybrid logical clock for one replica.
///
/// The physical time is an argument of every call, never read from the system, so the
/// simulator drives it with virtual time and the node with the wall clock. hlc-gen does the
/// HLC arithmetic; this wrapper adds the replica id and refuses stamps beyond the drift bound
/// *before* they can drag the clock forward.
pub struct Clock {
    generator: HlcGenerator<ManualClock>,
    replica: ReplicaId,
    max_drift_ms: u64,
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Clock")
            .field("replica", &self.replica)
            .field(
                "last",
                &Stamp::new(self.generator.timestamp(), self.replica),
            )
            .field("max_drift_ms", &self.max_drift_ms)
            .finish()
    }
}

impl Clock {
    /// A clock for `replica` that refuses stamps more than `max_drift_ms` ahead.
    pub fn new(replica: ReplicaId, max_drift_ms: u64) -> Self {
        // hlc-gen's own drift check stays off (0): ours runs first and returns a typed error.
        Clock {
            generator: HlcGenerator::manual(0),
            replica,
            max_drift_ms,
        }
    }

    /// The replica this clock stamps for.
    pub fn replica(&self) -> ReplicaId {
        self.replica
    }

    /// The configured drift bound.
    pub fn max_drift_ms(&self) -> u64 {
        self.max_drift_ms
    }

    /// A fresh stamp for a local event at physical time `now_ms` (Unix ms). Strictly greater
    /// than every stamp this clock produced or observed before.
    pub fn tick(&mut self, now_ms: i64) -> Result<Stamp, ClockError> {
        self.set_physical(now_ms)?;
        let ts = self
            .generator
            .next_timestamp()
            .ok_or(ClockError::OutOfRange(now_ms))?;
        Ok(Stamp::new(ts, self.replica))
    }

    /// Merges a remote stamp received at physical time `now_ms`. A stamp further ahead of
    /// `now_ms` than the drift bound is refused and leaves the clock untouched.
    pub fn observe(&mut self, now_ms: i64, remote: &Stamp) -> Result<(), ClockError> {
        let ahead = remote.wall_ms().saturating_sub(now_ms);
        if ahead > 0 && ahead as u64 > self.max_drift_ms {
            return Err(ClockError::DriftExceeded {
                ahead_ms: ahead as u64,
                max_ms: self.max_drift_ms,
            });
        }
        self.set_physical(now_ms)?;
        self.generator
            .update(&remote.hlc())
            .map_err(|_| ClockError::OutOfRange(remote.wall_ms()))?;
        Ok(())
    }

    /// The last stamp produced or observed.
    pub fn last(&self) -> Stamp {
        Stamp::new(self.generator.timestamp(), self.replica)
    }

    fn set_physical(&mut self, now_ms: i64) -> Result<(), ClockError> {
        if now_ms < hlc_gen_epoch_ms() {
            return Err(ClockError::OutOfRange(now_ms));
        }
        self.generator.set_current_timestamp(now_ms);
        Ok(())
    }
}

/// hlc-gen counts from 2024-01-01T00:00:00Z; earlier physical times cannot be stamped.
const fn hlc_gen_epoch_ms() -> i64 {
    1_704_067_200_000
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_790_000_000_000;

    #[test]
    fn ticks_are_strictly_increasing_even_when_time_stands_still() {
        let mut c = Clock::new(ReplicaId(1), 500);
        let a = c.tick(T0).unwrap();
        let b = c.tick(T0).unwrap();
        let d = c.tick(T0 - 10).unwrap();
        assert!(a < b && b < d);
        assert_eq!(a.wall_ms(), T0);
    }

    #[test]
    fn observing_a_stamp_moves_the_clock_past_it() {
        let mut a = Clock::new(ReplicaId(1), 500);
        let mut b = Clock::new(ReplicaId(2), 500);
        let s = a.tick(T0 + 300).unwrap();
        b.observe(T0, &s).unwrap();
        let t = b.tick(T0).unwrap();
        assert!(t > s, "{t:?} should follow {s:?}");
    }

    #[test]
    fn stamp_beyond_drift_bound_is_refused_and_does_not_drag_the_clock() {
        let mut a = Clock::new(ReplicaId(1), 500);
        let mut b = Clock::new(ReplicaId(2), 500);
        let far = a.tick(T0 + 501).unwrap();
        let before = b.tick(T0).unwrap();
        assert_eq!(
            b.observe(T0, &far),
            Err(ClockError::DriftExceeded {
                ahead_ms: 501,
                max_ms: 500
            })
        );
        let after = b.tick(T0).unwrap();
        assert_eq!(after.wall_ms(), before.wall_ms());
        assert!(after < far);
        // Exactly at the bound is accepted.
        let edge = Clock::new(ReplicaId(4), 500).tick(T0 + 500).unwrap();
        let mut c = Clock::new(ReplicaId(3), 500);
        assert!(c.observe(T0, &edge).is_ok());
    }

    #[test]
    fn time_before_the_hlc_epoch_is_an_error() {
        let mut c = Clock::new(ReplicaId(1), 500);
        assert_eq!(c.tick(0), Err(ClockError::OutOfRange(0)));
    }
}
