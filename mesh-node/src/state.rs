//! The engine's in-memory replica state: every key's object and change cursor, the change
//! index, the applied causal context, and which keys changed in the batch in progress and
//! since the last checkpoint. It joins what it is told to and must not decide what to join:
//! the gossip core decides.
//!
//! Objects are `Arc`s, shared with checkpoints in progress (and, for sessions and documents,
//! with the read view, [`crate::view`]): the first change to a key after it was shared copies
//! it (`Arc::make_mut`), so a checkpoint writes the version it was taken at and readers keep
//! the committed version until the engine installs the new one after the commit.

use crate::delta::MeshDelta;
use crate::key_index::KeyIndex;
use crate::packed_cart::{self, PackedCart};
use crate::store::{Loaded, ObjectWrite, Segment};
use crate::view::{self, Committed};
use crdt_types::{CausalContext, Dot, Key, Object, ObjectDelta, Stamp, VersionVector};
use gossip::{StateBatch, StateSource};
use std::sync::Arc;

/// Remote deltas and states are refused when they would make an object's encoding larger
/// than this (ARCHITECTURE "Store"): below the codec's 4 MiB record limit, and small enough
/// that the object still fits in one state-transfer message.
pub const MAX_STORED_OBJECT_BYTES: usize = 3 << 20;

/// Below this estimated size a change is applied in place; above it, to a copy that is
/// measured first, so an object never grows past a limit.
const MEASURE_BYTES: usize = 256 << 10;

/// One key's state and the cursor of its last change.
#[derive(Clone, Debug)]
pub(crate) struct Slot {
    /// The key, shared with the read view (no copy of the id per change).
    pub(crate) key: Arc<Key>,
    pub(crate) object: Arc<Object>,
    pub(crate) change: u64,
    /// An upper estimate of the object's encoded size: exact when last measured, plus the
    /// encoded size of every delta joined since.
    pub(crate) bytes: usize,
    /// A cart's committed form as `object` is now, if known: rendered by the batch or the
    /// local operation (its answer) that changed it last, for [`State::end_batch`] to share
    /// instead of rendering it again. Cleared by every change, then patched by a change that
    /// can only have changed one item (see [`crate::packed_cart`]).
    rendered: Option<Committed>,
    /// Whether the key is listed in the batch in progress.
    in_batch: bool,
    /// Whether a batch handed the key to the read view, which then knows its slot: later
    /// batches hand over the slot number alone (no touch of the key's shared block).
    viewed: bool,
    /// Whether the key is listed as changed since the last checkpoint snapshot.
    unsaved: bool,
}

/// Why a remote delta or state was not joined.
#[derive(Debug, thiserror::Error)]
pub(crate) enum JoinError {
    /// The delta does not apply (wrong kind, malformed).
    #[error(transparent)]
    Apply(#[from] crdt_types::ApplyError),
    /// Joining it would make the object larger than the storage limit.
    #[error("the object would be {bytes} bytes, over the storage limit of {max} bytes")]
    TooLarge {
        /// The size the object would have.
        bytes: usize,
        /// The limit.
        max: usize,
    },
}

/// The objects of a checkpoint, taken between two batches, and the replica state they match.
#[derive(Debug)]
pub(crate) struct Snapshot {
    pub(crate) objects: Vec<(Arc<Key>, Arc<Object>, u64)>,
    pub(crate) applied: CausalContext,
    pub(crate) last_stamp: Option<Stamp>,
}

impl Snapshot {
    /// Puts the objects in the store's table order. A checkpoint is written in chunks of a few
    /// dozen objects, each its own transaction that copies every B-tree leaf it changes: in
    /// the order keys changed, every chunk touched leaves all over the table, and each leaf
    /// was copied and written once per chunk that held one of its keys; in table order each
    /// leaf is copied about once per checkpoint (twice where a chunk boundary falls in it).
    pub(crate) fn sort_in_table_order(&mut self) {
        self.objects
            .sort_by_cached_key(|(key, _, _)| crate::store::object_key(key).unwrap_or_default());
    }

