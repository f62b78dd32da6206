//! `Causal<S>`: a dot store with its causal context, the shape of every causal CRDT state and
//! delta, and the one causal join they all share.

use crate::{CausalContext, DeltaCrdt, Dot, DotStore, Drops, Lattice, VersionVector};
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;
use std::collections::HashSet;
use std::fmt;
use std::hash::{BuildHasherDefault, Hash, Hasher};

/// A dot store and the causal context it was built under (Almeida et al. 2018, §6).
///
/// The context says which dots the state has *seen*; a dot seen but absent from the store
/// was removed. That is what lets a remove travel as a context alone, with no tombstone.
/// Full states and deltas are both `Causal` values and merge with the same [`Lattice::join`].
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct Causal<S> {
    store: S,
    context: CausalContext,
    /// The dots the store holds, once a join needed them; never encoded, compared or hashed.
    #[serde(skip)]
    held: Option<HeldDots>,
}

/// The set of dots a store holds: tells a join which of a delta's removals are already gone
/// (a stale remove) without reading every entry of the store.
type HeldDots = HashSet<Dot, BuildHasherDefault<DotHasher>>;

/// A multiplicative hash for dots (two `u64`s, the replica random): far cheaper than SipHash,
/// and the set is local, built from dots this state already accepted.
#[derive(Default)]
struct DotHasher(u64);

impl Hasher for DotHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x517c_c1b7_2722_0a95);
    }

    fn finish(&self) -> u64 {
        self.0
    }
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
        Causal {
            store,
            context,
            held: None,
        }
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

impl<S: DotStore> Causal<S> {
    /// The dots the store holds, built on first use and kept up to date by joins.
    fn held(&mut self) -> &mut HeldDots {
        self.held.get_or_insert_with(|| {
            let mut held = HeldDots::default();
            self.store.for_each_dot(&mut |d| {
                held.insert(d);
            });
            held
        })
    }
}

impl<S: DotStore> Causal<S> {
    /// The join with `(store, context)` where `context` names exactly `dot`, the one dot
    /// `store` holds (no removal): seen already, nothing changes (a duplicate, or an entry removed
    /// here since); otherwise the entry is added, in one context search.
    fn join_one(&mut self, store: S, context: &CausalContext, dot: Dot) {
        if !self.context.insert_new(dot) {
            return;
        }
        // This side's context did not hold the only dot `store` has, which is all a store
        // join consults it for: an empty one gives the same result.
        self.store
            .join_store(&CausalContext::new(), store, context, Drops::Nothing);
        if let Some(held) = &mut self.held {
            held.insert(dot);
        }
        #[cfg(debug_assertions)]
        if let Some(held) = &self.held {
            let mut actual = HeldDots::default();
            self.store.for_each_dot(&mut |d| {
                actual.insert(d);
            });
            debug_assert!(*held == actual, "the held-dot index drifted");
        }
    }
}

/// Contexts of up to this many dots (a delta's) are read dot by dot to work out what a join
/// removes; a larger one (a full state's) makes the join read the whole store.
const MAX_ENUMERATED: u64 = 64;

impl<S: DotStore> Lattice for Causal<S> {
    fn join(&mut self, other: Self) {
        let Causal { store, context, .. } = other;
        // `other` can remove something only if its context names a dot its store lacks.
        let named = context.dot_count();
        let removes = named > store.dot_count() as u64;
        let small = named <= MAX_ENUMERATED;
        if !removes
            && named == 1
            && let Some(dot) = context.only_dot()
        {
            // Most deltas: one operation's one entry, e.g. a cart add; `store` holds `dot`.
            self.join_one(store, &context, dot);
            return;
        }
        // For a small context: the dots of `other`'s store, and those this store holds that
        // `other` removes (found with the held-dot index, so a stale remove finds none).
        let mut theirs: SmallVec<[Dot; 2]> = SmallVec::new();
        let mut doomed: SmallVec<[Dot; 16]> = SmallVec::new();
        if small {
            store.for_each_dot(&mut |d| theirs.push(d));
            if removes {
                let held = self.held();
                let gone = |d: &Dot| !theirs.contains(d) && held.contains(d);
                if context.vv().is_empty() {
                    doomed.extend(context.cloud().copied().filter(gone));
                } else {
                    doomed.extend(context.dots().filter(gone));
                }
            }
        } else {
            // Rebuilt from the joined store when next needed.
            self.held = None;
        }
        // The dots of `other`'s store this side has not seen are the ones the join adds to
        // the held-dot index (a delta's one or two: a lookup each).
        let added: SmallVec<[Dot; 2]> = match &self.held {
            Some(_) => (theirs.iter().copied())
                .filter(|d| !self.context.contains(d))
                .collect(),
            None => SmallVec::new(),
        };
        #[cfg(debug_assertions)]
        let seen = self.context.dot_count();
        let drops = match (removes, small) {
            (false, _) => Drops::Nothing,
            (true, false) => Drops::Unknown,
            (true, true) if doomed.is_empty() => Drops::Nothing,
            (true, true) => {
                doomed.sort_unstable();
                Drops::These(&doomed)
            }
        };
        self.store.join_store(&self.context, store, &context, drops);
        self.context.join(&context);
        if let Some(held) = &mut self.held {
            for d in &doomed {
                held.remove(d);
            }
            held.extend(added);
        }
        #[cfg(debug_assertions)]
        {
            debug_assert!(
                self.context.dot_count() >= seen,
                "a causal context shrank on join"
            );
            if let Some(held) = &self.held {
                let mut actual = HeldDots::default();
                self.store.for_each_dot(&mut |d| {
                    actual.insert(d);
                });
                debug_assert!(*held == actual, "the held-dot index drifted");
            }
        }
    }
}

impl<S: DotStore + Serialize> DeltaCrdt for Causal<S> {}
