//! `AwSet<T>`: an add-wins observed-remove set without tombstones (ORSWOT style).

use crate::{Causal, CausalContext, DeltaCrdt, DotMap, DotSet, Lattice, Tag, VersionVector};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::hash::Hash;

/// An add-wins set: an element is present while some add of it has not been observed by a
/// remove. A remove covers the adds it saw; a concurrent add survives. Removed elements
/// leave nothing in the store, only dots in the (compactable) context.
///
/// The store is a [`DotMap`] from element to the [`DotSet`] of its live adds.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(bound(
    serialize = "T: Serialize",
    deserialize = "T: Deserialize<'de> + Ord + Hash + Clone + fmt::Debug"
))]
pub struct AwSet<T>(Causal<DotMap<T, DotSet>>);

impl<T: Ord + Hash + Clone + fmt::Debug> PartialEq for AwSet<T> {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

impl<T: Ord + Hash + Clone + fmt::Debug> Eq for AwSet<T> {}

impl<T: Ord + Hash + Clone + fmt::Debug> std::hash::Hash for AwSet<T> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

impl<T: Ord + Hash + Clone + fmt::Debug> Default for AwSet<T> {
    fn default() -> Self {
        AwSet(Causal::default())
    }
}

impl<T: Ord + Hash + Clone + fmt::Debug> AwSet<T> {
    /// The empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `element` and returns the delta.
    pub fn add(&mut self, tag: Tag, element: T) -> Self {
        debug_assert!(!self.0.context().contains(&tag.dot), "dot reused");
        let delta = AwSet(
            self.0
                .store()
                .update_delta(tag, element, |dots, tag| dots.add_delta(tag)),
        );
        self.0.join(delta.0.clone());
        delta
    }

    /// Removes `element` as observed and returns the delta (empty if absent).
    pub fn remove(&mut self, element: &T) -> Self {
        let delta = AwSet(self.0.store().remove_delta(element));
        self.0.join(delta.0.clone());
        delta
    }

    /// Removes every element as observed and returns the delta.
    pub fn clear(&mut self) -> Self {
        let delta = AwSet(self.0.store().clear_delta());
        self.0.join(delta.0.clone());
        delta
    }

    /// Whether `element` is present.
    pub fn contains(&self, element: &T) -> bool {
        self.0.store().contains_key(element)
    }

    /// The elements in order.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.0.store().keys()
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        self.0.store().len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0.store().len() == 0
    }

    /// The causal context.
    pub fn context(&self) -> &CausalContext {
        self.0.context()
    }

    /// Whether the context covers every store dot (checked on untrusted input).
    pub fn is_well_formed(&self) -> bool {
        self.0.is_well_formed()
    }

    /// Folds a causally stable vector into the context.
    pub fn compact(&mut self, stable: &VersionVector) {
        self.0.compact(stable);
    }
}

impl<T: Ord + Hash + Clone + fmt::Debug> Lattice for AwSet<T> {
    fn join(&mut self, other: Self) {
        self.0.join(other.0);
    }
}

impl<T: Ord + Hash + Clone + fmt::Debug + Serialize> DeltaCrdt for AwSet<T> {}
