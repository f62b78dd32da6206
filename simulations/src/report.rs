//! The run report: the JSON document of CONTRACT §4 (field names are part of the contract)
//! and the human summary printed after a run. It formats results and must not compute them.

use serde::Serialize;
use std::fmt::Write as _;

/// The extra figures of `broadcast-once` (CONTRACT §4).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BroadcastFigures {
    /// Median over published deltas of the time until every node had it.
    pub cluster_convergence_p50_ms: u64,
    /// 99th percentile of the same.
    pub cluster_convergence_p99_ms: u64,
    /// Median number of links a delta crossed to reach a node.
    pub hops_p50: u64,
    /// 99th percentile of the same.
    pub hops_p99: u64,
    /// Copies of a delta received after the first, per first delivery.
    pub duplicates_per_delivery: f64,
    /// Messages sent (every channel) per published delta.
    pub messages_per_delta: f64,
}

/// The report of one run. Fields up to `messages_sent` are those CONTRACT §4 names; the rest
/// are extra diagnostics. Nothing in it depends on the machine or wall-clock time, so the
/// same seed gives the same bytes.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    /// Scenario name.
    pub scenario: String,
    /// The run's seed.
    pub seed: u64,
    /// Initial number of nodes.
    pub nodes: usize,
    /// Number of regions.
    pub regions: usize,
    /// Acknowledged updates issued by the workload.
    pub updates: u64,
    /// Every replica of every key is equal and equals the oracle, and no write was lost.
    pub converged: bool,
    /// Virtual ms from the last heal (or the end of the workload, if later) until every
    /// replica had applied every acknowledged update; `null` if that never happened.
    pub convergence_ms: Option<u64>,
    /// Median time from an update's acknowledgement to its arrival at a replica.
    pub p50_propagation_ms: u64,
    /// 99th percentile of the same.
    pub p99_propagation_ms: u64,
    /// Acknowledged updates missing from some replica at the end.
    pub lost_writes: u64,
    /// Removed cart items or revoked sessions visible again on some replica.
    pub resurrections: u64,
    /// Bytes sent by all nodes, every channel.
    pub bytes_sent: u64,
    /// `bytes_sent / (updates * nodes)`.
    pub bytes_per_update_per_node: f64,
    /// Messages sent by all nodes, every channel.
    pub messages_sent: u64,

    /// `broadcast-once` figures, flattened into the report.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub broadcast: Option<BroadcastFigures>,

    /// The largest one-way latency between two regions: the floor under propagation.
    pub latency_floor_ms: f64,
    /// Mean encoded size of one update's delta payload, in bytes.
    pub delta_bytes_mean: f64,
    /// Virtual ms from the start of the run to the end.
    pub virtual_ms: u64,
    /// Acknowledged updates whose origin lost its data directory before any other replica
    /// had them: lost by the fault itself (an acknowledgement promises local durability
    /// only), excluded from the oracle.
    pub writes_lost_with_data_dir: u64,
    /// Keys whose replicas disagree (with each other or with the oracle) at the end.
    pub divergent_keys: u64,
    /// Revoked sessions readable again somewhere (also counted in `resurrections`).
    pub revoke_violations: u64,
    /// Writes whose origin did not read its own write back right after it.
    pub read_your_writes_violations: u64,
    /// Messages sent on the membership (SWIM) channel.
    pub membership_messages: u64,
    /// Messages sent on the dissemination (Plumtree) channel.
    pub gossip_messages: u64,
    /// Messages sent on the anti-entropy channel.
    pub sync_messages: u64,
    /// Delta copies pushed eagerly.
    pub eager_sent: u64,
    /// Delta ids announced lazily (IHAVE), one per id per peer.
    pub ihave_sent: u64,
    /// GRAFT requests.
    pub grafts_sent: u64,
    /// Messages dropped by partitions and down links.
    pub dropped_partitioned: u64,
    /// Messages dropped by random loss.
    pub dropped_lost: u64,
    /// Deltas refused because their stamp was beyond the receiver's drift bound.
    pub refused_drift: u64,
    /// Deltas delivered by anti-entropy rather than dissemination.
    pub delivered_by_sync: u64,
    /// Keys sent in state-transfer chunks.
    pub state_entries_sent: u64,
    /// What went wrong, one entry per failing check, with a short trace of the key.
    pub failures: Vec<String>,
}

