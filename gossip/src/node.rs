//! The gossip node: one sans-IO state machine that ties membership, dissemination,
//! anti-entropy and the delta log together; it owns the protocol state and must not do I/O,
//! read a clock or draw unseeded randomness.
//!
//! quinn-proto style: `handle_*` for what arrives from the network or a timer, mutators for what
//! the application asks, `poll_*` for what the driver must do next. A driver loop is:
//!
//! ```text
//! loop {
//!     feed one input: node.handle_message(now, from, peer_node_id, &bytes, &store)
//!                     | node.handle_timeout(now) | node.publish(now, key, delta, tag) | ...
//!     while let Some(t) = node.poll_transmit() { send t.bytes to t.to on t.channel }
//!     while let Some(e) = node.poll_event()    { apply it durably, in order }
//!     sleep until node.poll_timeout()
//! }
//! ```
//!
//! The delivered context (which deltas this node has applied) advances when an event is handed
//! out: the driver must apply `Apply`, `ApplyState` and `AdoptDelivered` in order and durably,
//! recording the delta's dot (or the adopted vector) in the same transaction as the state, and
//! give that context back in [`Restored`] after a restart.

use crate::anti_entropy::{AntiEntropy, ChunkOutcome};
use crate::config::Config;
use crate::delivered::Delivered;
use crate::delta_log::DeltaLog;
use crate::membership::{Drained, Identity, MemberChange, MemberInfo, Membership, packet_source};
use crate::messages::{
    Body, Delta, EncodedDelta, Envelope, GossipItem, StateChunk, SyncItem, item_len,
};
use crate::outbox::Outbox;
use crate::plumtree::Plumtree;
use crate::stats::Stats;
use crate::{Payload, StateSource};
use bytes::Bytes;
use crdt_types::{
    CausalContext, Clock, ClockError, Dot, Key, ReplicaId, Stamp, Tag, VersionVector,
};
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;

/// The logical stream a message belongs to. Drivers may map channels to separate streams so
/// that a large state transfer does not delay deltas or probes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Channel {
    /// SWIM probes, acks, announces and membership updates. Small; latency-sensitive.
    Membership,
    /// Plumtree: eager deltas, IHAVE, GRAFT, PRUNE.
    Delta,
    /// Anti-entropy: digests, logged deltas, state chunks.
    Sync,
}

/// Bytes the driver must send to a peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// The peer's gossip address.
    pub to: SocketAddr,
    /// Which logical stream it belongs to.
    pub channel: Channel,
    /// One encoded message; deliver it whole (or not at all).
    pub bytes: Bytes,
}

/// Something the driver must act on.
#[derive(Clone, Debug, PartialEq)]
pub enum Event<P> {
    /// A remote delta to join into the key's state, durably, recording its dot
    /// `(origin, seq)` as delivered in the same transaction; with the encoding it arrived in
    /// (shared, not copied), for a driver that logs it without encoding it again.
    Apply(Delta<P>, EncodedDelta),
    /// A state (from a state transfer) to join into the key's state, durably. It delivers no
    /// dot by itself: see `AdoptDelivered`.
    ApplyState {
        /// The key.
        key: Key,
        /// The sender's state of the key (a delta-state CRDT's state is a delta).
        payload: P,
        /// The replica that sent it.
        from: ReplicaId,
    },
    /// A state transfer completed: every state it carried has been handed out as
    /// `ApplyState`, so join this vector into the persisted delivered context.
    AdoptDelivered {
        /// The sender's delivered vector as of the start of the transfer.
        vv: VersionVector,
        /// The replica that sent it.
        from: ReplicaId,
    },
    /// A member joined or came back (or refuted a suspicion).
    MemberUp(MemberInfo),
    /// A member missed a probe and is suspected; it still counts as live.
    MemberSuspect(MemberInfo),
    /// A member was declared down or left.
    MemberDown(MemberInfo),
}

/// What a restarted node gets back from its store.
#[derive(Clone, Debug)]
pub struct Restored<P> {
    /// Every delta this replica had applied (its own included) when it stopped.
    pub delivered: CausalContext,
    /// The deltas the driver kept for the delta log (may be empty: peers that then need them
    /// get a state transfer).
    pub log: Vec<Delta<P>>,
    /// The highest HLC stamp the replica had issued or seen, so the clock never goes back.
    pub last_stamp: Option<Stamp>,
}

impl<P> Default for Restored<P> {
    fn default() -> Self {
        Restored {
            delivered: CausalContext::new(),
            log: Vec::new(),
            last_stamp: None,
        }
    }
}

/// Why [`Node::publish`] refused a delta.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    /// The tag's dot belongs to another replica.
    #[error("tag belongs to replica {0}, not to this node")]
    WrongReplica(ReplicaId),
    /// The tag was not issued by [`Node::next_tag`].
    #[error("tag sequence number {0} was never issued")]
    NotIssued(u64),
    /// A delta with this tag was published already.
    #[error("tag sequence number {0} was already published")]
    AlreadyPublished(u64),
}

