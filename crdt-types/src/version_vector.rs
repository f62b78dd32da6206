//! Version vectors: per replica, the highest contiguous sequence number seen.

use crate::{Dot, ReplicaId};
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;
use std::collections::BTreeMap;
use std::fmt;

/// A map from replica to the highest sequence number `n` such that events `1..=n` of that
/// replica are all included. Absent replicas are 0.
///
/// Kept as a boxed slice sorted by replica: a vector covers a handful of replicas, where
/// binary search over contiguous pairs beats a tree's nodes, and an empty one owns no heap
/// block. A slice without spare capacity is two words, not three, which keeps a delta's
/// context small; a replica's first entry reallocates it (rare: entries are raised in place).
/// Encoded as a map, like a `BTreeMap`, and decoded as one would be (sorted, the last value of
/// a repeated replica winning) straight into the slice. Zero entries are never stored
/// (decoding drops them too), so equal vectors are equal values and encode to equal bytes.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct VersionVector(Box<[(ReplicaId, u64)]>);

impl<'de> Deserialize<'de> for VersionVector {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // As the `BTreeMap` it is encoded as reads it, decoded into the kept slice directly.
        let entries: SmallVec<[(ReplicaId, u64); 0]> = crate::sorted_seq::sorted_map(deserializer)?;
        if entries.is_empty() {
            // Most decoded vectors (a delta's context names its dot in the cloud).
            return Ok(VersionVector::default());
        }
        let mut entries = entries.into_vec();
        entries.retain(|&(_, c)| c > 0);
        Ok(VersionVector(entries.into_boxed_slice()))
    }
}

impl From<BTreeMap<ReplicaId, u64>> for VersionVector {
    fn from(entries: BTreeMap<ReplicaId, u64>) -> Self {
        VersionVector(entries.into_iter().filter(|&(_, c)| c > 0).collect())
    }
}

impl Serialize for VersionVector {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // As a `BTreeMap` is encoded.
        serializer.collect_map(self.0.iter().map(|(r, c)| (r, c)))
    }
}

impl fmt::Debug for VersionVector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|(r, c)| (r, c)))
            .finish()
    }
}

/// Vectors of up to this many replicas are searched linearly.
const LINEAR_UP_TO: usize = 8;

impl VersionVector {
    /// The empty vector.
    pub fn new() -> Self {
        Self::default()
    }

    /// The vector of `entries`, sorted by replica, distinct, none zero.
    pub(crate) fn from_sorted(entries: Vec<(ReplicaId, u64)>) -> Self {
        debug_assert!(
            entries.windows(2).all(|w| w[0].0 < w[1].0) && entries.iter().all(|&(_, c)| c > 0),
            "vector entries out of order"
        );
        VersionVector(entries.into_boxed_slice())
    }

    /// The index of `replica`'s entry, or where it would be inserted.
    #[inline]
    fn find(&self, replica: ReplicaId) -> Result<usize, usize> {
        if self.0.len() <= LINEAR_UP_TO {
            // A key's few replicas: one pass, cheaper than a search's unpredictable halving.
            let i = self.0.iter().take_while(|(r, _)| *r < replica).count();
            return match self.0.get(i) {
                Some((r, _)) if *r == replica => Ok(i),
                _ => Err(i),
            };
        }
        self.0.binary_search_by(|(r, _)| r.cmp(&replica))
    }

    /// Inserts `entry` at `i`, its place in replica order, growing the slice by one.
    fn insert_at(&mut self, i: usize, entry: (ReplicaId, u64)) {
        let mut entries = std::mem::take(&mut self.0).into_vec();
        entries.reserve_exact(1);
        entries.insert(i, entry);
        self.0 = entries.into_boxed_slice();
    }

    /// Removes the entry at `i`.
    fn remove_at(&mut self, i: usize) {
        let mut entries = std::mem::take(&mut self.0).into_vec();
        entries.remove(i);
        self.0 = entries.into_boxed_slice();
    }

