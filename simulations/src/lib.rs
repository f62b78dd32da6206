//! statemesh's deterministic partition simulator: it runs many real `gossip` nodes with
//! real `crdt-types` stores in one process on virtual time, injects network and node faults,
//! and checks the replicas against an independent oracle of CONTRACT §1.
//!
//! Everything is a function of one seed: the same seed gives the same report, byte for byte.
//!
//! Module map: [`queue`] (virtual time), [`rng`] (the seed tree), [`regions`] and
//! [`network`] (latency, loss, partitions), [`faults`] and [`scenarios`] (what goes wrong
//! when), [`workload`] (what users do), [`node`] and [`store`] (a simulated node: real gossip
//! and real CRDTs), [`sim`] (the driver), [`oracle`] and [`checkers`] (what must hold),
//! [`delivery`] and [`metrics`] (what was measured), [`report`] and [`plot`] (the outputs).

#![warn(missing_docs)]

pub mod checkers;
pub mod delivery;
pub mod faults;
pub mod metrics;
pub mod network;
pub mod node;
pub mod oracle;
pub mod plot;
pub mod queue;
pub mod regions;
pub mod report;
pub mod rng;
pub mod scenarios;
pub mod sim;
pub mod store;
pub mod workload;

pub use scenarios::Scenario;
pub use sim::{Outcome, SimConfig, Simulation};
