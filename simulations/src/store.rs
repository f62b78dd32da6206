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
use gossip::{StateBatch, StateSource};
use hashbrown::HashTable;
use rustc_hash::FxBuildHasher;
use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::rc::Rc;

/// A bug planted in the store on purpose (tests only), to show the checkers catch it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlantedBug {
    /// When a remote cart delta removes an item, drop *every* entry of that item here,
    /// including increments the remover had not observed: add-wins broken on receipt.
    RemoveDropsUnseenDots,
}

/// The keys written anywhere in a run, numbered in the order they were first seen, and the
/// replicas whose deltas were applied anywhere, likewise: one table for every store of the
/// run ([`Store::sharing`]), so the tables a delivery looks its key and replicas up in are
/// the same for every node and stay in cache, and each store finds its entry and its
/// contiguous counters by the numbers (indices) instead of probing tables of its own over
/// cold memory (the key lookup was about 6% of a 300-node run, the counters of the replicas
/// a joined key's context names about 5%).
#[derive(Default)]
pub struct Numbers {
    /// Indices into `keys`, found by their key.
    slots: HashTable<u32>,
    keys: Vec<Key>,
    replicas: HashMap<ReplicaId, u32, FxBuildHasher>,
    /// The replicas by number.
    replica_ids: Vec<ReplicaId>,
}

/// A [`Numbers`] shared by the stores of one run.
pub type SharedNumbers = Rc<RefCell<Numbers>>;

impl Numbers {
    /// The number of `key`, if it was ever numbered.
    fn find(&self, key: &Key) -> Option<u32> {
        let keys = &self.keys;
        self.slots
            .find(FxBuildHasher.hash_one(key), |&i| keys[i as usize] == *key)
            .copied()
    }

    /// The number of `replica`, if it was ever numbered.
    fn find_replica(&self, replica: ReplicaId) -> Option<u32> {
        self.replicas.get(&replica).copied()
    }

    /// The number of `replica`, numbered now if new.
    fn replica(&mut self, replica: ReplicaId) -> u32 {
        let next = u32::try_from(self.replicas.len()).expect("fewer than 2^32 replicas");
        let id = *self.replicas.entry(replica).or_insert(next);
        if id == next {
            self.replica_ids.push(replica);
        }
        id
    }

    /// The number of `key`, numbered now if new.
    fn id(&mut self, key: &Key) -> u32 {
        let Numbers { slots, keys, .. } = self;
        let found = slots.entry(
            FxBuildHasher.hash_one(key),
            |&i| keys[i as usize] == *key,
            |&i| FxBuildHasher.hash_one(&keys[i as usize]),
        );
        match found {
            hashbrown::hash_table::Entry::Occupied(e) => *e.get(),
            hashbrown::hash_table::Entry::Vacant(v) => {
                let i = u32::try_from(keys.len()).expect("fewer than 2^32 keys");
                keys.push(key.clone());
                v.insert(i);
                i
            }
        }
    }
}

/// The dots a store has applied, by the run's replica numbers ([`Numbers`]): per replica a
/// contiguous counter in a vector, and the few counters above it that arrived out of order.
/// A store records a dot per delivery, and gossip's `Delivered` (a hash table of its own by
/// replica id, per node) cost a probe of cold memory for it; the numbers are found in the
/// run's one shared table, which stays in cache, and the counters are a dense vector.
#[derive(Default)]
struct Applied {
    /// Every counter `1..=tops[n]` of replica number `n` is applied (0 past the end).
    tops: Vec<u64>,
    /// Applied counters above `tops[n] + 1`, ascending; no empty entries.
    above: HashMap<u32, Vec<u64>, FxBuildHasher>,
}

impl Applied {
    /// The contiguous counter of replica number `id`.
    fn top(&self, id: u32) -> u64 {
        self.tops.get(id as usize).copied().unwrap_or(0)
    }

    /// Whether counter `c` of replica number `id` is applied (counter 0 always is).
    fn contains(&self, id: u32, c: u64) -> bool {
        c == 0
            || c <= self.top(id)
            || self
                .above
                .get(&id)
                .is_some_and(|a| a.binary_search(&c).is_ok())
    }

