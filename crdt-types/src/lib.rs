//! statemesh's replicated data types: pure data, no I/O.
//!
//! Identity and time ([`ReplicaId`], [`Dot`], [`Stamp`], [`Clock`]), causal metadata
//! ([`VersionVector`], [`CausalContext`]), delta-state CRDTs, the user-facing `Cart`,
//! `Session` and `Document` types, and the one wire codec ([`wire`]).
//!
//! Every mutator takes the [`Tag`] of the operation (its dot and HLC stamp, both issued by
//! the replica's gossip node) and returns the delta it made; `join` merges a delta or a full
//! state alike.

mod clock;
mod context;
mod dot;
mod key;
mod lattice;
mod replica;
mod stamp;
mod tag;
mod version_vector;
pub mod wire;

pub use clock::{Clock, ClockError, DEFAULT_MAX_CLOCK_DRIFT_MS};
pub use context::CausalContext;
pub use dot::Dot;
pub use key::{IdError, Key, Kind, MAX_ID_BYTES, validate_id};
pub use lattice::{DeltaCrdt, Lattice};
pub use replica::ReplicaId;
pub use stamp::Stamp;
pub use tag::Tag;
pub use version_vector::VersionVector;
