//! Dot stores: the payload half of a causal CRDT and its generic join (Almeida, Shoker and
//! Baquero 2018, §6): dot sets, dot functions and dot maps.
//!
//! A store never carries its own causal context: the [`Causal`](crate::Causal) wrapper pairs it
//! with one, and [`DotStore::join_store`] receives both contexts. Every causal type in this
//! crate (MV register, add-wins set, add-wins map, cart) is one of these stores in a `Causal`,
//! so they all share the one join below.
//!
//! Each store also owns its *delta mutators* (`add_delta`, `write_delta`, ...): functions of the
//! current value and a [`Tag`] that return the delta an operation makes, as a `Causal` value.
//! They compose: a map's `update_delta` runs the value's mutator and wraps its result, which
//! is how maps nest.

use crate::key_index::{INDEXED_FROM, KeyIndex};
use crate::sorted_seq::{sorted_map, sorted_seq};
use crate::{Causal, CausalContext, Counter, Dot, Tag};
use serde::de::Error as _;
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize};
use smallvec::{SmallVec, smallvec};
use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};

/// The store half of a causal CRDT: a set of dots with payload, joined under two contexts.
///
/// Laws the implementations keep (checked by `tests/laws.rs`):
/// - a dot in the store is in the store's context (the caller's `Causal` keeps this);
/// - the empty store is the bottom element, and [`DotStore::is_empty`] is exact;
/// - stores are in normal form (no empty nested values), so equal states compare equal.
pub trait DotStore: Default + Clone + PartialEq + fmt::Debug {
    /// Whether the store holds no dot.
    fn is_empty(&self) -> bool;

    /// The number of dots the store holds.
    fn dot_count(&self) -> usize;

    /// Calls `f` with every dot the store holds.
    fn for_each_dot<F: FnMut(Dot)>(&self, f: &mut F);

    /// Whether the store holds `dot`.
    fn contains_dot(&self, dot: &Dot) -> bool;

    /// The store part of the causal join of `(self, ctx)` and `(other, other_ctx)`; the caller
    /// joins the contexts afterwards. `other` is taken by move so nothing is cloned.
    /// Returns `true` only if `drops` was [`Drops::These`] and every one of its dots is in
    /// `ctx` (held here and now dropped, or seen and gone already), so a context made of them
    /// alone adds nothing to it; `false` says nothing.
    ///
    /// `drops` says what of `self` the join removes (see [`Drops`]). With
    /// [`Drops::Nothing`], entries `other` does not mention are left untouched, and with
    /// [`Drops::These`] only the entries holding those dots are looked for, which makes
    /// merging a small delta into a large state cost O(delta), not O(state). (A dot lives at
    /// one place forever: the key path of the operation that minted it.)
    fn join_store(
        &mut self,
        ctx: &CausalContext,
        other: Self,
        other_ctx: &CausalContext,
        drops: Drops<'_>,
    ) -> bool;

    /// Adds `other`, a store none of whose dots the receiver's context has seen: the causal
    /// join when the other context names nothing else (a one-dot delta, e.g. a cart add), so
    /// nothing is removed and every entry of `other` is kept. Spares the add the general
    /// [`DotStore::join_store`]'s context lookups and bookkeeping.
    fn join_unseen(&mut self, other: Self);

    /// Whether the store holds any of the probe's dots: one pass over a small store.
    fn holds_any(&self, probe: &DotProbe<'_>) -> bool {
        probe.any_in(u64::MAX, |d| self.contains_dot(d))
    }

    /// Removes the dots of `dots` (sorted, distinct) the store holds, in one pass, and sets
    /// bit `j` of `found` for each `dots[j]` it dropped (the first 64 are tracked): what a
    /// join with [`Drops::These`] removes here.
    fn drop_held(&mut self, dots: &[Dot], found: &mut u64);

    /// Removes every dot `ctx` covers: the join with `(empty, ctx)`.
    fn remove_covered(&mut self, ctx: &CausalContext);

    /// The context made of exactly the dots this store holds (what a remove must cover).
    fn dots(&self) -> CausalContext {
        let mut cc = CausalContext::new();
        self.for_each_dot(&mut |d| {
            cc.insert(d);
        });
        cc
    }
}

/// The most dots of a [`Drops::These`] whose finding [`DotStore::drop_held`] records, one bit
/// of a `u64` each (the causal join lists at most this many; any further ones would only be
/// looked for again, by the slower search for dots the listed keys lack).
pub(crate) const MAX_DROPS: usize = 64;

/// The bits of `found` that `n` dots of a [`Drops::These`] set when every one was found, if
/// `n` is at most `MAX_DROPS`.
#[inline]
fn all_found(n: usize) -> Option<u64> {
    match n {
        MAX_DROPS => Some(u64::MAX),
        n if n < MAX_DROPS => Some((1u64 << n) - 1),
        _ => None,
    }
}

/// What of the receiving store a causal join removes: the dots it holds that the other
/// context covers and the other store lacks. [`Causal`](crate::Causal) narrows them down to
/// the dots its context has seen when the other context is small (a delta's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Drops<'a> {
    /// Nothing: every dot the other side removes is already gone here.
    Nothing,
    /// These dots, sorted: the other side removes them; the receiver holds some, all or none
    /// of them (none held: a stale remove, or dots it has not seen), and no other dot the
    /// other side removes.
    These(&'a [Dot]),
    /// Not worked out (a large context, a full state's): any dot the other context covers
    /// and the other store lacks.
    Unknown,
}

