//! The engine: the one task that owns the gossip core, the replica state and the store. It
//! feeds the core what arrives (frames, timers, local operations), commits every batch
//! durably before acknowledging or publishing anything from it, and drains the core's
//! transmits into the transport. It holds no protocol logic: the gossip core decides what
//! to send and what to apply.
//!
//! One loop iteration is one batch (group commit): it takes every command and frame queued
//! while the previous commit ran, then
//! 1. fires due timers and handles frames, applying the events each one yields at once, so the
//!    state always reflects everything the core counts as delivered (frames of the anti-entropy
//!    channel go last: they may read the state for a transfer, and must only ever see local
//!    writes that are already durable);
//! 2. applies the local operations, each with a tag from the core;
//! 3. commits the batch: one log segment in one `Durability::Immediate` transaction;
//! 4. installs the new objects in the read view, answers the callers, publishes the local
//!    deltas (never before they are durable), notifies subscribers;
//! 5. hands every transmit to the transport; a full peer queue marks the peer congested in the
//!    core for a short while (the core then holds and bounds that peer's messages);
//! 6. writes one chunk of the checkpoint in progress, or starts one when enough keys changed
//!    or enough time passed (see [`crate::store`]: objects are written by checkpoints, not by
//!    every commit).
//!
//! A commit failure stops the engine (fail-stop): the in-memory state is then ahead of the
//! disk, and serving or shipping it could hand out a sequence number a restart would reuse.
//! No input may cause one: objects are kept under the store's record limit (local writes are
//! refused past `MAX_OBJECT_BYTES`, remote ones past `MAX_STORED_OBJECT_BYTES`; ARCHITECTURE
//! "Store"), so only the disk or the storage engine can stop a node.

use crate::delta::{GossipNode, LoggedDelta, MeshDelta};
use crate::error::InvalidInput;
use crate::error::MeshError;
use crate::inspect::{self, Directory, Inspection};
use crate::member::{Member, MemberStatus};
use crate::ops::{self, MAX_OBJECT_BYTES, Op, Output};
use crate::state::{JoinError, Snapshot, State};
use crate::store::{CheckpointMark, KnownPeer, Segment, Store, StoreError};
use crate::subscribe::{Change, ChangeSource};
use crate::transport::{self, Inbound, SendOutcome, Transport};
use crate::view::View;
use crdt_types::{Key, Object, ObjectDelta, Tag};
use gossip::{Event, MemberInfo};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

/// The wall clock in Unix milliseconds: the `now` of every call into the gossip core.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A growing local operation on an object estimated larger than this (with the operation's
/// input) is applied to a copy that is measured before it is kept.
const MEASURE_OP_BYTES: usize = 256 << 10;

/// Limits of one engine batch, and checkpoint pacing.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    /// Local operations taken into one batch.
    pub(crate) max_ops: usize,
    /// Inbound frames taken into one batch.
    pub(crate) max_frames: usize,
    /// How long a peer whose transport queue was full stays congested in the core.
    pub(crate) congestion_ms: i64,
    /// A checkpoint starts once this many keys changed since the last one...
    pub(crate) checkpoint_keys: usize,
    /// ...or this long after the last one, if any key changed.
    pub(crate) checkpoint_interval: Duration,
    /// Objects written per engine iteration while a checkpoint is in progress.
    pub(crate) checkpoint_chunk: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_ops: 4096,
            max_frames: 256,
            congestion_ms: 50,
            checkpoint_keys: 65_536,
            checkpoint_interval: Duration::from_secs(5),
            checkpoint_chunk: 2048,
        }
    }
}

/// A checkpoint being written, chunk by chunk.
struct Checkpoint {
    snapshot: Snapshot,
    /// The last log segment the snapshot matches.
    upto: u64,
    /// Objects written so far.
    written: usize,
}

/// Where the answer to a local operation goes.
pub(crate) type Reply = oneshot::Sender<Result<Output, MeshError>>;

/// A local operation waiting in the batch.
type PendingOp = (Key, Op, Reply);

/// What the handles ask of the engine.
pub(crate) enum Command {
    /// A local operation on one key.
    Op { key: Key, op: Op, reply: Reply },
    /// Describe a key.
    Inspect {
        key: Key,
        reply: oneshot::Sender<Inspection>,
    },
    /// Finish the queued work, leave the cluster, close the store.
    Shutdown { reply: oneshot::Sender<()> },
}

