//! Tuning of a gossip node, with LAN and WAN presets; it holds numbers only and must not hold
//! behaviour.

use std::num::{NonZeroU32, NonZeroUsize};
use std::time::Duration;

/// Everything a [`crate::Node`] can be tuned with. Start from [`Config::lan`] or
/// [`Config::wan`] and adjust.
#[non_exhaustive]
#[derive(Clone, Debug)]
pub struct Config {
    /// SWIM parameters handed to foca (probe period, suspicion timeout, packet size...).
    pub swim: foca::Config,
    /// How far ahead of the local physical clock a remote stamp may be before its delta is
    /// refused (CONTRACT §1 "Clocks", default 500 ms).
    pub max_clock_drift_ms: u64,
    /// Dissemination (Plumtree) tuning.
    pub plumtree: PlumtreeConfig,
    /// Anti-entropy tuning.
    pub anti_entropy: AntiEntropyConfig,
    /// The delta log keeps at most this many entries; beyond it the oldest are evicted and
    /// peers that still miss them fall back to state transfer.
    pub log_max_entries: usize,
    /// The delta log keeps at most this many payload bytes (same eviction as above).
    pub log_max_bytes: usize,
    /// Batching target: delta and sync messages are filled up to this many encoded bytes. A
    /// single item larger than this is sent alone.
    pub max_message_bytes: usize,
    /// Incoming messages larger than this are refused before decoding (at most
    /// `crdt_types::wire::MAX_ENCODED_BYTES`).
    pub max_receive_bytes: usize,
    /// Per peer and channel, at most this many bytes wait in the outbox; more is dropped
    /// (counted) and left to anti-entropy.
    pub peer_queue_bytes: usize,
    /// How often a node that knows no live member announces itself to its seeds again.
    pub rejoin_interval_ms: u64,
}

/// Plumtree (eager push along a tree, lazy announcements for repair) tuning.
#[non_exhaustive]
#[derive(Clone, Debug)]
pub struct PlumtreeConfig {
    /// Same-region peers a node links to eagerly on its own initiative.
    pub local_links: usize,
    /// Other-region peers a node links to eagerly on its own initiative: the few long-lived
    /// cross-region links. Peers that link to us are linked back, so the degree can be higher.
    pub remote_links: usize,
    /// How long announcements (IHAVE) wait to be batched before they are sent, at most.
    /// Every delivered delta is announced to each ranked link, and what an announcement costs
    /// is mostly the message, not its ids: a longer delay means fewer messages, and repair
    /// that starts later by up to as much (less: of a delta's several announcers, the first
    /// to flush starts it).
    pub ihave_delay_ms: u64,
    /// Announcements leave before `ihave_delay_ms` once one peer's batch holds this many
    /// ids, so that while many deltas flow, repair does not wait for the delay
    /// (`usize::MAX`: only the delay).
    pub ihave_batch_ids: usize,
    /// How long after the first announcement of a missing delta we ask the announcer for it
    /// (GRAFT). Counted from the announcement's arrival, which was itself held back by up to
    /// `ihave_delay_ms`: the two together should exceed the usual lag of the eager path
    /// behind the announcer, or repairs turn into duplicates.
    pub graft_timeout_ms: u64,
    /// How long after a GRAFT we ask the next announcer, if the delta still has not arrived.
    pub graft_retry_ms: u64,
    /// At most this many missing deltas are tracked from announcements; more are left to
    /// anti-entropy.
    pub max_missing: usize,
}

/// Anti-entropy (digest exchange, log repair, state transfer) tuning.
#[non_exhaustive]
#[derive(Clone, Debug)]
pub struct AntiEntropyConfig {
    /// How often a node starts a digest exchange with a random live peer (jittered by ±10%).
    pub interval_ms: u64,
    /// Per round, at most this many bytes of logged deltas are sent to a peer.
    pub delta_budget_bytes: usize,
    /// Per round, at most this many bytes of state (one chunk) are sent to a peer.
    pub state_budget_bytes: usize,
    /// Deltas delivered here less than this long ago are not sent by anti-entropy: they are
    /// most likely still on their way by dissemination. A few graft timeouts.
    pub settle_ms: u64,
}

impl Config {
    /// A configuration for nodes that are a few milliseconds apart.
    ///
    /// SWIM starts from foca's LAN preset (memberlist's), except that members declared down
    /// are re-announced to every 5 s rather than 65 s: after a partition heals, the sides find
    /// each other again within seconds, and anti-entropy can start.
    pub fn lan(cluster_size: u32) -> Self {
        let size = NonZeroU32::new(cluster_size.max(1)).unwrap_or(NonZeroU32::MIN);
        let mut swim = foca::Config::new_lan(size);
        swim.periodic_announce_to_down_members = Some(foca::PeriodicParams {
            frequency: Duration::from_secs(5),
            num_members: NonZeroUsize::new(2).unwrap_or(NonZeroUsize::MIN),
        });
        Config {
            swim,
            max_clock_drift_ms: crdt_types::DEFAULT_MAX_CLOCK_DRIFT_MS,
            plumtree: PlumtreeConfig {
                local_links: 3,
                remote_links: 2,
                ihave_delay_ms: 50,
                ihave_batch_ids: usize::MAX,
                graft_timeout_ms: 150,
                graft_retry_ms: 100,
                max_missing: 100_000,
            },
            anti_entropy: AntiEntropyConfig {
                interval_ms: 1_000,
                delta_budget_bytes: 256 << 10,
                state_budget_bytes: 128 << 10,
                settle_ms: 500,
            },
            log_max_entries: 100_000,
            log_max_bytes: 64 << 20,
            max_message_bytes: 64 << 10,
            max_receive_bytes: crdt_types::wire::MAX_ENCODED_BYTES,
            peer_queue_bytes: 4 << 20,
            rejoin_interval_ms: 2_000,
        }
    }

    /// A configuration for nodes spread over regions with round trips up to a few hundred
    /// milliseconds: slower probes, rarer anti-entropy, and announcements batched for up to
    /// 500 ms or 64 ids (a graft 400 ms after one arrives). SWIM starts from foca's WAN
    /// preset, members declared down re-announced to every 15 s.
    ///
    /// The batching: at 100 ms (with grafts at 600 ms) IHAVE messages were nearly half of
    /// all messages of the simulator's broadcast-once at 1000 nodes; 500 ms and 400 ms send
    /// 35% fewer messages there (in its steady run 18% fewer at 3 000 updates, 2% at 10 000,
    /// where batches fill to 64 ids sooner), and repair at 64 nodes with 20% loss keeps its
    /// p99 (BENCHMARKS "simulations").
    pub fn wan(cluster_size: u32) -> Self {
        let size = NonZeroU32::new(cluster_size.max(1)).unwrap_or(NonZeroU32::MIN);
        let lan = Config::lan(cluster_size);
        let mut swim = foca::Config::new_wan(size);
        swim.periodic_announce_to_down_members = Some(foca::PeriodicParams {
            frequency: Duration::from_secs(15),
            num_members: NonZeroUsize::new(2).unwrap_or(NonZeroUsize::MIN),
        });
        Config {
            swim,
            plumtree: PlumtreeConfig {
                ihave_delay_ms: 500,
                ihave_batch_ids: 64,
                graft_timeout_ms: 400,
                graft_retry_ms: 400,
                ..lan.plumtree
            },
            anti_entropy: AntiEntropyConfig {
                interval_ms: 2_000,
                settle_ms: 2_000,
                ..lan.anti_entropy
            },
            rejoin_interval_ms: 5_000,
            ..lan
        }
    }
}
