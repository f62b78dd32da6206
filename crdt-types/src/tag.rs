//! Tags: the identity of one local operation.

use crate::{Dot, Stamp};
use serde::{Deserialize, Serialize};

/// What names one local operation: its dot (the replica's next delta sequence number) and
/// its HLC stamp. The gossip node issues tags; CRDT mutators consume them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Tag {
    /// Unique event id; becomes part of causal contexts.
    pub dot: Dot,
    /// When it happened; orders last-writer-wins registers.
    pub stamp: Stamp,
}