/// Counters of the engine, readable from any handle.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) commits: AtomicU64,
    pub(crate) commit_micros: AtomicU64,
    pub(crate) local_ops: AtomicU64,
    pub(crate) remote_deltas: AtomicU64,
    pub(crate) remote_states: AtomicU64,
    pub(crate) apply_errors: AtomicU64,
    pub(crate) oversize_refused: AtomicU64,
    pub(crate) transport_dropped: AtomicU64,
}

/// What the engine shares with the handles.
pub(crate) struct Shared {
    pub(crate) view: Arc<View>,
    pub(crate) changes: broadcast::Sender<Arc<Change>>,
    pub(crate) failure: OnceLock<Arc<StoreError>>,
    pub(crate) counters: Counters,
    pub(crate) gossip_stats: std::sync::Mutex<gossip::Stats>,
}

/// Everything the engine owns.
pub(crate) struct Engine {
    pub(crate) node: GossipNode,
    pub(crate) state: State,
    pub(crate) store: Store,
    pub(crate) transport: Transport,
    pub(crate) shared: Arc<Shared>,
    pub(crate) limits: Limits,
    /// This node as a member, listed first.
    pub(crate) me: Member,
    /// Members by gossip address.
    pub(crate) members: BTreeMap<SocketAddr, Member>,
    /// Replica to (node id, region), for `inspect`.
    pub(crate) directory: Directory,
    /// Peers congested in the core, with when to retry them.
    pub(crate) congested: HashMap<SocketAddr, i64>,
    // The batch in progress.
    segment: Segment,
    publish: Vec<(Key, ObjectDelta, Tag)>,
    replies: Vec<(Reply, Result<Output, MeshError>)>,
    notify: Vec<Change>,
    peers: Vec<KnownPeer>,
    stats_at: i64,
    checkpoint: Option<Checkpoint>,
    checkpoint_at: std::time::Instant,
}

