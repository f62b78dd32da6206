//! Anti-entropy: what a digest exchange sends back (logged deltas, or state chunks where the
//! log has been trimmed) and the bookkeeping of incoming state transfers; it plans repairs and
//! must not deliver, send or schedule anything itself.
//!
//! A round is push-pull. A opens it with a [`Digest`] (its delivered context) to a random live
//! peer B. B answers with the logged deltas A misses, within a byte budget, and, if A misses
//! deltas B's log no longer holds, with one chunk of B's current state of the keys changed after
//! a cursor (0 on the first chunk), within another budget; B also sends its own digest, which A
//! answers in the same way. A state transfer continues one chunk per round: A's next digest to
//! B carries the cursor to go on from. The first chunk carries B's delivered vector as of the
//! read; when the last chunk has been applied, A adopts that vector (see
//! [`crate::StateSource`] for why that is sound).

use crate::config::AntiEntropyConfig;
use crate::delivered::Delivered;
use crate::delta_log::DeltaLog;
use crate::messages::{Digest, EncodedDelta, StateChunk};
use crate::{Payload, StateSource};
use crdt_types::{ReplicaId, Stamp, VersionVector};
use std::collections::BTreeMap;
use std::net::SocketAddr;

/// A state transfer this node is receiving.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Incoming {
    replica: ReplicaId,
    snapshot: VersionVector,
    next_cursor: u64,
}

/// What to send back for a digest.
#[derive(Clone, Debug, PartialEq)]
pub struct Response<P> {
    /// Logged deltas the peer misses.
    pub deltas: Vec<EncodedDelta>,
    /// A chunk of state, if the peer misses deltas the log no longer holds or is in the middle
    /// of a transfer from us.
    pub state: Option<StateChunk<P>>,
}

/// What an applied state chunk means for the transfer it belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChunkOutcome {
    /// More chunks are to come.
    Continue,
    /// The transfer is complete: adopt this vector.
    Adopt(VersionVector),
    /// The chunk belongs to no transfer we know (its start was lost or the sender restarted):
    /// its states are still joined, but nothing is adopted.
    Orphan,
}

/// Incoming state transfers, per peer.
#[derive(Clone, Debug)]
pub struct AntiEntropy {
    config: AntiEntropyConfig,
    incoming: BTreeMap<SocketAddr, Incoming>,
}

impl AntiEntropy {
    /// No transfer in progress.
    pub fn new(config: AntiEntropyConfig) -> Self {
        AntiEntropy {
            config,
            incoming: BTreeMap::new(),
        }
    }

    /// The digest to send to `peer`.
    pub fn digest(&self, delivered: &Delivered, peer: &SocketAddr, reply: bool) -> Digest {
        Digest {
            delivered: delivered.digest(),
            reply,
            state_cursor: self.incoming.get(peer).map(|t| t.next_cursor),
        }
    }

    /// A peer with a transfer to us in progress, to prefer for the next round.
    pub fn transfer_peer(&self) -> Option<SocketAddr> {
        self.incoming.keys().next().copied()
    }

    /// Whether a transfer from `peer` is in progress.
    pub fn receiving_from(&self, peer: &SocketAddr) -> bool {
        self.incoming.contains_key(peer)
    }

    /// The peer left or restarted: drop its transfer.
    pub fn forget(&mut self, peer: &SocketAddr) {
        self.incoming.remove(peer);
    }

    /// What to answer to `digest` at `now`, given our delivered context, log and state.
    pub fn respond<P: Payload>(
        &self,
        digest: &Digest,
        mine: &Delivered,
        log: &DeltaLog<P>,
        state: &impl StateSource<P>,
        now: i64,
        clock: Stamp,
    ) -> Response<P> {
        let settled_before = now.saturating_sub(self.config.settle_ms as i64);
        let plan = log.plan_for(
            &digest.delivered,
            mine,
            self.config.delta_budget_bytes,
            settled_before,
        );
        let state = if plan.needs_state || digest.state_cursor.is_some() {
            let cursor = digest.state_cursor.unwrap_or(0);
            let batch = state.changed_since(cursor, self.config.state_budget_bytes);
            Some(StateChunk {
                snapshot: digest.state_cursor.is_none().then(|| mine.vv()),
                clock,
                next_cursor: batch.next_cursor,
                done: batch.done,
                entries: batch.entries,
            })
        } else {
            None
        };
        Response {
            deltas: plan.deltas,
            state,
        }
    }

    /// Records a chunk received from `peer` (whose replica is `replica`) and says whether the
    /// transfer is complete.
    pub fn on_chunk<P>(
        &mut self,
        peer: SocketAddr,
        replica: ReplicaId,
        chunk: &StateChunk<P>,
    ) -> ChunkOutcome {
        if let Some(snapshot) = &chunk.snapshot {
            self.incoming.insert(
                peer,
                Incoming {
                    replica,
                    snapshot: snapshot.clone(),
                    next_cursor: chunk.next_cursor,
                },
            );
        }
        let Some(t) = self.incoming.get_mut(&peer) else {
            return ChunkOutcome::Orphan;
        };
        if t.replica != replica {
            self.incoming.remove(&peer);
            return ChunkOutcome::Orphan;
        }
        t.next_cursor = t.next_cursor.max(chunk.next_cursor);
        if !chunk.done {
            return ChunkOutcome::Continue;
        }
        let snapshot = t.snapshot.clone();
        self.incoming.remove(&peer);
        ChunkOutcome::Adopt(snapshot)
    }
}
