//! The bounded log of recently delivered deltas that anti-entropy and GRAFT answers are served
//! from; it decides what to keep and what a peer can be sent, and must not decide when deltas
//! are delivered.
//!
//! Two watermarks govern it. Below the *retention* watermark (what every member foca knows of,
//! down ones included, has acknowledged) an entry is dropped at once: no one will ever ask for
//! it. Below the *stable* watermark (what every live member has acknowledged, ARCHITECTURE
//! "Gossip") an entry is only marked: it is kept while there is room, because a member that is
//! down or on the other side of a partition may come back and be repaired from the log instead
//! of by a state transfer, but it is the first to go when the log is over its entry or byte
//! bound. Only then are unmarked entries evicted (oldest first), counted separately: those are
//! deltas a live member may still need, and it will get a state transfer.
//!
//! Entries are kept encoded ([`EncodedDelta`]: one allocation of the bytes a delta travels in,
//! shared with the copies forwarded from it) rather than decoded, which would hold a key and
//! payload of several heap blocks per entry in every node's log: [`DeltaLog::iter`] decodes on
//! the way out.
//!
//! Per origin the log keeps a *floor*: every delivered delta of that origin above the floor is
//! still in the log. A peer whose gap reaches below the floor cannot be repaired from the log
//! and gets a state transfer instead.

use crate::Payload;
use crate::delivered::{Delivered, DigestContext};
use crate::messages::{Delta, EncodedDelta};
use crate::origin_order::OriginOrder;
use crdt_types::{CausalContext, Dot, ReplicaId, VersionVector};
use rustc_hash::FxBuildHasher;
use std::cmp::Reverse;
use std::collections::hash_map::Entry;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::marker::PhantomData;

/// What a peer can be sent, according to its digest (see [`DeltaLog::plan_for`]).
#[derive(Clone, Debug, PartialEq)]
pub struct RepairPlan {
    /// Logged deltas the peer misses, in `(origin, seq)` order, within the byte budget.
    pub deltas: Vec<EncodedDelta>,
    /// Whether more logged deltas were left out for the budget.
    pub truncated: bool,
    /// Whether the peer misses deltas the log no longer holds: only a state transfer repairs it.
    pub needs_state: bool,
}

/// One logged delta, a slot of the node-wide arena. Slots are appended in delivery order, so
/// a delivery writes beside the last one instead of into its origin's own queue (which would
/// regrow, moving its entries to a fresh block, as an origin's deltas arrive), and the arena
/// is itself the eviction order of unmarked entries.
#[derive(Clone, Debug)]
struct Slot {
    dot: Dot,
    /// `None` once the entry left the log (its slot waits to be popped or compacted away).
    delta: Option<EncodedDelta>,
    at: i64,
    stable: bool,
}

/// One origin's part of the log: the arena slots of its entries in sequence order (deltas
/// mostly arrive in order, so an insert is usually an append), how far they have been marked
/// stable, and the floor.
#[derive(Clone, Debug)]
struct OriginLog {
    /// `(seq, slot number)` of each entry, ascending by `seq`.
    index: VecDeque<(u64, u64)>,
    /// The sequence number of the last entry (0 if none), kept here so that a digest's walk
    /// over every origin reads no entry of an origin the peer is up to date with.
    last: u64,
    stable_upto: u64,
    floor: u64,
}

impl OriginLog {
    fn new() -> Self {
        OriginLog {
            index: VecDeque::new(),
            last: 0,
            stable_upto: 0,
            floor: 0,
        }
    }

    /// Where the entry with sequence number `seq` is, or would be inserted (an append, the
    /// usual case, is told from `last` without reading the index).
    fn position(&self, seq: u64) -> Result<usize, usize> {
        if self.last < seq {
            Err(self.index.len())
        } else {
            self.index.binary_search_by_key(&seq, |&(s, _)| s)
        }
    }

    /// The slot number of the entry with sequence number `seq`.
    fn get(&self, seq: u64) -> Option<u64> {
        self.position(seq).ok().map(|i| self.index[i].1)
    }

    /// The index of the first entry above `seq`.
    fn first_above(&self, seq: u64) -> usize {
        self.index.partition_point(|&(s, _)| s <= seq)
    }