/// A few dots (sorted, distinct) looked for in every entry of a store: the dots a remove names
/// that the keys it lists do not hold. Each dot has one of 64 mask bits (a hash); a store that
/// keeps the bits of its dots (a [`DotFun`]) is ruled out for most dots by one test each,
/// so reading a whole cart for them costs a few instructions a key.
///
/// Each dot comes with its bit ([`DotProbe::marked`], worked out once where the probe's dots
/// are collected), so a store whose mask meets the probe's tests a dot in two instructions.
pub struct DotProbe<'a> {
    /// The dots, sorted and distinct, each with its mask bit.
    dots: &'a [(Dot, u64)],
    /// The mask bits of all of `dots`.
    mask: u64,
}

impl<'a> DotProbe<'a> {
    /// The probe for `dots` (sorted, distinct, each as [`DotProbe::marked`] gives it). Only
    /// this crate builds probes: a dot listed with a wrong bit would be missed, and a remove
    /// would leave it in place.
    pub(crate) fn new(dots: &'a [(Dot, u64)]) -> Self {
        DotProbe {
            dots,
            mask: dots.iter().fold(0, |m, (_, bit)| m | bit),
        }
    }

    /// `dot` with its mask bit, as a probe lists it.
    #[inline]
    pub(crate) fn marked(dot: Dot) -> (Dot, u64) {
        (dot, Self::bit(&dot))
    }

    /// Whether a store whose dots have the mask bits `held` (or a superset) holds one of the
    /// probe's dots, `holds` telling exactly for the dots whose bit is there.
    #[inline]
    fn any_in(&self, held: u64, mut holds: impl FnMut(&Dot) -> bool) -> bool {
        held & self.mask != 0 && (self.dots.iter()).any(|(d, bit)| held & bit != 0 && holds(d))
    }

    /// The mask bits of `dots`.
    fn bits<'d>(dots: impl Iterator<Item = &'d Dot>) -> u64 {
        dots.fold(0, |m, d| m | Self::bit(d))
    }

    /// The mask bit of `dot`: one of 64, by a multiplicative hash.
    #[inline]
    fn bit(dot: &Dot) -> u64 {
        let h = (dot.replica.0 ^ dot.counter.rotate_left(32)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        1 << (h >> 58)
    }
}

/// Drops from `entries` (sorted by dot, distinct) those whose dot (through `dot_of`) is in
/// `dots` (sorted, distinct) and sets bit `j` of `found` for each `dots[j]` dropped: one pass
/// over both, the entries before the first dropped one untouched, the kept ones after it
/// moved down in place (a heap block is kept). Tells whether any entry was dropped.
#[inline]
fn drop_common<A: smallvec::Array>(
    entries: &mut SmallVec<A>,
    dot_of: impl Fn(&A::Item) -> Dot,
    dots: &[Dot],
    found: &mut u64,
) -> bool {
    let mark = |found: &mut u64, j: usize| {
        if j < MAX_DROPS {
            *found |= 1 << j;
        }
    };
    let slice = entries.as_mut_slice();
    let n = slice.len();
    if n == dots.len() && (slice.iter().zip(dots)).all(|(e, d)| dot_of(e) == *d) {
        // Exactly the dots held (a remove of everything observed, the usual case): all go.
        *found |= all_found(n).unwrap_or(u64::MAX);
        entries.clear();
        return n > 0;
    }
    let (mut i, mut j) = (0, 0);
    // Up to the first entry dropped, nothing moves.
    loop {
        let (Some(entry), Some(x)) = (slice.get(i), dots.get(j)) else {
            return false;
        };
        match x.cmp(&dot_of(entry)) {
            Ordering::Less => j += 1,
            Ordering::Greater => i += 1,
            Ordering::Equal => break,
        }
    }
    mark(found, j);
    let mut kept = i;
    i += 1;
    j += 1;
    while i < n {
        let d = dot_of(&slice[i]);
        while dots.get(j).is_some_and(|x| *x < d) {
            j += 1;
        }
        if dots.get(j) == Some(&d) {
            mark(found, j);
            j += 1;
        } else {
            slice.swap(kept, i);
            kept += 1;
        }
        i += 1;
    }
    entries.truncate(kept);
    true
}

// ---------------------------------------------------------------------------------------------
// DotSet

/// A set of dots: the store of an enable-wins flag, and of one element of an add-wins set.
///
/// Kept as a sorted vector: a set usually holds one to a few dots, where a vector beats a tree
/// in memory and speed; one dot is stored inline, without a heap block. Like a [`DotFun`] it
/// keeps the [`DotProbe`] mask bits of its dots (never encoded, compared or hashed).
#[derive(Clone, Default)]
pub struct DotSet(SmallVec<[Dot; 1]>, u64);

impl PartialEq for DotSet {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

impl Eq for DotSet {}

impl Hash for DotSet {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

impl Serialize for DotSet {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // As the `Vec<Dot>` it decodes from.
        self.0.as_slice().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for DotSet {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // As a `Vec<Dot>` that must be strictly sorted, decoded where it is kept.
        let (dots, sorted) = sorted_seq(deserializer, Dot::key)?;
        if !sorted {
            return Err(D::Error::custom("dot set is not strictly sorted"));
        }
        let bits = DotProbe::bits(dots.iter());
        Ok(DotSet(dots, bits))
    }
}

impl fmt::Debug for DotSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(&self.0).finish()
    }
}

impl DotSet {
    /// Whether `dot` is in the set.
    pub fn contains(&self, dot: &Dot) -> bool {
        self.0.binary_search(dot).is_ok()
    }

    /// The dots in order.
    pub fn iter(&self) -> impl Iterator<Item = &Dot> {
        self.0.iter()
    }