/// The gossip protocol state machine of one node, generic over the delta payload.
pub struct Node<P: Payload> {
    config: Config,
    replica: ReplicaId,
    clock: Clock,
    rng: Xoshiro256PlusPlus,
    membership: Membership,
    plumtree: Plumtree,
    anti_entropy: AntiEntropy,
    log: DeltaLog<P>,
    delivered: Delivered,
    next_seq: u64,
    /// Per peer: its replica and the delivered vector of its latest digest.
    acked: BTreeMap<SocketAddr, (ReplicaId, VersionVector)>,
    outbox: Outbox<P>,
    /// Per lazy peer, the ids waiting for its next announcement, in the order the peers
    /// first got one. A short list (the peers announced to: this node's ranked links and a
    /// few pruned ones), searched for every lazy target of every delivered delta: a compare
    /// of addresses per entry is cheaper than hashing one. The order a flush queues the
    /// peers' batches in changes nothing (each peer has its own queue, and the outbox serves
    /// them in address order).
    pending_ihave: Vec<(SocketAddr, Vec<Dot>)>,
    /// Members that came up since the last anti-entropy round.
    came_up: BTreeSet<SocketAddr>,
    events: VecDeque<Event<P>>,
    seeds: BTreeSet<SocketAddr>,
    started: bool,
    left: bool,
    ae_deadline: Option<i64>,
    ihave_deadline: Option<i64>,
    rejoin_deadline: Option<i64>,
    /// `(authenticated, claimed)` node id pairs already warned about, so an impostor's flood
    /// logs once (bounded: past the bound, refusals are only counted).
    warned_impostors: BTreeSet<(String, String)>,
    /// Where [`Plumtree::targets`] lists a delta's eager and lazy peers, kept between
    /// deliveries (emptied by each) so that disseminating allocates nothing for them.
    targets: (Vec<SocketAddr>, Vec<SocketAddr>),
    stats: Stats,
}

/// How many distinct impostor pairs are logged at `warn` before the rest are only counted.
const MAX_WARNED_IMPOSTORS: usize = 256;

/// Room for events the queue keeps once the driver has taken them all (more than a message
/// or timer hands out in the common case).
const EVENTS_KEPT: usize = 64;

impl<P: Payload> std::fmt::Debug for Node<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("identity", self.membership.identity())
            .field("next_seq", &self.next_seq)
            .field("delivered", &self.delivered)
            .finish_non_exhaustive()
    }
}

impl<P: Payload> Node<P> {
    /// A node with this identity, restarted from `restored` (or `Restored::default()` for a
    /// fresh replica). Every random choice it makes comes from `seed`.
    pub fn new(config: Config, identity: Identity, restored: Restored<P>, seed: u64) -> Self {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let replica = identity.replica;
        let mut clock = Clock::new(replica, config.max_clock_drift_ms);
        if let Some(last) = restored.last_stamp {
            // Observed "at" its own wall time, so the drift bound cannot refuse it: the clock
            // resumes after everything it issued before the restart.
            if let Err(e) = clock.observe(last.wall_ms(), &last) {
                tracing::warn!(error = %e, "restored stamp is outside the HLC range");
            }
        }
        let log = DeltaLog::restore(
            config.log_max_entries,
            config.log_max_bytes,
            restored.log,
            &restored.delivered,
        );
        let own_logged = log.max_seq(replica);
        let next_seq = restored.delivered.max_counter(replica).max(own_logged) + 1;
        let mut plumtree = Plumtree::new(config.plumtree.clone(), rng.random());
        plumtree.set_local(identity.addr, &identity.region);
        let membership = Membership::new(identity, config.swim.clone(), rng.random());
        Node {
            plumtree,
            anti_entropy: AntiEntropy::new(config.anti_entropy.clone()),
            outbox: Outbox::new(config.peer_queue_bytes, config.max_message_bytes),
            config,
            replica,
            clock,
            rng,
            membership,
            log,
            delivered: Delivered::from(&restored.delivered),
            next_seq,
            acked: BTreeMap::new(),
            pending_ihave: Vec::new(),
            came_up: BTreeSet::new(),
            events: VecDeque::new(),
            seeds: BTreeSet::new(),
            started: false,
            left: false,
            ae_deadline: None,
            ihave_deadline: None,
            rejoin_deadline: None,
            warned_impostors: BTreeSet::new(),
            targets: (Vec::new(), Vec::new()),
            stats: Stats::default(),
        }
    }

    // ----- getters -------------------------------------------------------------------------

    /// This node's current identity (its incarnation grows when foca renews it).
    pub fn identity(&self) -> &Identity {
        self.membership.identity()
    }

    /// The replica id that mints this node's dots.
    pub fn replica(&self) -> ReplicaId {
        self.replica
    }

    /// Every delta this node has delivered (its own included), as a context. Per
    /// ARCHITECTURE "Dots are delta sequence numbers", its vector part is what the CRDT layer
    /// may fold every key's context with (`CausalContext::compact_stable`). Built on each
    /// call, one step per delivered dot: to ask about one dot, use [`Node::has_delivered`].
    pub fn delivered(&self) -> CausalContext {
        self.delivered.to_context()
    }