    /// Recomputes `last` after entries left.
    fn update_last(&mut self) {
        self.last = self.index.back().map_or(0, |&(s, _)| s);
    }
}

/// The origins' parts of the log: found by one hash lookup (a `BTreeMap` of the 1000 origins
/// of a large cluster walked three cold nodes at every delivery), walked in replica order.
#[derive(Clone, Debug, Default)]
struct Origins {
    table: HashMap<ReplicaId, OriginLog, FxBuildHasher>,
    order: OriginOrder,
}

impl Origins {
    fn get(&self, replica: &ReplicaId) -> Option<&OriginLog> {
        self.table.get(replica)
    }

    fn get_mut(&mut self, replica: &ReplicaId) -> Option<&mut OriginLog> {
        self.table.get_mut(replica)
    }

    /// The part of `replica`, made empty if it has none yet.
    fn entry(&mut self, replica: ReplicaId) -> &mut OriginLog {
        match self.table.entry(replica) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => {
                self.order.push(replica);
                e.insert(OriginLog::new())
            }
        }
    }

    /// Every part, in no particular order.
    fn values_mut(&mut self) -> impl Iterator<Item = &mut OriginLog> {
        self.table.values_mut()
    }

    /// Every part with its origin, in replica order.
    fn ascending(&self) -> impl Iterator<Item = (ReplicaId, &OriginLog)> {
        self.order
            .iter()
            .filter_map(|r| Some((r, self.table.get(&r)?)))
    }
}

/// A bounded log of deltas keyed by dot.
///
/// Entries live in one arena in delivery order, numbered from the first ever appended; each
/// origin indexes its entries' slots in sequence order. Unmarked entries are evicted from the
/// arena's front (oldest delivered first). Marked entries are evicted first, oldest first,
/// through a heap of `(slot number, dot)` that is not updated when an entry leaves: a pair
/// whose entry is gone is skipped when it comes up. The arena's empty slots are popped from
/// its front, and the arena (with the indices and the heap) is compacted once the empty
/// slots outnumber the live ones.
#[derive(Clone, Debug)]
pub struct DeltaLog<P> {
    origins: Origins,
    arena: VecDeque<Slot>,
    /// The slot number of `arena[0]`.
    base: u64,
    /// Marked entries by slot number (and stale pairs): evicted first.
    stable_by_age: BinaryHeap<Reverse<(u64, Dot)>>,
    len: usize,
    stable_len: usize,
    bytes: usize,
    max_entries: usize,
    max_bytes: usize,
    evicted_for_capacity: u64,
    evicted_unstable: u64,
    trimmed_stable: u64,
    /// The decoded type the entries hold.
    payload: PhantomData<fn() -> P>,
}

/// Empty slots (or stale heap pairs) a log may hold beyond its live entries before it is
/// compacted.
const STALE_SLACK: usize = 1024;

impl<P: Payload> DeltaLog<P> {
    /// An empty log bounded to `max_entries` entries and `max_bytes` bytes of deltas.
    pub fn new(max_entries: usize, max_bytes: usize) -> Self {
        DeltaLog {
            origins: Origins::default(),
            arena: VecDeque::new(),
            base: 0,
            stable_by_age: BinaryHeap::new(),
            len: 0,
            stable_len: 0,
            bytes: 0,
            max_entries: max_entries.max(1),
            max_bytes: max_bytes.max(1),
            evicted_for_capacity: 0,
            evicted_unstable: 0,
            trimmed_stable: 0,
            payload: PhantomData,
        }
    }

    /// Rebuilds a log after a restart from the entries the driver kept and the delivered
    /// context it restored: the floors are set so that no delivered delta missing from the log
    /// is ever promised to a peer.
    pub fn restore(
        max_entries: usize,
        max_bytes: usize,
        entries: Vec<Delta<P>>,
        delivered: &CausalContext,
    ) -> Self {
        let mut log = DeltaLog::new(max_entries, max_bytes);
        for d in entries {
            if !delivered.contains(&d.dot()) {
                continue;
            }
            match EncodedDelta::new(&d) {
                Ok(encoded) => {
                    log.insert(d.dot(), encoded, i64::MIN);
                }
                Err(e) => {
                    tracing::warn!(error = %e, dot = ?d.dot(), "not logging a delta that cannot be encoded")
                }
            }
        }
        let origins: Vec<ReplicaId> = delivered
            .vv()
            .iter()
            .map(|(r, _)| r)
            .chain(delivered.cloud().map(|d| d.replica))
            .collect();
        for r in origins {
            let floor = log.highest_unlogged(r, delivered);
            log.raise_floor(r, floor);
        }
        log
    }