    /// The highest contiguous counter of `replica` (0 if none).
    #[inline]
    pub fn get(&self, replica: ReplicaId) -> u64 {
        self.find(replica).map_or(0, |i| self.0[i].1)
    }

    /// Raises the entry of `replica` to at least `counter`.
    pub fn raise(&mut self, replica: ReplicaId, counter: u64) {
        if counter == 0 {
            return;
        }
        match self.find(replica) {
            Ok(i) => self.0[i].1 = self.0[i].1.max(counter),
            Err(i) => self.insert_at(i, (replica, counter)),
        }
    }

    /// Raises every entry of `self` to `other`'s where that is higher, and adds each replica of
    /// `other` that `self` lacks if `admit` says so (asked in replica order): what raising
    /// them one by one gives, in one pass over both sorted slices instead of a search per
    /// replica, and with at most one new slice for all the added replicas instead of a
    /// reallocation for each. Tells whether anything changed.
    pub(crate) fn raise_all(
        &mut self,
        other: &VersionVector,
        mut admit: impl FnMut(ReplicaId) -> bool,
    ) -> bool {
        let mut changed = false;
        let mut added: SmallVec<[(ReplicaId, u64); 4]> = SmallVec::new();
        let mine = &mut self.0;
        let mut i = 0;
        for &(r, n) in other.0.iter() {
            // To the first entry at or above `r`: the next one when both vectors name the
            // same replicas, else a search of the rest.
            if mine.get(i).is_some_and(|&(m, _)| m < r) {
                i += 1;
                if mine.get(i).is_some_and(|&(m, _)| m < r) {
                    i += mine[i..].partition_point(|&(m, _)| m < r);
                }
            }
            match mine.get_mut(i) {
                Some((m, c)) if *m == r => {
                    if n > *c {
                        *c = n;
                        changed = true;
                    }
                }
                _ => {
                    if admit(r) {
                        added.push((r, n));
                    }
                }
            }
        }
        if added.is_empty() {
            return changed;
        }
        // The added replicas are absent from `self`: one merge of both sorted runs.
        let mut merged = Vec::with_capacity(mine.len() + added.len());
        let mut added = added.into_iter().peekable();
        for &entry in mine.iter() {
            while let Some(a) = added.next_if(|a| a.0 < entry.0) {
                merged.push(a);
            }
            merged.push(entry);
        }
        merged.extend(added);
        self.0 = merged.into_boxed_slice();
        true
    }

    /// Sets the entry of `replica` exactly (0 removes it).
    pub fn set(&mut self, replica: ReplicaId, counter: u64) {
        match (self.find(replica), counter) {
            (Ok(i), 0) => self.remove_at(i),
            (Ok(i), _) => self.0[i].1 = counter,
            (Err(_), 0) => {}
            (Err(i), _) => self.insert_at(i, (replica, counter)),
        }
    }

    /// Raises the entry of `dot`'s replica to `dot.counter` if that is the next counter, and
    /// returns the entry as it was: one search for what `get` then `set` would do.
    #[inline]
    pub(crate) fn advance(&mut self, dot: Dot) -> u64 {
        match self.find(dot.replica) {
            Ok(i) => {
                let top = self.0[i].1;
                if dot.counter == top + 1 {
                    self.0[i].1 = dot.counter;
                }
                top
            }
            Err(i) => {
                if dot.counter == 1 {
                    self.insert_at(i, (dot.replica, 1));
                }
                0
            }
        }
    }

    /// Whether `dot` is included.
    #[inline]
    pub fn contains(&self, dot: &Dot) -> bool {
        dot.counter <= self.get(dot.replica)
    }