    /// Objects `from..to` as store writes.
    pub(crate) fn writes(&self, from: usize, to: usize) -> Vec<ObjectWrite<'_>> {
        self.objects[from.min(self.objects.len())..to.min(self.objects.len())]
            .iter()
            .map(|(key, object, change)| ObjectWrite {
                key,
                object,
                change: *change,
            })
            .collect()
    }
}

/// The replica state the engine owns (committed plus the batch in progress).
///
/// Slots live in a vector and are found by key once; the change index, the batch and the
/// unsaved set hold slot numbers, so a change (run for every applied delta) copies no key and
/// hashes it once: callers look a key up with [`State::find`] and hand the slot number to
/// the calls that follow (slots are never removed, so a number stays valid).
#[derive(Debug)]
pub(crate) struct State {
    /// Key to slot number. Slots are never removed.
    index: KeyIndex,
    slots: Vec<Slot>,
    /// The change index, what [`StateSource::changed_since`] walks: `(cursor, slot)` in cursor
    /// order, appended to on every change. An entry whose slot has moved to a later cursor is
    /// stale and skipped; stale entries are dropped once they outnumber the slots.
    changes: Vec<(u64, usize)>,
    applied: CausalContext,
    last_stamp: Option<Stamp>,
    next_cursor: u64,
    /// Slots changed by the batch in progress (installed in the read view after its commit).
    batch: Vec<usize>,
    /// Slots changed since the last checkpoint snapshot.
    unsaved: Vec<usize>,
    /// The buffer carts are packed in for the read view.
    scratch: Vec<u8>,
    /// The sku a received delta changes, copied out of it before it is joined.
    sku: String,
}

impl State {
    /// The state read back from the store: the checkpoint, then the log segments after it
    /// joined again (idempotent, so segments a later partial checkpoint holds are harmless).
    pub(crate) fn from_loaded(loaded: &mut Loaded) -> Self {
        let mut state = State {
            index: KeyIndex::with_capacity(loaded.objects.len()),
            slots: Vec::with_capacity(loaded.objects.len()),
            changes: Vec::with_capacity(loaded.objects.len()),
            applied: std::mem::take(&mut loaded.applied),
            last_stamp: loaded.last_stamp,
            next_cursor: loaded.next_cursor,
            batch: Vec::new(),
            unsaved: Vec::new(),
            scratch: Vec::new(),
            sku: String::new(),
        };
        for (key, (object, change)) in loaded.objects.drain() {
            let bytes = object.encoded_len();
            let n = state.insert_slot(key, Arc::new(object), bytes);
            state.slots[n].change = change;
            state.changes.push((change, n));
        }
        state.changes.sort_unstable();
        let replay = std::mem::take(&mut loaded.replay);
        let segments = replay.len();
        for segment in replay {
            state.replay(segment);
        }
        let touched = state.unsaved.clone();
        for &n in &touched {
            state.compact(n);
        }
        for n in std::mem::take(&mut state.batch) {
            state.slots[n].in_batch = false;
        }
        if segments > 0 {
            tracing::info!(
                segments,
                keys = touched.len(),
                "replayed the log after the last checkpoint"
            );
        }
        state
    }

    /// Adds a slot for a key not held yet; returns its number.
    fn insert_slot(&mut self, key: Key, object: Arc<Object>, bytes: usize) -> usize {
        let n = self.slots.len();
        self.index.insert(&key, n);
        let key = Arc::new(key);
        self.slots.push(Slot {
            key,
            object,
            change: 0,
            bytes,
            rendered: None,
            in_batch: false,
            viewed: false,
            unsaved: false,
        });
        n
    }

    fn replay(&mut self, segment: Segment) {
        for delta in segment.deltas {
            // The store decoded every delta it read back; one in its encoded form is decoded
            // here.
            let delta = match delta.decoded() {
                Ok(delta) => delta,
                Err(e) => {
                    tracing::warn!(error = %e, "a logged delta does not decode");
                    continue;
                }
            };
            if let Err(e) = self.join(&delta.key, delta.payload.0) {
                tracing::warn!(key = %delta.key, error = %e, "a logged delta does not apply");
            }
            self.applied.insert(Dot::new(delta.origin, delta.seq));
            self.last_stamp = self.last_stamp.max(Some(delta.stamp));
        }
        for (key, state) in segment.states {
            if let Err(e) = self.join(&key, state.0) {
                tracing::warn!(key = %key, error = %e, "a logged state does not apply");
            }
        }
        for vv in segment.adopted {
            self.adopt(&vv);
        }
    }

