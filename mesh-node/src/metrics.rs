//! The node's Prometheus metrics (`GET /metrics`): a recorder of its own (no global state, so
//! several nodes can share a process), the replication-lag histogram fed from the change
//! stream, and the gossip, transport, engine and store counters copied from
//! [`Mesh::stats`] at each scrape. It observes; it must not change the node.
//!
//! Every name starts with `statemesh_`; the `# HELP` lines say what each one counts.

use crate::engine::now_ms;
use crate::member::MemberStatus;
use crate::subscribe::{ChangeFilter, ChangeSource, SubscriptionError};
use crate::transport::Channel;
use crate::{Mesh, NodeStats};
use metrics::{Counter, Histogram, counter, gauge, histogram, with_local_recorder};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The replication lag histogram's name.
pub const REPLICATION_LAG: &str = "statemesh_replication_lag_seconds";

/// Upper bounds of the replication lag buckets, in seconds: millisecond steps where loopback
/// and LAN lags fall (stamps have millisecond resolution), then up to a partition heal.
const LAG_BUCKETS: [f64; 26] = [
    0.0005, 0.001, 0.0015, 0.002, 0.003, 0.004, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05,
    0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

/// One node's metrics.
pub struct NodeMetrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    data_dir: PathBuf,
    lag: Histogram,
    lag_skipped: Counter,
}

impl std::fmt::Debug for NodeMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeMetrics")
            .field("data_dir", &self.data_dir)
            .finish_non_exhaustive()
    }
}

impl NodeMetrics {
    /// Metrics of a node whose store lives in `data_dir` (measured for `statemesh_store_bytes`).
    pub fn new(data_dir: &Path) -> Self {
        let builder = PrometheusBuilder::new();
        let builder = builder
            .set_buckets_for_metric(Matcher::Full(REPLICATION_LAG.to_owned()), &LAG_BUCKETS)
            .unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        let (lag, lag_skipped) = with_local_recorder(&recorder, || {
            describe();
            (
                histogram!(REPLICATION_LAG),
                counter!("statemesh_replication_lag_unobserved_total"),
            )
        });
        NodeMetrics {
            recorder,
            handle,
            data_dir: data_dir.to_owned(),
            lag,
            lag_skipped,
        }
    }

    /// Records one replication lag: from a delta's origin HLC stamp to its local commit.
    pub fn observe_replication_lag(&self, lag: Duration) {
        self.lag.record(lag.as_secs_f64());
    }

    /// Counts one HTTP request by method and status (methods outside the standard ones count
    /// as `other`, so clients cannot grow the label set).
    pub fn count_request(&self, method: &str, status: u16) {
        let method = match method {
            "GET" | "HEAD" | "POST" | "PUT" | "DELETE" | "PATCH" | "OPTIONS" => method,
            _ => "other",
        };
        with_local_recorder(&self.recorder, || {
            counter!(
                "statemesh_http_requests_total",
                "method" => method.to_owned(),
                "status" => status.to_string()
            )
            .increment(1);
        });
    }

    /// Follows `mesh`'s committed changes and records the replication lag of every remote
    /// delta, until the node shuts down. Spawn it once per node.
    pub async fn observe_replication(&self, mesh: &Mesh) {
        let mut changes = mesh.subscribe(ChangeFilter::all());
        loop {
            match changes.recv().await {
                Ok(change) => {
                    if let ChangeSource::Remote { stamp, .. } = change.source {
                        let ms = (now_ms() - stamp.wall_ms()).max(0);
                        self.observe_replication_lag(Duration::from_millis(ms.unsigned_abs()));
                    }
                }
                Err(SubscriptionError::Lagged(n)) => self.lag_skipped.increment(n),
                Err(SubscriptionError::Closed) => return,
            }
        }
    }

    /// The Prometheus text exposition of every metric, with the node's counters read now.
    pub fn render(&self, mesh: &Mesh) -> String {
        let stats = mesh.stats();
        let store_bytes = dir_bytes(&self.data_dir);
        with_local_recorder(&self.recorder, || {
            record_node(mesh, &stats, store_bytes);
        });
        self.handle.run_upkeep();
        self.handle.render()
    }
}

