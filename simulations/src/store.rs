//! A simulated node's durable store: the real `crdt_types::Object` of every key, the per-key
//! change counter the gossip state transfer walks, and what a restart gets back. In memory;
//! "durable" means it survives a simulated crash that keeps the data directory.
//!
//! It joins what gossip hands it and must not decide anything about replication. The only
//! deliberate deviation is [`PlantedBug`], a test hook that breaks the store on purpose to
//! show that the checkers catch a wrong CRDT join.

use crdt_types::{
    ApplyError, CausalContext, Dot, Key, Object, ObjectDelta, ReplicaId, Stamp, VersionVector,
};
use gossip::{Delivered, StateBatch, StateSource};
use hashbrown::HashTable;
use rustc_hash::FxBuildHasher;
use std::hash::BuildHasher;

/// A bug planted in the store on purpose (tests only), to show the checkers catch it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlantedBug {
    /// When a remote cart delta removes an item, drop *every* entry of that item here,
    /// including increments the remover had not observed: add-wins broken on receipt.
    RemoveDropsUnseenDots,
}

struct Entry {
    key: Key,
    object: Object,
    changed: u64,
}

/// The store of one replica.
#[derive(Default)]
pub struct Store {
    /// Indices into `entries`, found by their entry's key: the key is stored once (in its
    /// entry) and hashed once per lookup. Looked up only, never iterated: state transfers
    /// walk `by_change`.
    slots: HashTable<usize>,
    /// Every key ever written here, in the order of its first write; never removed.
    entries: Vec<Entry>,
    /// (change counter, index in `entries`) in counter order, for
    /// [`StateSource::changed_since`]. Appended on every change; a pair whose entry has
    /// changed since is stale and skipped, and dropped once stale pairs outnumber the keys.
    by_change: Vec<(u64, usize)>,
    next_change: u64,
    /// Every delta applied here (own included): what a restart hands back to gossip. Kept as
    /// gossip's [`Delivered`] (a hash lookup per origin) rather than a `CausalContext`: each
    /// delivery asks it about the key's replicas and records a dot, and at 1000 origins a
    /// sorted vector cost two binary searches over cold memory and a shift of the vector per
    /// new origin.
    delivered: Delivered,
    last_stamp: Option<Stamp>,
    bug: Option<PlantedBug>,
}

impl Store {
    /// An empty store (a fresh data directory).
    pub fn new() -> Self {
        Self::default()
    }

    /// Plants `bug` in this store (tests only).
    pub fn plant_bug(&mut self, bug: PlantedBug) {
        self.bug = Some(bug);
    }

    /// The state of `key`, if it was ever written.
    pub fn get(&self, key: &Key) -> Option<&Object> {
        let entries = &self.entries;
        self.slots
            .find(FxBuildHasher.hash_one(key), |&i| entries[i].key == *key)
            .map(|&i| &entries[i].object)
    }

    /// Whether the delta with this dot was applied here (own included).
    pub fn has_applied(&self, dot: &Dot) -> bool {
        self.delivered.contains(dot)
    }

    /// Every delta applied here, as persisted: what a restart hands back to gossip (one step
    /// per applied dot).
    pub fn applied(&self) -> CausalContext {
        self.delivered.to_context()
    }

    /// The highest stamp issued or applied here.
    pub fn last_stamp(&self) -> Option<Stamp> {
        self.last_stamp
    }

    /// Records entry `i` as changed now.
    fn bump(&mut self, i: usize) {
        self.next_change += 1;
        let change = self.next_change;
        self.entries[i].changed = change;
        if self.by_change.len() >= 2 * self.entries.len() + 64 {
            let entries = &self.entries;
            self.by_change.retain(|&(c, j)| entries[j].changed == c);
        }
        self.by_change.push((change, i));
    }

