//! Causal contexts: the set of dots a state has seen, as a version vector plus a dot cloud.

use crate::{Dot, ReplicaId, VersionVector};
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

/// The dots a CRDT state (or delta) has observed.
///
/// Stored compactly as a [`VersionVector`] (every dot up to `vv[r]`) and a cloud of dots above
/// it that arrived out of order, kept folded: a dot that continues the vector moves into it.
/// The cloud is a sorted vector, small by design (what lies above the node's delivered
/// frontier between two [`CausalContext::compact_stable`] calls), so a delta's one-dot
/// context is stored inline, with no allocation, and lookups are binary searches over
/// contiguous memory. Because dot counters are per-replica *delta*
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
    /// Sorted by `(replica, counter)`, every dot above `vv[replica] + 1`. A delta's context
    /// holds one dot, kept inline (no heap block); encoded as a sequence, like a `Vec`.
    #[serde(serialize_with = "serialize_cloud")]
    cloud: SmallVec<[Dot; 1]>,
}

fn serialize_cloud<S: serde::Serializer>(
    cloud: &SmallVec<[Dot; 1]>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    cloud.as_slice().serialize(serializer)
}

/// The encoded shape of a [`CausalContext`]; decoding goes through it to normalise.
#[derive(Deserialize)]
struct ContextRepr {
    vv: VersionVector,
    /// The cloud as it came (a sequence of dots, decoded where it is kept), and whether it
    /// came strictly sorted (as encoded).
    #[serde(deserialize_with = "cloud_as_sent")]
    cloud: (SmallVec<[Dot; 1]>, bool),
}

fn cloud_as_sent<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<(SmallVec<[Dot; 1]>, bool), D::Error> {
    crate::sorted_seq::sorted_seq(deserializer, Dot::key)
}

impl From<ContextRepr> for CausalContext {
    fn from(repr: ContextRepr) -> Self {
        let (mut cloud, sorted) = repr.cloud;
        if !sorted {
            cloud.sort_unstable();
            cloud.dedup();
        }
        let mut cc = CausalContext { vv: repr.vv, cloud };
        cc.normalize();
        cc
    }
}

impl CausalContext {
    /// The empty context.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether `dot` has been seen.
    #[inline]
    pub fn contains(&self, dot: &Dot) -> bool {
        self.vv.contains(dot) || (!self.cloud.is_empty() && self.find_in_cloud(dot).is_ok())
    }

    /// Records `dot` as seen and tells whether it was new: one search for what `contains`
    /// then an insert would do.
    ///
    /// The usual case, a dot that continues its replica's vector entry with no cloud dot of
    /// that replica to fold, is inlined; placing a dot in the cloud is not.
    #[inline(always)]
    pub fn insert(&mut self, dot: Dot) -> bool {
        let top = self.vv.advance(dot);
        if dot.counter <= top {
            return false;
        }
        if dot.counter == top + 1 {
            // The cloud is sorted by replica: one of `dot`'s lies between its ends.
            if let (Some(first), Some(last)) = (self.cloud.first(), self.cloud.last())
                && first.replica <= dot.replica
                && dot.replica <= last.replica
            {
                self.fold_above(dot);
            }
            return true;
        }
        self.insert_in_cloud(dot)
    }

    /// [`CausalContext::insert`] of a dot above its replica's vector entry plus one: placed in
    /// the cloud unless it is there already.
    #[inline(never)]
    fn insert_in_cloud(&mut self, dot: Dot) -> bool {
        if self.cloud.last().is_none_or(|last| last.key() < dot.key()) {
            // Above every cloud dot (the highest replica's next one): no search, nothing moves.
            self.cloud.push(dot);
            return true;
        }
        match self.find_in_cloud(&dot) {
            Ok(_) => false,
            Err(i) => {
                self.cloud.insert(i, dot);
                true
            }
        }
    }

