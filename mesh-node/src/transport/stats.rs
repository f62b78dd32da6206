//! Transport counters: plain relaxed atomics bumped on the hot paths, read as a snapshot by
//! metrics and tests. It counts; it never decides anything.

use std::sync::atomic::{AtomicU64, Ordering};

use super::Channel;

/// Frame and byte counters of one channel (bytes are payload bytes, without framing).
#[derive(Debug, Default)]
pub(crate) struct ChannelCounters {
    pub(crate) frames_sent: AtomicU64,
    pub(crate) bytes_sent: AtomicU64,
    pub(crate) frames_received: AtomicU64,
    pub(crate) bytes_received: AtomicU64,
}

impl ChannelCounters {
    pub(crate) fn sent(&self, bytes: usize) {
        self.frames_sent.fetch_add(1, Ordering::Relaxed);
        self.bytes_sent.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub(crate) fn received(&self, bytes: usize) {
        self.frames_received.fetch_add(1, Ordering::Relaxed);
        self.bytes_received
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }

    fn snapshot(&self) -> ChannelStats {
        ChannelStats {
            frames_sent: self.frames_sent.load(Ordering::Relaxed),
            bytes_sent: self.bytes_sent.load(Ordering::Relaxed),
            frames_received: self.frames_received.load(Ordering::Relaxed),
            bytes_received: self.bytes_received.load(Ordering::Relaxed),
        }
    }
}

/// The live counters of a transport; see [`StatsSnapshot`] for what each one means.
#[derive(Debug, Default)]
pub struct TransportStats {
    pub(crate) membership: ChannelCounters,
    pub(crate) delta: ChannelCounters,
    pub(crate) sync: ChannelCounters,
    pub(crate) dropped_queue_full: AtomicU64,
    pub(crate) refused_too_large: AtomicU64,
    pub(crate) frames_lost: AtomicU64,
    pub(crate) frames_oversized: AtomicU64,
    pub(crate) frames_malformed: AtomicU64,
    pub(crate) inbound_dropped: AtomicU64,
    pub(crate) handshake_failures: AtomicU64,
    pub(crate) dial_failures: AtomicU64,
    pub(crate) reconnects: AtomicU64,
    pub(crate) connections_dialed: AtomicU64,
    pub(crate) connections_accepted: AtomicU64,
    pub(crate) datagram_fallbacks: AtomicU64,
    pub(crate) fault_dropped_packets: AtomicU64,
}

/// Adds one to a counter.
pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Adds `n` to a counter.
pub(crate) fn add(counter: &AtomicU64, n: usize) {
    counter.fetch_add(n as u64, Ordering::Relaxed);
}

impl TransportStats {
    pub(crate) fn channel(&self, channel: Channel) -> &ChannelCounters {
        match channel {
            Channel::Membership => &self.membership,
            Channel::Delta => &self.delta,
            Channel::Sync => &self.sync,
        }
    }

    /// Reads every counter (each one atomically, not all of them at one instant).
    pub fn snapshot(&self) -> StatsSnapshot {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            membership: self.membership.snapshot(),
            delta: self.delta.snapshot(),
            sync: self.sync.snapshot(),
            dropped_queue_full: load(&self.dropped_queue_full),
            refused_too_large: load(&self.refused_too_large),
            frames_lost: load(&self.frames_lost),
            frames_oversized: load(&self.frames_oversized),
            frames_malformed: load(&self.frames_malformed),
            inbound_dropped: load(&self.inbound_dropped),
            handshake_failures: load(&self.handshake_failures),
            dial_failures: load(&self.dial_failures),
            reconnects: load(&self.reconnects),
            connections_dialed: load(&self.connections_dialed),
            connections_accepted: load(&self.connections_accepted),
            datagram_fallbacks: load(&self.datagram_fallbacks),
            fault_dropped_packets: load(&self.fault_dropped_packets),
        }
    }
}

/// A channel's counters at one point in time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChannelStats {
    /// Frames handed to QUIC for sending.
    pub frames_sent: u64,
    /// Payload bytes handed to QUIC for sending.
    pub bytes_sent: u64,
    /// Frames delivered to the inbound queue.
    pub frames_received: u64,
    /// Payload bytes delivered to the inbound queue.
    pub bytes_received: u64,
}

/// All transport counters at one point in time; every counter only grows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Membership (datagram) traffic.
    pub membership: ChannelStats,
    /// Delta (unidirectional stream) traffic.
    pub delta: ChannelStats,
    /// Anti-entropy (bidirectional stream) traffic.
    pub sync: ChannelStats,
    /// Sends refused because the peer's queue for that channel was full.
    pub dropped_queue_full: u64,
    /// Sends refused because the payload exceeded the maximum frame size.
    pub refused_too_large: u64,
    /// Frames taken off a queue but not handed to QUIC (connection or stream failed, or the
    /// peer turned out not to be the expected node).
    pub frames_lost: u64,
    /// Received frames over the maximum size; their stream was stopped.
    pub frames_oversized: u64,
    /// Received streams with a bad tag or truncated frame; the stream was stopped.
    pub frames_malformed: u64,
    /// Received membership datagrams dropped because the inbound queue was full.
    pub inbound_dropped: u64,
    /// Connections refused in the TLS handshake or for their identity, either direction.
    pub handshake_failures: u64,
    /// Dials that failed for other reasons (timeout, unreachable).
    pub dial_failures: u64,
    /// Dials made after a failed dial or a lost connection (each one waited its backoff).
    pub reconnects: u64,
    /// Outgoing connections established.
    pub connections_dialed: u64,
    /// Incoming connections established.
    pub connections_accepted: u64,
    /// Membership messages too large for a datagram, sent on a stream instead.
    pub datagram_fallbacks: u64,
    /// UDP packets dropped by the fault-injection hook.
    pub fault_dropped_packets: u64,
}

impl StatsSnapshot {
    /// The counters of one channel.
    pub fn channel(&self, channel: Channel) -> ChannelStats {
        match channel {
            Channel::Membership => self.membership,
            Channel::Delta => self.delta,
            Channel::Sync => self.sync,
        }
    }
}
