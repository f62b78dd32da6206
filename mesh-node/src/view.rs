//! The read view: the committed state of every key and the membership as last seen, shared
//! between the engine (the only writer, after each commit) and every [`crate::Mesh`] handle.
//! It holds no logic: reads never wait for the engine's queue, so their latency does not
//! depend on the write load.
//!
//! Carts are kept as the reader's [`CartView`], rendered once per commit that changed them:
//! a read costs a clone of the items, and the engine's own copy of the cart is not shared, so
//! changing it does not copy it. Sessions and documents are kept as the committed object
//! (their reader's view depends on the time, or is rendered on demand).

use crate::member::Member;
use crdt_types::{CartView, Key, Object};
use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

/// What the view holds for one key.
#[derive(Clone, Debug)]
pub(crate) enum Committed {
    /// A cart, as readers see it.
    Cart(Arc<CartView>),
    /// A session or document.
    Object(Arc<Object>),
}

impl Committed {
    /// The committed form of `object`.
    pub(crate) fn of(object: &Arc<Object>) -> Self {
        match &**object {
            Object::Cart(cart) => Committed::Cart(Arc::new(cart.view())),
            _ => Committed::Object(object.clone()),
        }
    }
}

/// Committed keys and the member list.
#[derive(Debug, Default)]
pub(crate) struct View {
    objects: RwLock<HashMap<Arc<Key>, Committed>>,
    members: RwLock<Vec<Member>>,
}

impl View {
    /// A view holding `objects`.
    pub(crate) fn new(objects: HashMap<Arc<Key>, Committed>) -> Self {
        View {
            objects: RwLock::new(objects),
            members: RwLock::new(Vec::new()),
        }
    }

    /// The committed state of `key`, if it was ever written.
    pub(crate) fn get(&self, key: &Key) -> Option<Committed> {
        self.objects
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .cloned()
    }

    /// Installs the keys of a commit.
    pub(crate) fn install(&self, changed: Vec<(Arc<Key>, Committed)>) {
        if changed.is_empty() {
            return;
        }
        let mut objects = self.objects.write().unwrap_or_else(PoisonError::into_inner);
        for (key, object) in changed {
            objects.insert(key, object);
        }
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
