//! The read view: the committed state of every key and the membership as last seen, shared
//! between the engine (the only writer) and every [`crate::Mesh`] handle. A local write shows
//! once its commit is durable; received deltas show once applied, before their commit, which
//! is not durable anyway (ARCHITECTURE "Store").
//! It holds no logic: reads never wait for the engine's queue, so their latency does not
//! depend on the write load.
//!
//! Carts are kept as their visible items packed in one block ([`PackedCart`]), rendered once
//! per commit that changed them (or taken from the answer of the write that changed them
//! last, or patched from the previous block where a change touched one item only): a read
//! unpacks the items, and the engine's own copy of the cart is not shared, so changing it does
//! not copy it. Sessions and documents are kept as the committed object
//! (their reader's view depends on the time, or is rendered on demand).

use crate::key_index::KeyIndex;
use crate::member::Member;
use crate::packed_cart::PackedCart;
use crdt_types::{Key, Object};
use std::sync::{Arc, PoisonError, RwLock};

/// What the view holds for one key.
#[derive(Clone, Debug)]
pub(crate) enum Committed {
    /// A cart's visible items.
    Cart(PackedCart),
    /// A session or document.
    Object(Arc<Object>),
}

impl Committed {
    /// The committed form of `object` (`scratch` is the buffer a cart is packed in).
    pub(crate) fn of(object: &Arc<Object>, scratch: &mut Vec<u8>) -> Self {
        match &**object {
            Object::Cart(cart) => Committed::Cart(PackedCart::of(cart, scratch)),
            _ => Committed::Object(object.clone()),
        }
    }
}

/// One key for the view: the engine's slot number for it (slots are numbered from 0 in the
/// order keys were first seen and never removed), the key (needed only the first time the
/// slot is installed; `None` once the engine handed it over), and its committed form.
pub(crate) type Entry = (usize, Option<Arc<Key>>, Committed);

/// Committed keys, by the engine's slot number.
#[derive(Debug, Default)]
struct Objects {
    /// Key to slot number: written once per key, when it is first installed.
    index: KeyIndex,
    /// Slot number to the key's committed form (`None` for a slot not installed yet).
    committed: Vec<Option<Committed>>,
}

/// Committed keys and the member list.
#[derive(Debug, Default)]
pub(crate) struct View {
    objects: RwLock<Objects>,
    members: RwLock<Vec<Member>>,
}

impl View {
    /// A view holding `objects`.
    pub(crate) fn new(objects: Vec<Entry>) -> Self {
        let view = View::default();
        view.install(objects);
        view
    }

    /// The committed state of `key`, if it was ever written.
    pub(crate) fn get(&self, key: &Key) -> Option<Committed> {
        let objects = self.objects.read().unwrap_or_else(PoisonError::into_inner);
        let slot = objects.index.get(key)?;
        objects.committed.get(slot)?.clone()
    }

    /// Installs the keys of a commit. A key installed before is replaced by its slot number,
    /// without hashing it; the replaced versions are dropped after the lock is released.
    pub(crate) fn install(&self, changed: Vec<Entry>) {
        if changed.is_empty() {
            return;
        }
        let mut replaced = Vec::with_capacity(changed.len());
        {
            let mut guard = self.objects.write().unwrap_or_else(PoisonError::into_inner);
            let objects = &mut *guard;
            for (slot, key, committed) in changed {
                if slot >= objects.committed.len() {
                    objects.committed.resize_with(slot + 1, || None);
                }
                match (objects.committed[slot].replace(committed), key) {
                    (Some(old), _) => replaced.push(old),
                    (None, Some(key)) => objects.index.insert(&key, slot),
                    (None, None) => {
                        // The engine hands a key over until a batch did; a slot without one
                        // could not be read by key.
                        debug_assert!(false, "slot {slot} installed without its key");
                    }
                }
            }
        }
        drop(replaced);
    }

    /// The members as last seen.
    pub(crate) fn members(&self) -> Vec<Member> {
        self.members
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Replaces the member list.
    pub(crate) fn set_members(&self, members: Vec<Member>) {
        *self.members.write().unwrap_or_else(PoisonError::into_inner) = members;
    }
}