    /// The highest delivered dot of `origin` that the log does not hold (0 if none).
    fn highest_unlogged(&self, origin: ReplicaId, delivered: &CausalContext) -> u64 {
        // Cloud dots first (few), then walk down the contiguous range while the log has them:
        // at most `len()` steps.
        let mut best = 0;
        for d in delivered.cloud().filter(|d| d.replica == origin) {
            if self.entry(d).is_none() {
                best = best.max(d.counter);
            }
        }
        let mut s = delivered.vv().get(origin);
        while s > best && self.entry(&Dot::new(origin, s)).is_some() {
            s -= 1;
        }
        best.max(s)
    }

    /// The live slot with this slot number.
    fn slot(&self, n: u64) -> Option<&Slot> {
        let i = usize::try_from(n.checked_sub(self.base)?).ok()?;
        self.arena.get(i).filter(|s| s.delta.is_some())
    }

    fn slot_mut(&mut self, n: u64) -> Option<&mut Slot> {
        slot_in(&mut self.arena, self.base, n)
    }

    fn entry(&self, dot: &Dot) -> Option<&Slot> {
        self.slot(self.origins.get(&dot.replica)?.get(dot.counter)?)
    }

    /// Adds the delta with this dot (`delta` is its encoding), delivered at `now`, evicting the
    /// oldest entries if the log is over its bounds. Returns how many entries were evicted for
    /// capacity.
    pub fn insert(&mut self, dot: Dot, delta: EncodedDelta, now: i64) -> usize {
        let origin = self.origins.entry(dot.replica);
        let Err(at) = origin.position(dot.counter) else {
            return 0;
        };
        let size = delta.wire_len();
        let n = self.base + self.arena.len() as u64;
        let stable = dot.counter <= origin.stable_upto;
        if origin.index.capacity() == 0 {
            // Room for exactly one: many origins (every node, in a large cluster) write once
            // or rarely, and the first growth would make room for four entries.
            origin.index.reserve_exact(1);
        }
        origin.index.insert(at, (dot.counter, n));
        origin.last = origin.last.max(dot.counter);
        self.arena.push_back(Slot {
            dot,
            delta: Some(delta),
            at: now,
            stable,
        });
        if stable {
            self.stable_by_age.push(Reverse((n, dot)));
            self.stable_len += 1;
        }
        self.len += 1;
        self.bytes += size;
        let mut evicted = 0;
        while self.len > self.max_entries || self.bytes > self.max_bytes {
            let Some(oldest) = self.pop_oldest() else {
                break;
            };
            self.remove(&oldest);
            self.raise_floor(oldest.replica, oldest.counter);
            evicted += 1;
        }
        self.compact();
        self.evicted_for_capacity += evicted as u64;
        evicted
    }

    /// The next entry to evict: the oldest marked one, else the oldest unmarked one (counted).
    fn pop_oldest(&mut self) -> Option<Dot> {
        while let Some(Reverse((n, dot))) = self.stable_by_age.pop() {
            if self.slot(n).is_some_and(|s| s.dot == dot && s.stable) {
                return Some(dot);
            }
        }
        // No marked entry is left (the heap holds a pair for each), so the first live slot
        // is the oldest unmarked entry; the filter only guards that reasoning.
        let dot = self
            .arena
            .iter()
            .find(|s| s.delta.is_some() && !s.stable)?
            .dot;
        self.evicted_unstable += 1;
        Some(dot)
    }

    /// Compacts the arena (or the heap of marked entries) once its empty slots (stale pairs)
    /// outnumber its live ones.
    fn compact(&mut self) {
        if self.arena.len() > 2 * self.len + STALE_SLACK {
            self.compact_arena();
        } else if self.stable_by_age.len() > 2 * self.stable_len + STALE_SLACK {
            self.rebuild_stable_heap();
        }
    }

