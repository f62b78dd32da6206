//! `GCounter`: a grow-only counter, one monotone entry per replica.

use crate::{DeltaCrdt, Lattice, ReplicaId, Tag};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A grow-only counter: each replica counts its own increments; the value is the sum and the
/// join is the pointwise maximum. A delta is the one entry the increment raised.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GCounter(BTreeMap<ReplicaId, u64>);

impl GCounter {
    /// The empty counter (value 0).
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `n` on the tag's replica and returns the delta (that replica's new entry).
    pub fn increment(&mut self, tag: Tag, n: u64) -> GCounter {
        let e = self.0.entry(tag.dot.replica).or_insert(0);
        *e = e.saturating_add(n);
        GCounter(BTreeMap::from([(tag.dot.replica, *e)]))
    }

    /// The sum of all entries (saturating at `u64::MAX`).
    pub fn value(&self) -> u64 {
        self.0.values().fold(0u64, |s, &v| s.saturating_add(v))
    }

    /// The count contributed by `replica`.
    pub fn get(&self, replica: ReplicaId) -> u64 {
        self.0.get(&replica).copied().unwrap_or(0)
    }
}

impl Lattice for GCounter {
    fn join(&mut self, other: Self) {
        for (r, v) in other.0 {
            let e = self.0.entry(r).or_insert(0);
            *e = (*e).max(v);
        }
    }
}

impl DeltaCrdt for GCounter {}
