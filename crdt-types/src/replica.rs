//! Replica identity: the actor that mints dots and stamps.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The identity of one replica's history: the actor in dots and stamps.
///
/// A replica id is chosen once when a data directory is created (randomly, or from the
/// simulator's seed), not derived from the node name: a node that loses its data directory
/// comes back as a new replica, so it can never mint a dot that an older incarnation
/// already used.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
pub struct ReplicaId(pub u64);

impl fmt::Debug for ReplicaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "r{:016x}", self.0)
    }
}

impl fmt::Display for ReplicaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}
