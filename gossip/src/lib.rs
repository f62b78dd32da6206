//! The statemesh protocol as a sans-IO state machine: SWIM membership, delta dissemination,
//! anti-entropy and safe garbage collection, with no sockets, threads or clocks of its own.
//!
//! [`Node`] is driven the way quinn-proto's `Connection` is: the driver feeds it what arrives
//! ([`Node::handle_message`], [`Node::handle_timeout`]) and what the application asks
//! ([`Node::next_tag`], [`Node::publish`], [`Node::add_seed`], [`Node::leave`]), then drains
//! what it must do next: [`Node::poll_transmit`] (bytes for a peer), [`Node::poll_timeout`]
//! (when to call back) and [`Node::poll_event`] (deltas to apply durably, membership changes).
//! Time is a Unix-millisecond argument and all randomness comes from the seed given to
//! [`Node::new`], so the same inputs give the same outputs, bit for bit: the simulator runs the
//! very code the QUIC node runs.
//!
//! The node is generic over the delta payload `P` ([`Payload`]); statemesh instantiates it with
//! `crdt_types::ObjectDelta`. A full state is a `P` too (a delta-state CRDT's state is a delta),
//! so the state-transfer fallback of anti-entropy ships `(Key, P)` pairs that it reads from the
//! driver's store through [`StateSource`].
//!
//! Module map: [`membership`] (foca, identities, the codec), [`plumtree`] (eager/lazy
//! dissemination), [`anti_entropy`] (digests, log repair, state transfer), [`delivered`]
//! (which deltas a node has delivered, and as a digest carries it), [`delta_log`] (the
//! bounded log and its GC), [`messages`] (every wire type), [`stats`] (counters), [`config`]
//! (presets), [`node`] (the state machine that ties them together).

#![deny(missing_docs)]

pub mod anti_entropy;
pub mod config;
pub mod delivered;
pub mod delta_log;
pub mod membership;
pub mod messages;
pub mod node;
mod origin_order;
mod outbox;
pub mod plumtree;
pub mod stats;

pub use config::{AntiEntropyConfig, Config, PlumtreeConfig};
pub use crdt_types::Key;
pub use delivered::{Delivered, DigestContext};
pub use delta_log::DeltaLog;
pub use membership::{Identity, MemberInfo, MemberState, WireCodec};
pub use messages::Delta;
pub use node::{Channel, Event, Node, PublishError, Restored, Transmit};
pub use stats::{Stats, Traffic};

/// Re-export of the SWIM implementation, for callers that tune [`Config::swim`].
pub use foca;

use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt::Debug;

/// What a delta (and a full state) of the replicated data is, as far as gossip cares.
///
/// Gossip never looks inside a payload: it stores, batches, encodes and hands it back. Joins
/// happen in the driver, which owns the CRDT store. Implemented here for
/// `crdt_types::ObjectDelta`; any other serde type becomes a payload with an empty `impl`.
pub trait Payload: Clone + Debug + Serialize + DeserializeOwned + 'static {
    /// The payload's size in the wire encoding, in bytes, used for batching and budgets.
    fn encoded_len(&self) -> usize {
        crdt_types::wire::encoded_len(self)
    }
}

/// statemesh's payload: the delta (or state) of one key.
impl Payload for crdt_types::ObjectDelta {}

/// One chunk of the current state of the keys that changed after a cursor, read from the
/// driver's store for a state transfer (see [`StateSource`]).
#[derive(Clone, Debug, PartialEq)]
pub struct StateBatch<P> {
    /// `(key, current state)` in ascending order of the keys' change counters.
    pub entries: Vec<(Key, P)>,
    /// The change counter of the last entry returned (the cursor to continue from); the input
    /// cursor when nothing was returned.
    pub next_cursor: u64,
    /// Whether no key changed after `next_cursor` when the batch was read.
    pub done: bool,
}

impl<P> StateBatch<P> {
    /// A batch with nothing in it that says the transfer is complete at `cursor`.
    pub fn empty(cursor: u64) -> Self {
        StateBatch {
            entries: Vec::new(),
            next_cursor: cursor,
            done: true,
        }
    }
}

/// Read access to the driver's current state, for the state-transfer fallback of anti-entropy.
///
/// The driver keeps one local, durable, strictly increasing *change counter*: every time a key's
/// state changes (a local write, an applied delta, an applied state), the key is stamped with
/// the next counter value. A state transfer walks the keys in counter order, so a key that
/// changes during the transfer moves behind the cursor and is sent again: when the walk ends,
/// every key has been sent in a state at least as recent as the start of the transfer, which is
/// what lets the receiver adopt the sender's delivered vector as of that start.
pub trait StateSource<P> {
    /// The keys whose change counter is greater than `cursor`, in ascending counter order, with
    /// their current state, stopping once the entries' encoded size reaches `byte_budget`
    /// (always at least one entry when there is one).
    fn changed_since(&self, cursor: u64, byte_budget: usize) -> StateBatch<P>;
}
