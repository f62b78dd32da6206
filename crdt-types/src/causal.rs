//! `Causal<S>`: a dot store with its causal context, the shape of every causal CRDT state and
//! delta, and the one causal join they all share.

use crate::{CausalContext, DeltaCrdt, DotStore, Lattice, VersionVector};
use serde::{Deserialize, Serialize};

/// A dot store and the causal context it was built under (Almeida et al. 2018, §6).
///
/// The context says which dots the state has *seen*; a dot seen but absent from the store
/// was removed. That is what lets a remove travel as a context alone, with no tombstone.
/// Full states and deltas are both `Causal` values and merge with the same [`Lattice::join`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Causal<S> {
    store: S,
    context: CausalContext,
}

impl<S: DotStore> Causal<S> {
    /// Pairs a store with its context. The context must cover every dot of the store
    /// ([`Causal::is_well_formed`]); the delta mutators of the stores build such pairs.
    pub fn new(store: S, context: CausalContext) -> Self {
        debug_assert!(
            {
                let mut ok = true;
                store.for_each_dot(&mut |d| ok &= context.contains(&d));
                ok
            },
            "a store dot is missing from its context"
        );
        Causal { store, context }
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The causal context.
    pub fn context(&self) -> &CausalContext {
        &self.context
    }

    /// Splits into store and context.
    pub fn into_parts(self) -> (S, CausalContext) {
        (self.store, self.context)
    }

    /// Whether nothing has been seen (the bottom element).
    pub fn is_bottom(&self) -> bool {
        self.store.is_empty() && self.context.is_empty()
    }

    /// Whether every dot of the store is in the context, the invariant the join relies on.
    /// Checked on values decoded from the network before they are merged.
    pub fn is_well_formed(&self) -> bool {
        let mut ok = true;
        self.store
            .for_each_dot(&mut |d| ok &= self.context.contains(&d));
        ok
    }

    /// Folds the causally stable vector `stable` into the context
    /// ([`CausalContext::compact_stable`]): every replica has delivered those dots, so listing
    /// them one by one is no longer needed. The store is unchanged.
    pub fn compact(&mut self, stable: &VersionVector) {
        self.context.compact_stable(stable);
    }
}

impl<S: DotStore> Lattice for Causal<S> {
    fn join(&mut self, other: Self) {
        // `other` can remove something only if its context names a dot its store lacks.
        let may_drop = other.context.dot_count() > other.store.dot_count() as u64;
        #[cfg(debug_assertions)]
        let seen_before = self.context.dot_count();
        let Causal { store, context } = other;
        self.store
            .join_store(&self.context, store, &context, may_drop);
        self.context.join(&context);
        #[cfg(debug_assertions)]
        debug_assert!(
            self.context.dot_count() >= seen_before,
            "a causal context shrank on join"
        );
    }
}

impl<S: DotStore + Serialize> DeltaCrdt for Causal<S> {}