    /// Drops the arena's empty slots, numbering the live ones anew (from past every number
    /// given so far), and rebuilds the origins' indices and the heap of marked entries.
    fn compact_arena(&mut self) {
        let next = self.base + self.arena.len() as u64;
        self.arena.retain(|s| s.delta.is_some());
        self.base = next;
        for o in self.origins.values_mut() {
            o.index.clear();
        }
        for (i, s) in self.arena.iter().enumerate() {
            if let Some(o) = self.origins.get_mut(&s.dot.replica) {
                o.index.push_back((s.dot.counter, next + i as u64));
            }
        }
        for o in self.origins.values_mut() {
            o.index.make_contiguous().sort_unstable();
            o.index.shrink_to_fit();
        }
        self.rebuild_stable_heap();
    }

    fn rebuild_stable_heap(&mut self) {
        self.stable_by_age = self
            .arena
            .iter()
            .enumerate()
            .filter(|(_, s)| s.delta.is_some() && s.stable)
            .map(|(i, s)| Reverse((self.base + i as u64, s.dot)))
            .collect();
    }

    fn remove(&mut self, dot: &Dot) -> Option<EncodedDelta> {
        let origin = self.origins.get_mut(&dot.replica)?;
        let i = origin.position(dot.counter).ok()?;
        let (_, n) = origin.index.remove(i)?;
        origin.update_last();
        self.take(n)
    }

    /// Empties slot `n`, counting its entry out of the log (its heap pair goes stale), and
    /// pops the empty slots at the arena's front.
    fn take(&mut self, n: u64) -> Option<EncodedDelta> {
        let slot = self.slot_mut(n)?;
        let delta = slot.delta.take()?;
        let stable = slot.stable;
        self.len -= 1;
        if stable {
            self.stable_len -= 1;
        }
        self.bytes -= delta.wire_len();
        // Keep the front live, so that the oldest unmarked entry is the first slot.
        while self.arena.front().is_some_and(|s| s.delta.is_none()) {
            self.arena.pop_front();
            self.base += 1;
        }
        Some(delta)
    }

    /// Marks every entry at or below the stable watermark (every live member has delivered
    /// it): marked entries are evicted first when the log is full.
    pub fn mark_stable(&mut self, watermark: &VersionVector) {
        for (replica, upto) in watermark.iter() {
            let origin = self.origins.entry(replica);
            let from = origin.stable_upto;
            if upto <= from {
                continue;
            }
            origin.stable_upto = upto;
            let first = origin.first_above(from);
            for &(seq, n) in origin.index.range(first..) {
                if seq > upto {
                    break;
                }
                let Some(slot) = slot_in(&mut self.arena, self.base, n) else {
                    continue;
                };
                if !slot.stable {
                    slot.stable = true;
                    self.stable_len += 1;
                    self.stable_by_age.push(Reverse((n, slot.dot)));
                }
            }
        }
        self.compact();
    }

    /// Drops every entry at or below the retention watermark: every member, live or down, has
    /// delivered it. Returns how many entries were dropped.
    pub fn trim_stable(&mut self, watermark: &VersionVector) -> usize {
        let mut dropped = 0;
        for (replica, upto) in watermark.iter() {
            let Some(origin) = self.origins.get_mut(&replica) else {
                continue;
            };
            let mut doomed = Vec::new();
            while let Some(&(seq, n)) = origin.index.front().filter(|&&(s, _)| s <= upto) {
                origin.index.pop_front();
                origin.floor = origin.floor.max(seq);
                doomed.push(n);
            }
            if doomed.is_empty() {
                continue;
            }
            origin.update_last();
            for n in doomed {
                if self.take(n).is_some() {
                    dropped += 1;
                }
            }
        }
        if dropped > 0 {
            self.compact();
        }
        self.trimmed_stable += dropped as u64;
        dropped
    }

    /// Records that deltas of `origin` up to `seq` may be delivered without being logged (after
    /// an eviction, or a state transfer that delivered them wholesale).
    pub fn raise_floor(&mut self, origin: ReplicaId, seq: u64) {
        if seq == 0 {
            return;
        }
        let o = self.origins.entry(origin);
        o.floor = o.floor.max(seq);
    }