    /// The context of exactly `dots`, sorted and distinct (a store's own dots, e.g. a
    /// counter's entries, which is what a remove or a replacing write covers): one pass with
    /// no search and no move, each dot continuing its replica's vector entry or going to the
    /// end of the cloud. The same value inserting them one by one gives.
    pub(crate) fn of_sorted(mut dots: impl Iterator<Item = Dot>) -> Self {
        let mut vv: Vec<(ReplicaId, u64)> = Vec::new();
        let mut cloud: SmallVec<[Dot; 1]> = SmallVec::new();
        // The replica of the dots so far and its vector entry (0: none yet).
        let mut run: Option<(ReplicaId, u64)> = None;
        while let Some(d) = dots.next() {
            let top = match run {
                Some((r, top)) if r == d.replica => top,
                _ => {
                    debug_assert!(run.is_none_or(|(r, _)| r < d.replica), "dots out of order");
                    if let Some(entry) = run.filter(|&(_, top)| top > 0) {
                        vv.push(entry);
                    }
                    0
                }
            };
            debug_assert!(
                cloud.last().is_none_or(|c| c.key() < d.key()),
                "dots out of order"
            );
            if d.counter == top + 1 {
                run = Some((d.replica, d.counter));
            } else {
                // Counter 0 is covered by every vector; anything else lies above a gap.
                if d.counter > top {
                    if cloud.is_empty() {
                        // Room for the dots left too: the ones after a gap all come here.
                        cloud.reserve(dots.size_hint().0 + 1);
                    }
                    cloud.push(d);
                }
                run = Some((d.replica, top));
            }
        }
        if let Some(entry) = run.filter(|&(_, top)| top > 0) {
            vv.push(entry);
        }
        CausalContext {
            vv: VersionVector::from_sorted(vv),
            cloud,
        }
    }

    /// The one dot of a context that names exactly one (`dot_count() == 1`).
    #[inline]
    pub(crate) fn only_dot(&self) -> Option<Dot> {
        match (self.vv.iter().next(), self.cloud.as_slice()) {
            (Some((r, 1)), []) if self.vv.len() == 1 => Some(Dot::new(r, 1)),
            (None, [d]) => Some(*d),
            _ => None,
        }
    }

    /// The one dot of a context that is one cloud dot over an empty vector, held inline (a
    /// one-add delta's, which so owns no heap block): one test of the cloud's length field.
    #[inline(always)]
    pub(crate) fn only_inline_dot(&self) -> Option<Dot> {
        match self.cloud.as_slice() {
            [d] if !self.cloud.spilled() && self.vv.is_empty() => Some(*d),
            _ => None,
        }
    }

    /// The position of `dot` in the cloud, as `binary_search` gives it: each step compares
    /// a dot as one 128-bit key (replica, then counter), not field by field.
    #[inline]
    fn find_in_cloud(&self, dot: &Dot) -> Result<usize, usize> {
        let key = dot.key();
        self.cloud.binary_search_by(|d| d.key().cmp(&key))
    }

    /// `dot` just became its replica's vector entry: moves the cloud dots that now continue
    /// it into the vector (one search for the dot right above it).
    /// The caller checked that the cloud's replicas span `dot`'s.
    #[inline(never)]
    fn fold_above(&mut self, dot: Dot) {
        let Some(mut top) = dot.counter.checked_add(1) else {
            return;
        };
        let Ok(start) = self.find_in_cloud(&Dot::new(dot.replica, top)) else {
            return;
        };
        let mut end = start + 1;
        while let Some(next) = top.checked_add(1)
            && self.cloud.get(end) == Some(&Dot::new(dot.replica, next))
        {
            top = next;
            end += 1;
        }
        self.cloud.drain(start..end);
        self.vv.set(dot.replica, top);
    }

    /// The union of both contexts.
    ///
    /// Incremental: only the replicas `other` mentions are touched, so joining a small delta's
    /// context into a large one costs O(|other| log |self|); a large cloud is merged linearly.
    pub fn join(&mut self, other: &CausalContext) {
        let mut raised = false;
        for (r, c) in other.vv.iter() {
            if c > self.vv.get(r) {
                self.vv.raise(r, c);
                raised = true;
            }
        }
        if raised {
            self.normalize();
        }
        match other.cloud.len() {
            0 => {}
            // A delta's one dot: usually new, one insert.
            1 => {
                self.insert(other.cloud[0]);
            }
            // A remove's dots (usually all seen already) or an add's on a hidden item (the
            // dots it saw and its own): one pass finds the few this side lacks, inserted one
            // by one; more than a few make one merge.
            _ => {
                let mut lacking: SmallVec<[Dot; 8]> = SmallVec::new();
                let many = {
                    let mut seen = self.seen_in_order();
                    (other.cloud.iter().filter(|d| !seen(d))).any(|d| {
                        lacking.push(*d);
                        lacking.len() > lacking.inline_size()
                    })
                };
                if many {
                    return self.merge_cloud(other);
                }
                for d in lacking {
                    self.insert(d);
                }
            }
        }
    }