    /// Records counter `c` of replica number `id`; tells whether it was new.
    fn insert(&mut self, id: u32, c: u64) -> bool {
        let top = self.top(id);
        if c <= top {
            return false;
        }
        if c == top + 1 {
            self.raise(id, c);
            return true;
        }
        let above = self.above.entry(id).or_default();
        match above.binary_search(&c) {
            Ok(_) => false,
            Err(i) => {
                above.insert(i, c);
                true
            }
        }
    }

    /// Records every counter `1..=c` of replica number `id`, folding in the ones above that
    /// then continue it.
    fn raise(&mut self, id: u32, c: u64) {
        let i = id as usize;
        if i >= self.tops.len() {
            self.tops.resize(i + 1, 0);
        }
        let mut top = self.tops[i].max(c);
        if !self.above.is_empty()
            && let Some(above) = self.above.get_mut(&id)
        {
            gossip::delivered::fold(&mut top, above);
            if above.is_empty() {
                self.above.remove(&id);
            }
        }
        self.tops[i] = top;
    }

    /// Every applied `(replica number, counter)`, counter 0 excluded.
    fn dots(&self) -> impl Iterator<Item = (u32, u64)> + '_ {
        let contiguous = self
            .tops
            .iter()
            .zip(0u32..)
            .flat_map(|(&top, id)| (1..=top).map(move |c| (id, c)));
        let mut above: Vec<(u32, u64)> = self
            .above
            .iter()
            .flat_map(|(&id, a)| a.iter().map(move |&c| (id, c)))
            .collect();
        above.sort_unstable();
        contiguous.chain(above)
    }
}

/// `Store::by_id` of a key this store has no entry for.
const NO_ENTRY: u32 = u32::MAX;

struct Entry {
    key: Key,
    object: Object,
    changed: u64,
}

/// The store of one replica.
#[derive(Default)]
pub struct Store {
    /// The run's key numbers.
    numbers: SharedNumbers,
    /// Per key number, the index of the key's entry in `entries` ([`NO_ENTRY`] if none).
    /// Looked up only, never iterated: state transfers walk `by_change`.
    by_id: Vec<u32>,
    /// Every key ever written here, in the order of its first write; never removed.
    entries: Vec<Entry>,
    /// (change counter, index in `entries`) in counter order, for
    /// [`StateSource::changed_since`]. Appended on every change; a pair whose entry has
    /// changed since is stale and skipped, and dropped once stale pairs outnumber the keys.
    by_change: Vec<(u64, usize)>,
    next_change: u64,
    /// Every delta applied here (own included), by replica number: what a restart hands back
    /// to gossip, and the counters a joined key's cloud is folded with. Not a
    /// `CausalContext`: at 1000 origins a sorted vector cost two binary searches over cold
    /// memory per delivery and a shift of the vector per new origin.
    applied: Applied,
    last_stamp: Option<Stamp>,
    bug: Option<PlantedBug>,
}

impl Store {
    /// An empty store (a fresh data directory) with key numbers of its own.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty store (a fresh data directory) numbering keys and replicas in `numbers`,
    /// shared with the other stores of the run.
    pub fn sharing(numbers: &SharedNumbers) -> Self {
        Store {
            numbers: Rc::clone(numbers),
            ..Self::default()
        }
    }

    /// The key and replica numbers this store uses.
    pub fn numbers(&self) -> &SharedNumbers {
        &self.numbers
    }

    /// Plants `bug` in this store (tests only).
    pub fn plant_bug(&mut self, bug: PlantedBug) {
        self.bug = Some(bug);
    }

    /// The state of `key`, if it was ever written.
    pub fn get(&self, key: &Key) -> Option<&Object> {
        let id = self.numbers.borrow().find(key)?;
        match self.by_id.get(id as usize) {
            Some(&i) if i != NO_ENTRY => Some(&self.entries[i as usize].object),
            _ => None,
        }
    }