    /// Pointwise maximum.
    pub fn join(&mut self, other: &VersionVector) {
        if other.0.iter().all(|&(r, _)| self.find(r).is_ok()) {
            for &(r, c) in &other.0 {
                self.raise(r, c);
            }
            return;
        }
        // New replicas: one merge of both sorted slices.
        let mut merged = Vec::with_capacity(self.0.len() + other.0.len());
        let (mut a, mut b) = (self.0.iter().peekable(), other.0.iter().peekable());
        loop {
            let next = match (a.peek(), b.peek()) {
                (Some(x), Some(y)) if x.0 < y.0 => a.next().copied(),
                (Some(x), Some(y)) if x.0 > y.0 => b.next().copied(),
                (Some(&&(r, x)), Some(&&(_, y))) => {
                    a.next();
                    b.next();
                    Some((r, x.max(y)))
                }
                (Some(_), None) => a.next().copied(),
                (None, Some(_)) => b.next().copied(),
                (None, None) => break,
            };
            merged.extend(next);
        }
        self.0 = merged.into_boxed_slice();
    }

    /// Pointwise minimum over the replicas of `self` (a replica absent from `other` drops to 0).
    pub fn meet(&mut self, other: &VersionVector) {
        let mut entries = std::mem::take(&mut self.0).into_vec();
        entries.retain_mut(|(r, c)| {
            *c = (*c).min(other.get(*r));
            *c > 0
        });
        self.0 = entries.into_boxed_slice();
    }

    /// Whether every entry of `self` is <= the entry in `other`.
    pub fn le(&self, other: &VersionVector) -> bool {
        self.0.iter().all(|&(r, c)| c <= other.get(r))
    }

    /// Iterates `(replica, counter)` in replica order.
    pub fn iter(&self) -> impl Iterator<Item = (ReplicaId, u64)> + '_ {
        self.0.iter().copied()
    }

    /// Number of replicas with a non-zero entry.
    #[inline]
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no replica has an entry.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The number of dots the vector covers (the sum of its entries), saturating.
    #[inline]
    pub fn dot_count(&self) -> u64 {
        self.0.iter().fold(0u64, |n, &(_, c)| n.saturating_add(c))
    }
}

impl FromIterator<(ReplicaId, u64)> for VersionVector {
    fn from_iter<I: IntoIterator<Item = (ReplicaId, u64)>>(iter: I) -> Self {
        // Collected, sorted, then one entry per replica (its largest counter): as raising
        // each in turn would give, with no reallocation per new replica. Entries that come
        // in replica order, distinct (read off a sorted vector), are kept as they came, with
        // no sort; up to eight are collected on the stack, so the slice is allocated
        // once at its size instead of grown and then shrunk (a `realloc` per vector).
        let mut entries: SmallVec<[(ReplicaId, u64); 8]> =
            iter.into_iter().filter(|&(_, c)| c > 0).collect();
        if !entries.windows(2).all(|w| w[0].0 < w[1].0) {
            entries.sort_unstable();
            entries.dedup_by(|later, kept| {
                later.0 == kept.0 && {
                    kept.1 = kept.1.max(later.1);
                    true
                }
            });
        }
        VersionVector(entries.into_vec().into_boxed_slice())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 512,
            failure_persistence: None,
            ..Default::default()
        })]

        /// Collecting pairs in any order, with repeats and zeros, gives the vector a
        /// `BTreeMap` of each replica's largest counter gives (zeros dropped), and so does
        /// raising them one by one.
        #[test]
        fn collecting_is_the_largest_counter_per_replica(
            pairs in proptest::collection::vec((0u64..20, 0u64..5), 0..24),
            sorted in proptest::bool::ANY,
        ) {
            let mut pairs: Vec<(ReplicaId, u64)> =
                pairs.iter().map(|&(r, c)| (ReplicaId(r * 3 + 1), c)).collect();
            if sorted {
                pairs.sort_unstable();
                pairs.dedup_by_key(|p| p.0);
            }
            let mut largest: BTreeMap<ReplicaId, u64> = BTreeMap::new();
            let mut raised = VersionVector::new();
            for &(r, c) in &pairs {
                let top = largest.entry(r).or_default();
                *top = (*top).max(c);
                raised.raise(r, c);
            }
            let collected: VersionVector = pairs.iter().copied().collect();
            proptest::prop_assert_eq!(&collected, &VersionVector::from(largest));
            proptest::prop_assert_eq!(collected, raised);
        }
    }
}