    /// The delta of adding (enabling): the new dot replaces every dot seen so far.
    pub fn add_delta(&self, tag: Tag) -> Causal<DotSet> {
        let mut context = self.dots();
        context.insert(tag.dot);
        Causal::new(DotSet(smallvec![tag.dot], DotProbe::bit(&tag.dot)), context)
    }

    /// Inserts `dot` at `i`, its place in order.
    fn put(&mut self, i: usize, dot: Dot) {
        self.1 |= DotProbe::bit(&dot);
        self.0.insert(i, dot);
    }

    /// Keeps the dots that pass `keep`, and the mask bits of those only.
    fn retain_dots(&mut self, mut keep: impl FnMut(&Dot) -> bool) {
        self.0.retain(|d| keep(d));
        self.1 = DotProbe::bits(self.0.iter());
    }

    /// The delta of removing (disabling): covers every dot seen so far, adds none.
    pub fn remove_delta(&self) -> Causal<DotSet> {
        Causal::new(DotSet::default(), self.dots())
    }
}

impl DotStore for DotSet {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn dot_count(&self) -> usize {
        self.0.len()
    }

    fn for_each_dot<F: FnMut(Dot)>(&self, f: &mut F) {
        self.0.iter().copied().for_each(f);
    }

    fn contains_dot(&self, dot: &Dot) -> bool {
        self.contains(dot)
    }

    fn dots(&self) -> CausalContext {
        CausalContext::of_sorted(self.0.iter().copied())
    }

    #[inline]
    fn holds_any(&self, probe: &DotProbe<'_>) -> bool {
        debug_assert!(
            (self.0.iter()).all(|d| self.1 & DotProbe::bit(d) != 0),
            "a dot set's mask lost a dot"
        );
        probe.any_in(self.1, |d| self.contains(d))
    }

    fn drop_held(&mut self, dots: &[Dot], found: &mut u64) {
        if drop_common(&mut self.0, |d| *d, dots, found) {
            self.1 = DotProbe::bits(self.0.iter());
        }
    }

    fn join_store(
        &mut self,
        ctx: &CausalContext,
        other: Self,
        other_ctx: &CausalContext,
        drops: Drops<'_>,
    ) -> bool {
        let mut all_held = false;
        match drops {
            Drops::Nothing => {}
            Drops::These(dots) => {
                let mut found = 0;
                self.drop_held(dots, &mut found);
                all_held = all_found(dots.len()) == Some(found);
            }
            Drops::Unknown => {
                self.retain_dots(|d| !other_ctx.contains(d) || other.0.binary_search(d).is_ok())
            }
        }
        for d in other.0 {
            if let Err(i) = self.0.binary_search(&d)
                && !ctx.contains(&d)
            {
                self.put(i, d);
            }
        }
        all_held
    }

    fn join_unseen(&mut self, other: Self) {
        for d in other.0 {
            match self.0.last() {
                Some(last) if *last >= d => {
                    if let Err(i) = self.0.binary_search(&d) {
                        self.put(i, d);
                    }
                }
                _ => self.put(self.0.len(), d),
            }
        }
    }

    fn remove_covered(&mut self, ctx: &CausalContext) {
        // Usually nothing is covered (a scan past every key): look before rewriting.
        if self.0.iter().any(|d| ctx.contains(d)) {
            self.retain_dots(|d| !ctx.contains(d));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// DotFun

/// A function from dots to values: the store of a multi-value register and of the embedded
/// counter (one entry per increment).
///
/// A value is written once, under the dot of the operation that wrote it, and never changes:
/// a dot present in both sides of a join carries the same value on both. Sorted vector by dot;
/// one entry (a delta's) is stored inline, without a heap block. It also keeps the
/// [`DotProbe`] mask bits of its dots (never encoded, compared or hashed; a superset while
/// entries are removed one by one), so a probe for a few dots passes over it in one test.
#[derive(Clone)]
pub struct DotFun<V>(SmallVec<[(Dot, V); 1]>, u64);

impl<V: PartialEq> PartialEq for DotFun<V> {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

impl<V: Eq> Eq for DotFun<V> {}

impl<V: Hash> Hash for DotFun<V> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

impl<V: Serialize> Serialize for DotFun<V> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // As the `Vec<(Dot, V)>` it decodes from.
        self.0.as_slice().serialize(serializer)
    }
}

impl<V> Default for DotFun<V> {
    fn default() -> Self {
        DotFun(SmallVec::new(), 0)
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for DotFun<V> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // As a `Vec<(Dot, V)>` that must be strictly sorted by dot, decoded where it is kept.
        let (entries, sorted) = sorted_seq(deserializer, |(d, _): &(Dot, V)| d.key())?;
        if !sorted {
            return Err(D::Error::custom(
                "dot function is not strictly sorted by dot",
            ));
        }
        let bits = DotProbe::bits(entries.iter().map(|(d, _)| d));
        Ok(DotFun(entries, bits))
    }
}

impl<V: fmt::Debug> fmt::Debug for DotFun<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|(d, v)| (d, v)))
            .finish()
    }
}

impl<V> DotFun<V> {
    /// The value written under `dot`, if the store holds it.
    pub fn get(&self, dot: &Dot) -> Option<&V> {
        self.find(dot).ok().map(|i| &self.0[i].1)
    }

    /// The index of `dot`'s entry, or where it would go: a binary search comparing each
    /// dot as one 128-bit key ([`Dot::key`]).
    #[inline]
    fn find(&self, dot: &Dot) -> Result<usize, usize> {
        let key = dot.key();
        self.0.binary_search_by(|(d, _)| d.key().cmp(&key))
    }