    /// Every key's committed form, for the read view at start-up.
    pub(crate) fn snapshot_all(&self) -> Vec<view::Entry> {
        let mut scratch = Vec::new();
        self.slots
            .iter()
            .enumerate()
            .map(|(n, s)| {
                (
                    n,
                    Some(s.key.clone()),
                    Committed::of(&s.object, &mut scratch),
                )
            })
            .collect()
    }

    /// The slot number of `key`, if it was ever written.
    pub(crate) fn find(&self, key: &Key) -> Option<usize> {
        self.index.get(key)
    }

    /// Slot `n` (a number [`State::find`] or a change handed out).
    pub(crate) fn slot(&self, n: usize) -> &Slot {
        &self.slots[n]
    }

    /// The slot of `key`, if it was ever written.
    pub(crate) fn get(&self, key: &Key) -> Option<&Slot> {
        self.find(key).map(|n| &self.slots[n])
    }

    /// Every delta applied here.
    pub(crate) fn applied(&self) -> &CausalContext {
        &self.applied
    }

    /// The highest stamp issued or applied here.
    pub(crate) fn last_stamp(&self) -> Option<Stamp> {
        self.last_stamp
    }

    /// The next change cursor to be handed out.
    pub(crate) fn next_cursor(&self) -> u64 {
        self.next_cursor
    }

    /// The object of `key` for changing (created empty if new) and its slot number: marks it
    /// changed and moves it to a fresh change cursor. `found` is what [`State::find`] said of
    /// `key`.
    pub(crate) fn object_mut(&mut self, key: &Key, found: Option<usize>) -> (usize, &mut Object) {
        let n = self.touch(key, found);
        (n, Arc::make_mut(&mut self.slots[n].object))
    }

    /// The slot of `key` (created empty if new), marked changed and moved to a fresh change
    /// cursor; `found` is what [`State::find`] said of `key`.
    fn touch(&mut self, key: &Key, found: Option<usize>) -> usize {
        // Called for every applied delta: no lookup for a key found before, and the key is
        // copied only when new.
        let n = match found.or_else(|| self.find(key)) {
            Some(n) => n,
            None => self.insert_slot(key.clone(), Arc::new(Object::new(key.kind)), 0),
        };
        debug_assert!(*self.slots[n].key == *key, "slot {n} is not {key}");
        let cursor = self.next_cursor;
        self.next_cursor += 1;
        self.changes.push((cursor, n));
        if self.changes.len() > 2 * self.slots.len() + 1024 {
            self.drop_stale_changes();
        }
        let slot = &mut self.slots[n];
        slot.change = cursor;
        slot.rendered = None;
        if !slot.in_batch {
            slot.in_batch = true;
            self.batch.push(n);
        }
        if !slot.unsaved {
            slot.unsaved = true;
            self.unsaved.push(n);
        }
        n
    }

    /// Drops the change-index entries of slots that moved to a later cursor since.
    fn drop_stale_changes(&mut self) {
        let slots = &self.slots;
        self.changes
            .retain(|&(cursor, n)| slots[n].change == cursor);
    }

    /// Records a delta's dot as applied and the stamp as seen, then folds the context of the
    /// delta's key (its slot, if it has one) with the applied vector (ARCHITECTURE "Dots are
    /// delta sequence numbers").
    pub(crate) fn record(&mut self, slot: Option<usize>, dot: Dot, stamp: Stamp) {
        self.applied.insert(dot);
        self.last_stamp = self.last_stamp.max(Some(stamp));
        if let Some(n) = slot {
            self.compact(n);
        }
    }

    /// Folds the applied vector into slot `n`'s causal context. Not with the gossip core's
    /// delivered context, which runs ahead by events not applied yet.
    pub(crate) fn compact(&mut self, n: usize) {
        let vv = self.applied.vv();
        Arc::make_mut(&mut self.slots[n].object).compact(vv);
    }

    /// Joins a state transfer's adopted vector into the applied context.
    pub(crate) fn adopt(&mut self, vv: &VersionVector) {
        self.applied.join(&context_of(vv));
    }