    /// Whether this node has delivered the delta with this dot (its own included).
    pub fn has_delivered(&self, dot: &Dot) -> bool {
        self.delivered.contains(dot)
    }

    /// The causal-stability watermark: the meet of the delivered vectors of every live member,
    /// this node included, as last acknowledged in their digests. A live member that has not
    /// sent a digest yet counts as having nothing, so the watermark is empty until every live
    /// member has been heard from. Members declared down do not hold it back.
    pub fn stable_watermark(&self) -> VersionVector {
        self.watermark(true)
    }

    /// The meet of our delivered vector and the acknowledged vectors of every member (every
    /// live one with `live_only`), or the empty vector while one has not acknowledged any.
    /// Every member is checked before our vector is built, so the common case (some member
    /// not heard from yet) costs no vector.
    fn watermark(&self, live_only: bool) -> VersionVector {
        let members = || {
            self.membership
                .members()
                .filter(move |m| !live_only || m.state.is_live())
        };
        let mut acked = Vec::new();
        for m in members() {
            match self.acked.get(&m.identity.addr) {
                Some((replica, vv)) if *replica == m.identity.replica => acked.push(vv),
                _ => return VersionVector::new(),
            }
        }
        let mut wm = self.delivered.vv();
        for vv in acked {
            wm.meet(vv);
        }
        wm
    }

    /// Every member this node knows of, with its state, in address order.
    pub fn members(&self) -> impl Iterator<Item = &MemberInfo> {
        self.membership.members()
    }

    /// The delta log (e.g. for a driver that persists it or an operator that inspects it).
    pub fn delta_log(&self) -> &DeltaLog<P> {
        &self.log
    }

    /// The dissemination overlay (eager and lazy peers), for inspection.
    pub fn plumtree(&self) -> &Plumtree {
        &self.plumtree
    }

    /// A snapshot of the counters, gauges filled in.
    pub fn stats(&self) -> Stats {
        let mut s = self.stats.clone();
        let wm = self.stable_watermark();
        s.log_len = self.log.len() as u64;
        s.log_bytes = self.log.bytes() as u64;
        s.log_evicted = self.log.evicted_for_capacity();
        s.log_trimmed = self.log.trimmed_stable();
        s.log_evicted_unstable = self.log.evicted_unstable();
        s.watermark_lag = self
            .delivered
            .vv()
            .iter()
            .map(|(r, c)| c - wm.get(r).min(c))
            .max()
            .unwrap_or(0);
        s.live_members = self.membership.live_count() as u64;
        s.membership_errors = self.membership.errors();
        s
    }

    // ----- polls ---------------------------------------------------------------------------