    /// The `(dot, value)` entries in dot order.
    pub fn iter(&self) -> impl Iterator<Item = (&Dot, &V)> {
        self.0.iter().map(|(d, v)| (d, v))
    }

    /// The values in dot order.
    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.0.iter().map(|(_, v)| v)
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the function has no entry.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The store holding the single entry `dot -> value`.
    pub fn singleton(dot: Dot, value: V) -> Self {
        DotFun(smallvec![(dot, value)], DotProbe::bit(&dot))
    }

    /// Inserts the entry `dot -> value` at `i`, its place in dot order.
    #[inline(always)]
    fn put(&mut self, i: usize, dot: Dot, value: V) {
        self.room_for_one();
        self.1 |= DotProbe::bit(&dot);
        if i == self.0.len() {
            self.0.push((dot, value));
        } else {
            self.0.insert(i, (dot, value));
        }
    }

    /// Makes room for one more entry.
    #[inline(always)]
    fn room_for_one(&mut self) {
        if self.0.len() == self.0.capacity() {
            // A counter that outgrows its inline entry usually gets several more: one heap
            // block of eight rather than two, four, then eight.
            self.0.reserve(self.0.len().max(7));
        }
    }

    /// Keeps the entries whose dot passes `keep`, and the mask bits of those only.
    fn retain_dots(&mut self, mut keep: impl FnMut(&Dot) -> bool) {
        self.0.retain(|(d, _)| keep(d));
        self.1 = DotProbe::bits(self.0.iter().map(|(d, _)| d));
    }

    /// The one entry, if there is exactly one.
    #[inline(always)]
    pub(crate) fn only_entry(&self) -> Option<(&Dot, &V)> {
        match self.0.as_slice() {
            [(d, v)] => Some((d, v)),
            _ => None,
        }
    }

    /// The one entry, if there is exactly one and it is held inline (no heap block).
    #[inline(always)]
    pub(crate) fn only_inline_entry(&self) -> Option<(&Dot, &V)> {
        self.only_entry().filter(|_| !self.0.spilled())
    }

    /// Drops every entry (keeping the heap block, as a remove's join does).
    pub(crate) fn clear(&mut self) {
        self.0.clear();
        self.1 = 0;
    }
}

impl<V: PartialEq + fmt::Debug> DotFun<V> {
    /// Adds the entry `dot -> value` of a join that had not seen `dot` (if the store holds
    /// it anyway, both carry the same value and nothing changes).
    #[inline(always)]
    pub(crate) fn put_unseen(&mut self, dot: Dot, value: V) {
        // A replica's dots arrive in order, so the new entry sorts after its replica's and
        // before the (few) entries of replicas above it: pushed, then moved down past those,
        // one pass with no search and no `memmove` call.
        self.room_for_one();
        self.1 |= DotProbe::bit(&dot);
        self.0.push((dot, value));
        let entries = self.0.as_mut_slice();
        let mut at = entries.len() - 1;
        while at > 0 && entries[at - 1].0 > dot {
            entries.swap(at - 1, at);
            at -= 1;
        }
        if at > 0 && entries[at - 1].0 == dot {
            // Held already (the mask bit was set): both carry the same value.
            debug_assert!(
                entries[at - 1].1 == entries[at].1,
                "dot {dot:?} carries two values"
            );
            self.0.remove(at);
        }
    }
}

impl<V: Copy + PartialEq + fmt::Debug> DotFun<V> {
    /// [`DotFun::put_unseen`] for a value that is `Copy` (a counter's amount): the entries
    /// of replicas above `dot`'s are each copied up one place, the new entry written once
    /// where they leave room, instead of being swapped down past them (a swap moves both
    /// entries, through a temporary).
    #[inline(always)]
    pub(crate) fn put_unseen_copy(&mut self, dot: Dot, value: V) {
        self.room_for_one();
        self.1 |= DotProbe::bit(&dot);
        let key = dot.key();
        self.0.push((dot, value));
        let entries = self.0.as_mut_slice();
        let mut at = entries.len() - 1;
        while at > 0 {
            let before = entries[at - 1];
            if before.0.key() <= key {
                break;
            }
            entries[at] = before;
            at -= 1;
        }
        if at > 0 && entries[at - 1].0 == dot {
            // Held already (the mask bit was set): both carry the same value. The place left
            // at `at` holds a copy of the entry above it, which goes.
            debug_assert!(entries[at - 1].1 == value, "dot {dot:?} carries two values");
            self.0.remove(at);
            return;
        }
        entries[at] = (dot, value);
    }
}

impl<V: Clone + PartialEq + fmt::Debug> DotFun<V> {
    /// The delta of adding one entry next to the ones seen (they stay): context `{dot}`.
    pub fn insert_delta(&self, tag: Tag, value: V) -> Causal<Self> {
        let context = CausalContext::of_sorted(std::iter::once(tag.dot));
        Causal::new(DotFun::singleton(tag.dot, value), context)
    }

    /// The delta of writing `value` over every entry seen so far (a multi-value register
    /// write): entries written concurrently survive next to it.
    pub fn write_delta(&self, tag: Tag, value: V) -> Causal<Self> {
        let mut context = self.dots();
        context.insert(tag.dot);
        Causal::new(DotFun::singleton(tag.dot, value), context)
    }

    /// The delta of removing every entry seen so far.
    pub fn clear_delta(&self) -> Causal<Self> {
        Causal::new(DotFun::default(), self.dots())
    }
}

