//! Which deltas a node has delivered, and the same set as it travels in a digest; it records
//! and answers, and must not decide what to deliver or send.
//!
//! [`Delivered`] is the node's own record: per origin the contiguous counter and the few
//! sequence numbers above it that arrived out of order, found through one hash lookup. It is
//! asked once per received delta and announced id, and at 1000 nodes it names 1000 origins:
//! a `CausalContext` (a sorted vector) would cost a binary search over cold memory per
//! question and a reallocation of the whole vector per new origin.
//!
//! [`DigestContext`] is a delivered set as a digest carries it: on the wire exactly the bytes
//! of the `crdt_types::CausalContext` of the same dots (a map of contiguous counters, then the
//! sorted out-of-order dots), decoded into sorted vectors in one pass instead of through the
//! `BTreeMap` a `VersionVector` decodes through, and canonical after decoding as a context is.

use crate::origin_order::OriginOrder;
use crdt_types::{CausalContext, Dot, ReplicaId, VersionVector};
use rustc_hash::FxBuildHasher;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt;

/// Moves the numbers of `above` (ascending) that continue `top` into it, and drops those it
/// covers: how a contiguous counter takes in the out-of-order numbers above it (public for
/// delivered records kept by other keys, as the simulator's store keeps its own).
pub fn fold(top: &mut u64, above: &mut Vec<u64>) {
    let mut skip = 0;
    for &s in above.iter() {
        if s <= *top {
            skip += 1;
        } else if s == *top + 1 {
            *top = s;
            skip += 1;
        } else {
            break;
        }
    }
    above.drain(..skip);
}

/// The deltas a node has delivered (its own included): per origin a contiguous counter, and
/// the out-of-order sequence numbers above it, each behind one hash lookup by origin.
///
/// The counters sit alone in their table (16 bytes an origin, four to a cache line); the
/// out-of-order numbers, usually none, in a second table that is looked at only when it is
/// not empty. The origins are random 64-bit replica ids, hashed with `rustc-hash` (no
/// per-process key, so the simulator stays deterministic).
///
/// Two sets are equal when they hold the same dots, whatever order their origins came in.
#[derive(Clone, Debug, Default)]
pub struct Delivered {
    /// Every sequence number `1..=top` of the origin is delivered; no zero entries.
    tops: HashMap<ReplicaId, u64, FxBuildHasher>,
    /// Delivered sequence numbers above `top + 1`, ascending; no empty entries.
    above: HashMap<ReplicaId, Vec<u64>, FxBuildHasher>,
    /// The origins of `tops`, for the digest's walk in replica order.
    order: OriginOrder,
}

impl PartialEq for Delivered {
    fn eq(&self, other: &Self) -> bool {
        self.tops == other.tops && self.above == other.above
    }
}

impl Eq for Delivered {}

impl Delivered {
    /// Nothing delivered.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether `dot` has been delivered (as for a `CausalContext`, counter 0 always is).
    #[inline]
    pub fn contains(&self, dot: &Dot) -> bool {
        dot.counter == 0
            || self
                .tops
                .get(&dot.replica)
                .is_some_and(|&t| dot.counter <= t)
            || (!self.above.is_empty()
                && self
                    .above
                    .get(&dot.replica)
                    .is_some_and(|a| a.binary_search(&dot.counter).is_ok()))
    }

    /// Records `dot` as delivered and tells whether it was new.
    #[inline]
    pub fn insert(&mut self, dot: Dot) -> bool {
        let top = self.top(dot.replica);
        if dot.counter <= top {
            return false;
        }
        if dot.counter == top + 1 {
            let mut top = dot.counter;
            if !self.above.is_empty() {
                self.fold_above(dot.replica, &mut top);
            }
            self.set_top(dot.replica, top);
            return true;
        }
        let above = self.above.entry(dot.replica).or_default();
        match above.binary_search(&dot.counter) {
            Ok(_) => false,
            Err(i) => {
                above.insert(i, dot.counter);
                true
            }
        }
    }