    /// The index of `key`'s entry, created empty if new (the key is cloned only then).
    fn slot(&mut self, key: &Key) -> usize {
        let Store { slots, entries, .. } = self;
        let found = slots.entry(
            FxBuildHasher.hash_one(key),
            |&i| entries[i].key == *key,
            |&i| FxBuildHasher.hash_one(&entries[i].key),
        );
        match found {
            hashbrown::hash_table::Entry::Occupied(e) => *e.get(),
            hashbrown::hash_table::Entry::Vacant(v) => {
                let i = entries.len();
                entries.push(Entry {
                    key: key.clone(),
                    object: Object::new(key.kind),
                    changed: 0,
                });
                v.insert(i);
                i
            }
        }
    }

    /// Runs a local mutation on `key` (created empty if new) and records its stamp. The
    /// closure returns the delta it made, which the caller then publishes.
    pub fn write<T>(&mut self, key: &Key, stamp: Stamp, f: impl FnOnce(&mut Object) -> T) -> T {
        let i = self.slot(key);
        let out = f(&mut self.entries[i].object);
        self.bump(i);
        self.last_stamp = self.last_stamp.max(Some(stamp));
        out
    }

    /// Records a local delta's dot as delivered once it is durable (before it is published).
    pub fn record_own(&mut self, dot: Dot) {
        self.delivered.insert(dot);
    }

    /// Joins a remote delta (gossip `Event::Apply`) and records its dot, as one transaction;
    /// tells whether the dot was new here (`false`: it had been applied before).
    pub fn apply_delta(
        &mut self,
        key: &Key,
        delta: ObjectDelta,
        dot: Dot,
        stamp: Stamp,
    ) -> Result<bool, ApplyError> {
        self.join(key, delta)?;
        self.last_stamp = self.last_stamp.max(Some(stamp));
        Ok(self.delivered.insert(dot))
    }

    /// Joins a state from a state transfer (gossip `Event::ApplyState`).
    pub fn apply_state(&mut self, key: &Key, state: ObjectDelta) -> Result<(), ApplyError> {
        self.join(key, state)
    }

    /// Joins an adopted delivered vector (gossip `Event::AdoptDelivered`).
    pub fn adopt_delivered(&mut self, vv: &VersionVector) {
        self.delivered.raise(vv);
    }

    /// Joins `delta` into `key` and folds the key's context with the vector of what this
    /// store has applied. Not with `gossip::Node::delivered()`: that runs ahead by the events
    /// the driver has been handed but not applied yet, and claiming their dots early would make
    /// the join drop their entries as if removed.
    fn join(&mut self, key: &Key, delta: ObjectDelta) -> Result<(), ApplyError> {
        if delta.kind() != key.kind {
            return Err(ApplyError::KindMismatch {
                object: key.kind,
                delta: delta.kind(),
            });
        }
        let bug = self.bug;
        let i = self.slot(key);
        let Store {
            entries, delivered, ..
        } = self;
        let object = &mut entries[i].object;
        let doomed = match (bug, &*object, &delta) {
            (Some(PlantedBug::RemoveDropsUnseenDots), Object::Cart(mine), ObjectDelta::Cart(d)) => {
                // Items the delta removes: it has seen some of our entries of them but
                // carries none of its own.
                let carried: Vec<&str> = d.counters().map(|(s, _)| s).collect();
                mine.counters()
                    .filter(|(sku, c)| {
                        !carried.contains(sku)
                            && c.entries().any(|(dot, _)| d.context().contains(dot))
                    })
                    .map(|(sku, _)| sku.to_string())
                    .collect()
            }
            _ => Vec::new(),
        };
        object.apply(delta)?;
        if let Object::Cart(cart) = object {
            for sku in doomed {
                // The bug: drop what the remover never saw, locally, without telling anyone.
                let _ = cart.remove(&sku);
            }
        }
        if let Object::Cart(cart) = object {
            // `compact_stable` only raises the entries of replicas the key's context already
            // mentions and the applied vector is ahead on. Find those with one lookup per
            // replica of the key's context (usually none is ahead, then nothing to do)
            // instead of searching the key's context for every replica of the cluster. Same
            // result.
            // Collected into one vector rather than raised entry by entry (which reallocates
            // the vector for each new replica).
            let ctx = cart.context();
            let ahead = |r: ReplicaId, c: u64| {
                let n = delivered.top(r);
                (n > c).then_some((r, n))
            };
            let stable: VersionVector = ctx
                .vv()
                .iter()
                .filter_map(|(r, c)| ahead(r, c))
                .chain(
                    ctx.cloud()
                        .filter_map(|d| ahead(d.replica, ctx.vv().get(d.replica))),
                )
                .collect();
            if !stable.is_empty() {
                object.compact(&stable);
            }
        }
        self.bump(i);
        Ok(())
    }