    /// Raises every floor to `vv` (see [`DeltaLog::raise_floor`]).
    pub fn raise_floors(&mut self, vv: &VersionVector) {
        for (r, c) in vv.iter() {
            self.raise_floor(r, c);
        }
    }

    /// The logged delta with this dot, encoded.
    pub fn get(&self, dot: &Dot) -> Option<&EncodedDelta> {
        self.entry(dot)?.delta.as_ref()
    }

    /// The highest logged sequence number of `origin` (0 if none).
    pub fn max_seq(&self, origin: ReplicaId) -> u64 {
        self.origins.get(&origin).map_or(0, |o| o.last)
    }

    /// What a peer whose delivered context is `peer` should be sent, given our own delivered
    /// set `mine`: the logged deltas it misses (up to `budget` bytes) and whether it also
    /// misses deltas the log no longer holds. Deltas logged after `settled_before` are left
    /// out: they are most likely still being disseminated to the peer, and sending them here
    /// would only make the dissemination copy a duplicate.
    ///
    /// Walks the log's origins (in replica order) alongside the peer's sorted vector: an
    /// origin without log entries has nothing to send, and a gap below its floor only matters
    /// for an origin the log keeps a floor for.
    pub fn plan_for(
        &self,
        peer: &DigestContext,
        mine: &Delivered,
        budget: usize,
        settled_before: i64,
    ) -> RepairPlan {
        let mut plan = RepairPlan {
            deltas: Vec::new(),
            truncated: false,
            needs_state: false,
        };
        let mut spent = 0usize;
        let mut theirs_iter = peer.vv().iter().peekable();
        for (origin, log) in self.origins.ascending() {
            while theirs_iter.next_if(|&(r, _)| r < origin).is_some() {}
            let theirs = theirs_iter
                .peek()
                .filter(|&&(r, _)| r == origin)
                .map_or(0, |&(_, c)| c);
            // Nothing logged above what the peer has and no floor above it: nothing to do here,
            // whatever we delivered (asked first: it needs no lookup in `mine`).
            if (log.last <= theirs && log.floor <= theirs) || mine.max_counter(origin) <= theirs {
                continue;
            }
            if theirs < log.floor && !plan.needs_state {
                plan.needs_state = self.gap_below_floor(origin, theirs, log.floor, peer, mine);
            }
            for &(seq, n) in log.index.range(log.first_above(theirs)..) {
                if peer.contains(&Dot::new(origin, seq)) {
                    continue;
                }
                let Some((delta, at)) = self.slot(n).and_then(|s| Some((s.delta.as_ref()?, s.at)))
                else {
                    continue;
                };
                if at > settled_before {
                    continue;
                }
                let size = delta.wire_len();
                if spent > 0 && spent + size > budget {
                    plan.truncated = true;
                    return plan;
                }
                spent += size;
                plan.deltas.push(delta.clone());
            }
        }
        plan
    }

    /// Whether some dot of `origin` in `(theirs, floor]` is delivered here, missing at the
    /// peer and absent from the log.
    fn gap_below_floor(
        &self,
        origin: ReplicaId,
        theirs: u64,
        floor: u64,
        peer: &DigestContext,
        mine: &Delivered,
    ) -> bool {
        if floor - theirs > self.len as u64 {
            // More dots than the log has entries: some are certainly gone.
            return true;
        }
        (theirs + 1..=floor).any(|s| {
            let d = Dot::new(origin, s);
            mine.contains(&d) && !peer.contains(&d) && self.entry(&d).is_none()
        })
    }
}

/// The live slot numbered `n` of an arena whose first slot is numbered `base`.
fn slot_in(arena: &mut VecDeque<Slot>, base: u64, n: u64) -> Option<&mut Slot> {
    let i = usize::try_from(n.checked_sub(base)?).ok()?;
    arena.get_mut(i).filter(|s| s.delta.is_some())
}

impl<P> DeltaLog<P> {
    /// Number of entries.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the log is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes of deltas held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Entries evicted because the log was full, since creation.
    pub fn evicted_for_capacity(&self) -> u64 {
        self.evicted_for_capacity
    }

    /// Of those, entries that were not below the stable watermark: deltas a live member may
    /// still have needed (it gets a state transfer).
    pub fn evicted_unstable(&self) -> u64 {
        self.evicted_unstable
    }