impl Engine {
    /// An engine over a started gossip node and its state.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        node: GossipNode,
        state: State,
        store: Store,
        transport: Transport,
        shared: Arc<Shared>,
        limits: Limits,
        me: Member,
        directory: Directory,
    ) -> Self {
        let engine = Engine {
            node,
            state,
            store,
            transport,
            shared,
            limits,
            me,
            members: BTreeMap::new(),
            directory,
            congested: HashMap::new(),
            segment: Segment::default(),
            publish: Vec::new(),
            replies: Vec::new(),
            notify: Vec::new(),
            peers: Vec::new(),
            stats_at: 0,
            checkpoint: None,
            checkpoint_at: std::time::Instant::now(),
        };
        engine.publish_members();
        engine
    }

    /// Runs until shutdown, until every handle is gone, or until a commit fails.
    pub(crate) async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut inbound: mpsc::Receiver<Inbound>,
    ) {
        let mut inbound_open = true;
        loop {
            let mut ops = Vec::new();
            let mut frames = Vec::new();
            let mut shutdown = None;
            let mut handles_gone = false;
            let deadline = self.next_deadline();
            tokio::select! {
                biased;
                command = commands.recv() => match command {
                    Some(c) => self.take(c, &mut ops, &mut shutdown),
                    None => handles_gone = true,
                },
                frame = inbound.recv(), if inbound_open => match frame {
                    Some(f) => frames.push(f),
                    None => inbound_open = false,
                },
                () = tokio::time::sleep_until(deadline) => {}
            }
            while shutdown.is_none() && !handles_gone && ops.len() < self.limits.max_ops {
                match commands.try_recv() {
                    Ok(c) => self.take(c, &mut ops, &mut shutdown),
                    Err(_) => break,
                }
            }
            while frames.len() < self.limits.max_frames {
                match inbound.try_recv() {
                    Ok(f) => frames.push(f),
                    Err(_) => break,
                }
            }
            if let Err(e) = self.step(frames, ops) {
                error!(error = %e, "commit failed: the node stops taking writes and leaves the mesh");
                let e = Arc::new(e);
                let _ = self.shared.failure.set(e.clone());
                for (reply, _) in self.replies.drain(..) {
                    let _ = reply.send(Err(MeshError::Storage(e.clone())));
                }
                return;
            }
            if let Some(done) = shutdown {
                self.leave();
                if let Err(e) = self.final_checkpoint() {
                    warn!(error = %e, "final checkpoint failed; the next start replays the log");
                }
                drop(self);
                let _ = done.send(());
                return;
            }
            if handles_gone {
                info!("every handle was dropped: stopping");
                return;
            }
        }
    }

    /// Sorts one command into the batch (an inspection is answered at once: between batches
    /// the state is exactly what was committed).
    fn take(
        &mut self,
        command: Command,
        ops: &mut Vec<PendingOp>,
        shutdown: &mut Option<oneshot::Sender<()>>,
    ) {
        match command {
            Command::Op { key, op, reply } => ops.push((key, op, reply)),
            Command::Inspect { key, reply } => {
                let _ = reply.send(self.inspect(&key));
            }
            Command::Shutdown { reply } => *shutdown = Some(reply),
        }
    }

    fn inspect(&self, key: &Key) -> Inspection {
        let slot = self.state.get(key);
        let empty = crdt_types::Object::new(key.kind);
        let object = slot.map_or(&empty, |s| &*s.object);
        inspect::inspect(
            key,
            object,
            slot.map(|s| s.change),
            self.node.delta_log().iter(),
            &self.directory,
            now_ms(),
        )
    }

    /// When the loop must wake up without input: the core's next timer or a congestion retry.
    fn next_deadline(&self) -> Instant {
        let now = now_ms();
        let next = self
            .node
            .poll_timeout()
            .into_iter()
            .chain(self.congested.values().copied())
            .min();
        match next {
            Some(t) => Instant::now() + Duration::from_millis(u64::try_from(t - now).unwrap_or(0)),
            None => Instant::now() + Duration::from_secs(3600),
        }
    }

    /// One batch: inputs, local operations, commit, answers, publication, transmits.
    fn step(&mut self, frames: Vec<Inbound>, ops: Vec<PendingOp>) -> Result<(), StoreError> {
        let now = now_ms();
        self.drain_events();
        if self.node.poll_timeout().is_some_and(|t| t <= now) {
            self.node.handle_timeout(now);
            self.drain_events();
        }
        self.retry_congested(now);
        let (sync, other): (Vec<_>, Vec<_>) = frames
            .into_iter()
            .partition(|f| f.channel == transport::Channel::Sync);
        for frame in other.into_iter().chain(sync) {
            self.node.handle_message(
                now,
                frame.from,
                Some(&*frame.node_id),
                &frame.bytes,
                &self.state,
            );
            self.drain_events();
        }
        let n_ops = ops.len() as u64;
        for (key, op, reply) in ops {
            self.run_op(now, key, op, reply);
        }
        if !self.segment.is_empty()
            || !self.peers.is_empty()
            || !self.store.cursor_covered(self.state.next_cursor())
        {
            let started = std::time::Instant::now();
            let peers = std::mem::take(&mut self.peers);
            self.store
                .append(&mut self.segment, &peers, self.state.next_cursor())?;
            let c = &self.shared.counters;
            c.commits.fetch_add(1, Ordering::Relaxed);
            c.commit_micros.fetch_add(
                u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
                Ordering::Relaxed,
            );
        }
        self.shared
            .counters
            .local_ops
            .fetch_add(n_ops, Ordering::Relaxed);
        self.shared.view.install(self.state.end_batch());
        for (reply, result) in self.replies.drain(..) {
            let _ = reply.send(result);
        }
        for (key, delta, tag) in self.publish.drain(..) {
            if let Err(e) = self.node.publish(now, key, MeshDelta(delta), tag) {
                error!(error = %e, "the gossip core refused a local delta");
            }
        }
        if self.shared.changes.receiver_count() > 0 {
            for change in self.notify.drain(..) {
                let _ = self.shared.changes.send(Arc::new(change));
            }
        } else {
            self.notify.clear();
        }
        self.flush_transmits(now);
        self.checkpoint_step()?;
        if now - self.stats_at >= 1_000 {
            self.stats_at = now;
            *self
                .shared
                .gossip_stats
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = self.node.stats();
        }
        Ok(())
    }

    fn run_op(&mut self, now: i64, key: Key, op: Op, reply: Reply) {
        let current = self.state.get(&key).map(|s| &*s.object);
        if let Err(e) = op.precheck(current, now) {
            self.replies.push((reply, Err(e)));
            return;
        }
        let node = &mut self.node;
        let estimate = self.state.bytes_of(&key).saturating_add(op.input_bytes());
        let applied = if op.grows() && estimate > MEASURE_OP_BYTES {
            // Near the limit: apply to a copy and measure it before keeping it.
            let mut copy = current.map_or_else(|| Object::new(key.kind), Clone::clone);
            let grows = op.grows();
            let mut applied = ops::apply(op, &mut copy, now, &mut || node.next_tag(now));
            let bytes = copy.encoded_len();
            // The delta is bounded too: a document's encoding is compressed, its changes not.
            let delta_bytes = applied.tagged.as_ref().map_or(0, |(_, d)| d.encoded_len());
            if grows && bytes.max(delta_bytes) > MAX_OBJECT_BYTES {
                let bytes = bytes.max(delta_bytes);
                // A tag taken must still be published: with a bottom delta (ARCHITECTURE
                // "Gossip").
                applied.tagged = applied
                    .tagged
                    .map(|(tag, _)| (tag, Object::new(key.kind).to_delta()));
                applied.result = Err(InvalidInput::ObjectTooLarge {
                    key: key.to_string(),
                    bytes,
                    max: MAX_OBJECT_BYTES,
                }
                .into());
            } else if applied.tagged.is_some() {
                self.state.replace(&key, copy, bytes);
            }
            applied
        } else {
            let object = self.state.object_mut(&key);
            let applied = ops::apply(op, object, now, &mut || node.next_tag(now));
            if let Some((_, delta)) = &applied.tagged {
                self.state.add_bytes(&key, delta.encoded_len());
            }
            applied
        };
        if let Some((tag, delta)) = applied.tagged {
            self.state.record(&key, tag.dot, tag.stamp);
            self.segment.deltas.push(LoggedDelta {
                origin: tag.dot.replica,
                seq: tag.dot.counter,
                stamp: tag.stamp,
                hops: 0,
                key: key.clone(),
                payload: MeshDelta(delta.clone()),
            });
            self.publish.push((key.clone(), delta, tag));
            self.notify.push(Change {
                key,
                source: ChangeSource::Local,
            });
        }
        self.replies.push((reply, applied.result));
    }

    /// Applies every event the core handed out, in order.
    fn drain_events(&mut self) {
        while let Some(event) = self.node.poll_event() {
            match event {
                Event::Apply(delta) => {
                    let key = delta.key.clone();
                    let mut delta = delta;
                    if let Err(e) = self.state.join(&key, delta.payload.0.clone()) {
                        self.count_refusal(&e);
                        warn!(key = %key, origin = %delta.origin, seq = delta.seq, error = %e, "refused a remote delta");
                        // The store logs what was applied: the dot, not the refused payload
                        // (which may not even fit in a log record).
                        delta.payload = MeshDelta(Object::new(key.kind).to_delta());
                    }
                    self.state.record(&key, delta.dot(), delta.stamp);
                    self.shared
                        .counters
                        .remote_deltas
                        .fetch_add(1, Ordering::Relaxed);
                    self.notify.push(Change {
                        key,
                        source: ChangeSource::Remote {
                            origin: delta.origin,
                            stamp: delta.stamp,
                        },
                    });
                    self.segment.deltas.push(delta);
                }
                Event::ApplyState { key, payload, from } => {
                    match self.state.join(&key, payload.0.clone()) {
                        Ok(()) => {
                            self.state.compact(&key);
                            self.segment.states.push((key.clone(), payload));
                        }
                        Err(e) => {
                            self.count_refusal(&e);
                            warn!(key = %key, from = %from, error = %e, "refused a transferred state");
                        }
                    }
                    self.shared
                        .counters
                        .remote_states
                        .fetch_add(1, Ordering::Relaxed);
                    self.notify.push(Change {
                        key,
                        source: ChangeSource::StateTransfer { from },
                    });
                }
                Event::AdoptDelivered { vv, from } => {
                    debug!(from = %from, "state transfer completed");
                    self.state.adopt(&vv);
                    self.segment.adopted.push(vv);
                }
                Event::MemberUp(info) => self.member_changed(info, MemberStatus::Alive),
                Event::MemberSuspect(info) => self.member_changed(info, MemberStatus::Suspect),
                Event::MemberDown(info) => self.member_changed(info, MemberStatus::Down),
            }
        }
    }

    fn count_refusal(&self, e: &JoinError) {
        let counter = match e {
            JoinError::Apply(_) => &self.shared.counters.apply_errors,
            JoinError::TooLarge { .. } => &self.shared.counters.oversize_refused,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn member_changed(&mut self, info: MemberInfo, status: MemberStatus) {
        let id = &info.identity;
        match status {
            MemberStatus::Alive => {
                info!(peer = %id.addr, peer_node = %id.node_id, peer_region = %id.region, "member up")
            }
            MemberStatus::Suspect => {
                info!(peer = %id.addr, peer_node = %id.node_id, "member suspect")
            }
            MemberStatus::Down => {
                info!(peer = %id.addr, peer_node = %id.node_id, "member down");
                self.congested.remove(&id.addr);
                self.node.set_peer_congested(id.addr, false);
            }
        }
        self.directory
            .insert(id.replica, (id.node_id.clone(), id.region.clone()));
        if status == MemberStatus::Alive {
            self.peers.push(KnownPeer {
                node_id: id.node_id.clone(),
                region: id.region.clone(),
                addr: id.addr,
                replica: id.replica,
            });
        }
        self.members.insert(
            id.addr,
            Member {
                node_id: id.node_id.clone(),
                region: id.region.clone(),
                addr: id.addr,
                state: status,
            },
        );
        self.publish_members();
    }

    fn publish_members(&self) {
        let list = std::iter::once(self.me.clone())
            .chain(self.members.values().cloned())
            .collect();
        self.shared.view.set_members(list);
    }

    fn retry_congested(&mut self, now: i64) {
        let due: Vec<SocketAddr> = self
            .congested
            .iter()
            .filter(|(_, t)| **t <= now)
            .map(|(a, _)| *a)
            .collect();
        for peer in due {
            self.congested.remove(&peer);
            self.node.set_peer_congested(peer, false);
        }
    }

    /// Hands every pending transmit to the transport.
    fn flush_transmits(&mut self, now: i64) {
        while let Some(t) = self.node.poll_transmit() {
            let channel = match t.channel {
                gossip::Channel::Membership => transport::Channel::Membership,
                gossip::Channel::Delta => transport::Channel::Delta,
                gossip::Channel::Sync => transport::Channel::Sync,
            };
            let expected = self.members.get(&t.to).map(|m| m.node_id.as_str());
            match self.transport.send(t.to, expected, channel, t.bytes) {
                SendOutcome::Queued | SendOutcome::Closed => {}
                SendOutcome::Dropped => {
                    self.shared
                        .counters
                        .transport_dropped
                        .fetch_add(1, Ordering::Relaxed);
                    if !self.congested.contains_key(&t.to) {
                        debug!(peer = %t.to, "peer queue full: marking it congested");
                        self.node.set_peer_congested(t.to, true);
                        self.congested.insert(t.to, now + self.limits.congestion_ms);
                    }
                }
                SendOutcome::TooLarge => {
                    warn!(peer = %t.to, ?channel, "a message is over the transport's frame limit");
                }
            }
        }
    }

    /// Writes the next chunk of the checkpoint in progress, or starts a checkpoint when enough
    /// keys changed or enough time passed. Called between batches, when the state matches the
    /// log up to the last committed segment.
    fn checkpoint_step(&mut self) -> Result<(), StoreError> {
        if self.checkpoint.is_none() {
            let unsaved = self.state.unsaved();
            let due = unsaved >= self.limits.checkpoint_keys
                || (unsaved > 0 && self.checkpoint_at.elapsed() >= self.limits.checkpoint_interval);
            if !due {
                return Ok(());
            }
            self.checkpoint = Some(Checkpoint {
                snapshot: self.state.take_snapshot(),
                upto: self.store.last_segment(),
                written: 0,
            });
        }
        let Some(cp) = &mut self.checkpoint else {
            return Ok(());
        };
        let to = cp.written + self.limits.checkpoint_chunk;
        let writes = cp.snapshot.writes(cp.written, to);
        let last = to >= cp.snapshot.objects.len();
        let mark = last.then_some(CheckpointMark {
            applied: &cp.snapshot.applied,
            last_stamp: cp.snapshot.last_stamp,
            upto_segment: cp.upto,
        });
        self.store.checkpoint(&writes, mark, false)?;
        cp.written = to;
        if last {
            self.checkpoint = None;
            self.checkpoint_at = std::time::Instant::now();
        }
        Ok(())
    }

    /// Finishes the checkpoint in progress and checkpoints every key changed since, durably,
    /// so that the next start replays nothing.
    fn final_checkpoint(&mut self) -> Result<(), StoreError> {
        if let Some(cp) = self.checkpoint.take() {
            let writes = cp.snapshot.writes(cp.written, cp.snapshot.objects.len());
            let mark = CheckpointMark {
                applied: &cp.snapshot.applied,
                last_stamp: cp.snapshot.last_stamp,
                upto_segment: cp.upto,
            };
            self.store.checkpoint(&writes, Some(mark), false)?;
        }
        let snapshot = self.state.take_snapshot();
        let writes = snapshot.writes(0, snapshot.objects.len());
        let mark = CheckpointMark {
            applied: &snapshot.applied,
            last_stamp: snapshot.last_stamp,
            upto_segment: self.store.last_segment(),
        };
        self.store.checkpoint(&writes, Some(mark), true)
    }

    /// Leaves the cluster and hands the goodbye to the transport.
    fn leave(&mut self) {
        let now = now_ms();
        self.node.leave(now);
        self.flush_transmits(now);
        info!("left the mesh");
    }
}