impl<V: Clone + PartialEq + fmt::Debug> DotStore for DotFun<V> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn dot_count(&self) -> usize {
        self.0.len()
    }

    fn for_each_dot<F: FnMut(Dot)>(&self, f: &mut F) {
        self.0.iter().for_each(|(d, _)| f(*d));
    }

    fn contains_dot(&self, dot: &Dot) -> bool {
        self.get(dot).is_some()
    }

    fn dots(&self) -> CausalContext {
        CausalContext::of_sorted(self.0.iter().map(|(d, _)| *d))
    }

    #[inline]
    fn holds_any(&self, probe: &DotProbe<'_>) -> bool {
        debug_assert!(
            (self.0.iter()).all(|(d, _)| self.1 & DotProbe::bit(d) != 0),
            "a dot function's mask lost a dot"
        );
        probe.any_in(self.1, |d| self.get(d).is_some())
    }

    #[inline]
    fn drop_held(&mut self, dots: &[Dot], found: &mut u64) {
        // Keeps the heap block: a counter emptied by a remove often grows again.
        if drop_common(&mut self.0, |(d, _)| *d, dots, found) {
            self.1 = DotProbe::bits(self.0.iter().map(|(d, _)| d));
        }
    }

    fn join_store(
        &mut self,
        ctx: &CausalContext,
        other: Self,
        other_ctx: &CausalContext,
        drops: Drops<'_>,
    ) -> bool {
        let mut all_held = false;
        match drops {
            Drops::Nothing => {}
            Drops::These(dots) => {
                let mut found = 0;
                self.drop_held(dots, &mut found);
                all_held = all_found(dots.len()) == Some(found);
            }
            Drops::Unknown => self.retain_dots(|d| !other_ctx.contains(d) || other.find(d).is_ok()),
        }
        for (d, v) in other.0 {
            match self.find(&d) {
                Ok(i) => debug_assert_eq!(self.0[i].1, v, "dot {d:?} carries two values"),
                Err(i) => {
                    if !ctx.contains(&d) {
                        self.put(i, d, v);
                    }
                }
            }
        }
        all_held
    }

    #[inline(always)]
    fn join_unseen(&mut self, other: Self) {
        match other.0.into_inner() {
            // A delta's one entry, moved out of its inline array: no loop, nothing to drop.
            Ok([(d, v)]) => self.put_unseen(d, v),
            Err(entries) => {
                for (d, v) in entries {
                    self.put_unseen(d, v);
                }
            }
        }
    }

    fn remove_covered(&mut self, ctx: &CausalContext) {
        // Usually nothing is covered (a scan past every key): look before rewriting.
        if self.0.iter().any(|(d, _)| ctx.contains(d)) {
            self.retain_dots(|d| !ctx.contains(d));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// DotMap

/// A map from keys to dot stores: the store of an add-wins set (`DotMap<T, DotSet>`), an
/// add-wins map, the cart (`DotMap<Sku, Counter>`, its keys inline strings) and of nested maps.
///
/// A key is present exactly while its value holds a dot; a removed key leaves nothing behind
/// in what a state encodes, compares or hashes: no tombstones. A *delta* made by
/// [`DotMap::remove_delta`] or [`DotMap::update_delta`] may list its key with an empty value: a
/// hint telling the receiver where the dots it removes live, so the join need not scan every
/// key (see [`DotStore::join_store`]). Such a map keeps its hints (they are encoded) and drops
/// the empty values its joins make. Any other map (a state) keeps the entry of a key its joins
/// empty as a free slot, reused when the key comes back, so removing and re-adding an item does
/// not shift every entry after it twice; slots are never encoded and are dropped when they
/// outnumber the keys present. Equal states encode to equal bytes; equality and hashing ignore
/// empty values. The receiver checks every hint against its own store: the dots a remove names
/// that its listed keys do not hold are looked for in every key (a [`DotProbe`]), so a wrong
/// hint, or a stale remove whose dots are gone already, costs a scan, never correctness.
///
/// Kept as a vector sorted by key: a delta holds one key, stored inline (no heap block; a
/// tree node would cost a large allocation per delta), and a cart holds tens of items, where
/// binary search over contiguous entries beats a tree. A state of more than three keys also
/// keeps a hash index of their positions (`KeyIndex`, built on its first join, kept up to
/// date when a key is inserted, dropped when entries are removed), so a join finds the key a
/// delta names in one probe. Encoded as a map, like a `BTreeMap`.
#[derive(Clone)]
pub struct DotMap<K, V>(SmallVec<[(K, V); 1]>, Empties, Option<Box<KeyIndex>>);

/// What the empty values of a [`DotMap`] are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Empties {
    /// Free slots left by joins (this many; a map has far fewer than 2^32 entries), never
    /// encoded.
    Slots(u32),
    /// A delta's hints, encoded.
    Hints,
}

impl<K, V> Default for DotMap<K, V> {
    fn default() -> Self {
        DotMap(SmallVec::new(), Empties::Slots(0), None)
    }
}

impl<K, V: DotStore> DotMap<K, V> {
    /// The entries as encoded and shown: all of a delta's, a state's present ones.
    fn shown(&self) -> impl Iterator<Item = (&K, &V)> {
        let hints = self.1 == Empties::Hints;
        self.0
            .iter()
            .filter(move |(_, v)| hints || !v.is_empty())
            .map(|(k, v)| (k, v))
    }

    /// The entry at `i` was just emptied by a join: drop it (a delta's) or keep it as a slot
    /// (a state's; see [`DotMap::trim_slots`]).
    fn emptied(&mut self, i: usize) {
        match &mut self.1 {
            Empties::Hints => {
                self.0.remove(i);
                self.2 = None;
            }
            Empties::Slots(n) => *n += 1,
        }
    }

    /// Drops every slot once they outnumber the keys present.
    fn trim_slots(&mut self) {
        if let Empties::Slots(n) = self.1
            && n as usize * 2 > self.0.len()
        {
            self.0.retain_mut(|(_, v)| !v.is_empty());
            self.1 = Empties::Slots(0);
            self.2 = None;
        }
    }
}

impl<K: Serialize, V: Serialize + DotStore> Serialize for DotMap<K, V> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // With its length up front, as a `BTreeMap` is (bincode needs it).
        let mut map = serializer.serialize_map(Some(self.shown().count()))?;
        for (k, v) in self.shown() {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl<'de, K: Deserialize<'de> + Ord, V: Deserialize<'de> + DotStore> Deserialize<'de>
    for DotMap<K, V>
{
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // As a `BTreeMap` reads it (sorted, one entry per key whatever the input), with no tree.
        let entries: SmallVec<[(K, V); 1]> = sorted_map(deserializer)?;
        let empties = if entries.iter().any(|(_, v)| v.is_empty()) {
            Empties::Hints
        } else {
            Empties::Slots(0)
        };
        Ok(DotMap(entries, empties, None))
    }
}

impl<K: fmt::Debug, V: DotStore> fmt::Debug for DotMap<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.shown()).finish()
    }
}

