//! `AwMap<K, V>`: a recursive add-wins observed-remove map whose values are causal CRDTs.

use crate::{Causal, CausalContext, DeltaCrdt, DotMap, DotStore, Lattice, Tag, VersionVector};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::hash::Hash;

/// An add-wins map from keys to embedded causal CRDTs (any [`DotStore`]: a [`DotSet`] flag,
/// a [`DotFun`] register, a [`Counter`], or another [`DotMap`] for nesting).
///
/// All values share the map's one causal context (Almeida et al. 2018, §7.2). An update of a
/// key wins over a concurrent remove of it, and survives with only what the remove had not
/// seen; a remove leaves no tombstone.
///
/// [`DotSet`]: crate::DotSet
/// [`DotFun`]: crate::DotFun
/// [`Counter`]: crate::Counter
#[derive(Clone, Serialize, Deserialize)]
#[serde(bound(
    serialize = "K: Serialize, V: Serialize + DotStore",
    deserialize = "K: Deserialize<'de> + Ord + Hash + Clone + fmt::Debug, V: Deserialize<'de> + DotStore"
))]
pub struct AwMap<K, V>(Causal<DotMap<K, V>>);

impl<K: fmt::Debug, V: DotStore> fmt::Debug for AwMap<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("AwMap").field(&self.0).finish()
    }
}

impl<K: Ord + Hash + Clone + fmt::Debug, V: DotStore> PartialEq for AwMap<K, V> {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

impl<K: Ord + Hash + Clone + fmt::Debug, V: DotStore> Eq for AwMap<K, V> {}

impl<K: Ord + Hash + Clone + fmt::Debug, V: DotStore + std::hash::Hash> std::hash::Hash
    for AwMap<K, V>
{
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

impl<K: Ord + Hash + Clone + fmt::Debug, V: DotStore> Default for AwMap<K, V> {
    fn default() -> Self {
        AwMap(Causal::default())
    }
}

impl<K: Ord + Hash + Clone + fmt::Debug, V: DotStore> AwMap<K, V> {
    /// The empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies the embedded operation `op` to the value under `key` (empty if absent) and
    /// returns the delta. `op` receives the current value and the tag and returns the value's
    /// delta, e.g. `|v, t| v.add_delta(t)` for a [`DotSet`](crate::DotSet) value, or
    /// `|m, t| m.update_delta(t, k2, ...)` for a nested map.
    pub fn update<F>(&mut self, tag: Tag, key: K, op: F) -> Self
    where
        F: FnOnce(&V, Tag) -> Causal<V>,
    {
        debug_assert!(!self.0.context().contains(&tag.dot), "dot reused");
        let delta = AwMap(self.0.store().update_delta(tag, key, op));
        self.0.join(delta.0.clone());
        delta
    }

    /// Removes `key` as observed and returns the delta (empty if absent).
    pub fn remove<Q>(&mut self, key: &Q) -> Self
    where
        K: std::borrow::Borrow<Q>,
        Q: Ord + ?Sized,
    {
        let delta = AwMap(self.0.store().remove_delta(key));
        self.0.join(delta.0.clone());
        delta
    }

    /// Removes every key as observed and returns the delta.
    pub fn clear(&mut self) -> Self {
        let delta = AwMap(self.0.store().clear_delta());
        self.0.join(delta.0.clone());
        delta
    }

    /// The value under `key`, if present.
    pub fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: std::borrow::Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.0.store().get(key)
    }

    /// The entries in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.0.store().iter()
    }

    /// The number of present keys.
    pub fn len(&self) -> usize {
        self.0.store().len()
    }

    /// Whether no key is present.
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

impl<K: Ord + Hash + Clone + fmt::Debug, V: DotStore> Lattice for AwMap<K, V> {
    fn join(&mut self, other: Self) {
        self.0.join(other.0);
    }
}

impl<K, V> DeltaCrdt for AwMap<K, V>
where
    K: Ord + Hash + Clone + fmt::Debug + Serialize,
    V: DotStore + Serialize,
{
}
