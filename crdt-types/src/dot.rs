//! Dots: the unique name of one operation, `(replica, sequence number)`.

use crate::ReplicaId;
use serde::{Deserialize, Serialize};
use std::fmt;

/// One event of one replica: its `counter`-th delta.
///
/// The counter is the replica's delta sequence number, the same number the gossip layer uses
/// to track per-origin delivery, so "which deltas has a node applied" and "which dots has it
/// seen" are one version vector.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Dot {
    /// The replica that created the event.
    pub replica: ReplicaId,
    /// The replica's sequence number for the event, starting at 1.
    pub counter: u64,
}

impl Dot {
    /// The dot `(replica, counter)`.
    pub fn new(replica: ReplicaId, counter: u64) -> Self {
        Dot { replica, counter }
    }

    /// The highest counter of `replica` among `dots`, sorted in `(replica, counter)` order (0 if
    /// none): a causal context's cloud, where the counters above its vector entry stand.
    pub fn highest_of(dots: &[Dot], replica: ReplicaId) -> u64 {
        let end = dots.partition_point(|d| d.replica <= replica);
        dots[..end]
            .last()
            .filter(|d| d.replica == replica)
            .map_or(0, |d| d.counter)
    }

    /// The dot as one integer that sorts as the dot does (replica, then counter): a sorted
    /// search compares it in one step instead of field by field.
    #[inline]
    pub(crate) fn key(&self) -> u128 {
        (u128::from(self.replica.0) << 64) | u128::from(self.counter)
    }
}

impl fmt::Debug for Dot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}:{}", self.replica, self.counter)
    }
}