impl<K: Ord, V: DotStore> PartialEq for DotMap<K, V> {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl<K: Ord, V: DotStore> Eq for DotMap<K, V> {}

impl<K: Ord + Hash, V: DotStore + Hash> Hash for DotMap<K, V> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        for entry in self.iter() {
            entry.hash(state);
        }
    }
}

impl<K: Ord, V> DotMap<K, V> {
    /// The index of `key`, or where it would be inserted.
    fn find<Q>(&self, key: &Q) -> Result<usize, usize>
    where
        K: std::borrow::Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.0.binary_search_by(|(k, _)| k.borrow().cmp(key))
    }

    /// The entry under `key`, empty or not.
    fn raw_get<Q>(&self, key: &Q) -> Option<&(K, V)>
    where
        K: std::borrow::Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.find(key).ok().map(|i| &self.0[i])
    }
}

impl<K: Ord, V: DotStore> DotMap<K, V> {
    /// The value under `key`, if present.
    pub fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: std::borrow::Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.raw_get(key).map(|(_, v)| v).filter(|v| !v.is_empty())
    }

    /// Whether `key` is present.
    pub fn contains_key<Q>(&self, key: &Q) -> bool
    where
        K: std::borrow::Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.get(key).is_some()
    }

    /// The present entries in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.0
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (k, v))
    }

    /// The one entry, if the map lists exactly one key (present or a hint).
    #[inline(always)]
    pub(crate) fn only_entry(&self) -> Option<(&K, &V)> {
        match self.0.as_slice() {
            [(k, v)] => Some((k, v)),
            _ => None,
        }
    }

    /// The one entry, if the map lists exactly one key, holds it inline and has no key index
    /// (a delta's): the map's own fields own no heap block then.
    #[inline(always)]
    pub(crate) fn only_inline_entry(&self) -> Option<(&K, &V)> {
        self.only_entry()
            .filter(|_| !self.0.spilled() && self.2.is_none())
    }

    /// The present keys in order.
    pub fn keys(&self) -> impl Iterator<Item = &K> {
        self.iter().map(|(k, _)| k)
    }

    /// The number of present keys.
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// Whether no key is present.
    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|(_, v)| v.is_empty())
    }
}

impl<K: Ord + Hash + Clone + fmt::Debug, V: DotStore> DotMap<K, V> {
    /// The delta of an operation on the value under `key`: `op` gets the current value (empty
    /// if absent) and the tag, and returns the value's delta, which is wrapped under `key`
    /// (even if empty: then it is the hint of where the delta's removals live).
    pub fn update_delta<F>(&self, tag: Tag, key: K, op: F) -> Causal<Self>
    where
        F: FnOnce(&V, Tag) -> Causal<V>,
    {
        let empty = V::default();
        let current = self.raw_get(&key).map_or(&empty, |(_, v)| v);
        let (store, context) = op(current, tag).into_parts();
        Causal::new(DotMap::single(key, store), context)
    }

    /// A delta's store of the one entry `key -> value` (an empty value is a hint).
    pub(crate) fn single(key: K, value: V) -> Self {
        DotMap(smallvec![(key, value)], Empties::Hints, None)
    }

    /// The delta of removing `key` as observed: covers the dots under it, adds none (and
    /// lists `key` with an empty value as the hint of where those dots live).
    pub fn remove_delta<Q>(&self, key: &Q) -> Causal<Self>
    where
        K: std::borrow::Borrow<Q>,
        Q: Ord + ?Sized,
    {
        match self.raw_get(key) {
            Some((k, v)) if !v.is_empty() => {
                Causal::new(DotMap::single(k.clone(), V::default()), v.dots())
            }
            _ => Causal::default(),
        }
    }

    /// The delta of removing every key as observed.
    pub fn clear_delta(&self) -> Causal<Self> {
        Causal::new(DotMap::default(), self.dots())
    }
}

impl<K: Ord + Hash, V: DotStore> DotMap<K, V> {
    /// The position of `key` (or where it would go) for a join: by the key index, built here
    /// for a state of many keys, else by binary search.
    #[inline(always)]
    fn locate(&mut self, key: &K) -> Result<usize, usize> {
        if self.2.is_none() && self.0.len() >= INDEXED_FROM && self.1 != Empties::Hints {
            self.2 = Some(Box::new(KeyIndex::build(&self.0)));
        }
        match &self.2 {
            Some(index) => index.find(&self.0, key).ok_or(()),
            None => Err(()),
        }
        .or_else(|()| self.find(key))
    }

