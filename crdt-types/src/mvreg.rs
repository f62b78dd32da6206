//! `MvRegister<T>`: a multi-value register that keeps every concurrent write.

use crate::{Causal, CausalContext, DeltaCrdt, DotFun, Lattice, Tag, VersionVector};
use serde::{Deserialize, Serialize};
use std::fmt;

/// A multi-value register (Almeida et al. 2018): a write replaces every value it has seen;
/// writes concurrent with it survive next to it, so a reader sees all of them and decides.
/// The store is a [`DotFun`] from each write's dot to its value.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(bound(
    serialize = "T: Serialize",
    deserialize = "T: Deserialize<'de> + Clone + PartialEq + fmt::Debug"
))]
pub struct MvRegister<T>(Causal<DotFun<T>>);

impl<T: Clone + PartialEq + fmt::Debug> Default for MvRegister<T> {
    fn default() -> Self {
        MvRegister(Causal::default())
    }
}

impl<T: Clone + PartialEq + fmt::Debug> MvRegister<T> {
    /// The empty register.
    pub fn new() -> Self {
        Self::default()
    }

    /// Writes `value` over every value seen and returns the delta.
    pub fn write(&mut self, tag: Tag, value: T) -> Self {
        debug_assert!(!self.0.context().contains(&tag.dot), "dot reused");
        let delta = MvRegister(self.0.store().write_delta(tag, value));
        self.0.join(delta.0.clone());
        delta
    }

    /// The current values, one per concurrent write, in dot order (empty if never written).
    pub fn values(&self) -> impl Iterator<Item = &T> {
        self.0.store().values()
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

impl<T: Clone + PartialEq + fmt::Debug> Lattice for MvRegister<T> {
    fn join(&mut self, other: Self) {
        self.0.join(other.0);
    }
}

impl<T: Clone + PartialEq + fmt::Debug + Serialize> DeltaCrdt for MvRegister<T> {}