impl Report {
    /// Whether every checker passed.
    pub fn passed(&self) -> bool {
        self.converged
            && self.lost_writes == 0
            && self.resurrections == 0
            && self.read_your_writes_violations == 0
            && self.failures.is_empty()
    }

    /// The report as pretty JSON with a trailing newline (deterministic bytes).
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).expect("a report always serializes");
        s.push('\n');
        s
    }

    /// The human summary; `wall_ms` (not part of the report) is how long the run took.
    pub fn summary(&self, wall_ms: u128) -> String {
        let mut s = String::new();
        let verdict = if self.passed() { "PASS" } else { "FAIL" };
        let _ = writeln!(
            s,
            "{verdict}  scenario {}  seed {}  {} nodes in {} regions  {} updates",
            self.scenario, self.seed, self.nodes, self.regions, self.updates
        );
        let conv = match self.convergence_ms {
            Some(ms) => format!("{ms} ms after the last heal"),
            None => "never".to_string(),
        };
        let _ = writeln!(
            s,
            "  converged      {} ({conv})",
            if self.converged { "yes" } else { "NO" }
        );
        let _ = writeln!(
            s,
            "  propagation    p50 {} ms  p99 {} ms  (latency floor {:.1} ms one way)",
            self.p50_propagation_ms, self.p99_propagation_ms, self.latency_floor_ms
        );
        if let Some(b) = &self.broadcast {
            let _ = writeln!(
                s,
                "  broadcast      whole cluster p50 {} ms  p99 {} ms; hops p50 {} p99 {}; \
                 {:.2} duplicates per delivery; {:.1} messages per delta",
                b.cluster_convergence_p50_ms,
                b.cluster_convergence_p99_ms,
                b.hops_p50,
                b.hops_p99,
                b.duplicates_per_delivery,
                b.messages_per_delta
            );
        }
        let _ = writeln!(
            s,
            "  traffic        {} messages, {} bytes, {:.1} bytes per update per node (delta {:.0} bytes)",
            self.messages_sent,
            self.bytes_sent,
            self.bytes_per_update_per_node,
            self.delta_bytes_mean
        );
        let _ = writeln!(
            s,
            "  by channel     membership {}  dissemination {} ({} eager copies, {} ihave ids, {} grafts)  \
             anti-entropy {}",
            self.membership_messages,
            self.gossip_messages,
            self.eager_sent,
            self.ihave_sent,
            self.grafts_sent,
            self.sync_messages
        );
        let _ = writeln!(
            s,
            "  checks         lost writes {}  resurrections {}  revoke violations {}  \
             read-your-writes violations {}  divergent keys {}",
            self.lost_writes,
            self.resurrections,
            self.revoke_violations,
            self.read_your_writes_violations,
            self.divergent_keys
        );
        let _ = writeln!(
            s,
            "  network        {} dropped by partitions, {} lost; {} deltas refused for drift; \
             {} delivered by anti-entropy, {} keys by state transfer",
            self.dropped_partitioned,
            self.dropped_lost,
            self.refused_drift,
            self.delivered_by_sync,
            self.state_entries_sent
        );
        if self.writes_lost_with_data_dir > 0 {
            let _ = writeln!(
                s,
                "  data dir loss  {} acknowledged writes died with their origin's data directory",
                self.writes_lost_with_data_dir
            );
        }
        let _ = writeln!(
            s,
            "  time           {:.1} s virtual, {:.2} s wall",
            self.virtual_ms as f64 / 1000.0,
            wall_ms as f64 / 1000.0
        );
        for f in &self.failures {
            let _ = writeln!(s, "  failure (seed {}): {f}", self.seed);
        }
        s
    }
}