    /// The next message to send, if any.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        loop {
            let (to, body) = self.outbox.pop()?;
            let channel = match &body {
                Body::Membership(_) => Channel::Membership,
                Body::Gossip(_) => Channel::Delta,
                Body::Sync(_) => Channel::Sync,
            };
            let env = Envelope {
                sender: self.identity().addr,
                replica: self.replica,
                body,
            };
            let encoded = env.encode();
            self.outbox.recycle(env.body);
            match encoded {
                Ok(bytes) => {
                    let t = match channel {
                        Channel::Membership => &mut self.stats.sent_membership,
                        Channel::Delta => &mut self.stats.sent_gossip,
                        Channel::Sync => &mut self.stats.sent_sync,
                    };
                    t.add(bytes.len());
                    return Some(Transmit {
                        to,
                        channel,
                        // As a boxed slice: `Bytes` takes it without a second allocation (a
                        // `Vec` with spare room would need one for its shared header).
                        bytes: Bytes::from(bytes.into_boxed_slice()),
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, %to, "dropping a message that cannot be encoded");
                    self.stats.dropped_unencodable += 1;
                }
            }
        }
    }

    /// When [`Node::handle_timeout`] must be called next (Unix ms), if ever. The node's timers
    /// start with its first input: a driver with no seed to add calls `handle_timeout(now)`
    /// once at start.
    pub fn poll_timeout(&self) -> Option<i64> {
        if self.left || !self.started {
            return None;
        }
        [
            self.membership.next_deadline(),
            self.plumtree.next_deadline(),
            self.ae_deadline,
            self.ihave_deadline,
            self.rejoin_deadline,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Moves every event waiting for the driver to the back of `out`, in the order they
    /// happened: the same as calling [`Node::poll_event`] until it gives `None`, without
    /// moving each event twice. When `out` is empty the queues are swapped (no event moves
    /// at all), so a driver that empties `out` and hands it back each time circulates two
    /// buffers.
    pub fn take_events(&mut self, out: &mut VecDeque<Event<P>>) {
        if out.is_empty() {
            std::mem::swap(&mut self.events, out);
        } else {
            out.append(&mut self.events);
        }
        if self.events.capacity() > EVENTS_KEPT {
            self.events.shrink_to(EVENTS_KEPT);
        }
    }

    /// The next event for the driver, in the order they happened.
    pub fn poll_event(&mut self) -> Option<Event<P>> {
        let event = self.events.pop_front();
        if event.is_none() && self.events.capacity() > EVENTS_KEPT {
            // A formed start hands out an event per member at once (200 bytes each): give
            // that room back once they are taken instead of holding it for the node's life.
            self.events.shrink_to(EVENTS_KEPT);
        }
        event
    }

    // ----- application requests ------------------------------------------------------------

    /// Reserves the tag of the next local operation: the next delta sequence number (the dot)
    /// and a fresh HLC stamp.
    ///
    /// Every tag must be published: a driver whose write fails after taking a tag publishes an
    /// empty (bottom) delta for it, otherwise peers would wait for that sequence number forever.
    /// (A crash before the write is durable is fine: the restarted node reissues the number.)
    pub fn next_tag(&mut self, now: i64) -> Result<Tag, ClockError> {
        self.touch(now);
        let stamp = self.clock.tick(now)?;
        let dot = Dot::new(self.replica, self.next_seq);
        self.next_seq = self.next_seq.saturating_add(1);
        Ok(Tag { dot, stamp })
    }

    /// Sends a local delta to the cluster. Call it after the write made with `tag` is durable
    /// locally (ARCHITECTURE: a delta is never sent before it is durable at its origin).
    pub fn publish(
        &mut self,
        now: i64,
        key: Key,
        payload: P,
        tag: Tag,
    ) -> Result<(), PublishError> {
        self.touch(now);
        if tag.dot.replica != self.replica {
            return Err(PublishError::WrongReplica(tag.dot.replica));
        }
        if tag.dot.counter == 0 || tag.dot.counter >= self.next_seq {
            return Err(PublishError::NotIssued(tag.dot.counter));
        }
        if self.delivered.contains(&tag.dot) {
            return Err(PublishError::AlreadyPublished(tag.dot.counter));
        }
        let delta = Delta {
            origin: self.replica,
            seq: tag.dot.counter,
            stamp: tag.stamp,
            hops: 0,
            key,
            payload,
        };
        self.delivered.insert(tag.dot);
        self.stats.published += 1;
        match EncodedDelta::new(&delta) {
            Ok(encoded) => {
                self.disseminate(now, tag.dot, &encoded, None);
                self.log.insert(tag.dot, encoded, now);
            }
            Err(e) => {
                // Delivered here, never sent: the same as every send of it failing to encode.
                tracing::warn!(error = %e, dot = ?tag.dot, "a published delta cannot be encoded");
                self.stats.dropped_unencodable += 1;
            }
        }
        Ok(())
    }

    /// Adds a seed address and announces this node to it. Seeds are announced to again
    /// whenever the node knows no live member.
    pub fn add_seed(&mut self, now: i64, addr: SocketAddr) {
        self.touch(now);
        if addr == self.identity().addr || self.left {
            return;
        }
        self.seeds.insert(addr);
        let drained = self.membership.announce(now, addr);
        self.absorb(now, drained);
    }

    /// Adds members this node knows of without having heard from them yet: the member list it
    /// kept before a restart, or a roster the operator provisions. They count as alive until
    /// SWIM's probes say otherwise, and are not broadcast (the cluster knows them already). A
    /// cluster whose nodes start with each other's identities is formed at once instead of
    /// spreading every join by gossip, which takes about a minute at 1000 nodes.
    pub fn add_known_members(&mut self, now: i64, members: impl IntoIterator<Item = Identity>) {
        self.touch(now);
        if self.left {
            return;
        }
        let drained = self
            .membership
            .add_known(now, members.into_iter().collect());
        self.absorb(now, drained);
    }

    /// Leaves the cluster gracefully: tells the members, then stops (drain
    /// [`Node::poll_transmit`] one last time).
    pub fn leave(&mut self, now: i64) {
        self.touch(now);
        if self.left {
            return;
        }
        let drained = self.membership.leave(now);
        self.absorb(now, drained);
        self.left = true;
    }

    /// Marks a peer congested (the driver cannot send to it now) or not. A congested peer's
    /// delta and sync queues fill up to their bound and then drop, and anti-entropy repairs it
    /// later; membership packets are small and never held back.
    pub fn set_peer_congested(&mut self, peer: SocketAddr, congested: bool) {
        self.outbox.set_congested(peer, congested);
    }

    // ----- inputs --------------------------------------------------------------------------

    /// Handles one message received from the network. `from` is the transport's source
    /// address, used only for diagnostics: replies go to the address the sender advertises.
    /// Malformed input is counted and dropped.
    ///
    /// `authenticated` is the sender's node id as the transport established it (the node id of
    /// its TLS certificate), or `None` from a driver that authenticates no one (the simulator).
    /// A message whose claimed identity contradicts it is refused (counted in
    /// [`Stats::refused_identity`] and logged once per pair of ids): an envelope whose sender
    /// address or replica belongs to a member with another node id, or a membership packet
    /// whose source identity names another node id.
    pub fn handle_message(
        &mut self,
        now: i64,
        from: SocketAddr,
        authenticated: Option<&str>,
        bytes: &[u8],
        state: &impl StateSource<P>,
    ) {
        self.touch(now);
        if self.left {
            return;
        }
        let env = match Envelope::<P>::decode(bytes, self.config.max_receive_bytes) {
            Ok(env) => env,
            Err(e) => {
                tracing::debug!(error = %e, %from, len = bytes.len(), "dropping malformed message");
                self.stats.malformed += 1;
                return;
            }
        };
        let sender = env.sender;
        if sender == self.identity().addr {
            self.stats.malformed += 1;
            return;
        }
        if let Some(node_id) = authenticated
            && let Some(claimed) = self.contradicted_identity(node_id, &env)
        {
            self.stats.refused_identity += 1;
            let pair = (node_id.to_owned(), claimed);
            if self.warned_impostors.len() < MAX_WARNED_IMPOSTORS
                && !self.warned_impostors.contains(&pair)
            {
                tracing::warn!(
                    authenticated = %pair.0,
                    claimed = %pair.1,
                    %from,
                    "refusing a message whose claimed identity is not the authenticated peer's"
                );
                self.warned_impostors.insert(pair);
            }
            return;
        }
        match env.body {
            Body::Membership(packet) => {
                self.stats.received_membership.add(bytes.len());
                let drained = self.membership.handle_data(now, &packet);
                self.absorb(now, drained);
            }
            Body::Gossip(items) => {
                let Some(deltas) = self.decode_deltas(from, &items, |i| match i {
                    GossipItem::Delta(d) => Some(d),
                    _ => None,
                }) else {
                    return;
                };
                self.stats.received_gossip.add(bytes.len());
                for (item, delta) in items.into_iter().zip(deltas) {
                    self.on_gossip(now, sender, item, delta);
                }
            }
            Body::Sync(items) => {
                let Some(deltas) = self.decode_deltas(from, &items, |i| match i {
                    SyncItem::Delta(d) => Some(d),
                    _ => None,
                }) else {
                    return;
                };
                self.stats.received_sync.add(bytes.len());
                for (item, delta) in items.into_iter().zip(deltas) {
                    self.on_sync(now, sender, env.replica, item, delta, state);
                }
            }
        }
    }

    /// Fires every timer due at `now`.
    pub fn handle_timeout(&mut self, now: i64) {
        self.touch(now);
        if self.left {
            return;
        }
        let drained = self.membership.handle_timeout(now);
        self.absorb(now, drained);
        if self.ihave_deadline.is_some_and(|t| t <= now) {
            self.flush_ihave();
        }
        self.send_grafts(now);
        if self.ae_deadline.is_some_and(|t| t <= now) {
            self.anti_entropy_round();
            self.ae_deadline = Some(now + self.jitter(self.config.anti_entropy.interval_ms));
        }
        if self.rejoin_deadline.is_some_and(|t| t <= now) {
            if self.membership.live_count() == 0 {
                for seed in self.seeds.clone() {
                    let drained = self.membership.announce(now, seed);
                    self.absorb(now, drained);
                }
            }
            self.rejoin_deadline = Some(now + self.config.rejoin_interval_ms as i64);
        }
    }

    // ----- internals -----------------------------------------------------------------------

    /// The node id `env` claims to come from, when it is not `node_id`: the member at its
    /// sender address, the member (or this node) its replica belongs to, or the source of
    /// its foca packet (by the node id it names, and the members its address and replica
    /// belong to, so a packet cannot take over another node's address in membership).
    fn contradicted_identity(&self, node_id: &str, env: &Envelope<P>) -> Option<String> {
        let differs = |claimed: &str| (claimed != node_id).then(|| claimed.to_owned());
        let claims = |addr: &SocketAddr, replica: ReplicaId| {
            if let Some(m) = self.membership.member(addr)
                && let Some(c) = differs(&m.identity.node_id)
            {
                return Some(c);
            }
            if *addr == self.identity().addr || replica == self.replica {
                return differs(&self.identity().node_id);
            }
            self.membership
                .member_by_replica(replica)
                .and_then(|m| differs(&m.identity.node_id))
        };
        if let Some(c) = claims(&env.sender, env.replica) {
            return Some(c);
        }
        if let Body::Membership(packet) = &env.body
            && let Some(src) = packet_source(packet)
        {
            return differs(&src.node_id).or_else(|| claims(&src.addr, src.replica));
        }
        None
    }

    fn touch(&mut self, now: i64) {
        if !self.started {
            self.started = true;
            self.ae_deadline = Some(now + self.jitter(self.config.anti_entropy.interval_ms));
            self.rejoin_deadline = Some(now + self.config.rejoin_interval_ms as i64);
        }
    }

    /// `ms` ± 10%, from the seeded RNG.
    fn jitter(&mut self, ms: u64) -> i64 {
        let ms = ms.max(1) as i64;
        let spread = (ms / 10).max(1);
        ms + self.rng.random_range(-spread..=spread)
    }

    /// The live members' addresses, in address order.
    fn live_peers(&self) -> Vec<SocketAddr> {
        self.plumtree.live_peers().collect()
    }

    /// Acts on what a membership call produced.
    fn absorb(&mut self, now: i64, drained: Drained) {
        for (to, packet) in drained.sends {
            if !self.outbox.push_membership(to, packet) {
                self.stats.dropped_backpressure += 1;
            }
        }
        if drained.changes.is_empty() {
            return;
        }
        // One event per change: grow the queue once (a formed start brings up every member).
        self.events.reserve(drained.changes.len());
        for change in drained.changes {
            match change {
                MemberChange::Up(info) => {
                    let addr = info.identity.addr;
                    if self
                        .acked
                        .get(&addr)
                        .is_some_and(|(r, _)| *r != info.identity.replica)
                    {
                        self.acked.remove(&addr);
                        self.anti_entropy.forget(&addr);
                    }
                    // Members that come up are compared with soon: one of them, picked at the
                    // next round, brought forward. (Not all of them at once: after a heal, every
                    // member of the other side would repair us with the same deltas.)
                    self.came_up.insert(addr);
                    let soon = now + self.config.plumtree.graft_timeout_ms as i64;
                    self.ae_deadline = Some(self.ae_deadline.map_or(soon, |t| t.min(soon)));
                    self.plumtree.peer_up(addr, &info.identity.region);
                    self.events.push_back(Event::MemberUp(info));
                }
                MemberChange::Suspect(info) => {
                    // Still live: it keeps its links.
                    self.plumtree
                        .peer_up(info.identity.addr, &info.identity.region);
                    self.events.push_back(Event::MemberSuspect(info));
                }
                MemberChange::Down(info) => {
                    let addr = info.identity.addr;
                    self.plumtree.remove_peer(&addr);
                    self.anti_entropy.forget(&addr);
                    self.pending_ihave.retain(|(a, _)| *a != addr);
                    self.stats.dropped_backpressure += self.outbox.drop_peer(&addr) as u64;
                    self.came_up.remove(&addr);
                    self.events.push_back(Event::MemberDown(info));
                }
            }
        }
        let linked = self.plumtree.relink();
        // Tell new ranked links, so they link back (an empty IHAVE): links are symmetric.
        // (Links of the shared tree are symmetric by construction.)
        for peer in linked {
            let item = GossipItem::IHave(Vec::new());
            let size = item_len(&item);
            if !self.outbox.push_gossip(peer, item, size) {
                self.stats.dropped_backpressure += 1;
            }
        }
        self.trim_log();
    }

    fn trim_log(&mut self) {
        let live = self.stable_watermark();
        self.log.mark_stable(&live);
        let all = self.retention_watermark();
        self.log.trim_stable(&all);
    }

    /// The meet of the acknowledged vectors of every member foca knows of, down ones included
    /// (foca forgets a down member after `remove_down_after`): below it no one will ever ask
    /// for a delta again.
    fn retention_watermark(&self) -> VersionVector {
        self.watermark(false)
    }

    /// A peer showed a delta of our own replica: never reuse its sequence number.
    fn note_own(&mut self, seq: u64) {
        if seq >= self.next_seq {
            tracing::warn!(seq, "peers know a sequence number of ours beyond our own");
            self.next_seq = seq.saturating_add(1);
        }
    }

    /// Checks a remote delta's stamp against the clock. A refused delta stays missing.
    fn admit(&mut self, now: i64, delta: &Delta<P>) -> bool {
        match self.clock.observe(now, &delta.stamp) {
            Ok(()) => true,
            Err(ClockError::DriftExceeded { ahead_ms, .. }) => {
                tracing::debug!(dot = ?delta.dot(), ahead_ms, "refusing a delta beyond the drift bound");
                self.stats.refused_drift += 1;
                false
            }
            Err(ClockError::OutOfRange(_)) => {
                self.stats.refused_clock_range += 1;
                false
            }
        }
    }

    /// Decodes every delta of a message's items (`None` for the items that are not deltas),
    /// or counts the message malformed and gives `None` if one does not decode: a message with
    /// an invalid item is dropped whole, before any of it is acted on.
    fn decode_deltas<T>(
        &mut self,
        from: SocketAddr,
        items: &[T],
        delta_of: impl Fn(&T) -> Option<&EncodedDelta>,
    ) -> Option<Vec<Option<Delta<P>>>> {
        let decoded: Result<Vec<Option<Delta<P>>>, _> = items
            .iter()
            .map(|i| delta_of(i).map(EncodedDelta::decode).transpose())
            .collect();
        match decoded {
            Ok(deltas) => Some(deltas),
            Err(e) => {
                tracing::debug!(error = %e, %from, "dropping a message with a malformed delta");
                self.stats.malformed += 1;
                None
            }
        }
    }

    /// Records a new remote delta as delivered, logs its encoding and hands it to the driver.
    fn deliver(&mut self, now: i64, delta: Delta<P>, encoded: EncodedDelta) {
        let dot = delta.dot();
        debug_assert!(
            !self.delivered.contains(&dot),
            "{dot:?} would be applied twice"
        );
        if dot.replica == self.replica {
            self.note_own(dot.counter);
        }
        self.delivered.insert(dot);
        self.plumtree.delivered(&dot);
        self.log.insert(dot, encoded.clone(), now);
        self.stats.delivered += 1;
        self.events.push_back(Event::Apply(delta, encoded));
    }

    /// Pushes the delta with this dot (`delta` is the copy as it reached us) to the eager
    /// peers and schedules its announcement to the lazy ones.
    fn disseminate(
        &mut self,
        now: i64,
        dot: Dot,
        delta: &EncodedDelta,
        except: Option<SocketAddr>,
    ) {
        let (mut eager, mut lazy) = std::mem::take(&mut self.targets);
        self.plumtree
            .targets(dot.replica, except, &mut eager, &mut lazy);
        if !eager.is_empty() {
            let copy = delta.next_hop();
            let size = copy.wire_len();
            for &peer in &eager {
                self.push_delta(peer, copy.clone(), size);
            }
        }
        let mut fullest = 0;
        // A new batch has room for a full one (up to 64 ids, 1 KiB): at 1000 nodes batches
        // fill, and growing one from empty reallocated it four times on the way to 64.
        let room = self.config.plumtree.ihave_batch_ids.min(64);
        for &peer in &lazy {
            let batch = match self.pending_ihave.iter().position(|(a, _)| *a == peer) {
                Some(i) => &mut self.pending_ihave[i].1,
                None => {
                    self.pending_ihave.push((peer, Vec::with_capacity(room)));
                    let last = self.pending_ihave.len() - 1;
                    &mut self.pending_ihave[last].1
                }
            };
            batch.push(dot);
            fullest = fullest.max(batch.len());
        }
        let announced = !lazy.is_empty();
        eager.clear();
        lazy.clear();
        self.targets = (eager, lazy);
        if !announced {
            return;
        }
        if fullest >= self.config.plumtree.ihave_batch_ids {
            self.flush_ihave();
        } else if self.ihave_deadline.is_none() {
            self.ihave_deadline = Some(now + self.config.plumtree.ihave_delay_ms as i64);
        }
    }

    /// Queues an eager copy of a delta for `peer`.
    fn push_delta(&mut self, peer: SocketAddr, copy: EncodedDelta, size: usize) {
        if self.outbox.push_gossip(peer, GossipItem::Delta(copy), size) {
            self.stats.eager_sent += 1;
        } else {
            self.stats.dropped_backpressure += 1;
        }
    }

    fn flush_ihave(&mut self) {
        self.ihave_deadline = None;
        let mut pending = std::mem::take(&mut self.pending_ihave);
        for (peer, dots) in pending.drain(..) {
            let n = dots.len() as u64;
            let item = GossipItem::IHave(dots);
            let size = item_len(&item);
            if self.outbox.push_gossip(peer, item, size) {
                self.stats.ihave_sent += n;
            } else {
                self.stats.dropped_backpressure += 1;
            }
        }
        self.pending_ihave = pending;
    }

    fn send_grafts(&mut self, now: i64) {
        let mut by_peer: BTreeMap<SocketAddr, Vec<Dot>> = BTreeMap::new();
        for (peer, dot) in self.plumtree.due_grafts(now) {
            if !self.delivered.contains(&dot) {
                by_peer.entry(peer).or_default().push(dot);
            }
        }
        for (peer, dots) in by_peer {
            let n = dots.len() as u64;
            let item = GossipItem::Graft(dots);
            let size = item_len(&item);
            if self.outbox.push_gossip(peer, item, size) {
                self.stats.grafts_sent += n;
            } else {
                self.stats.dropped_backpressure += 1;
            }
        }
    }

    /// Acts on one dissemination item; `decoded` is the item's delta, decoded.
    fn on_gossip(
        &mut self,
        now: i64,
        from: SocketAddr,
        item: GossipItem,
        decoded: Option<Delta<P>>,
    ) {
        match item {
            GossipItem::Delta(encoded) => {
                let Some(delta) = decoded else {
                    return;
                };
                let dot = delta.dot();
                if self.delivered.contains(&dot) {
                    self.stats.duplicates += 1;
                    if let Some(victim) = self.plumtree.on_duplicate(from, &dot)
                        && self
                            .outbox
                            .push_gossip(victim, GossipItem::Prune(dot.replica), 10)
                    {
                        self.stats.prunes_sent += 1;
                    }
                    return;
                }
                if !self.admit(now, &delta) {
                    return;
                }
                self.plumtree.on_first_delivery(from, &dot);
                // Disseminating first lets the delivery keep the encoding (the two touch
                // different state, so the order changes nothing else).
                self.disseminate(now, dot, &encoded, Some(from));
                self.deliver(now, delta, encoded);
            }
            GossipItem::IHave(dots) => {
                if dots.is_empty() {
                    self.plumtree.on_link(from);
                }
                for dot in dots {
                    if !self.delivered.contains(&dot) {
                        self.plumtree.on_ihave(now, from, dot);
                    }
                }
            }
            GossipItem::Graft(dots) => {
                for dot in dots {
                    self.plumtree.on_graft(from, dot.replica);
                    let Some(d) = self.log.get(&dot) else {
                        continue;
                    };
                    let copy = d.next_hop();
                    let size = copy.wire_len();
                    self.push_delta(from, copy, size);
                }
            }
            GossipItem::Prune(root) => self.plumtree.on_prune(from, root),
        }
    }

    fn send_digest(&mut self, to: SocketAddr, reply: bool) {
        let digest = self.anti_entropy.digest(&self.delivered, &to, reply);
        let item = SyncItem::Digest(digest);
        let size = item_len(&item);
        if !self.outbox.push_sync(to, item, size) {
            self.stats.dropped_backpressure += 1;
        }
    }

    fn anti_entropy_round(&mut self) {
        self.trim_log();
        let live = self.live_peers();
        let mut targets = Vec::new();
        if let Some(p) = self.anti_entropy.transfer_peer() {
            if live.contains(&p) {
                targets.push(p);
            } else {
                self.anti_entropy.forget(&p);
            }
        }
        let came_up: Vec<SocketAddr> = std::mem::take(&mut self.came_up)
            .into_iter()
            .filter(|a| live.binary_search(a).is_ok())
            .collect();
        let pick = if !came_up.is_empty() {
            Some(came_up[self.rng.random_range(0..came_up.len())])
        } else if !live.is_empty() {
            Some(live[self.rng.random_range(0..live.len())])
        } else {
            None
        };
        if let Some(pick) = pick
            && !targets.contains(&pick)
        {
            targets.push(pick);
        }
        for t in targets {
            self.send_digest(t, true);
            self.stats.sync_rounds += 1;
        }
    }

    fn on_sync(
        &mut self,
        now: i64,
        from: SocketAddr,
        replica: ReplicaId,
        item: SyncItem<P>,
        decoded: Option<Delta<P>>,
        state: &impl StateSource<P>,
    ) {
        match item {
            SyncItem::Digest(digest) => {
                self.note_own(digest.delivered.max_counter(self.replica));
                let resp = self.anti_entropy.respond(
                    &digest,
                    &self.delivered,
                    &self.log,
                    state,
                    now,
                    self.clock.last(),
                );
                for d in resp.deltas {
                    let item = SyncItem::Delta(d.next_hop());
                    let size = item_len(&item);
                    if self.outbox.push_sync(from, item, size) {
                        self.stats.sync_deltas_sent += 1;
                    } else {
                        self.stats.dropped_backpressure += 1;
                    }
                }
                if let Some(chunk) = resp.state {
                    let n = chunk.entries.len() as u64;
                    let item = SyncItem::State(chunk);
                    let size = item_len(&item);
                    if self.outbox.push_sync(from, item, size) {
                        self.stats.state_chunks_sent += 1;
                        self.stats.state_entries_sent += n;
                    } else {
                        self.stats.dropped_backpressure += 1;
                    }
                }
                let reply = digest.reply;
                self.acked
                    .insert(from, (replica, digest.delivered.into_vv()));
                if reply {
                    self.send_digest(from, false);
                }
                self.trim_log();
            }
            SyncItem::Delta(encoded) => {
                let Some(delta) = decoded else {
                    return;
                };
                if self.delivered.contains(&delta.dot()) {
                    self.stats.sync_duplicates += 1;
                    return;
                }
                if !self.admit(now, &delta) {
                    return;
                }
                self.stats.delivered_by_sync += 1;
                self.deliver(now, delta, encoded);
            }
            SyncItem::State(chunk) => self.on_state_chunk(now, from, replica, chunk),
        }
    }

    fn on_state_chunk(
        &mut self,
        now: i64,
        from: SocketAddr,
        replica: ReplicaId,
        chunk: StateChunk<P>,
    ) {
        match self.clock.observe(now, &chunk.clock) {
            Ok(()) => {}
            Err(ClockError::DriftExceeded { .. }) => {
                self.stats.refused_state_drift += 1;
                return;
            }
            Err(ClockError::OutOfRange(_)) => {
                self.stats.refused_clock_range += 1;
                return;
            }
        }
        self.stats.state_chunks_received += 1;
        let outcome = self.anti_entropy.on_chunk(from, replica, &chunk);
        for (key, payload) in chunk.entries {
            self.events.push_back(Event::ApplyState {
                key,
                payload,
                from: replica,
            });
        }
        if let ChunkOutcome::Adopt(vv) = outcome {
            self.note_own(vv.get(self.replica));
            self.delivered.raise(&vv);
            self.log.raise_floors(&vv);
            self.stats.state_transfers_completed += 1;
            self.events
                .push_back(Event::AdoptDelivered { vv, from: replica });
        }
    }
}
