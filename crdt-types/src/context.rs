//! Causal contexts: the set of dots a state has seen, as a version vector plus a dot cloud.

use crate::{Dot, VersionVector};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// The dots a CRDT state (or delta) has observed.
///
/// Stored compactly as a [`VersionVector`] (every dot up to `vv[r]`) and a cloud of dots above
/// it that arrived out of order; [`CausalContext::compact`] folds the cloud back into the
/// vector whenever it becomes contiguous. Because dot counters are per-replica *delta*
/// sequence numbers shared by every key, one key's context is usually sparse: it is folded
/// at causal stability with [`CausalContext::compact_stable`].
///
/// The representation is canonical: a cloud dot is never covered by the vector nor directly
/// above it (it would have been folded). Decoding re-establishes this for untrusted input, so
/// equal contexts are equal values and encode to equal bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "ContextRepr")]
pub struct CausalContext {
    vv: VersionVector,
    cloud: BTreeSet<Dot>,
}

/// The encoded shape of a [`CausalContext`]; decoding goes through it to normalise.
#[derive(Deserialize)]
struct ContextRepr {
    vv: VersionVector,
    cloud: BTreeSet<Dot>,
}

impl From<ContextRepr> for CausalContext {
    fn from(repr: ContextRepr) -> Self {
        let mut cc = CausalContext {
            vv: repr.vv,
            cloud: BTreeSet::new(),
        };
        for d in repr.cloud {
            cc.insert(d);
        }
        cc
    }
}

impl CausalContext {
    /// The empty context.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether `dot` has been seen.
    pub fn contains(&self, dot: &Dot) -> bool {
        self.vv.contains(dot) || self.cloud.contains(dot)
    }

    /// Records `dot` as seen.
    pub fn insert(&mut self, dot: Dot) {
        if self.vv.contains(&dot) {
            return;
        }
        if dot.counter == self.vv.get(dot.replica) + 1 {
            self.vv.raise(dot.replica, dot.counter);
            self.fold(dot.replica);
        } else {
            self.cloud.insert(dot);
        }
    }

    /// Moves the cloud dots of `replica` that now continue its vector entry into the vector.
    fn fold(&mut self, replica: crate::ReplicaId) {
        loop {
            let next = Dot::new(replica, self.vv.get(replica) + 1);
            if !self.cloud.remove(&next) {
                return;
            }
            self.vv.raise(replica, next.counter);
        }
    }

    /// The union of both contexts.
    ///
    /// Incremental: only the replicas `other` mentions are touched, so joining a small delta's
    /// context into a large one costs O(|other| log |self|) and allocates only for new cloud dots.
    pub fn join(&mut self, other: &CausalContext) {
        for (r, c) in other.vv.iter() {
            if c > self.vv.get(r) {
                self.vv.raise(r, c);
                self.drop_covered_cloud(r);
                self.fold(r);
            }
        }
        for d in &other.cloud {
            self.insert(*d);
        }
    }

    /// Removes the cloud dots of `replica` that its vector entry now covers.
    fn drop_covered_cloud(&mut self, replica: crate::ReplicaId) {
        let top = self.vv.get(replica);
        while let Some(&d) = self
            .cloud
            .range(Dot::new(replica, 0)..=Dot::new(replica, top))
            .next()
        {
            self.cloud.remove(&d);
        }
    }

    /// The number of dots in the context (vector entries summed plus the cloud), saturating.
    ///
    /// Used by the causal join to tell whether a delta's context names any dot its store does
    /// not hold, that is whether the delta can remove anything.
    pub fn dot_count(&self) -> u64 {
        self.vv.dot_count().saturating_add(self.cloud.len() as u64)
    }

    /// Folds cloud dots that have become contiguous with the vector into it.
    pub fn compact(&mut self) {
        if self.cloud.is_empty() {
            return;
        }
        let vv = &mut self.vv;
        let mut kept = BTreeSet::new();
        // The cloud is sorted by (replica, counter): one pass folds each replica's run.
        for d in std::mem::take(&mut self.cloud) {
            let have = vv.get(d.replica);
            if d.counter <= have {
                continue;
            }
            if d.counter == have + 1 {
                vv.raise(d.replica, d.counter);
            } else {
                kept.insert(d);
            }
        }
        self.cloud = kept;
    }

    /// Folds in a causally stable vector: every replica has delivered every dot in `stable`,
    /// so whatever this state holds of them is final and the dots need not be listed one by
    /// one. Only replicas this context already mentions are raised, so a key's context never
    /// grows an entry for a replica that never touched it.
    pub fn compact_stable(&mut self, stable: &VersionVector) {
        let replicas: BTreeSet<_> = self
            .vv
            .iter()
            .map(|(r, _)| r)
            .chain(self.cloud.iter().map(|d| d.replica))
            .collect();
        for r in replicas {
            self.vv.raise(r, stable.get(r));
        }
        let vv = &self.vv;
        self.cloud.retain(|d| !vv.contains(d));
        self.compact();
    }

    /// Every dot of the context, replica by replica in counter order. As many items as
    /// [`CausalContext::dot_count`]: meant for the small contexts of deltas.
    pub fn dots(&self) -> impl Iterator<Item = Dot> + '_ {
        self.vv
            .iter()
            .flat_map(|(r, n)| (1..=n).map(move |c| Dot::new(r, c)))
            .chain(self.cloud.iter().copied())
    }

    /// The contiguous part.
    pub fn vv(&self) -> &VersionVector {
        &self.vv
    }

    /// The out-of-order dots above the vector.
    pub fn cloud(&self) -> impl Iterator<Item = &Dot> {
        self.cloud.iter()
    }

    /// Whether no dot has been seen.
    pub fn is_empty(&self) -> bool {
        self.vv.is_empty() && self.cloud.is_empty()
    }

    /// The highest counter seen for `replica`, contiguous or not.
    pub fn max_counter(&self, replica: crate::ReplicaId) -> u64 {
        let cloud_max = self
            .cloud
            .range(Dot::new(replica, 0)..=Dot::new(replica, u64::MAX))
            .next_back()
            .map(|d| d.counter)
            .unwrap_or(0);
        self.vv.get(replica).max(cloud_max)
    }
}

impl FromIterator<Dot> for CausalContext {
    fn from_iter<I: IntoIterator<Item = Dot>>(iter: I) -> Self {
        let mut cc = CausalContext::new();
        for d in iter {
            cc.insert(d);
        }
        cc
    }
}