/// Bytes of the files directly in `dir` (the store is one redb file there).
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.metadata().ok())
        .filter(std::fs::Metadata::is_file)
        .map(|m| m.len())
        .sum()
}

fn channel_name(channel: Channel) -> &'static str {
    match channel {
        Channel::Membership => "membership",
        Channel::Delta => "delta",
        Channel::Sync => "sync",
    }
}

/// Copies the node's counters and gauges into the current (local) recorder.
fn record_node(mesh: &Mesh, stats: &NodeStats, store_bytes: u64) {
    let g = &stats.gossip;

    // Membership.
    let members = mesh.members();
    for (state, name) in [
        (MemberStatus::Alive, "alive"),
        (MemberStatus::Suspect, "suspect"),
        (MemberStatus::Down, "down"),
    ] {
        let n = members.iter().filter(|m| m.state == state).count();
        gauge!("statemesh_members", "state" => name).set(n as f64);
    }

    // Gossip messages and bytes per kind and direction.
    for (kind, direction, traffic) in [
        ("membership", "sent", g.sent_membership),
        ("dissemination", "sent", g.sent_gossip),
        ("anti_entropy", "sent", g.sent_sync),
        ("membership", "received", g.received_membership),
        ("dissemination", "received", g.received_gossip),
        ("anti_entropy", "received", g.received_sync),
    ] {
        counter!("statemesh_gossip_messages_total", "kind" => kind, "direction" => direction)
            .absolute(traffic.messages);
        counter!("statemesh_gossip_bytes_total", "kind" => kind, "direction" => direction)
            .absolute(traffic.bytes);
    }

    // Transport frames and bytes per channel and direction.
    let t = &stats.transport;
    for channel in Channel::ALL {
        let c = t.channel(channel);
        let name = channel_name(channel);
        for (direction, frames, bytes) in [
            ("sent", c.frames_sent, c.bytes_sent),
            ("received", c.frames_received, c.bytes_received),
        ] {
            counter!("statemesh_transport_frames_total", "channel" => name, "direction" => direction)
                .absolute(frames);
            counter!("statemesh_transport_bytes_total", "channel" => name, "direction" => direction)
                .absolute(bytes);
        }
    }
    for (reason, n) in [
        ("queue_full", t.dropped_queue_full),
        ("too_large", t.refused_too_large),
        ("connection_lost", t.frames_lost),
        ("inbound_queue_full", t.inbound_dropped),
    ] {
        counter!("statemesh_transport_frames_dropped_total", "reason" => reason).absolute(n);
    }
    for (reason, n) in [
        ("oversized", t.frames_oversized),
        ("malformed", t.frames_malformed),
    ] {
        counter!("statemesh_transport_frames_refused_total", "reason" => reason).absolute(n);
    }
    counter!("statemesh_transport_handshake_failures_total").absolute(t.handshake_failures);
    counter!("statemesh_transport_dial_failures_total").absolute(t.dial_failures);
    for (direction, n) in [
        ("dialed", t.connections_dialed),
        ("accepted", t.connections_accepted),
    ] {
        counter!("statemesh_transport_connections_total", "direction" => direction).absolute(n);
    }

    // Refused and dropped deltas.
    for (reason, n) in [
        ("clock_drift", g.refused_drift),
        ("clock_range", g.refused_clock_range),
        ("state_clock_drift", g.refused_state_drift),
        ("apply_error", stats.apply_errors),
        ("object_too_large", stats.oversize_refused),
    ] {
        counter!("statemesh_deltas_refused_total", "reason" => reason).absolute(n);
    }
    counter!("statemesh_gossip_malformed_total").absolute(g.malformed + g.membership_errors);
    counter!("statemesh_gossip_refused_identity_total").absolute(g.refused_identity);
    for (reason, n) in [
        ("backpressure", g.dropped_backpressure),
        ("unencodable", g.dropped_unencodable),
        ("transport_queue_full", stats.transport_dropped),
    ] {
        counter!("statemesh_gossip_dropped_total", "reason" => reason).absolute(n);
    }

    // Deltas.
    counter!("statemesh_deltas_published_total").absolute(g.published);
    for (path, n) in [
        (
            "dissemination",
            g.delivered.saturating_sub(g.delivered_by_sync),
        ),
        ("anti_entropy", g.delivered_by_sync),
    ] {
        counter!("statemesh_deltas_delivered_total", "path" => path).absolute(n);
    }
    for (path, n) in [
        ("dissemination", g.duplicates),
        ("anti_entropy", g.sync_duplicates),
    ] {
        counter!("statemesh_deltas_duplicate_total", "path" => path).absolute(n);
    }

    // Anti-entropy.
    counter!("statemesh_anti_entropy_rounds_total").absolute(g.sync_rounds);
    counter!("statemesh_anti_entropy_bytes_total", "direction" => "sent")
        .absolute(g.sent_sync.bytes);
    counter!("statemesh_anti_entropy_bytes_total", "direction" => "received")
        .absolute(g.received_sync.bytes);
    counter!("statemesh_anti_entropy_deltas_sent_total").absolute(g.sync_deltas_sent);
    counter!("statemesh_state_transfer_chunks_total", "direction" => "sent")
        .absolute(g.state_chunks_sent);
    counter!("statemesh_state_transfer_chunks_total", "direction" => "received")
        .absolute(g.state_chunks_received);
    counter!("statemesh_state_transfers_completed_total").absolute(g.state_transfers_completed);

    // Delta log.
    gauge!("statemesh_delta_log_entries").set(g.log_len as f64);
    gauge!("statemesh_delta_log_bytes").set(g.log_bytes as f64);
    counter!("statemesh_delta_log_evicted_total", "watermark" => "below_stable")
        .absolute(g.log_evicted.saturating_sub(g.log_evicted_unstable));
    counter!("statemesh_delta_log_evicted_total", "watermark" => "above_stable")
        .absolute(g.log_evicted_unstable);
    counter!("statemesh_delta_log_trimmed_total").absolute(g.log_trimmed);
    gauge!("statemesh_watermark_lag_deltas").set(g.watermark_lag as f64);

    // Queues.
    let commands = &mesh.inner.commands;
    let transport = &mesh.inner.transport;
    gauge!("statemesh_queue_depth", "queue" => "commands")
        .set((commands.max_capacity() - commands.capacity()) as f64);
    gauge!("statemesh_queue_depth", "queue" => "inbound")
        .set(transport.inbound_queue_depth() as f64);
    for channel in Channel::ALL {
        let queue = match channel {
            Channel::Membership => "outbound_membership",
            Channel::Delta => "outbound_delta",
            Channel::Sync => "outbound_sync",
        };
        gauge!("statemesh_queue_depth", "queue" => queue)
            .set(transport.outbound_queue_depth(channel) as f64);
    }

    // Engine and store.
    counter!("statemesh_local_ops_total").absolute(stats.local_ops);
    counter!("statemesh_remote_deltas_applied_total").absolute(stats.remote_deltas);
    counter!("statemesh_remote_states_applied_total").absolute(stats.remote_states);
    counter!("statemesh_store_commits_total").absolute(stats.commits);
    gauge!("statemesh_store_commit_seconds_total").set(stats.commit_micros as f64 / 1e6);
    gauge!("statemesh_store_bytes").set(store_bytes as f64);
}