    /// Joins a remote delta or state into `key`; answers the key's slot number. A delta of
    /// the wrong kind, or one that would make the object larger than
    /// [`MAX_STORED_OBJECT_BYTES`], is refused before the key is touched.
    pub(crate) fn join(&mut self, key: &Key, delta: ObjectDelta) -> Result<usize, JoinError> {
        if delta.kind() != key.kind {
            return Err(crdt_types::ApplyError::KindMismatch {
                object: key.kind,
                delta: delta.kind(),
            }
            .into());
        }
        let added = delta.encoded_len();
        if added > MAX_STORED_OBJECT_BYTES {
            return Err(JoinError::TooLarge {
                bytes: added,
                max: MAX_STORED_OBJECT_BYTES,
            });
        }
        let found = self.find(key);
        let current = found.map(|n| &self.slots[n]);
        if current.map_or(0, |s| s.bytes).saturating_add(added) <= MEASURE_BYTES {
            // A cart rendered before that the delta changes in one item only is patched.
            let before = current.and_then(|slot| {
                let (Some(Committed::Cart(packed)), Object::Cart(cart), ObjectDelta::Cart(d)) =
                    (&slot.rendered, &*slot.object, &delta)
                else {
                    return None;
                };
                let sku = packed_cart::only_sku(cart, d)?;
                self.sku.clear();
                self.sku.push_str(sku);
                Some(packed.clone())
            });
            let n = self.touch(key, found);
            let slot = &mut self.slots[n];
            Arc::make_mut(&mut slot.object).apply(delta)?;
            slot.bytes = slot.bytes.saturating_add(added);
            if let (Some(before), Object::Cart(cart)) = (before, &*slot.object) {
                let packed = before.patched(cart, &self.sku, &mut self.scratch);
                slot.rendered = Some(Committed::Cart(packed));
            }
            return Ok(n);
        }
        // Near a limit: join into a copy and measure it before keeping it.
        let mut copy = current.map_or_else(|| Object::new(key.kind), |s| (*s.object).clone());
        copy.apply(delta)?;
        let bytes = copy.encoded_len();
        if bytes > MAX_STORED_OBJECT_BYTES {
            return Err(JoinError::TooLarge {
                bytes,
                max: MAX_STORED_OBJECT_BYTES,
            });
        }
        Ok(self.replace(key, found, copy, bytes))
    }

    /// Adds `bytes` to the size estimate of slot `n`'s object.
    pub(crate) fn add_bytes(&mut self, n: usize, bytes: usize) {
        let slot = &mut self.slots[n];
        slot.bytes = slot.bytes.saturating_add(bytes);
    }

    /// Replaces `key`'s object with `object`, measured at `bytes` (a change like
    /// [`State::object_mut`], `found` as there); answers its slot number.
    pub(crate) fn replace(
        &mut self,
        key: &Key,
        found: Option<usize>,
        object: Object,
        bytes: usize,
    ) -> usize {
        let n = self.touch(key, found);
        let slot = &mut self.slots[n];
        slot.object = Arc::new(object);
        slot.bytes = bytes;
        n
    }

    /// Keeps `committed`, the committed form of slot `n`'s object as its last change left it,
    /// for [`State::end_batch`] (a local operation's answer, which the view can share).
    pub(crate) fn set_rendered(&mut self, n: usize, committed: Committed) {
        self.slots[n].rendered = Some(committed);
    }

    /// Slot `n`'s cart packed as its object is now, if known.
    pub(crate) fn rendered_cart(&self, n: usize) -> Option<&PackedCart> {
        match &self.slots[n].rendered {
            Some(Committed::Cart(packed)) => Some(packed),
            _ => None,
        }
    }

    /// Ends the batch: the keys it changed in their committed form, for the read view. A
    /// cart's stays with its slot, for the next change to patch.
    pub(crate) fn end_batch(&mut self) -> Vec<view::Entry> {
        let (slots, scratch) = (&mut self.slots, &mut self.scratch);
        self.batch
            .drain(..)
            .map(|n| {
                let slot = &mut slots[n];
                slot.in_batch = false;
                let committed = match &slot.rendered {
                    Some(committed) => committed.clone(),
                    None => {
                        let committed = Committed::of(&slot.object, scratch);
                        if matches!(committed, Committed::Cart(_)) {
                            slot.rendered = Some(committed.clone());
                        }
                        committed
                    }
                };
                let key = (!slot.viewed).then(|| slot.key.clone());
                slot.viewed = true;
                (n, key, committed)
            })
            .collect()
    }

