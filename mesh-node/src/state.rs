//! The engine's in-memory replica state: every key's object and change cursor, the change
//! index, the applied causal context and what the batch in progress changed. It joins what
//! it is told to and must not decide what to join: the gossip core decides.
//!
//! Objects are shared with the read view ([`crate::view`]) as `Arc`s: the first change to a
//! key in a batch copies it (`Arc::make_mut`), so readers keep the committed version until the
//! engine installs the new one after the commit.

use crate::delta::MeshDelta;
use crate::store::{Batch, Loaded, ObjectWrite};
use crdt_types::{CausalContext, Dot, Key, Object, ObjectDelta, Stamp, VersionVector};
use gossip::{StateBatch, StateSource};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// One key's state and the cursor of its last change.
#[derive(Clone, Debug)]
pub(crate) struct Slot {
    pub(crate) object: Arc<Object>,
    pub(crate) change: u64,
}

/// The replica state the engine owns (committed plus the batch in progress).
#[derive(Debug)]
pub(crate) struct State {
    objects: HashMap<Key, Slot>,
    /// Change cursor to key: what [`StateSource::changed_since`] walks.
    changes: BTreeMap<u64, Key>,
    applied: CausalContext,
    last_stamp: Option<Stamp>,
    next_cursor: u64,
    /// Keys changed by the batch in progress, with their last committed cursor.
    dirty: HashMap<Key, Option<u64>>,
    /// Whether the applied context changed in the batch in progress.
    applied_dirty: bool,
}

impl State {
    /// The state read back from the store.
    pub(crate) fn from_loaded(loaded: &mut Loaded) -> Self {
        let mut objects = HashMap::with_capacity(loaded.objects.len());
        let mut changes = BTreeMap::new();
        for (key, (object, change)) in loaded.objects.drain() {
            changes.insert(change, key.clone());
            objects.insert(
                key,
                Slot {
                    object: Arc::new(object),
                    change,
                },
            );
        }
        State {
            objects,
            changes,
            applied: std::mem::take(&mut loaded.applied),
            last_stamp: loaded.last_stamp,
            next_cursor: loaded.next_cursor,
            dirty: HashMap::new(),
            applied_dirty: false,
        }
    }

    /// Every key's current object, for the read view at start-up.
    pub(crate) fn snapshot(&self) -> HashMap<Key, Arc<Object>> {
        self.objects
            .iter()
            .map(|(k, s)| (k.clone(), s.object.clone()))
            .collect()
    }

    /// The slot of `key`, if it was ever written.
    pub(crate) fn get(&self, key: &Key) -> Option<&Slot> {
        self.objects.get(key)
    }

    /// The object of `key` for changing (created empty if new): marks it dirty and moves it
    /// to a fresh change cursor.
    pub(crate) fn object_mut(&mut self, key: &Key) -> &mut Object {
        let cursor = self.next_cursor;
        self.next_cursor += 1;
        let slot = self.objects.entry(key.clone()).or_insert_with(|| Slot {
            object: Arc::new(Object::new(key.kind)),
            change: 0,
        });
        let committed = (slot.change != 0).then_some(slot.change);
        self.dirty.entry(key.clone()).or_insert(committed);
        if slot.change != 0 {
            self.changes.remove(&slot.change);
        }
        slot.change = cursor;
        self.changes.insert(cursor, key.clone());
        Arc::make_mut(&mut slot.object)
    }

    /// Records a delta's dot as applied and the stamp as seen, then folds the key's context
    /// with the applied vector (ARCHITECTURE "Dots are delta sequence numbers").
    pub(crate) fn record(&mut self, key: &Key, dot: Dot, stamp: Stamp) {
        self.applied.insert(dot);
        self.applied_dirty = true;
        self.last_stamp = self.last_stamp.max(Some(stamp));
        self.compact(key);
    }

    /// Folds the applied vector into `key`'s causal context. Not with the gossip core's
    /// delivered context, which runs ahead by events not applied yet.
    pub(crate) fn compact(&mut self, key: &Key) {
        if let Some(slot) = self.objects.get_mut(key) {
            let vv = self.applied.vv();
            Arc::make_mut(&mut slot.object).compact(vv);
        }
    }

    /// Joins a state transfer's adopted vector into the applied context.
    pub(crate) fn adopt(&mut self, vv: &VersionVector) {
        self.applied.join(&context_of(vv));
        self.applied_dirty = true;
    }

    /// Joins a remote delta or state into `key`. A delta of the wrong kind is refused before
    /// the key is touched.
    pub(crate) fn join(
        &mut self,
        key: &Key,
        delta: ObjectDelta,
    ) -> Result<(), crdt_types::ApplyError> {
        if delta.kind() != key.kind {
            return Err(crdt_types::ApplyError::KindMismatch {
                object: key.kind,
                delta: delta.kind(),
            });
        }
        self.object_mut(key).apply(delta)
    }

    /// Whether the batch in progress changed anything that must be committed.
    pub(crate) fn is_dirty(&self) -> bool {
        !self.dirty.is_empty() || self.applied_dirty
    }

    /// What the batch in progress must commit (the log and peers are the engine's).
    pub(crate) fn batch(&self) -> Batch<'_> {
        let objects = self
            .dirty
            .iter()
            .filter_map(|(key, committed)| {
                let slot = self.objects.get(key)?;
                Some(ObjectWrite {
                    key,
                    object: &slot.object,
                    change: slot.change,
                    committed_change: *committed,
                })
            })
            .collect();
        Batch {
            objects,
            applied: self.applied_dirty.then_some(&self.applied),
            last_stamp: self.last_stamp,
            next_cursor: self.next_cursor,
            ..Batch::default()
        }
    }

    /// Marks the batch committed and returns the keys it changed with their new objects, for
    /// the read view.
    pub(crate) fn committed(&mut self) -> Vec<(Key, Arc<Object>)> {
        self.applied_dirty = false;
        let objects = &self.objects;
        self.dirty
            .drain()
            .filter_map(|(key, _)| {
                let object = objects.get(&key)?.object.clone();
                Some((key, object))
            })
            .collect()
    }
}

impl StateSource<MeshDelta> for State {
    fn changed_since(&self, cursor: u64, byte_budget: usize) -> StateBatch<MeshDelta> {
        let mut entries = Vec::new();
        let mut bytes = 0;
        let mut next_cursor = cursor;
        for (&change, key) in self.changes.range(cursor.saturating_add(1)..) {
            if !entries.is_empty() && bytes >= byte_budget {
                return StateBatch {
                    entries,
                    next_cursor,
                    done: false,
                };
            }
            let Some(slot) = self.objects.get(key) else {
                continue;
            };
            let delta = slot.object.to_delta();
            bytes += delta.encoded_len() + key.id.len();
            entries.push((key.clone(), MeshDelta(delta)));
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
