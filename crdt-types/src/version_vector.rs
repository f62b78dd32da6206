//! Version vectors: per replica, the highest contiguous sequence number seen.

use crate::{Dot, ReplicaId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A map from replica to the highest sequence number `n` such that events `1..=n` of that
/// replica are all included. Absent replicas are 0.
///
/// Zero entries are never stored (decoding drops them too), so equal vectors are equal
/// values and encode to equal bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "BTreeMap<ReplicaId, u64>")]
pub struct VersionVector(BTreeMap<ReplicaId, u64>);

impl From<BTreeMap<ReplicaId, u64>> for VersionVector {
    fn from(mut entries: BTreeMap<ReplicaId, u64>) -> Self {
        entries.retain(|_, c| *c > 0);
        VersionVector(entries)
    }
}

impl VersionVector {
    /// The empty vector.
    pub fn new() -> Self {
        Self::default()
    }

    /// The highest contiguous counter of `replica` (0 if none).
    pub fn get(&self, replica: ReplicaId) -> u64 {
        self.0.get(&replica).copied().unwrap_or(0)
    }

    /// Raises the entry of `replica` to at least `counter`.
    pub fn raise(&mut self, replica: ReplicaId, counter: u64) {
        if counter == 0 {
            return;
        }
        let e = self.0.entry(replica).or_insert(0);
        if *e < counter {
            *e = counter;
        }
    }

    /// Sets the entry of `replica` exactly (0 removes it).
    pub fn set(&mut self, replica: ReplicaId, counter: u64) {
        if counter == 0 {
            self.0.remove(&replica);
        } else {
            self.0.insert(replica, counter);
        }
    }

    /// Whether `dot` is included.
    pub fn contains(&self, dot: &Dot) -> bool {
        dot.counter <= self.get(dot.replica)
    }

    /// Pointwise maximum.
    pub fn join(&mut self, other: &VersionVector) {
        for (&r, &c) in &other.0 {
            self.raise(r, c);
        }
    }

    /// Pointwise minimum over the replicas of `self` (a replica absent from `other` drops to 0).
    pub fn meet(&mut self, other: &VersionVector) {
        self.0.retain(|r, c| {
            *c = (*c).min(other.get(*r));
            *c > 0
        });
    }

    /// Whether every entry of `self` is <= the entry in `other`.
    pub fn le(&self, other: &VersionVector) -> bool {
        self.0.iter().all(|(&r, &c)| c <= other.get(r))
    }

    /// Iterates `(replica, counter)` in replica order.
    pub fn iter(&self) -> impl Iterator<Item = (ReplicaId, u64)> + '_ {
        self.0.iter().map(|(&r, &c)| (r, c))
    }

    /// Number of replicas with a non-zero entry.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no replica has an entry.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The number of dots the vector covers (the sum of its entries), saturating.
    pub fn dot_count(&self) -> u64 {
        self.0.values().fold(0u64, |n, &c| n.saturating_add(c))
    }
}

impl FromIterator<(ReplicaId, u64)> for VersionVector {
    fn from_iter<I: IntoIterator<Item = (ReplicaId, u64)>>(iter: I) -> Self {
        let mut vv = VersionVector::new();
        for (r, c) in iter {
            vv.raise(r, c);
        }
        vv
    }
}