/// The `# HELP` text of every metric.
fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_histogram!(
        REPLICATION_LAG,
        Unit::Seconds,
        "Time from a remote delta's origin HLC stamp to its commit on this node (includes clock offset between the nodes)."
    );
    describe_counter!(
        "statemesh_replication_lag_unobserved_total",
        "Remote changes the lag observer skipped because it fell behind."
    );
    describe_counter!(
        "statemesh_http_requests_total",
        "HTTP requests answered, by method and status."
    );
    describe_gauge!(
        "statemesh_members",
        "Members this node knows of (itself included), by state."
    );
    describe_counter!(
        "statemesh_gossip_messages_total",
        "Gossip protocol messages by kind (membership, dissemination, anti_entropy) and direction."
    );
    describe_counter!(
        "statemesh_gossip_bytes_total",
        Unit::Bytes,
        "Encoded gossip protocol bytes by kind and direction."
    );
    describe_counter!(
        "statemesh_transport_frames_total",
        "QUIC frames by channel and direction."
    );
    describe_counter!(
        "statemesh_transport_bytes_total",
        Unit::Bytes,
        "QUIC payload bytes by channel and direction (without framing)."
    );
    describe_counter!(
        "statemesh_transport_frames_dropped_total",
        "Frames the transport dropped, by reason."
    );
    describe_counter!(
        "statemesh_transport_frames_refused_total",
        "Received frames refused, by reason."
    );
    describe_counter!(
        "statemesh_transport_handshake_failures_total",
        "Connections refused in the TLS handshake or for their identity."
    );
    describe_counter!(
        "statemesh_transport_dial_failures_total",
        "Dials that failed (timeout, unreachable)."
    );
    describe_counter!(
        "statemesh_transport_connections_total",
        "QUIC connections established, by direction."
    );
    describe_counter!(
        "statemesh_deltas_refused_total",
        "Remote deltas or states refused, by reason (clock_drift: stamp beyond max_clock_drift_ms)."
    );
    describe_counter!(
        "statemesh_gossip_malformed_total",
        "Received gossip messages that did not decode or validate."
    );
    describe_counter!(
        "statemesh_gossip_refused_identity_total",
        "Received gossip messages refused because they claim another node's identity than the peer's certificate names."
    );
    describe_counter!(
        "statemesh_gossip_dropped_total",
        "Outgoing gossip items dropped, by reason (repaired later by anti-entropy)."
    );
    describe_counter!(
        "statemesh_deltas_published_total",
        "Deltas of local writes published."
    );
    describe_counter!(
        "statemesh_deltas_delivered_total",
        "Remote deltas delivered, by the path that delivered them."
    );
    describe_counter!(
        "statemesh_deltas_duplicate_total",
        "Remote deltas received again after delivery, by path."
    );
    describe_counter!(
        "statemesh_anti_entropy_rounds_total",
        "Anti-entropy rounds started by this node."
    );
    describe_counter!(
        "statemesh_anti_entropy_bytes_total",
        Unit::Bytes,
        "Anti-entropy bytes by direction."
    );
    describe_counter!(
        "statemesh_anti_entropy_deltas_sent_total",
        "Logged deltas sent to repair peers."
    );
    describe_counter!(
        "statemesh_state_transfer_chunks_total",
        "State transfer chunks by direction."
    );
    describe_counter!(
        "statemesh_state_transfers_completed_total",
        "State transfers received to completion."
    );
    describe_gauge!("statemesh_delta_log_entries", "Entries in the delta log.");
    describe_gauge!(
        "statemesh_delta_log_bytes",
        Unit::Bytes,
        "Bytes in the delta log."
    );
    describe_counter!(
        "statemesh_delta_log_evicted_total",
        "Delta log entries evicted for capacity, by position relative to the stable watermark."
    );
    describe_counter!(
        "statemesh_delta_log_trimmed_total",
        "Delta log entries dropped because every known member has them."
    );
    describe_gauge!(
        "statemesh_watermark_lag_deltas",
        "How many deltas the slowest live member is behind this node (largest per origin)."
    );
    describe_gauge!(
        "statemesh_queue_depth",
        "Items waiting: local operations for the engine (commands), received frames (inbound), frames to send per channel."
    );
    describe_counter!("statemesh_local_ops_total", "Local operations processed.");
    describe_counter!(
        "statemesh_remote_deltas_applied_total",
        "Remote deltas applied to the store."
    );
    describe_counter!(
        "statemesh_remote_states_applied_total",
        "Key states applied from state transfers."
    );
    describe_counter!(
        "statemesh_store_commits_total",
        "Store commits (group commits)."
    );
    describe_gauge!(
        "statemesh_store_commit_seconds_total",
        Unit::Seconds,
        "Time spent in store commits."
    );
    describe_gauge!(
        "statemesh_store_bytes",
        Unit::Bytes,
        "Size of the data directory's files."
    );
}
