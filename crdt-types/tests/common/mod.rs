//! Test helpers shared by the integration tests: a replica that issues tags the way the
//! gossip node does (next delta sequence number plus an HLC stamp).

#![allow(dead_code)]

use crdt_types::{Clock, Dot, ReplicaId, Stamp, Tag};

/// A physical time after the HLC epoch (2026-09).
pub const T0: i64 = 1_790_000_000_000;

/// One replica's tag source.
pub struct Replica {
    /// The replica id.
    pub id: ReplicaId,
    seq: u64,
    clock: Clock,
    /// Physical time the next tag is stamped at.
    pub now_ms: i64,
}

impl Replica {
    /// Replica `id` at time [`T0`].
    pub fn new(id: u64) -> Self {
        Replica {
            id: ReplicaId(id),
            seq: 0,
            clock: Clock::new(ReplicaId(id), 500),
            now_ms: T0,
        }
    }

    /// The next tag: sequence number + 1, a fresh stamp.
    pub fn tag(&mut self) -> Tag {
        self.seq += 1;
        let stamp = self.clock.tick(self.now_ms).expect("test time is in range");
        Tag {
            dot: Dot::new(self.id, self.seq),
            stamp,
        }
    }

    /// Lets the clock see a remote stamp (as receiving a delta would).
    pub fn observe(&mut self, stamp: &Stamp) {
        self.clock
            .observe(self.now_ms, stamp)
            .expect("test stamps are within the drift bound");
    }
}
