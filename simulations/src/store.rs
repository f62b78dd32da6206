//! A simulated node's durable store: the real `crdt_types::Object` of every key, the per-key
//! change counter the gossip state transfer walks, and what a restart gets back. In memory;
//! "durable" means it survives a simulated crash that keeps the data directory.
//!
//! It joins what gossip hands it and must not decide anything about replication. The only
//! deliberate deviation is [`PlantedBug`], a test hook that breaks the store on purpose to
//! show that the checkers catch a wrong CRDT join.

use crdt_types::{ApplyError, CausalContext, Key, Object, ObjectDelta, Stamp, VersionVector};
use gossip::{StateBatch, StateSource};
use std::collections::{BTreeMap, HashMap};

/// A bug planted in the store on purpose (tests only), to show the checkers catch it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlantedBug {
    /// When a remote cart delta removes an item, drop *every* entry of that item here,
    /// including increments the remover had not observed: add-wins broken on receipt.
    RemoveDropsUnseenDots,
}

struct Entry {
    object: Object,
    changed: u64,
}

/// The store of one replica.
#[derive(Default)]
pub struct Store {
    /// Looked up only, never iterated: state transfers walk `by_change`.
    objects: HashMap<Key, Entry>,
    /// Change counter -> key, for [`StateSource::changed_since`].
    by_change: BTreeMap<u64, Key>,
    next_change: u64,
    /// Every delta applied here (own included): what a restart hands back to gossip.
    delivered: CausalContext,
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
        self.objects.get(key).map(|e| &e.object)
    }

    /// Every delta applied here, as persisted.
    pub fn delivered(&self) -> &CausalContext {
        &self.delivered
    }

    /// The highest stamp issued or applied here.
    pub fn last_stamp(&self) -> Option<Stamp> {
        self.last_stamp
    }

    fn bump(&mut self, key: &Key) {
        self.next_change += 1;
        let change = self.next_change;
        let entry = self.objects.get_mut(key).expect("bumped key exists");
        let old = std::mem::replace(&mut entry.changed, change);
        self.by_change.remove(&old);
        self.by_change.insert(change, key.clone());
    }

    fn entry(&mut self, key: &Key) -> &mut Object {
        &mut self
            .objects
            .entry(key.clone())
            .or_insert_with(|| Entry {
                object: Object::new(key.kind),
                changed: 0,
            })
            .object
    }

    /// Runs a local mutation on `key` (created empty if new) and records its stamp. The
    /// closure returns the delta it made, which the caller then publishes.
    pub fn write<T>(&mut self, key: &Key, stamp: Stamp, f: impl FnOnce(&mut Object) -> T) -> T {
        let out = f(self.entry(key));
        self.bump(key);
        self.last_stamp = self.last_stamp.max(Some(stamp));
        out
    }

    /// Records a local delta's dot as delivered once it is durable (before it is published).
    pub fn record_own(&mut self, dot: crdt_types::Dot) {
        self.delivered.insert(dot);
    }

    /// Joins a remote delta (gossip `Event::Apply`) and records its dot, as one transaction.
    pub fn apply_delta(
        &mut self,
        key: &Key,
        delta: ObjectDelta,
        dot: crdt_types::Dot,
        stamp: Stamp,
    ) -> Result<(), ApplyError> {
        self.join(key, delta)?;
        self.delivered.insert(dot);
        self.last_stamp = self.last_stamp.max(Some(stamp));
        Ok(())
    }

    /// Joins a state from a state transfer (gossip `Event::ApplyState`).
    pub fn apply_state(&mut self, key: &Key, state: ObjectDelta) -> Result<(), ApplyError> {
        self.join(key, state)
    }

    /// Joins an adopted delivered vector (gossip `Event::AdoptDelivered`).
    pub fn adopt_delivered(&mut self, vv: &VersionVector) {
        for (r, c) in vv.iter() {
            for n in (self.delivered.vv().get(r) + 1)..=c {
                self.delivered.insert(crdt_types::Dot::new(r, n));
            }
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
        let Store {
            objects, delivered, ..
        } = self;
        let object = &mut objects
            .entry(key.clone())
            .or_insert_with(|| Entry {
                object: Object::new(key.kind),
                changed: 0,
            })
            .object;
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
        object.compact(delivered.vv());
        self.bump(key);
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
        let mut range = self.by_change.range(cursor + 1..);
        for (&change, key) in range.by_ref() {
            if !entries.is_empty() && bytes >= byte_budget {
                return StateBatch {
                    entries,
                    next_cursor,
                    done: false,
                };
            }
            let object = &self.objects[key].object;
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
