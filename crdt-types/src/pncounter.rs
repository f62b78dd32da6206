//! `PNCounter`: a counter that goes up and down, as two grow-only counters.

use crate::{DeltaCrdt, GCounter, Lattice, Tag};
use serde::{Deserialize, Serialize};

/// A positive-negative counter: increments and decrements are two [`GCounter`]s and the value
/// is their difference. Deltas carry only the half and the entry that changed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PNCounter {
    inc: GCounter,
    dec: GCounter,
}

impl PNCounter {
    /// The zero counter.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `n` and returns the delta.
    pub fn increment(&mut self, tag: Tag, n: u64) -> PNCounter {
        PNCounter {
            inc: self.inc.increment(tag, n),
            dec: GCounter::new(),
        }
    }

    /// Subtracts `n` and returns the delta.
    pub fn decrement(&mut self, tag: Tag, n: u64) -> PNCounter {
        PNCounter {
            inc: GCounter::new(),
            dec: self.dec.increment(tag, n),
        }
    }

    /// Increments minus decrements (exact: `i128` holds any difference of two `u64`).
    pub fn value(&self) -> i128 {
        i128::from(self.inc.value()) - i128::from(self.dec.value())
    }
}

impl Lattice for PNCounter {
    fn join(&mut self, other: Self) {
        self.inc.join(other.inc);
        self.dec.join(other.dec);
    }
}

impl DeltaCrdt for PNCounter {}