    /// Sets the contiguous counter of `replica` (never 0), adding a new origin to `order`.
    fn set_top(&mut self, replica: ReplicaId, top: u64) {
        if self.tops.insert(replica, top).is_none() {
            self.order.push(replica);
        }
    }

    /// Folds `replica`'s out-of-order numbers that continue `top` into it.
    fn fold_above(&mut self, replica: ReplicaId, top: &mut u64) {
        if let Some(above) = self.above.get_mut(&replica) {
            fold(top, above);
            if above.is_empty() {
                self.above.remove(&replica);
            }
        }
    }

    /// The contiguous counter of `replica`: every sequence number up to it is delivered.
    #[inline]
    pub fn top(&self, replica: ReplicaId) -> u64 {
        self.tops.get(&replica).copied().unwrap_or(0)
    }

    /// The highest sequence number of `replica` delivered, contiguous or not (0 if none).
    pub fn max_counter(&self, replica: ReplicaId) -> u64 {
        self.above
            .get(&replica)
            .and_then(|a| a.last().copied())
            .unwrap_or_else(|| self.top(replica))
    }

    /// Records every dot of `vv` as delivered (a state transfer's adopted vector).
    pub fn raise(&mut self, vv: &VersionVector) {
        for (r, c) in vv.iter() {
            let mut top = self.top(r);
            if c > top {
                top = c;
                self.fold_above(r, &mut top);
                self.set_top(r, top);
            }
        }
    }

    /// The contiguous counters, in replica order.
    pub fn vv(&self) -> VersionVector {
        self.order.iter().map(|r| (r, self.top(r))).collect()
    }

    /// The out-of-order dots, in `(replica, counter)` order.
    fn cloud(&self) -> Vec<Dot> {
        let mut cloud: Vec<Dot> = self
            .above
            .iter()
            .flat_map(|(&r, a)| a.iter().map(move |&s| Dot::new(r, s)))
            .collect();
        cloud.sort_unstable();
        cloud
    }

    /// The same set as a digest carries it.
    pub fn digest(&self) -> DigestContext {
        DigestContext {
            vv: self.vv(),
            cloud: self.cloud(),
        }
    }

    /// The same set as a `CausalContext`. Inserts every delivered dot, so it costs one step
    /// per dot: meant for inspection and tests, not for the hot path.
    pub fn to_context(&self) -> CausalContext {
        let vv = self.vv();
        vv.iter()
            .flat_map(|(r, n)| (1..=n).map(move |c| Dot::new(r, c)))
            .chain(self.cloud())
            .collect()
    }
}

impl From<&CausalContext> for Delivered {
    fn from(cc: &CausalContext) -> Self {
        let mut d = Delivered::new();
        d.raise(cc.vv());
        for dot in cc.cloud() {
            d.insert(*dot);
        }
        d
    }
}

/// A delivered set as a digest carries it: the contiguous counters and the out-of-order dots
/// above them, both sorted, canonical (no dot of the cloud is covered by or continues its
/// counter). Encodes exactly as the `CausalContext` of the same dots, and decodes what a
/// `CausalContext` encodes to the same set.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DigestContext {
    vv: VersionVector,
    cloud: Vec<Dot>,
}

impl DigestContext {
    /// The contiguous counters.
    pub fn vv(&self) -> &VersionVector {
        &self.vv
    }

    /// Takes the contiguous counters out (what an acknowledgement keeps of a digest).
    pub fn into_vv(self) -> VersionVector {
        self.vv
    }

    /// The out-of-order dots above the counters, in `(replica, counter)` order.
    pub fn cloud(&self) -> &[Dot] {
        &self.cloud
    }

    /// Whether `dot` is in the set.
    pub fn contains(&self, dot: &Dot) -> bool {
        self.vv.contains(dot) || (!self.cloud.is_empty() && self.cloud.binary_search(dot).is_ok())
    }

    /// The highest counter of `replica` in the set, contiguous or not (0 if none).
    pub fn max_counter(&self, replica: ReplicaId) -> u64 {
        self.vv
            .get(replica)
            .max(Dot::highest_of(&self.cloud, replica))
    }