    /// Changes the value under `key` in place with `f` (given an empty value if the key is
    /// absent) and returns what `f` returns, keeping the map's slots and key index right: a
    /// local operation applied where it is made, its delta built beside it instead of joined.
    /// `f` must change the value exactly as joining that delta would.
    #[inline(always)]
    pub(crate) fn change<R>(&mut self, key: &K, f: impl FnOnce(&mut V) -> R) -> R
    where
        K: Clone,
    {
        let r = match self.locate(key) {
            Ok(i) => {
                let v = &mut self.0.as_mut_slice()[i].1;
                let was_empty = v.is_empty();
                let r = f(v);
                if was_empty || v.is_empty() {
                    self.changed(i, was_empty);
                }
                r
            }
            Err(i) => {
                let mut v = V::default();
                let r = f(&mut v);
                if !v.is_empty() {
                    self.insert_entry(i, key.clone(), v);
                }
                r
            }
        };
        self.trim_slots();
        self.check_index();
        r
    }

    /// The value at `i` was changed, and was empty before if `was_empty`: an emptied value
    /// becomes a slot (a state's: the caller trims them afterwards) or goes (a delta's), a
    /// refilled slot counts no more, a hint left empty goes.
    fn changed(&mut self, i: usize, was_empty: bool) {
        match (was_empty, self.0[i].1.is_empty()) {
            (false, true) => self.emptied(i),
            (true, false) => {
                if let Empties::Slots(n) = &mut self.1 {
                    *n = n.saturating_sub(1);
                }
            }
            (true, true) if self.1 == Empties::Hints => {
                self.0.remove(i);
                self.2 = None;
            }
            _ => {}
        }
    }

    /// Inserts the entry `k -> v` at `i`, its place in key order, and follows it in the index.
    fn insert_entry(&mut self, i: usize, k: K, v: V) {
        self.0.insert(i, (k, v));
        if let Some(index) = &mut self.2 {
            index.inserted(&self.0, i);
        }
    }

    /// Adds `v` under `k` for [`DotStore::join_unseen`]: no dot of `v` was seen here.
    #[inline(always)]
    fn put_unseen(&mut self, k: K, v: V) {
        if v.is_empty() {
            // A hint: nothing to add (and the delta removes nothing).
            return;
        }
        match self.filled(&k) {
            Ok(mine) => mine.join_unseen(v),
            Err(i) => self.insert_entry(i, k, v),
        }
    }

    /// The value under `key`, for a join that adds to it without removing anything (a slot it
    /// fills counts as one no more), or where `key` would be inserted.
    #[inline(always)]
    fn filled(&mut self, key: &K) -> Result<&mut V, usize> {
        let i = self.locate(key)?;
        let mine = &mut self.0.as_mut_slice()[i].1;
        if mine.is_empty()
            && let Empties::Slots(n) = &mut self.1
        {
            *n = n.saturating_sub(1);
        }
        Ok(mine)
    }

    /// Debug builds: the key index finds every key at its position.
    fn check_index(&self) {
        #[cfg(debug_assertions)]
        if let Some(index) = &self.2 {
            for (i, (k, _)) in self.0.iter().enumerate() {
                debug_assert_eq!(index.find(&self.0, k), Some(i), "the key index drifted");
            }
        }
    }
}

impl<K: Ord + Hash, V: DotStore> DotMap<K, V> {
    /// The rest of a join with [`Drops::These`]`(dots)` once the keys the other side lists
    /// have dropped what they held of them (bit `j` of `found` for `dots[j]`): the others are
    /// unseen here (`ctx`), gone already (a stale remove) or under keys the other side does
    /// not list (a wrong hint, or a `clear`, which lists none). The seen ones are looked for
    /// in every key, and the keys holding one drop every dot `other_ctx` covers. (A dot past
    /// the first `MAX_DROPS` counts as not found: looked for.) Tells whether every dot of
    /// `dots` is in `ctx`.
    fn drop_unlisted(
        &mut self,
        ctx: &CausalContext,
        other_ctx: &CausalContext,
        dots: &[Dot],
        found: u64,
    ) -> bool {
        let mut seen = ctx.seen_in_order();
        let mut all_seen = true;
        let mut missing: SmallVec<[(Dot, u64); 16]> = SmallVec::new();
        for (j, d) in dots.iter().enumerate() {
            if j < MAX_DROPS && found & 1 << j != 0 {
                continue;
            }
            if seen(d) {
                missing.push(DotProbe::marked(*d));
            } else {
                all_seen = false;
            }
        }
        if missing.is_empty() {
            return all_seen;
        }
        let probe = DotProbe::new(&missing);
        let mut holders: SmallVec<[usize; 4]> = SmallVec::new();
        for (i, (_, v)) in self.0.iter().enumerate() {
            if v.holds_any(&probe) {
                holders.push(i);
            }
        }
        for &i in holders.iter().rev() {
            let v = &mut self.0[i].1;
            v.remove_covered(other_ctx);
            if v.is_empty() {
                self.emptied(i);
            }
        }
        all_seen
    }
}

