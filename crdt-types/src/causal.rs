//! `Causal<S>`: a dot store with its causal context, the shape of every causal CRDT state and
//! delta, and the one causal join they all share.

use crate::dot_store::MAX_DROPS;
use crate::{CausalContext, DeltaCrdt, Dot, DotStore, Drops, Lattice, VersionVector};
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;
use std::fmt;
use std::hash::{Hash, Hasher};

/// A dot store and the causal context it was built under (Almeida et al. 2018, §6).
///
/// The context says which dots the state has *seen*; a dot seen but absent from the store
/// was removed. That is what lets a remove travel as a context alone, with no tombstone.
/// Full states and deltas are both `Causal` values and merge with the same [`Lattice::join`].
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct Causal<S> {
    store: S,
    context: CausalContext,
}

impl<S: PartialEq> PartialEq for Causal<S> {
    fn eq(&self, other: &Self) -> bool {
        self.store == other.store && self.context == other.context
    }
}

impl<S: Eq> Eq for Causal<S> {}

impl<S: Hash> Hash for Causal<S> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.store.hash(state);
        self.context.hash(state);
    }
}

impl<S: fmt::Debug> fmt::Debug for Causal<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Causal")
            .field("store", &self.store)
            .field("context", &self.context)
            .finish()
    }
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

    /// The store and the context, to change in place: for a local operation applied where it
    /// is made, its delta built beside it. The caller keeps the pair well formed.
    pub(crate) fn parts_mut(&mut self) -> (&mut S, &mut CausalContext) {
        (&mut self.store, &mut self.context)
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

impl<S: DotStore> Causal<S> {
    /// The join with a delta whose context names exactly `dot`, the one dot its `store` holds
    /// (an add, no removal): seen already, nothing changes (a duplicate, or an entry removed
    /// here since); otherwise `store` is added as it is, in one context search.
    #[inline(always)]
    fn join_one(&mut self, store: S, dot: Dot) {
        if self.context.insert(dot) {
            // This side had not seen the only dot `store` holds: nothing of it is here yet and
            // nothing here is removed.
            self.store.join_unseen(store);
        }
    }
}

/// Contexts of up to this many dots (a delta's) are read dot by dot to work out what a join
/// removes (as many as a store records the finding of); a larger one (a full state's) makes
/// the join read the whole store.
const MAX_ENUMERATED: u64 = MAX_DROPS as u64;

impl<S: DotStore> Lattice for Causal<S> {
    #[inline]
    fn join(&mut self, other: Self) {
        if let Some(dot) = other.context.only_dot()
            && other.store.dot_count() == 1
        {
            // Most deltas: one operation's one entry, e.g. a cart add; `store` holds `dot`
            // (its context covers its store). Only the store moves on.
            self.join_one(other.store, dot);
            return;
        }
        self.join_general(other);
    }
}

impl<S: DotStore> Causal<S> {
    /// [`Lattice::join`] with anything but a one-dot delta (correct for those too, only slower).
    pub(crate) fn join_general(&mut self, other: Self) {
        let Causal { store, context } = other;
        // `other` can remove something only if its context names a dot its store lacks.
        let named = context.dot_count();
        let removes = named > store.dot_count() as u64;
        // For a small context: the dots `other` removes. The store join finds the ones this side
        // holds under the keys `other` lists (and looks further only for those it has seen).
        let mut doomed: SmallVec<[Dot; 16]> = SmallVec::new();
        // Whether the drops are the whole context (a remove's: no vector, no store dot).
        let mut only_drops = false;
        let drops = if !removes {
            Drops::Nothing
        } else if named <= MAX_ENUMERATED && store.is_empty() && context.vv().is_empty() {
            // A remove's small context (`removes`: not empty): its cloud is the dots it
            // removes, sorted and distinct, with no copy.
            only_drops = true;
            Drops::These(context.cloud_dots())
        } else if named <= MAX_ENUMERATED {
            let mut theirs: SmallVec<[Dot; 2]> = SmallVec::new();
            store.for_each_dot(&mut |d| theirs.push(d));
            let gone = |d: &Dot| !theirs.contains(d);
            if context.vv().is_empty() {
                doomed.extend(context.cloud().copied().filter(gone));
            } else {
                doomed.extend(context.dots().filter(gone));
                doomed.sort_unstable();
            }
            if doomed.is_empty() {
                Drops::Nothing
            } else {
                Drops::These(&doomed)
            }
        } else {
            Drops::Unknown
        };
        #[cfg(debug_assertions)]
        let seen = self.context.dot_count();
        let covered = self.store.join_store(&self.context, store, &context, drops);
        if only_drops && covered {
            // Every dot of `context` was seen here, so this context has them all already.
            debug_assert!(
                context.dots().all(|d| self.context.contains(&d)),
                "a covered dot is missing from the context"
            );
        } else {
            self.context.join(&context);
        }
        #[cfg(debug_assertions)]
        debug_assert!(
            self.context.dot_count() >= seen,
            "a causal context shrank on join"
        );
    }
}

impl<S: DotStore + Serialize> DeltaCrdt for Causal<S> {}
