//! The payload a mesh node's gossip core carries: a `crdt_types::ObjectDelta`. It adds no
//! behaviour and must not: gossip never looks inside a payload.

use crdt_types::ObjectDelta;
use serde::{Deserialize, Serialize};

/// A `crdt_types::ObjectDelta` as a gossip payload, with the same bytes on the wire
/// (`serde(transparent)`).
///
/// A newtype only because the orphan rule keeps this crate from implementing
/// `gossip::Payload` for `ObjectDelta`; the simulator has the same wrapper.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MeshDelta(pub ObjectDelta);

impl gossip::Payload for MeshDelta {}

/// The gossip core as a mesh node instantiates it.
pub type GossipNode = gossip::Node<MeshDelta>;

/// One delta as gossip hands it over and as the store logs it.
pub type LoggedDelta = gossip::Delta<MeshDelta>;
