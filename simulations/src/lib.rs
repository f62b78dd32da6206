//! statemesh's deterministic partition simulator: it runs many real `gossip` nodes with
//! real `crdt-types` stores in one process on virtual time, injects network and node faults,
//! and checks the replicas against an independent oracle of CONTRACT §1.
//!
//! Everything is a function of one seed: the same seed gives the same report, byte for byte.

pub mod faults;
pub mod metrics;
pub mod network;
pub mod oracle;
pub mod queue;
pub mod regions;
pub mod rng;
pub mod scenarios;