    /// The kind-appropriate empty object for keys never written here.
    pub fn read(&self, key: &Key) -> Object {
        self.get(key)
            .cloned()
            .unwrap_or_else(|| Object::new(key.kind))
    }
}

impl StateSource<ObjectDelta> for Store {
    fn changed_since(&self, cursor: u64, byte_budget: usize) -> StateBatch<ObjectDelta> {
        let mut entries = Vec::new();
        let mut bytes = 0;
        let mut next_cursor = cursor;
        let start = self.by_change.partition_point(|&(c, _)| c <= cursor);
        let live = self.by_change[start..]
            .iter()
            .filter(|&&(c, j)| self.entries[j].changed == c);
        for &(change, i) in live {
            if !entries.is_empty() && bytes >= byte_budget {
                return StateBatch {
                    entries,
                    next_cursor,
                    done: false,
                };
            }
            let Entry { key, object, .. } = &self.entries[i];
            let delta = object.to_delta();
            bytes += delta.encoded_len() + key.id.len();
            entries.push((key.clone(), delta));
            next_cursor = change;
        }
        StateBatch {
            entries,
            next_cursor,
            done: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crdt_types::Kind;

    /// Keys in ascending order of their last change, as `changed_since` must return them.
    fn expected(last: &[(Key, u64)], cursor: u64) -> Vec<Key> {
        let mut v: Vec<&(Key, u64)> = last.iter().filter(|(_, c)| *c > cursor).collect();
        v.sort_by_key(|(_, c)| *c);
        v.into_iter().map(|(k, _)| k.clone()).collect()
    }

    #[test]
    fn changed_since_walks_keys_by_last_change_across_log_compactions() {
        let mut store = Store::new();
        let keys: Vec<Key> = (0..7)
            .map(|i| Key::new(Kind::Cart, format!("k{i}")))
            .collect();
        let mut last: Vec<(Key, u64)> = Vec::new();
        let stamp = Stamp {
            hlc: 1,
            replica: crdt_types::ReplicaId(1),
        };
        for step in 0u64..600 {
            let key = &keys[((step * step + 3 * step) % 7) as usize];
            store.write(key, stamp, |_| ());
            match last.iter_mut().find(|(k, _)| k == key) {
                Some(e) => e.1 = step + 1,
                None => last.push((key.clone(), step + 1)),
            }
            for cursor in [0, step / 2, step] {
                let all = store.changed_since(cursor, usize::MAX);
                assert!(all.done);
                let got: Vec<Key> = all.entries.into_iter().map(|(k, _)| k).collect();
                assert_eq!(got, expected(&last, cursor), "step {step} cursor {cursor}");
                // One entry per batch with no budget: the cursors chain to the same walk.
                let (mut c, mut walked) = (cursor, Vec::new());
                loop {
                    let b = store.changed_since(c, 0);
                    walked.extend(b.entries.into_iter().map(|(k, _)| k));
                    c = b.next_cursor;
                    if b.done {
                        break;
                    }
                }
                assert_eq!(walked, expected(&last, cursor));
            }
        }
        assert!(store.by_change.len() < 2 * keys.len() + 64 + 1);
    }
}