    /// Entries dropped below the retention watermark, since creation.
    pub fn trimmed_stable(&self) -> u64 {
        self.trimmed_stable
    }
}

impl<P: Payload> DeltaLog<P> {
    /// Decodes the entries in `(origin, seq)` order, e.g. for a driver that persists or
    /// inspects them. (Every entry decodes: it was encoded here or decoded on receipt.)
    pub fn iter(&self) -> impl Iterator<Item = Delta<P>> + '_ {
        self.origins.ascending().flat_map(|(_, o)| {
            o.index
                .iter()
                .filter_map(|&(_, n)| self.slot(n)?.delta.as_ref()?.decode().ok())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crdt_types::{Key, Kind, Stamp};

    impl Payload for u64 {}

    fn delta(origin: u64, seq: u64) -> Delta<u64> {
        Delta {
            origin: ReplicaId(origin),
            seq,
            stamp: Stamp::default(),
            hops: 0,
            key: Key::new(Kind::Cart, "k"),
            payload: seq,
        }
    }

    fn enc(origin: u64, seq: u64) -> EncodedDelta {
        EncodedDelta::new(&delta(origin, seq)).expect("encodes")
    }

    fn ctx(dots: &[(u64, u64)]) -> CausalContext {
        dots.iter()
            .map(|&(r, c)| Dot::new(ReplicaId(r), c))
            .collect()
    }

    /// `plan_for` with both sides given as contexts.
    fn plan_of(
        log: &DeltaLog<u64>,
        peer: &CausalContext,
        mine: &CausalContext,
        budget: usize,
        settled_before: i64,
    ) -> RepairPlan {
        log.plan_for(
            &DigestContext::from(peer),
            &Delivered::from(mine),
            budget,
            settled_before,
        )
    }

    fn upto(r: u64, n: u64) -> Vec<(u64, u64)> {
        (1..=n).map(|c| (r, c)).collect()
    }

    #[test]
    fn serves_exactly_the_missing_deltas() {
        let mut log = DeltaLog::<u64>::new(100, 1 << 20);
        for s in 1..=5 {
            log.insert(Dot::new(ReplicaId(1), s), enc(1, s), 0);
        }
        let mine = ctx(&upto(1, 5));
        let mut peer = ctx(&upto(1, 2));
        peer.insert(Dot::new(ReplicaId(1), 4));
        let plan = plan_of(&log, &peer, &mine, usize::MAX, 0);
        let seqs: Vec<u64> = plan
            .deltas
            .iter()
            .map(|d| d.decode::<u64>().expect("decodes").seq)
            .collect();
        assert_eq!(seqs, vec![3, 5]);
        assert!(!plan.needs_state && !plan.truncated);
    }

    #[test]
    fn capacity_eviction_forces_state_for_peers_below_the_floor() {
        let mut log = DeltaLog::<u64>::new(3, 1 << 20);
        for s in 1..=5 {
            log.insert(Dot::new(ReplicaId(1), s), enc(1, s), 0);
        }
        assert_eq!(log.len(), 3);
        let mine = ctx(&upto(1, 5));
        assert!(plan_of(&log, &ctx(&upto(1, 1)), &mine, usize::MAX, 0).needs_state);
        let plan = plan_of(&log, &ctx(&upto(1, 2)), &mine, usize::MAX, 0);
        assert!(!plan.needs_state);
        assert_eq!(plan.deltas.len(), 3);
    }

    #[test]
    fn stable_trim_drops_only_what_the_watermark_covers() {
        let mut log = DeltaLog::<u64>::new(100, 1 << 20);
        for s in 1..=5 {
            log.insert(Dot::new(ReplicaId(1), s), enc(1, s), 0);
            log.insert(Dot::new(ReplicaId(2), s), enc(2, s), 0);
        }
        let wm: VersionVector = [(ReplicaId(1), 3)].into_iter().collect();
        assert_eq!(log.trim_stable(&wm), 3);
        assert_eq!(log.len(), 7);
        assert!(log.get(&Dot::new(ReplicaId(1), 4)).is_some());
        assert!(log.get(&Dot::new(ReplicaId(2), 1)).is_some());
    }

    #[test]
    fn stable_entries_are_evicted_first() {
        let mut log = DeltaLog::<u64>::new(4, 1 << 20);
        for s in 1..=3 {
            log.insert(Dot::new(ReplicaId(1), s), enc(1, s), 0);
        }
        log.insert(Dot::new(ReplicaId(2), 1), enc(2, 1), 0);
        log.mark_stable(&[(ReplicaId(2), 1)].into_iter().collect());
        log.insert(Dot::new(ReplicaId(1), 4), enc(1, 4), 0);
        assert!(log.get(&Dot::new(ReplicaId(2), 1)).is_none());
        assert!(log.get(&Dot::new(ReplicaId(1), 1)).is_some());
        assert_eq!(log.evicted_unstable(), 0);
        log.insert(Dot::new(ReplicaId(1), 5), enc(1, 5), 0);
        assert!(log.get(&Dot::new(ReplicaId(1), 1)).is_none());
        assert_eq!(log.evicted_unstable(), 1);
        assert_eq!(log.evicted_for_capacity(), 2);
    }

    #[test]
    fn out_of_order_inserts_are_kept_in_sequence_order() {
        let mut log = DeltaLog::<u64>::new(100, 1 << 20);
        for s in [5, 3, 4, 1, 2] {
            log.insert(Dot::new(ReplicaId(1), s), enc(1, s), 0);
            log.insert(Dot::new(ReplicaId(2), 6 - s), enc(2, 6 - s), 0);
        }
        assert_eq!(log.insert(Dot::new(ReplicaId(1), 3), enc(1, 3), 0), 0);
        assert_eq!(log.len(), 10);
        let dots: Vec<(u64, u64)> = log.iter().map(|d| (d.origin.0, d.seq)).collect();
        let mut sorted = dots.clone();
        sorted.sort();
        assert_eq!(dots, sorted);
        assert!((1..=5).all(|s| log.get(&Dot::new(ReplicaId(1), s)).is_some()));
        assert!(log.get(&Dot::new(ReplicaId(1), 6)).is_none());
    }

    #[test]
    fn eviction_skips_entries_trimmed_or_marked_since_they_were_queued() {
        // Many trims and marks leave stale pairs in the eviction queues (and compact them);
        // eviction still takes the oldest marked entry, then the oldest unmarked one.
        let mut log = DeltaLog::<u64>::new(50, 1 << 20);
        for s in 1..=3_000 {
            log.insert(Dot::new(ReplicaId(1), s), enc(1, s), 0);
            if s % 10 == 0 {
                log.trim_stable(&[(ReplicaId(1), s - 5)].into_iter().collect());
            }
        }
        assert_eq!(log.evicted_for_capacity(), 0);
        assert_eq!(log.len(), 5);
        for s in 1..=45 {
            log.insert(Dot::new(ReplicaId(2), s), enc(2, s), 0);
        }
        log.mark_stable(&[(ReplicaId(2), 40)].into_iter().collect());
        log.insert(Dot::new(ReplicaId(3), 1), enc(3, 1), 0);
        // Over the bound by one: the oldest marked entry goes, not origin 1's older ones.
        assert!(log.get(&Dot::new(ReplicaId(2), 1)).is_none());
        assert!(log.get(&Dot::new(ReplicaId(1), 2_996)).is_some());
        assert_eq!(log.evicted_unstable(), 0);
        for s in 2..=41 {
            log.insert(Dot::new(ReplicaId(3), s), enc(3, s), 0);
        }
        // 40 marked entries evicted in all, then origin 1's oldest unmarked one.
        assert!(log.get(&Dot::new(ReplicaId(2), 40)).is_none());
        assert!(log.get(&Dot::new(ReplicaId(2), 41)).is_some());
        assert!(log.get(&Dot::new(ReplicaId(1), 2_996)).is_none());
        assert_eq!(log.evicted_unstable(), 1);
        assert_eq!(log.evicted_for_capacity(), 41);
        assert_eq!(log.len(), 50);
    }

    #[test]
    fn the_arena_is_compacted_and_keeps_every_live_entry() {
        // Entries of two origins, delivered interleaved and out of order, one origin trimmed
        // away bit by bit: the arena's empty slots are compacted away, and what is left is
        // still found by dot and served in (origin, seq) order.
        let mut log = DeltaLog::<u64>::new(100_000, 1 << 30);
        for s in 1..=5_000u64 {
            let seq = if s % 2 == 0 { s - 1 } else { s + 1 };
            log.insert(Dot::new(ReplicaId(1), seq), enc(1, seq), 0);
            if s % 3 == 0 {
                log.insert(Dot::new(ReplicaId(2), s / 3), enc(2, s / 3), 0);
            }
            if s % 100 == 0 {
                log.trim_stable(&[(ReplicaId(1), s - 10)].into_iter().collect());
            }
        }
        assert_eq!(log.len(), 10 + 1_666);
        assert!(log.arena.len() <= 2 * log.len() + STALE_SLACK);
        assert!((4_991..=5_000).all(|s| log.get(&Dot::new(ReplicaId(1), s)).is_some()));
        assert!(log.get(&Dot::new(ReplicaId(1), 4_990)).is_none());
        assert!((1..=1_666).all(|s| log.get(&Dot::new(ReplicaId(2), s)).is_some()));
        let dots: Vec<(u64, u64)> = log.iter().map(|d| (d.origin.0, d.seq)).collect();
        let mut sorted = dots.clone();
        sorted.sort();
        assert_eq!(dots, sorted);
        assert_eq!(dots.len(), log.len());
    }

    #[test]
    fn fresh_deltas_are_left_to_dissemination() {
        let mut log = DeltaLog::<u64>::new(100, 1 << 20);
        log.insert(Dot::new(ReplicaId(1), 1), enc(1, 1), 10);
        log.insert(Dot::new(ReplicaId(1), 2), enc(1, 2), 20);
        let plan = plan_of(
            &log,
            &CausalContext::new(),
            &ctx(&upto(1, 2)),
            usize::MAX,
            15,
        );
        assert_eq!(plan.deltas.len(), 1);
        assert_eq!(plan.deltas[0].decode::<u64>().expect("decodes").seq, 1);
    }

    #[test]
    fn budget_truncates_but_always_sends_one() {
        let mut log = DeltaLog::<u64>::new(100, 1 << 20);
        for s in 1..=5 {
            log.insert(Dot::new(ReplicaId(1), s), enc(1, s), 0);
        }
        let plan = plan_of(&log, &CausalContext::new(), &ctx(&upto(1, 5)), 1, 0);
        assert_eq!(plan.deltas.len(), 1);
        assert!(plan.truncated);
    }

    #[test]
    fn max_seq_follows_inserts_evictions_and_trims() {
        let mut log = DeltaLog::<u64>::new(3, 1 << 20);
        let r = ReplicaId(1);
        for s in [2, 5, 3] {
            log.insert(Dot::new(r, s), enc(1, s), 0);
        }
        assert_eq!(log.max_seq(r), 5);
        // Over capacity: the oldest inserted (2) goes, the last stays.
        log.insert(Dot::new(r, 4), enc(1, 4), 0);
        assert_eq!(log.max_seq(r), 5);
        let vv: VersionVector = [(r, 5)].into_iter().collect();
        assert_eq!(log.trim_stable(&vv), 3);
        assert_eq!(log.max_seq(r), 0);
        log.insert(Dot::new(r, 7), enc(1, 7), 0);
        assert_eq!(log.max_seq(r), 7);
        // A peer with everything up to 7 is sent nothing; one at 5 gets 7.
        let mine = ctx(&upto(1, 7));
        assert!(plan_of(&log, &mine, &mine, usize::MAX, 0).deltas.is_empty());
        assert_eq!(
            plan_of(&log, &ctx(&upto(1, 5)), &mine, usize::MAX, 0)
                .deltas
                .len(),
            1
        );
    }

    #[test]
    fn restore_sets_floors_below_unlogged_deliveries() {
        let delivered = ctx(&upto(1, 10));
        let log = DeltaLog::restore(
            100,
            1 << 20,
            (6..=10).map(|s| delta(1, s)).collect(),
            &delivered,
        );
        assert!(plan_of(&log, &ctx(&upto(1, 4)), &delivered, usize::MAX, 0).needs_state);
        let plan = plan_of(&log, &ctx(&upto(1, 5)), &delivered, usize::MAX, 0);
        assert!(!plan.needs_state);
        assert_eq!(plan.deltas.len(), 5);
    }
}