    /// How many keys changed since the last checkpoint snapshot.
    pub(crate) fn unsaved(&self) -> usize {
        self.unsaved.len()
    }

    /// Takes a checkpoint snapshot of the keys changed since the last one (between batches,
    /// so it matches the log up to the last committed segment).
    pub(crate) fn take_snapshot(&mut self) -> Snapshot {
        let slots = &mut self.slots;
        let objects = self
            .unsaved
            .drain(..)
            .map(|n| {
                let slot = &mut slots[n];
                slot.unsaved = false;
                (slot.key.clone(), slot.object.clone(), slot.change)
            })
            .collect();
        Snapshot {
            objects,
            applied: self.applied.clone(),
            last_stamp: self.last_stamp,
        }
    }
}

impl StateSource<MeshDelta> for State {
    fn changed_since(&self, cursor: u64, byte_budget: usize) -> StateBatch<MeshDelta> {
        let mut entries = Vec::new();
        let mut bytes = 0;
        let mut next_cursor = cursor;
        let from = self
            .changes
            .partition_point(|&(change, _)| change <= cursor);
        for &(change, n) in &self.changes[from..] {
            let slot = &self.slots[n];
            if slot.change != change {
                continue;
            }
            if !entries.is_empty() && bytes >= byte_budget {
                return StateBatch {
                    entries,
                    next_cursor,
                    done: false,
                };
            }
            let delta = slot.object.to_delta();
            bytes += delta.encoded_len() + slot.key.id.len();
            entries.push(((*slot.key).clone(), MeshDelta(delta)));
            next_cursor = change;
        }
        StateBatch {
            entries,
            next_cursor,
            done: true,
        }
    }
}