    /// Whether the delta with this dot was applied here (own included).
    pub fn has_applied(&self, dot: &Dot) -> bool {
        match self.numbers.borrow().find_replica(dot.replica) {
            Some(id) => self.applied.contains(id, dot.counter),
            None => dot.counter == 0,
        }
    }

    /// Every delta applied here, as persisted: what a restart hands back to gossip (one step
    /// per applied dot).
    pub fn applied(&self) -> CausalContext {
        let numbers = self.numbers.borrow();
        self.applied
            .dots()
            .map(|(id, c)| Dot::new(numbers.replica_ids[id as usize], c))
            .collect()
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
        let id = self.numbers.borrow_mut().id(key) as usize;
        if id >= self.by_id.len() {
            self.by_id.resize(id + 1, NO_ENTRY);
        }
        match self.by_id[id] {
            NO_ENTRY => {
                let i = self.entries.len();
                self.entries.push(Entry {
                    key: key.clone(),
                    object: Object::new(key.kind),
                    changed: 0,
                });
                self.by_id[id] = u32::try_from(i).expect("fewer than 2^32 keys");
                i
            }
            i => i as usize,
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
        self.record(dot);
    }

    /// Records `dot` as applied; tells whether it was new.
    fn record(&mut self, dot: Dot) -> bool {
        let id = self.numbers.borrow_mut().replica(dot.replica);
        self.applied.insert(id, dot.counter)
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
        Ok(self.record(dot))
    }

    /// Joins a state from a state transfer (gossip `Event::ApplyState`).
    pub fn apply_state(&mut self, key: &Key, state: ObjectDelta) -> Result<(), ApplyError> {
        self.join(key, state)
    }

    /// Joins an adopted delivered vector (gossip `Event::AdoptDelivered`).
    pub fn adopt_delivered(&mut self, vv: &VersionVector) {
        let mut numbers = self.numbers.borrow_mut();
        for (r, c) in vv.iter() {
            self.applied.raise(numbers.replica(r), c);
        }
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
            entries,
            applied,
            numbers,
            ..
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
            // Folds the key's cloud into its vector: each replica with a cloud dot is raised
            // to what this store has applied of it, so that its cloud dots up to there (and
            // the ones contiguous above) fold in. Replicas with no cloud dot are left as they
            // are: raising them folds nothing, and a key's vector names every replica that wrote it, so reading each
            // one's counter on every join cost a lookup per writer (up to the cluster size)
            // where one per cloud dot does. The counters are read by the run's replica
            // numbers; the vector is collected once rather than raised entry by entry
            // (which reallocates it for each replica).
            let ctx = cart.context();
            let numbers = numbers.borrow();
            let ahead = |r: ReplicaId, c: u64| {
                let n = numbers.find_replica(r).map_or(0, |i| applied.top(i));
                (n > c).then_some((r, n))
            };
            let stable: VersionVector = ctx
                .cloud()
                .filter_map(|d| ahead(d.replica, ctx.vv().get(d.replica)))
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
    fn applied_dots_are_the_set_gossip_delivered_records() {
        // Dots of five replicas in a scrambled order with duplicates and gaps, and an adopted
        // vector midway: the store's record answers as gossip's `Delivered` of the same dots.
        let mut store = Store::new();
        let mut reference = gossip::Delivered::new();
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let replica = |i: u64| ReplicaId(0x5eed_0000 + i * 7919);
        for step in 0..3000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let dot = Dot::new(replica(x % 5), 1 + (x >> 8) % 60 + step / 50);
            assert_eq!(
                store.record(dot),
                reference.insert(dot),
                "step {step} {dot:?}"
            );
            if step == 1500 {
                let vv: VersionVector = [(replica(1), 70), (replica(4), 3), (replica(9), 2)]
                    .into_iter()
                    .collect();
                store.adopt_delivered(&vv);
                reference.raise(&vv);
            }
        }
        for r in 0..10 {
            for c in 0..130 {
                let dot = Dot::new(replica(r), c);
                assert_eq!(store.has_applied(&dot), reference.contains(&dot), "{dot:?}");
            }
        }
        assert_eq!(store.applied(), reference.to_context());
        assert!(
            store.applied().cloud().next().is_some(),
            "some dots out of order"
        );
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
