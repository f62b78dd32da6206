//! The read view: the committed state of every key and the membership as last seen, shared
//! between the engine (the only writer, after each commit) and every [`crate::Mesh`] handle.
//! It holds no logic: reads never wait for the engine's queue, so their latency does not
//! depend on the write load.

use crate::member::Member;
use crdt_types::{Key, Object};
use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

/// Committed objects and the member list.
#[derive(Debug, Default)]
pub(crate) struct View {
    objects: RwLock<HashMap<Key, Arc<Object>>>,
    members: RwLock<Vec<Member>>,
}

impl View {
    /// A view holding `objects`.
    pub(crate) fn new(objects: HashMap<Key, Arc<Object>>) -> Self {
        View {
            objects: RwLock::new(objects),
            members: RwLock::new(Vec::new()),
        }
    }

    /// The committed object of `key`, if it was ever written.
    pub(crate) fn get(&self, key: &Key) -> Option<Arc<Object>> {
        self.objects
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .cloned()
    }

    /// Installs the objects of a commit.
    pub(crate) fn install(&self, changed: Vec<(Key, Arc<Object>)>) {
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
