//! statemesh's replicated data types: pure data, no I/O.
//!
//! Identity and time ([`ReplicaId`], [`Dot`], [`Stamp`], [`Clock`]), causal metadata
//! ([`VersionVector`], [`CausalContext`]), delta-state CRDTs ([`GCounter`], [`PNCounter`],
//! [`LwwRegister`], [`MaxRegister`], [`MvRegister`], [`AwSet`], [`AwMap`], all causal ones
//! built from the dot stores [`DotSet`], [`DotFun`], [`DotMap`] inside [`Causal`]), the
//! user-facing [`Cart`], [`Session`] and [`Document`], the per-key [`Object`] and
//! [`ObjectDelta`], and the one wire codec ([`wire`]).
//!
//! Every mutator that writes something takes the [`Tag`] of the operation (its dot and HLC
//! stamp, both issued by the replica's gossip node; removes need none) and returns the delta it
//! made; `join` merges a delta or a full state alike.

#![warn(missing_docs)]

mod awmap;
mod awset;
mod cart;
mod causal;
mod clock;
mod context;
mod counter;
mod document;
mod dot;
mod dot_store;
mod gcounter;
mod key;
mod key_index;
mod lattice;
mod lww;
mod max_register;
mod mvreg;
mod object;
mod pncounter;
mod replica;
mod session;
mod sku;
mod sorted_seq;
mod stamp;
mod tag;
mod version_vector;
pub mod wire;
mod wire_size;

pub use awmap::AwMap;
pub use awset::AwSet;
pub use cart::{Cart, CartError, CartView, Item, MAX_QUANTITY};
pub use causal::Causal;
pub use clock::{Clock, ClockError, DEFAULT_MAX_CLOCK_DRIFT_MS};
pub use context::CausalContext;
pub use counter::Counter;
pub use document::{DocDelta, DocEdit, DocError, Document, MAX_EDIT_DEPTH, PathSegment, actor_id};
pub use dot::Dot;
pub use dot_store::{DotFun, DotMap, DotProbe, DotSet, DotStore, Drops};
pub use gcounter::GCounter;
pub use key::{IdError, Key, Kind, MAX_ID_BYTES, validate_id};
pub use lattice::{DeltaCrdt, Lattice};
pub use lww::LwwRegister;
pub use max_register::MaxRegister;
pub use mvreg::MvRegister;
pub use object::{ApplyError, Object, ObjectDelta};
pub use pncounter::PNCounter;
pub use replica::ReplicaId;
pub use session::{Session, SessionError, SessionView, canonical_json};
pub use stamp::Stamp;
pub use tag::Tag;
pub use version_vector::VersionVector;