    /// The canonical set of `pairs` (contiguous counters, sorted by replica, one per replica,
    /// none zero) and `cloud` (sorted, deduplicated dots): cloud dots the counters cover are
    /// dropped and those that continue them folded in, in one walk of both.
    fn canonical(pairs: Vec<(ReplicaId, u64)>, cloud: Vec<Dot>) -> Self {
        if cloud.is_empty() {
            return DigestContext {
                vv: pairs.into_iter().collect(),
                cloud,
            };
        }
        let mut vv = Vec::with_capacity(pairs.len());
        let mut kept = Vec::new();
        let mut pairs = pairs.into_iter().peekable();
        let mut dots = cloud.into_iter().peekable();
        loop {
            let replica = match (pairs.peek(), dots.peek()) {
                (Some(&(r, _)), Some(d)) => r.min(d.replica),
                (Some(&(r, _)), None) => r,
                (None, Some(d)) => d.replica,
                (None, None) => break,
            };
            let mut top = pairs.next_if(|&(r, _)| r == replica).map_or(0, |(_, c)| c);
            while let Some(d) = dots.next_if(|d| d.replica == replica) {
                if d.counter <= top {
                    continue;
                }
                if d.counter == top + 1 {
                    top = d.counter;
                } else {
                    kept.push(d);
                }
            }
            if top > 0 {
                vv.push((replica, top));
            }
        }
        DigestContext {
            vv: vv.into_iter().collect(),
            cloud: kept,
        }
    }
}

impl From<&CausalContext> for DigestContext {
    fn from(cc: &CausalContext) -> Self {
        DigestContext {
            vv: cc.vv().clone(),
            cloud: cc.cloud().copied().collect(),
        }
    }
}

impl<'de> Deserialize<'de> for DigestContext {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_struct("CausalContext", &["vv", "cloud"], ContextVisitor)
    }
}

/// Decodes a `CausalContext`'s shape: its vector (a map) and its cloud (a sequence of dots).
struct ContextVisitor;

impl<'de> Visitor<'de> for ContextVisitor {
    type Value = DigestContext;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a causal context")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<DigestContext, A::Error> {
        let Pairs(mut pairs) = seq
            .next_element()?
            .ok_or_else(|| de::Error::invalid_length(0, &self))?;
        let mut cloud: Vec<Dot> = seq
            .next_element()?
            .ok_or_else(|| de::Error::invalid_length(1, &self))?;
        // As the `BTreeMap` a `VersionVector` decodes through: sorted by replica, a repeated
        // replica's last counter wins, zeros dropped. Encoders send them sorted already.
        if !pairs.is_sorted_by(|a, b| a.0 < b.0) {
            pairs.sort_by_key(|&(r, _)| r);
            pairs.reverse();
            pairs.dedup_by_key(|&mut (r, _)| r);
            pairs.reverse();
        }
        pairs.retain(|&(_, c)| c > 0);
        if !cloud.is_sorted_by(|a, b| a < b) {
            cloud.sort_unstable();
            cloud.dedup();
        }
        Ok(DigestContext::canonical(pairs, cloud))
    }
}

/// A map's entries in the order they came.
struct Pairs(Vec<(ReplicaId, u64)>);

