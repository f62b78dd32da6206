//! The join-semilattice traits every statemesh CRDT implements.

/// A join-semilattice: `join` is commutative, associative and idempotent.
///
/// `join` takes the other value by move so merging a received delta never clones it.
/// Property tests in `tests/laws.rs` check the laws for every type.
pub trait Lattice: Sized {
    /// Merges `other` into `self` (the least upper bound).
    fn join(&mut self, other: Self);

    /// `join` with a borrowed value.
    fn join_ref(&mut self, other: &Self)
    where
        Self: Clone,
    {
        self.join(other.clone());
    }
}

/// A delta-state CRDT (Almeida, Shoker, Baquero 2018): its deltas are values of the same
/// type, so a delta is merged with the same `join` as a full state.
pub trait DeltaCrdt: Lattice + Default + Clone + serde::Serialize {
    /// The size of this state (or delta) in the wire encoding, in bytes.
    fn encoded_len(&self) -> usize {
        crate::wire::encoded_len(self)
    }
}
