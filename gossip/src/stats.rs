//! Counters kept inside the state machine (traffic per channel, duplicates, refusals,
//! anti-entropy work, log size, watermark lag); it counts and must not decide anything.
//!
//! Counters only grow; gauges (`log_*`, `watermark_lag`, `live_members`) are filled in when
//! [`crate::Node::stats`] takes the snapshot. Drivers export them as metrics, the simulator and
//! the tests assert on them.

/// Messages and bytes of one kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Number of messages.
    pub messages: u64,
    /// Encoded bytes, version byte included.
    pub bytes: u64,
}

impl Traffic {
    pub(crate) fn add(&mut self, bytes: usize) {
        self.messages += 1;
        self.bytes += bytes as u64;
    }
}

/// A snapshot of a node's counters.
#[non_exhaustive]
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Membership (foca) messages sent.
    pub sent_membership: Traffic,
    /// Dissemination (Plumtree) messages sent.
    pub sent_gossip: Traffic,
    /// Anti-entropy messages sent.
    pub sent_sync: Traffic,
    /// Membership messages received (well-formed).
    pub received_membership: Traffic,
    /// Dissemination messages received (well-formed).
    pub received_gossip: Traffic,
    /// Anti-entropy messages received (well-formed).
    pub received_sync: Traffic,
    /// Received messages dropped because they did not decode or validate.
    pub malformed: u64,
    /// foca packets foca refused (stale, from ourselves, malformed inside).
    pub membership_errors: u64,
    /// Messages refused because their claimed identity (sender address, replica or foca
    /// source) belongs to another node id than the one the transport authenticated.
    pub refused_identity: u64,

    /// Deltas published locally.
    pub published: u64,
    /// Remote deltas delivered (handed to the driver as `Event::Apply`), by any path.
    pub delivered: u64,
    /// Of those, delivered through anti-entropy.
    pub delivered_by_sync: u64,
    /// Deltas pushed eagerly (one per copy sent).
    pub eager_sent: u64,
    /// Delta ids announced lazily (one per id per peer).
    pub ihave_sent: u64,
    /// GRAFT requests sent (one per id).
    pub grafts_sent: u64,
    /// PRUNE messages sent.
    pub prunes_sent: u64,
    /// Deltas received by dissemination that had already been delivered.
    pub duplicates: u64,
    /// Deltas received by anti-entropy that had already been delivered (a race with
    /// dissemination, not a protocol inefficiency).
    pub sync_duplicates: u64,

    /// Deltas refused because their stamp was beyond the drift bound (left missing: they are
    /// retried later).
    pub refused_drift: u64,
    /// Deltas or state chunks refused because the stamp was outside the HLC range.
    pub refused_clock_range: u64,
    /// State chunks refused because the sender's clock was beyond the drift bound.
    pub refused_state_drift: u64,
    /// Items dropped because a peer's outbox was full (repaired by anti-entropy later).
    pub dropped_backpressure: u64,
    /// Items dropped because they could not be encoded (over the wire limit).
    pub dropped_unencodable: u64,

    /// Anti-entropy rounds started (digests sent on our initiative).
    pub sync_rounds: u64,
    /// Logged deltas sent to repair peers.
    pub sync_deltas_sent: u64,
    /// State chunks sent.
    pub state_chunks_sent: u64,
    /// Keys sent in state chunks.
    pub state_entries_sent: u64,
    /// State chunks received and applied.
    pub state_chunks_received: u64,
    /// State transfers received to completion (each adopts the sender's vector).
    pub state_transfers_completed: u64,

    /// Entries in the delta log (gauge).
    pub log_len: u64,
    /// Bytes in the delta log (gauge).
    pub log_bytes: u64,
    /// Entries evicted from the log for capacity, since start.
    pub log_evicted: u64,
    /// Of those, entries above the stable watermark: deltas a live member may still have
    /// needed (it then gets a state transfer). Zero unless the log is too small for the lag.
    pub log_evicted_unstable: u64,
    /// Entries dropped from the log below the retention watermark (every known member has
    /// them), since start.
    pub log_trimmed: u64,
    /// Largest per-origin distance between what this node delivered and the stable watermark
    /// (gauge): how far the slowest live member is behind us.
    pub watermark_lag: u64,
    /// Live (alive or suspect) members other than this node (gauge).
    pub live_members: u64,
}

impl Stats {
    /// All bytes sent, every channel.
    pub fn bytes_sent(&self) -> u64 {
        self.sent_membership.bytes + self.sent_gossip.bytes + self.sent_sync.bytes
    }

    /// All messages sent, every channel.
    pub fn messages_sent(&self) -> u64 {
        self.sent_membership.messages + self.sent_gossip.messages + self.sent_sync.messages
    }

    /// Duplicate deliveries per first delivery, dissemination and anti-entropy together.
    pub fn duplicate_ratio(&self) -> f64 {
        if self.delivered == 0 {
            return 0.0;
        }
        (self.duplicates + self.sync_duplicates) as f64 / self.delivered as f64
    }
}