impl<K: Ord + Hash + Clone> DotMap<K, Counter> {
    /// The store join of a delta that lists one key, `key`, under which it holds at most one
    /// entry, `entry`, and whose context is `dots` and that entry's dot (a cart's remove, or an
    /// add on a hidden item): what [`DotStore::join_store`] with [`Drops::These`]`(dots)` does,
    /// with no loop over the delta's store. `new` tells whether `ctx`, this side's context
    /// before the join, lacks the entry's dot. Tells whether every dot of `dots` is in `ctx`
    /// (held here and now dropped, or seen and gone already); the caller joins the contexts.
    pub(crate) fn join_one_key(
        &mut self,
        ctx: &CausalContext,
        key: &K,
        entry: Option<(Dot, i64, bool)>,
        other_ctx: &CausalContext,
        dots: &[Dot],
    ) -> bool {
        let mut found = 0u64;
        match self.locate(key) {
            Ok(i) => {
                let mine = &mut self.0.as_mut_slice()[i].1;
                let was_empty = mine.is_empty();
                mine.drop_held(dots, &mut found);
                if let Some((dot, amount, true)) = entry {
                    mine.add_entry(dot, amount);
                }
                self.changed(i, was_empty);
            }
            Err(i) => {
                if let Some((dot, amount, true)) = entry {
                    let mut counter = Counter::default();
                    counter.add_entry(dot, amount);
                    self.insert_entry(i, key.clone(), counter);
                }
            }
        }
        let covered =
            all_found(dots.len()) == Some(found) || self.drop_unlisted(ctx, other_ctx, dots, found);
        self.trim_slots();
        self.check_index();
        covered
    }

    /// The store join of a one-add delta (one entry `dot -> amount` under `key`, `dot` its
    /// whole context) the context of this map had not seen: the entry is added and nothing
    /// is removed. What [`DotStore::join_unseen`] does, by reference.
    #[inline(always)]
    pub(crate) fn add_unseen(&mut self, key: &K, dot: Dot, amount: i64) {
        match self.filled(key) {
            Ok(counter) => counter.add_entry(dot, amount),
            Err(i) => {
                let mut counter = Counter::default();
                counter.add_entry(dot, amount);
                self.insert_entry(i, key.clone(), counter);
            }
        }
        self.check_index();
    }
}

impl<K: Ord + Hash + Clone + fmt::Debug, V: DotStore> DotStore for DotMap<K, V> {
    fn is_empty(&self) -> bool {
        DotMap::is_empty(self)
    }

    fn dot_count(&self) -> usize {
        self.0.iter().map(|(_, v)| v.dot_count()).sum()
    }

    fn for_each_dot<F: FnMut(Dot)>(&self, f: &mut F) {
        for (_, v) in &self.0 {
            v.for_each_dot(f);
        }
    }

    fn contains_dot(&self, dot: &Dot) -> bool {
        self.0.iter().any(|(_, v)| v.contains_dot(dot))
    }

    fn holds_any(&self, probe: &DotProbe<'_>) -> bool {
        self.0.iter().any(|(_, v)| v.holds_any(probe))
    }

    fn drop_held(&mut self, dots: &[Dot], found: &mut u64) {
        let mut emptied: SmallVec<[usize; 4]> = SmallVec::new();
        for (i, (_, v)) in self.0.iter_mut().enumerate() {
            if !v.is_empty() {
                v.drop_held(dots, found);
                if v.is_empty() {
                    emptied.push(i);
                }
            }
        }
        for &i in emptied.iter().rev() {
            self.emptied(i);
        }
    }

    fn join_store(
        &mut self,
        ctx: &CausalContext,
        other: Self,
        other_ctx: &CausalContext,
        drops: Drops<'_>,
    ) -> bool {
        if drops == Drops::Unknown {
            // Keys only `self` has: joined with `(empty, other_ctx)`. Drops the slots too.
            let listed = &other;
            self.0.retain_mut(|(k, v)| {
                if listed.find(k).is_err() {
                    v.remove_covered(other_ctx);
                }
                !v.is_empty()
            });
            if let Empties::Slots(n) = &mut self.1 {
                *n = 0;
            }
            self.2 = None;
        }
        // With `Drops::These`, which of its dots the keys `other` lists held (one bit each).
        let mut found = 0u64;
        for (k, v) in other.0 {
            match self.locate(&k) {
                Ok(i) => {
                    let mine = &mut self.0[i].1;
                    let was_slot = mine.is_empty();
                    // With `Drops::These`, what this key holds of them goes first (and is
                    // recorded); the rest of the join removes nothing more here.
                    let drops_here = match drops {
                        Drops::These(dots) => {
                            mine.drop_held(dots, &mut found);
                            Drops::Nothing
                        }
                        other => other,
                    };
                    mine.join_store(ctx, v, other_ctx, drops_here);
                    self.changed(i, was_slot);
                }
                Err(i) => {
                    let mut v = v;
                    v.remove_covered(ctx);
                    if !v.is_empty() {
                        self.insert_entry(i, k, v);
                    }
                }
            }
        }
        let mut covered = false;
        if let Drops::These(dots) = drops {
            covered = all_found(dots.len()) == Some(found)
                || self.drop_unlisted(ctx, other_ctx, dots, found);
        }
        self.trim_slots();
        self.check_index();
        covered
    }

    #[inline(always)]
    fn join_unseen(&mut self, other: Self) {
        match other.0.into_inner() {
            // A delta's one entry, moved out of its inline array: no loop, nothing to drop.
            Ok([(k, v)]) => self.put_unseen(k, v),
            Err(entries) => {
                for (k, v) in entries {
                    self.put_unseen(k, v);
                }
            }
        }
        self.check_index();
    }

    fn remove_covered(&mut self, ctx: &CausalContext) {
        let before = self.0.len();
        self.0.retain_mut(|(_, v)| {
            v.remove_covered(ctx);
            !v.is_empty()
        });
        if let Empties::Slots(n) = &mut self.1 {
            *n = 0;
        }
        if self.0.len() != before {
            self.2 = None;
        }
    }
}