impl<'de> Deserialize<'de> for Pairs {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PairsVisitor;
        impl<'de> Visitor<'de> for PairsVisitor {
            type Value = Pairs;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a version vector")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Pairs, A::Error> {
                // The length comes from the input: reserve no more than a bounded amount.
                let mut pairs = Vec::with_capacity(map.size_hint().unwrap_or(0).min(4096));
                while let Some(entry) = map.next_entry()? {
                    pairs.push(entry);
                }
                Ok(Pairs(pairs))
            }
        }
        deserializer.deserialize_map(PairsVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crdt_types::wire;

    fn r(n: u64) -> ReplicaId {
        ReplicaId(n)
    }

    /// Deterministic pseudo-random dots over a few replicas and counters.
    fn dots(seed: u64, n: usize) -> Vec<Dot> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                Dot::new(r(1 + x % 5), 1 + (x >> 8) % 12)
            })
            .collect()
    }

    #[test]
    fn answers_as_a_causal_context_of_the_same_dots() {
        for seed in 0..200 {
            let mut cc = CausalContext::new();
            let mut d = Delivered::new();
            for dot in dots(seed, (seed % 40) as usize) {
                assert_eq!(d.insert(dot), cc.insert(dot), "insert {dot:?}");
            }
            for replica in 0..7 {
                assert_eq!(d.top(r(replica)), cc.vv().get(r(replica)));
                assert_eq!(d.max_counter(r(replica)), cc.max_counter(r(replica)));
                for c in 0..15 {
                    let dot = Dot::new(r(replica), c);
                    assert_eq!(d.contains(&dot), cc.contains(&dot), "{dot:?}");
                }
            }
            assert_eq!(&d.vv(), cc.vv());
            assert_eq!(d.to_context(), cc);
            assert_eq!(Delivered::from(&cc), d);
            assert_eq!(d.digest(), DigestContext::from(&cc));
            // Adopting a vector is joining the context holding exactly its dots.
            let vv: VersionVector = [(r(2), 7), (r(6), 3)].into_iter().collect();
            let mut joined = cc.clone();
            for (replica, n) in vv.iter() {
                for c in 1..=n {
                    joined.insert(Dot::new(replica, c));
                }
            }
            d.raise(&vv);
            assert_eq!(d.to_context(), joined);
        }
    }

    #[test]
    fn many_origins_in_any_order_give_the_vector_in_replica_order() {
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut d = Delivered::new();
        let mut cc = CausalContext::new();
        for i in 0..700 {
            let dot = Dot::new(r(next() % 5000), 1 + next() % 2);
            assert_eq!(d.insert(dot), cc.insert(dot));
            // Asked between merges of the unsorted tail as well as right after them.
            if i % 37 == 0 {
                assert_eq!(&d.vv(), cc.vv(), "after {i} inserts");
            }
        }
        assert_eq!(&d.vv(), cc.vv());
        assert_eq!(d.digest(), DigestContext::from(&cc));
        // The same dots inserted in another order: an equal set.
        let rebuilt = Delivered::from(&cc);
        assert_eq!(rebuilt, d);
        assert_eq!(rebuilt.vv(), d.vv());
    }

    #[test]
    fn a_digest_context_has_the_bytes_of_the_causal_context() {
        for seed in 0..200 {
            let cc: CausalContext = dots(seed, (seed % 40) as usize).into_iter().collect();
            let digest = Delivered::from(&cc).digest();
            let bytes = wire::encode(&cc).expect("encodes");
            assert_eq!(wire::encode(&digest).expect("encodes"), bytes);
            let back: DigestContext = wire::decode(&bytes).expect("decodes");
            assert_eq!(back, digest);
            for dot in dots(seed + 1000, 30) {
                assert_eq!(back.contains(&dot), cc.contains(&dot));
                assert_eq!(back.max_counter(dot.replica), cc.max_counter(dot.replica));
            }
        }
    }

    /// A map encoded with its entries as given: unsorted, repeated, zero.
    struct RawMap(Vec<(ReplicaId, u64)>);

    impl Serialize for RawMap {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.collect_map(self.0.iter().map(|(r, c)| (r, c)))
        }
    }

    /// The shape a `CausalContext` is encoded in, filled with anything, canonical or not.
    #[derive(Serialize)]
    struct RawContext {
        vv: RawMap,
        cloud: Vec<Dot>,
    }

    #[test]
    fn non_canonical_input_decodes_as_a_causal_context_decodes_it() {
        for seed in 0..300 {
            let ds = dots(seed, 12);
            let raw = RawContext {
                // Unsorted, repeated replicas and zeros included.
                vv: RawMap(ds[..4].iter().map(|d| (d.replica, d.counter % 6)).collect()),
                cloud: ds[4..].to_vec(),
            };
            let bytes = wire::encode(&raw).expect("encodes");
            let cc: CausalContext = wire::decode(&bytes).expect("decodes");
            let digest: DigestContext = wire::decode(&bytes).expect("decodes");
            assert_eq!(digest, DigestContext::from(&cc), "seed {seed}: {cc:?}");
        }
    }
}