/// The causal context holding exactly the dots of `vv`.
fn context_of(vv: &VersionVector) -> CausalContext {
    // One dot per replica names it; folding the vector in as "stable" raises each to its
    // entry without enumerating the dots.
    let mut cc: CausalContext = vv.iter().map(|(r, _)| Dot::new(r, 1)).collect();
    cc.compact_stable(vv);
    cc
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delta::LoggedDelta;
    use crate::store::SegmentDelta;
    use crdt_types::{Cart, Kind, ReplicaId, Tag};
    use std::collections::HashMap;

    fn loaded(replay: Vec<Segment>) -> Loaded {
        Loaded {
            replica: ReplicaId(1),
            created: false,
            objects: HashMap::new(),
            applied: CausalContext::new(),
            last_stamp: None,
            next_cursor: 1,
            replay,
            log: Vec::new(),
            peers: Vec::new(),
        }
    }

    /// The tag of `replica`'s `seq`th operation, at a clock that grows with `seq`.
    fn tag_at(replica: ReplicaId, seq: u64) -> Tag {
        Tag {
            dot: Dot::new(replica, seq),
            stamp: Stamp {
                hlc: seq << 22,
                replica,
            },
        }
    }

    /// A replica's cart history: adds on two replicas, then a remove of what one had seen.
    fn history() -> Segment {
        let mut deltas = Vec::new();
        let mut carts = [Cart::new(), Cart::new()];
        let key = Key::new(Kind::Cart, "c");
        for seq in 1..=4u64 {
            let who = (seq % 2) as usize;
            let replica = ReplicaId(who as u64 + 1);
            let tag = tag_at(replica, seq);
            let d = carts[who].add(tag, "apple", seq).expect("add");
            deltas.push(LoggedDelta {
                origin: replica,
                seq,
                stamp: tag.stamp,
                hops: 0,
                key: key.clone(),
                payload: MeshDelta(ObjectDelta::Cart(d)),
            });
        }
        let removal = carts[0].remove("apple").expect("remove");
        deltas.push(LoggedDelta {
            origin: ReplicaId(1),
            seq: 5,
            stamp: Stamp {
                hlc: 5 << 22,
                replica: ReplicaId(1),
            },
            hops: 0,
            key,
            payload: MeshDelta(ObjectDelta::Cart(removal)),
        });
        Segment {
            deltas: deltas.into_iter().map(SegmentDelta::Decoded).collect(),
            ..Segment::default()
        }
    }

    fn cart_of(state: &State) -> Option<Object> {
        state
            .get(&Key::new(Kind::Cart, "c"))
            .map(|s| (*s.object).clone())
    }

    #[test]
    fn a_key_changed_again_moves_to_the_newest_cursor_once() {
        let mut state = State::from_loaded(&mut loaded(Vec::new()));
        let (a, b) = (Key::new(Kind::Cart, "a"), Key::new(Kind::Cart, "b"));
        state.object_mut(&a, None);
        state.object_mut(&b, None);
        state.object_mut(&a, None);
        state.object_mut(&a, None);
        let live = state
            .changes
            .iter()
            .filter(|&&(cursor, n)| state.slots[n].change == cursor)
            .count();
        assert_eq!(live, 2);
        let all = state.changed_since(0, usize::MAX);
        let keys: Vec<&Key> = all.entries.iter().map(|(k, _)| k).collect();
        assert_eq!(keys, [&b, &a]);
        assert_eq!(all.next_cursor, state.next_cursor() - 1);
        assert_eq!(state.get(&a).map(|s| s.change), Some(all.next_cursor));
        let mut batch: Vec<Key> = state
            .end_batch()
            .into_iter()
            .map(|(_, k, _)| (*k.expect("a key's first batch hands it to the view")).clone())
            .collect();
        batch.sort_by(|x, y| x.id.cmp(&y.id));
        assert_eq!(batch, [a, b]);
        assert_eq!(state.unsaved(), 2);
    }

    #[test]
    fn a_key_is_handed_to_the_view_by_its_first_batch_only() {
        let mut state = State::from_loaded(&mut loaded(Vec::new()));
        let a = Key::new(Kind::Cart, "a");
        let (n, _) = state.object_mut(&a, None);
        let first = state.end_batch();
        assert!(first.len() == 1 && first[0].0 == n);
        assert_eq!(first[0].1.as_deref(), Some(&a));
        // Once handed over, the slot number stands for the key.
        let found = state.find(&a);
        state.object_mut(&a, found);
        let again = state.end_batch();
        assert!(again.len() == 1 && again[0].0 == n && again[0].1.is_none());
    }

    #[test]
    fn changed_since_lists_each_key_once_in_cursor_order_across_index_compactions() {
        let mut state = State::from_loaded(&mut loaded(Vec::new()));
        let keys: Vec<Key> = (0..10)
            .map(|i| Key::new(Kind::Cart, format!("k{i}")))
            .collect();
        // Enough changes to drop stale index entries several times (past 2 x slots + 1024).
        for round in 0..500 {
            for (i, key) in keys.iter().enumerate() {
                if (round + i) % 3 != 0 {
                    state.object_mut(key, None);
                }
            }
        }
        assert!(state.changes.len() <= 2 * keys.len() + 1024 + 1);
        let all = state.changed_since(0, usize::MAX);
        assert!(all.done);
        let mut listed: Vec<&Key> = all.entries.iter().map(|(k, _)| k).collect();
        let cursors: Vec<u64> = listed
            .iter()
            .filter_map(|k| state.get(k).map(|s| s.change))
            .collect();
        assert!(cursors.windows(2).all(|w| w[0] < w[1]), "{cursors:?}");
        assert_eq!(all.next_cursor, *cursors.last().unwrap_or(&0));
        listed.sort_by(|a, b| a.id.cmp(&b.id));
        listed.dedup();
        assert_eq!(listed.len(), keys.len());
        // From a cursor in the middle: exactly the keys whose last change is after it.
        let mid = cursors[4];
        let later = state.changed_since(mid, usize::MAX);
        let expected = cursors.iter().filter(|&&c| c > mid).count();
        assert_eq!(later.entries.len(), expected);
        assert!(
            later
                .entries
                .iter()
                .all(|(k, _)| state.get(k).is_some_and(|s| s.change > mid))
        );
    }

    #[test]
    fn a_batch_hands_the_view_each_changed_cart_as_rendering_it_would() {
        let mut state = State::from_loaded(&mut loaded(Vec::new()));
        let keys = [Key::new(Kind::Cart, "c1"), Key::new(Kind::Cart, "c2")];
        let mut writers = [Cart::new(), Cart::new(), Cart::new()];
        let skus = ["apple", "b", "pear"];
        let mut deltas = Vec::new();
        for seq in 1..=60u64 {
            let w = (seq % 3) as usize;
            let replica = ReplicaId(w as u64 + 1);
            let tag = tag_at(replica, seq);
            let sku = skus[(seq % 5 % 3) as usize];
            // Adds (patched), a remove and a decrement now and then (rendered whole).
            let delta = match seq % 7 {
                3 => writers[w].remove(sku).expect("remove"),
                5 => writers[w].set_quantity(tag, sku, 1).expect("set"),
                _ => writers[w].add(tag, sku, seq % 4 + 1).expect("add"),
            };
            deltas.push((&keys[(seq % 2) as usize], ObjectDelta::Cart(delta)));
        }
        let mut scratch = Vec::new();
        for batch in deltas.chunks(3) {
            // Each batch also repeats the first delta of the whole history (a duplicate).
            for (key, delta) in batch.iter().chain(&deltas[..1]) {
                state.join(key, delta.clone()).expect("join");
            }
            for (n, _, committed) in state.end_batch() {
                let key = &state.slot(n).key;
                let view::Committed::Cart(packed) = committed else {
                    panic!("{key} is a cart");
                };
                let Object::Cart(cart) = &*state.slot(n).object else {
                    panic!("{key} is a cart");
                };
                assert_eq!(packed, PackedCart::of(cart, &mut scratch), "{key}");
            }
        }
    }

    #[test]
    fn replaying_the_log_twice_is_replaying_it_once() {
        let once = State::from_loaded(&mut loaded(vec![history()]));
        let twice = State::from_loaded(&mut loaded(vec![history(), history()]));
        assert_eq!(cart_of(&once), cart_of(&twice));
        assert_eq!(once.applied(), twice.applied());
        assert_eq!(once.last_stamp(), twice.last_stamp());
        // The remove only covered what replica 1 had seen: replica 2's adds (1 + 3) remain.
        let Some(Object::Cart(cart)) = cart_of(&once) else {
            panic!("no cart");
        };
        assert_eq!(cart.quantity("apple"), 4);
    }

    #[test]
    fn replaying_over_a_checkpoint_that_already_holds_the_log_changes_nothing() {
        let first = State::from_loaded(&mut loaded(vec![history()]));
        let Some(object) = cart_of(&first) else {
            panic!("no cart");
        };
        let mut from_checkpoint = loaded(vec![history()]);
        from_checkpoint
            .objects
            .insert(Key::new(Kind::Cart, "c"), (object.clone(), 1));
        from_checkpoint.applied = first.applied().clone();
        from_checkpoint.next_cursor = 2;
        let again = State::from_loaded(&mut from_checkpoint);
        assert_eq!(cart_of(&again), Some(object));
        assert_eq!(again.applied(), first.applied());
    }

    #[test]
    fn a_snapshot_is_put_in_the_store_tables_order() {
        let ids = ["cart-9", "b", "cart-10", &"x".repeat(300), "a", "cart-1"];
        let mut snapshot = Snapshot {
            objects: ids
                .iter()
                .enumerate()
                .flat_map(|(i, id)| {
                    [Kind::Session, Kind::Cart].map(|kind| {
                        (
                            Arc::new(Key::new(kind, *id)),
                            Arc::new(Object::new(kind)),
                            i as u64 + 1,
                        )
                    })
                })
                .collect(),
            applied: CausalContext::new(),
            last_stamp: None,
        };
        snapshot.sort_in_table_order();
        let keys: Vec<Vec<u8>> = snapshot
            .objects
            .iter()
            .map(|(k, _, _)| crate::store::object_key(k).expect("encode"))
            .collect();
        assert_eq!(keys.len(), 2 * ids.len());
        assert!(keys.windows(2).all(|w| w[0] < w[1]), "not in table order");
    }
}