    /// Merges a large `other` cloud into this one linearly, then re-normalises.
    fn merge_cloud(&mut self, other: &CausalContext) {
        let mine = std::mem::take(&mut self.cloud);
        let mut merged = SmallVec::with_capacity(mine.len() + other.cloud.len());
        let (mut a, mut b) = (
            mine.into_iter().peekable(),
            other.cloud.iter().copied().peekable(),
        );
        loop {
            let next = match (a.peek(), b.peek()) {
                (Some(x), Some(y)) if x < y => a.next(),
                (Some(x), Some(y)) if x > y => b.next(),
                (Some(_), Some(_)) => {
                    b.next();
                    a.next()
                }
                (Some(_), None) => a.next(),
                (None, Some(_)) => b.next(),
                (None, None) => break,
            };
            merged.extend(next);
        }
        self.cloud = merged;
        self.normalize();
    }

    /// [`CausalContext::contains`] for a run of dots, e.g. a delta's (sorted): a replica's
    /// vector entry is looked up again only when the replica changes, and only a dot above it
    /// is searched for in the cloud, so a remove's many dots cost a compare each and a large
    /// cloud here is not read through. Exact in any order; fastest grouped by replica.
    pub(crate) fn seen_in_order(&self) -> impl FnMut(&Dot) -> bool + '_ {
        let mut top = (None, 0);
        move |d| {
            if top.0 != Some(d.replica) {
                top = (Some(d.replica), self.vv.get(d.replica));
            }
            d.counter <= top.1 || (!self.cloud.is_empty() && self.find_in_cloud(d).is_ok())
        }
    }

    /// Re-establishes the canonical form after the vector grew or the cloud was rebuilt:
    /// drops cloud dots the vector covers and folds the ones that continue it. One pass.
    fn normalize(&mut self) {
        if self.cloud.is_empty() {
            return;
        }
        if let [d] = self.cloud.as_slice()
            && self.vv.is_empty()
            && d.counter > 1
        {
            // A delta's one dot above an empty vector (most decoded contexts): canonical.
            return;
        }
        // The cloud is sorted by replica: its vector entry is read once for a run of the
        // replica's dots, and written once after it if they raised it (exact in any order).
        let vv = &mut self.vv;
        let mut kept = 0;
        // The replica of the run, its entry as read, and as the run's dots raised it.
        let (mut replica, mut read, mut top) = (None, 0, 0);
        for i in 0..self.cloud.len() {
            let d = self.cloud[i];
            if replica != Some(d.replica) {
                if let Some(r) = replica
                    && top != read
                {
                    vv.set(r, top);
                }
                replica = Some(d.replica);
                read = vv.get(d.replica);
                top = read;
            }
            if d.counter <= top {
                continue;
            }
            if d.counter == top + 1 {
                top = d.counter;
                continue;
            }
            self.cloud[kept] = d;
            kept += 1;
        }
        if let Some(r) = replica
            && top != read
        {
            vv.set(r, top);
        }
        self.cloud.truncate(kept);
    }

    /// The number of dots in the context (vector entries summed plus the cloud), saturating.
    ///
    /// Used by the causal join to tell whether a delta's context names any dot its store does
    /// not hold, that is whether the delta can remove anything.
    #[inline]
    pub fn dot_count(&self) -> u64 {
        self.vv.dot_count().saturating_add(self.cloud.len() as u64)
    }

    /// Folds cloud dots that have become contiguous with the vector into it.
    pub fn compact(&mut self) {
        self.normalize();
    }

    /// Folds in a causally stable vector: every replica has delivered every dot in `stable`,
    /// so whatever this state holds of them is final and the dots need not be listed one by
    /// one. Only replicas this context already mentions are raised, so a key's context never
    /// grows an entry for a replica that never touched it.
    ///
    /// One pass over both vectors (sorted by replica); a replica the vector lacks is looked
    /// for in the cloud from where the previous one was found.
    pub fn compact_stable(&mut self, stable: &VersionVector) {
        let cloud = &self.cloud;
        let mut from = 0;
        let raised = self.vv.raise_all(stable, |r| {
            from += cloud[from..].partition_point(|d| d.replica < r);
            cloud.get(from).is_some_and(|d| d.replica == r)
        });
        if raised {
            self.normalize();
        }
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
    #[inline]
    pub fn vv(&self) -> &VersionVector {
        &self.vv
    }

    /// The out-of-order dots above the vector.
    pub fn cloud(&self) -> impl Iterator<Item = &Dot> {
        self.cloud.iter()
    }

    /// The out-of-order dots above the vector as the sorted slice they are kept in.
    #[inline]
    pub(crate) fn cloud_dots(&self) -> &[Dot] {
        &self.cloud
    }

    /// Whether no dot has been seen.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.vv.is_empty() && self.cloud.is_empty()
    }

    /// The highest counter seen for `replica`, contiguous or not.
    pub fn max_counter(&self, replica: ReplicaId) -> u64 {
        self.vv
            .get(replica)
            .max(Dot::highest_of(&self.cloud, replica))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// `compact_stable` as it was written before its one-pass form: a search of the vector
    /// and of the cloud for each replica of `stable`, and a raise for each.
    fn compact_stable_by_replica(cc: &mut CausalContext, stable: &VersionVector) {
        let mut raised = false;
        for (r, n) in stable.iter() {
            if n > cc.vv.get(r) {
                let start = cc.cloud.partition_point(|d| d.replica < r);
                let mentioned =
                    cc.vv.get(r) > 0 || cc.cloud.get(start).is_some_and(|d| d.replica == r);
                if mentioned {
                    cc.vv.raise(r, n);
                    raised = true;
                }
            }
        }
        if raised {
            normalize_by_dot(cc);
        }
    }

    /// `normalize` as it was written before it read a replica's entry once per run: a
    /// lookup of the vector, and a write if the dot continues it, for every cloud dot.
    fn normalize_by_dot(cc: &mut CausalContext) {
        let mut kept = 0;
        for i in 0..cc.cloud.len() {
            let d = cc.cloud[i];
            let top = cc.vv.get(d.replica);
            if d.counter <= top {
                continue;
            }
            if d.counter == top + 1 {
                cc.vv.set(d.replica, d.counter);
                continue;
            }
            cc.cloud[kept] = d;
            kept += 1;
        }
        cc.cloud.truncate(kept);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 512,
            failure_persistence: None,
            ..Default::default()
        })]

        /// The one-pass `compact_stable` gives what raising replica by replica gave, for
        /// contexts and stable vectors over overlapping, disjoint and absent replicas.
        #[test]
        fn compact_stable_is_the_raise_by_replica(
            dots in proptest::collection::vec((0u64..12, 1u64..20), 0..40),
            stable in proptest::collection::vec((0u64..12, 0u64..24), 0..14),
        ) {
            let cc: CausalContext =
                dots.iter().map(|&(r, c)| Dot::new(ReplicaId(r * 7 + 1), c)).collect();
            let stable: VersionVector =
                stable.iter().map(|&(r, c)| (ReplicaId(r * 7 + 1), c)).collect();
            let mut fast = cc.clone();
            fast.compact_stable(&stable);
            let mut reference = cc;
            compact_stable_by_replica(&mut reference, &stable);
            proptest::prop_assert_eq!(fast, reference);
        }

        /// `normalize` after the vector was raised (as `join` and `compact_stable` leave a
        /// context) gives what the dot-by-dot form gave, the cloud sorted or not.
        #[test]
        fn normalize_is_the_dot_by_dot_fold(
            dots in proptest::collection::vec((0u64..6, 1u64..16), 0..40),
            raise in proptest::collection::vec((0u64..6, 0u64..16), 0..8),
            shuffle in proptest::bool::ANY,
        ) {
            let mut cloud: SmallVec<[Dot; 1]> =
                dots.iter().map(|&(r, c)| Dot::new(ReplicaId(r * 5 + 2), c)).collect();
            cloud.sort_unstable();
            cloud.dedup();
            if shuffle {
                cloud.reverse();
            }
            let vv: VersionVector =
                raise.iter().map(|&(r, c)| (ReplicaId(r * 5 + 2), c)).collect();
            let mut fast = CausalContext { vv, cloud };
            let mut reference = fast.clone();
            fast.normalize();
            normalize_by_dot(&mut reference);
            proptest::prop_assert_eq!(fast, reference);
        }
    }

    #[test]
    fn a_context_of_sorted_dots_is_the_one_inserting_them_gives() {
        let (a, b, c) = (ReplicaId(3), ReplicaId(7), ReplicaId(u64::MAX));
        let cases: [&[(ReplicaId, u64)]; 7] = [
            &[],
            &[(a, 1)],
            &[(a, 2)],
            &[(a, 0), (a, 1), (a, 2), (a, 4), (a, 5), (b, 3)],
            &[(a, 1), (a, 2), (a, 3), (b, 1), (b, 9), (c, 1), (c, 2)],
            &[(a, 5), (a, 6), (a, 9), (b, 2), (c, u64::MAX)],
            &[(a, 1), (b, 1), (b, 2), (b, 7), (b, 8), (b, 10), (c, 3)],
        ];
        for dots in cases {
            let dots: Vec<Dot> = dots.iter().map(|&(r, n)| Dot::new(r, n)).collect();
            let built = CausalContext::of_sorted(dots.iter().copied());
            assert_eq!(
                built,
                dots.iter().copied().collect::<CausalContext>(),
                "{dots:?}"
            );
            for d in dots.iter().filter(|d| d.counter > 0) {
                assert!(built.contains(d), "{d:?} of {dots:?}");
            }
        }
    }
}
