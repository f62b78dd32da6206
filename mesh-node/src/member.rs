//! What the embedding API and `/v1/members` show of the cluster membership; the gossip core
//! decides liveness, this module only names it.

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// How this node sees a member (CONTRACT §2 spells it `alive`, `suspect`, `down`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberStatus {
    /// Answering probes.
    Alive,
    /// Missed a probe; still treated as live until the suspicion times out.
    Suspect,
    /// Declared down by the cluster, or left.
    Down,
}

impl From<gossip::MemberState> for MemberStatus {
    fn from(s: gossip::MemberState) -> Self {
        match s {
            gossip::MemberState::Alive => MemberStatus::Alive,
            gossip::MemberState::Suspect => MemberStatus::Suspect,
            gossip::MemberState::Down => MemberStatus::Down,
        }
    }
}

/// One member of the mesh, this node included.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The member's node id.
    pub node_id: String,
    /// Its region.
    pub region: String,
    /// Its gossip address.
    pub addr: SocketAddr,
    /// Its state as this node sees it.
    pub state: MemberStatus,
}
