//! The engine: the one task that owns the gossip core and the replica state, and hands the
//! store's writes to the commit thread ([`crate::committer`]). It feeds the core what arrives
//! (frames, timers, local operations), acknowledges and publishes nothing of a batch before
//! that batch's commit is durable, and drains the core's transmits into the transport. It holds
//! no protocol logic: the gossip core decides what to send and what to apply.
//!
//! Commits are pipelined (group commit, depth one): while one batch's log segment is being
//! synced, the engine keeps applying what arrives into the next batch, and submits that batch
//! as soon as the commit in flight is done. One loop iteration:
//! 1. takes the commit thread's reports: a durable batch's local deltas are published (never
//!    before they are durable) from the segment the commit thread hands back and sent to the
//!    transport at once, then the batch is installed in the read view, its callers are
//!    answered, its subscribers notified;
//! 2. fires due timers and handles frames, applying the events each one yields at once, so the
//!    state always reflects everything the core counts as delivered. Frames of the anti-entropy
//!    channel may read the state for a transfer, which must only ever carry durable local
//!    writes: they wait (and local operations wait in their queue) until no local write is
//!    pending commit. While none is, what was received is installed in the read view and
//!    notified at once, before its (non-durable) commit (`show_received`);
//! 3. applies the local operations, each with a tag from the core;
//! 4. if no commit is in flight, submits everything applied since the last submission: one log
//!    segment in one transaction on the commit thread, durable if the batch holds a local
//!    write (remote deltas only are committed non-durably and made durable within
//!    [`Limits::replicated_sync`]; see [`crate::committer`]). The batch's changed keys are
//!    rendered for the read view while it is written. Right after a
//!    commit answered callers, it first waits briefly for their next operations ([`Linger`]),
//!    so callers that wait for their answer share one commit;
//! 5. hands every transmit to the transport; a full peer queue marks the peer congested in the
//!    core for a short while (the core then holds and bounds that peer's messages);
//! 6. starts a checkpoint when enough keys changed, enough was logged or enough time passed (see
//!    [`crate::store`]: objects are written by checkpoints, chunk by chunk between commits,
//!    paced over half the period).
//!
//! A commit failure stops the engine (fail-stop): the in-memory state is then ahead of the
//! disk, and serving or shipping it could hand out a sequence number a restart would reuse.
//! No input may cause one: objects are kept under the store's record limit (local writes are
//! refused past `MAX_OBJECT_BYTES`, remote ones past `MAX_STORED_OBJECT_BYTES`; ARCHITECTURE
//! "Store"), so only the disk or the storage engine can stop a node.

use crate::committer::{self, Done, Job};
use crate::delta::{GossipNode, LoggedDelta, MeshDelta};
use crate::error::InvalidInput;
use crate::error::MeshError;
use crate::inspect::{self, Directory, Inspection};
use crate::member::{Member, MemberStatus};
use crate::ops::{self, MAX_OBJECT_BYTES, Op, Output};
use crate::state::{JoinError, State};
use crate::store::{KnownPeer, Segment, SegmentDelta, Store, StoreError, cursor_covered_by};
use crate::subscribe::{Change, ChangeSource, Committed};
use crate::transport::{self, Inbound, SendOutcome, Transport};
use crate::view::{self, View};
use crate::write_stages::{StageCounters, WriteStages, micros};
use crdt_types::{Key, Object, Tag};
use gossip::{Event, MemberInfo};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;
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

/// The default of [`Limits::replicated_sync`]: how long received deltas may stay committed
/// non-durably before a durable commit (a local write's, the final checkpoint's at shutdown
/// or this bound's) covers them.
pub(crate) const DEFAULT_REPLICATED_SYNC: Duration = Duration::from_millis(500);

/// Limits of one engine batch, and checkpoint pacing.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    /// Local operations taken into one batch.
    pub(crate) max_ops: usize,
    /// Inbound frames taken into one batch.
    pub(crate) max_frames: usize,
    /// How long a peer whose transport queue was full stays congested in the core.
    pub(crate) congestion_ms: i64,
    /// A checkpoint starts once this many keys changed since the last one started...
    pub(crate) checkpoint_keys: usize,
    /// ...or once this many deltas and states were logged since then (this bounds the log a
    /// restart replays)...
    pub(crate) checkpoint_log_entries: usize,
    /// ...or this long after the last one started, if any key changed. A checkpoint's chunks
    /// are spread over half the time since the previous one started (at most half of this),
    /// so its writes are paced over the period instead of coming in one burst.
    pub(crate) checkpoint_interval: Duration,
    /// Objects the commit thread writes per checkpoint transaction, between log appends: a
    /// log append that arrives meanwhile waits for the chunk, so this bounds the delay a
    /// checkpoint adds to a commit.
    pub(crate) checkpoint_chunk: usize,
    /// Longest wait, after a commit answered its callers, for them to send their next
    /// operations before the next batch is submitted (see [`Linger`]); never longer than the
    /// last commit took. Zero submits at once.
    pub(crate) max_linger: Duration,
    /// The longest a commit of remote deltas only stays non-durable (see
    /// [`crate::committer`]); zero makes every commit durable.
    pub(crate) replicated_sync: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_ops: 4096,
            max_frames: 256,
            congestion_ms: 50,
            checkpoint_keys: 65_536,
            checkpoint_log_entries: 500_000,
            checkpoint_interval: Duration::from_secs(30),
            checkpoint_chunk: 64,
            max_linger: Duration::from_millis(1),
            replicated_sync: DEFAULT_REPLICATED_SYNC,
        }
    }
}

/// A batch whose log segment is being committed: what to do once it is durable.
struct InFlight {
    replies: Vec<(Reply, Result<Output, MeshError>)>,
    /// Which of the segment's deltas are local ones, to publish once it is durable (ascending).
    local: Vec<usize>,
    notify: Vec<Notice>,
    view: Vec<view::Entry>,
}

/// A change to tell subscribers of once its batch is committed: by the key's slot number (the
/// key is copied into a [`Change`] only if anyone subscribed), or, for an input refused on a
/// key never written, by key.
enum Notice {
    Slot(usize, ChangeSource),
    Key(Change),
}

/// A short wait before submitting the next batch, started when a commit answered callers.
///
/// Callers that wait for their answer before sending their next operation (an edge service's
/// request handlers) would otherwise split into two groups that alternate between the commit
/// in flight and the batch being applied, so every commit carried half of them. Waiting until
/// as many operations arrived as the commit answered (or until the deadline) lets one commit
/// carry them all: half the commits per write on this node and on every replica, where each
/// commit is a redb transaction (and, with local writes, an fsync; BENCHMARKS "mesh-node").
#[derive(Clone, Copy, Debug)]
struct Linger {
    /// Submit at this time at the latest.
    until: Instant,
    /// Submit once this many more local operations were taken...
    want: usize,
    /// ...counting these.
    taken: usize,
    /// Started by a commit reported in this loop iteration: the operations taken in it were
    /// queued before the answers went out, so they do not count.
    fresh: bool,
}

/// Where the answer to a local operation goes.
pub(crate) type Reply = oneshot::Sender<Result<Output, MeshError>>;

/// A local operation waiting in the batch.
type PendingOp = (Key, Op, Reply);

/// The commit thread ended without a report (it panicked): the store is unusable.
fn commit_thread_gone() -> Done {
    Done::Failed(StoreError::Io {
        path: std::path::PathBuf::new(),
        source: std::io::Error::other("the commit thread stopped"),
    })
}

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
    pub(crate) durable_commits: AtomicU64,
    pub(crate) commit_micros: AtomicU64,
    pub(crate) checkpoints: AtomicU64,
    pub(crate) checkpoint_micros: AtomicU64,
    pub(crate) local_ops: AtomicU64,
    pub(crate) remote_deltas: AtomicU64,
    pub(crate) remote_states: AtomicU64,
    pub(crate) apply_errors: AtomicU64,
    pub(crate) oversize_refused: AtomicU64,
    pub(crate) transport_dropped: AtomicU64,
    /// Where the time of the batches holding local writes goes.
    pub(crate) stages: StageCounters,
}

/// What the engine shares with the handles.
pub(crate) struct Shared {
    pub(crate) view: Arc<View>,
    /// Each commit's changes, for subscribers.
    pub(crate) changes: broadcast::Sender<Arc<Committed>>,
    /// How many changes were sent to subscribers: the number of the next one.
    pub(crate) changes_sent: AtomicU64,
    pub(crate) failure: OnceLock<Arc<StoreError>>,
    pub(crate) counters: Counters,
    pub(crate) gossip_stats: std::sync::Mutex<gossip::Stats>,
    /// Tests only: while set, the commit thread holds every log append (a slow disk).
    #[cfg(test)]
    pub(crate) hold_appends: std::sync::atomic::AtomicBool,
}

/// Everything the engine owns.
pub(crate) struct Engine {
    pub(crate) node: GossipNode,
    pub(crate) state: State,
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
    /// Which of `segment`'s deltas are local ones (published once the segment is durable).
    local: Vec<usize>,
    /// The last committed segment, emptied, for the next batch to reuse.
    spare: Segment,
    replies: Vec<(Reply, Result<Output, MeshError>)>,
    notify: Vec<Notice>,
    peers: Vec<KnownPeer>,
    /// Whether the batch in progress applied a local operation (anti-entropy requests wait
    /// until none is pending commit: a state transfer must only carry durable local writes).
    batch_local: bool,
    stats_at: i64,
    /// The commit thread's queue and reports.
    jobs: std_mpsc::Sender<Job>,
    done: Option<mpsc::UnboundedReceiver<Done>>,
    /// The batch being committed.
    in_flight: Option<InFlight>,
    /// When the batch being committed was submitted.
    submitted_at: Instant,
    /// The wait for answered callers before the next submission, if one is running.
    linger: Option<Linger>,
    /// Set at shutdown: submit at once.
    closing: bool,
    /// The buffer a local operation's answer is packed in.
    scratch: Vec<u8>,
    /// Anti-entropy frames waiting for the local writes before them to be durable.
    deferred_sync: Vec<Inbound>,
    /// The persisted change-cursor ceiling, as of the last commit.
    ceiling: u64,
    checkpointing: bool,
    /// When the last checkpoint started (or the engine, before the first).
    checkpoint_at: std::time::Instant,
    /// Deltas and states submitted to the log since the last checkpoint started.
    logged_since_checkpoint: usize,
    /// The stages so far of the batch being committed, if it holds local writes.
    stages: Option<WriteStages>,
    /// Time spent applying local operations since the last submission.
    applying: std::time::Duration,
    /// When the last batch holding local writes was answered, until the next submission.
    answered_at: Option<std::time::Instant>,
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
    ) -> std::io::Result<Self> {
        let ceiling = store.ceiling();
        let (jobs, done) = committer::spawn(
            &me.node_id,
            store,
            shared.clone(),
            limits.checkpoint_chunk,
            limits.replicated_sync,
        )?;
        let engine = Engine {
            node,
            state,
            transport,
            shared,
            limits,
            me,
            members: BTreeMap::new(),
            directory,
            congested: HashMap::new(),
            segment: Segment::default(),
            local: Vec::new(),
            spare: Segment::default(),
            replies: Vec::new(),
            notify: Vec::new(),
            peers: Vec::new(),
            batch_local: false,
            stats_at: 0,
            jobs,
            done: Some(done),
            in_flight: None,
            submitted_at: Instant::now(),
            linger: None,
            closing: false,
            scratch: Vec::new(),
            deferred_sync: Vec::new(),
            ceiling,
            checkpointing: false,
            checkpoint_at: std::time::Instant::now(),
            logged_since_checkpoint: 0,
            stages: None,
            applying: Duration::ZERO,
            answered_at: None,
        };
        engine.publish_members();
        Ok(engine)
    }

    /// Runs until shutdown, until every handle is gone, or until a commit fails.
    pub(crate) async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut inbound: mpsc::Receiver<Inbound>,
    ) {
        let Some(mut done) = self.done.take() else {
            return;
        };
        let mut inbound_open = true;
        // Reused from one iteration to the next (emptied by each), so a batch does not grow
        // them again from nothing.
        let (mut ops, mut frames, mut finished) = (Vec::new(), Vec::new(), Vec::new());
        loop {
            let mut shutdown = None;
            let mut handles_gone = false;
            // While anti-entropy frames wait for the pipeline to drain, local operations wait
            // in the queue.
            let take_commands = self.deferred_sync.is_empty();
            let deadline = self.next_deadline();
            tokio::select! {
                biased;
                d = done.recv() => finished.push(d.unwrap_or_else(commit_thread_gone)),
                command = commands.recv(), if take_commands => match command {
                    Some(c) => self.take(c, &mut ops, &mut shutdown),
                    None => handles_gone = true,
                },
                frame = inbound.recv(), if inbound_open => match frame {
                    Some(f) => frames.push(f),
                    None => inbound_open = false,
                },
                () = tokio::time::sleep_until(deadline) => {}
            }
            while let Ok(d) = done.try_recv() {
                finished.push(d);
            }
            while take_commands
                && shutdown.is_none()
                && !handles_gone
                && ops.len() < self.limits.max_ops
            {
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
            let mut result = Ok(());
            for d in finished.drain(..) {
                result = result.and_then(|()| self.finish(d));
            }
            let result = result.and_then(|()| self.step(&mut frames, &mut ops));
            if let Err(e) = result {
                self.fail(e);
                return;
            }
            if let Some(reply) = shutdown {
                // Commit everything queued (no more lingering), then leave and write the
                // final checkpoint.
                self.closing = true;
                self.linger = None;
                if let Err(e) = self.step(&mut Vec::new(), &mut Vec::new()) {
                    self.fail(e);
                    return;
                }
                while self.in_flight.is_some() {
                    let d = done.recv().await.unwrap_or_else(commit_thread_gone);
                    if let Err(e) = self
                        .finish(d)
                        .and_then(|()| self.step(&mut Vec::new(), &mut Vec::new()))
                    {
                        self.fail(e);
                        return;
                    }
                }
                self.leave();
                if let Err(e) = self.final_checkpoint() {
                    warn!(error = %e, "final checkpoint failed; the next start replays the log");
                }
                drop(self);
                let _ = reply.send(());
                return;
            }
            if handles_gone {
                info!("every handle was dropped: stopping");
                return;
            }
        }
    }

    /// Fail-stop after a store failure: every caller waiting for a commit gets the error.
    fn fail(&mut self, e: StoreError) {
        error!(error = %e, "commit failed: the node stops taking writes and leaves the mesh");
        let e = Arc::new(e);
        let _ = self.shared.failure.set(e.clone());
        let pending = self.in_flight.take().map(|f| f.replies).unwrap_or_default();
        for (reply, _) in pending.into_iter().chain(self.replies.drain(..)) {
            let _ = reply.send(Err(MeshError::Storage(e.clone())));
        }
    }

    /// Sorts one command into the batch (an inspection is answered at once, from the state
    /// between batches: what was committed plus the batch being committed, if any).
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
        let timer = match next {
            Some(t) => Instant::now() + Duration::from_millis(u64::try_from(t - now).unwrap_or(0)),
            None => Instant::now() + Duration::from_secs(3600),
        };
        match self.linger {
            Some(l) if self.in_flight.is_none() => timer.min(l.until),
            _ => timer,
        }
    }

    /// Whether the next submission waits for the callers the last commit answered: it does
    /// until they sent as many operations as were answered, or until the deadline.
    fn lingering(&mut self) -> bool {
        match self.linger {
            Some(l) if l.taken < l.want && Instant::now() < l.until => true,
            _ => {
                self.linger = None;
                false
            }
        }
    }

    /// One batch: inputs, local operations, then (unless a commit is in flight) the
    /// submission of everything applied since the last one, transmits, checkpoint pacing.
    /// `frames` and `ops` are left empty.
    fn step(
        &mut self,
        frames: &mut Vec<Inbound>,
        ops: &mut Vec<PendingOp>,
    ) -> Result<(), StoreError> {
        let now = now_ms();
        // What a finished commit published leaves before this batch's inputs are handled.
        self.flush_transmits(now);
        self.drain_events();
        if self.node.poll_timeout().is_some_and(|t| t <= now) {
            self.node.handle_timeout(now);
            self.drain_events();
        }
        self.retry_congested(now);
        for frame in frames.drain(..) {
            if frame.channel == transport::Channel::Sync {
                self.deferred_sync.push(frame);
                continue;
            }
            self.handle_frame(now, &frame);
        }
        // Anti-entropy may read the state for a transfer: only once every local write in it
        // is durable.
        if self.in_flight.is_none() && !self.batch_local && !self.deferred_sync.is_empty() {
            for frame in std::mem::take(&mut self.deferred_sync) {
                self.handle_frame(now, &frame);
            }
        }
        self.show_received();
        if let Some(l) = &mut self.linger {
            if l.fresh {
                l.fresh = false;
            } else {
                l.taken += ops.len();
            }
        }
        let n_ops = ops.len() as u64;
        if !ops.is_empty() {
            let started = std::time::Instant::now();
            for (key, op, reply) in ops.drain(..) {
                self.run_op(now, key, op, reply);
            }
            self.applying += started.elapsed();
        }
        self.shared
            .counters
            .local_ops
            .fetch_add(n_ops, Ordering::Relaxed);
        if self.in_flight.is_none() && !self.lingering() {
            self.submit();
        }
        self.flush_transmits(now);
        self.checkpoint_step();
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

    fn handle_frame(&mut self, now: i64, frame: &Inbound) {
        self.node.handle_message(
            now,
            frame.from,
            Some(&*frame.node_id),
            &frame.bytes,
            &self.state,
        );
        self.drain_events();
    }

    /// Hands the batch applied since the last submission to the commit thread (nothing is in
    /// flight). A batch with nothing to write is answered at once: every earlier batch is
    /// committed (durably if it held local writes), so its answers show only durable local
    /// writes.
    fn submit(&mut self) {
        self.show_received();
        let needs_commit = !self.segment.is_empty()
            || !self.peers.is_empty()
            || !cursor_covered_by(self.ceiling, self.state.next_cursor());
        self.batch_local = false;
        if needs_commit {
            let answered = self.answered_at.take();
            let applying = std::mem::take(&mut self.applying);
            self.stages = (!self.local.is_empty()).then(|| WriteStages {
                ops: self.replies.len() as u64,
                gather_micros: answered.map_or(0, |at| micros(at.elapsed())),
                apply_micros: micros(applying),
                ..WriteStages::default()
            });
            self.logged_since_checkpoint += self.segment.deltas.len() + self.segment.states.len();
            let job = Job::Append {
                segment: std::mem::replace(&mut self.segment, std::mem::take(&mut self.spare)),
                peers: std::mem::take(&mut self.peers),
                next_cursor: self.state.next_cursor(),
                // A batch with a local write is committed durably before it is answered.
                local: !self.local.is_empty(),
            };
            // A closed queue means the commit thread stopped; its report follows.
            let _ = self.jobs.send(job);
            self.submitted_at = Instant::now();
        }
        // Rendered while the commit thread writes the segment: nothing changes the state in
        // between, and the view is needed only once the commit is done.
        let batch = InFlight {
            replies: std::mem::take(&mut self.replies),
            local: std::mem::take(&mut self.local),
            notify: std::mem::take(&mut self.notify),
            view: self.state.end_batch(),
        };
        if needs_commit {
            self.in_flight = Some(batch);
        } else {
            self.complete(batch, None, now_ms());
        }
    }

    /// Shows what the batch in progress received (installs it in the read view, tells
    /// subscribers) at once, before its commit, while no local write is pending commit in it
    /// or in flight: received deltas are committed non-durably anyway, so a crash loses them
    /// whether they were shown or not (anti-entropy fetches them again), and a replica's lag
    /// does not include its commit, nor the periodic durable one it may wait behind. With a
    /// local write pending, a key it changed must not be shown before it is durable, so the
    /// batch is shown once its commit is, as a whole. Also called before a submission, so a
    /// submitted batch without local writes holds nothing left to show.
    fn show_received(&mut self) {
        if !self.local.is_empty() || self.in_flight.as_ref().is_some_and(|f| !f.local.is_empty()) {
            return;
        }
        self.shared.view.install(self.state.end_batch());
        let notify = std::mem::take(&mut self.notify);
        self.notify_subscribers(notify);
    }

    /// Tells subscribers of the changes in `notify`, in one message (if anyone subscribed).
    fn notify_subscribers(&self, notify: Vec<Notice>) {
        if self.shared.changes.receiver_count() == 0 || notify.is_empty() {
            return;
        }
        let changes: Vec<(Arc<Key>, ChangeSource)> = notify
            .into_iter()
            .map(|notice| match notice {
                Notice::Slot(n, source) => (self.state.slot(n).key.clone(), source),
                Notice::Key(change) => (Arc::new(change.key), change.source),
            })
            .collect();
        let first = self
            .shared
            .changes_sent
            .fetch_add(changes.len() as u64, Ordering::AcqRel);
        let _ = self
            .shared
            .changes
            .send(Arc::new(Committed { first, changes }));
    }

    /// What the commit thread reports.
    fn finish(&mut self, done: Done) -> Result<(), StoreError> {
        match done {
            Done::Appended {
                ceiling,
                segment,
                started,
                ended,
            } => {
                self.ceiling = ceiling;
                if let Some(stages) = &mut self.stages {
                    let submitted = self.submitted_at.into_std();
                    stages.queued_micros = micros(started.saturating_duration_since(submitted));
                    stages.append_micros = micros(ended.saturating_duration_since(started));
                    stages.report_micros = micros(ended.elapsed());
                }
                if let Some(batch) = self.in_flight.take() {
                    let answered = batch.replies.len();
                    self.complete(batch, Some(segment), now_ms());
                    let took = self.submitted_at.elapsed().min(self.limits.max_linger);
                    self.linger =
                        (answered > 0 && !took.is_zero() && !self.closing).then(|| Linger {
                            until: Instant::now() + took,
                            want: answered,
                            taken: 0,
                            fresh: true,
                        });
                }
                Ok(())
            }
            Done::Checkpointed => {
                self.checkpointing = false;
                Ok(())
            }
            Done::Failed(e) => Err(e),
        }
    }

    /// A committed batch: publishes the local deltas of its `segment` (never before they are
    /// durable: a batch holding any is committed durably) and hands them to the transport, then installs the batch in the read view,
    /// answers the callers and notifies subscribers. Publishing first lets the deltas leave
    /// before the callers' tasks are woken (they share the runtime with the transport).
    fn complete(&mut self, batch: InFlight, segment: Option<Segment>, now: i64) {
        let started = std::time::Instant::now();
        if let Some(mut segment) = segment {
            let mut local = batch.local.iter().copied().peekable();
            let mut published = false;
            for (i, delta) in segment.deltas.drain(..).enumerate() {
                if local.next_if_eq(&i).is_none() {
                    continue;
                }
                // Local deltas are logged with their fields (`run_op`).
                let SegmentDelta::Decoded(delta) = delta else {
                    debug_assert!(false, "local delta {i} is in its encoded form");
                    continue;
                };
                let tag = Tag {
                    dot: delta.dot(),
                    stamp: delta.stamp,
                };
                if let Err(e) = self.node.publish(now, delta.key, delta.payload, tag) {
                    error!(error = %e, "the gossip core refused a local delta");
                }
                published = true;
            }
            segment.clear();
            self.spare = segment;
            if published {
                self.flush_transmits(now);
            }
        }
        let published = std::time::Instant::now();
        self.shared.view.install(batch.view);
        for (reply, result) in batch.replies {
            let _ = reply.send(result);
        }
        if let Some(mut stages) = self.stages.take() {
            let answered = std::time::Instant::now();
            stages.publish_micros = micros(published - started);
            stages.answer_micros = micros(answered - published);
            self.shared.counters.stages.add(&stages);
            self.answered_at = Some(answered);
        }
        self.notify_subscribers(batch.notify);
    }

    fn run_op(&mut self, now: i64, key: Key, op: Op, reply: Reply) {
        // The key is looked up once; the calls below take its slot number.
        let found = self.state.find(&key);
        let current = found.map(|n| self.state.slot(n));
        if let Err(e) = op.precheck(current.map(|s| &*s.object), now) {
            self.replies.push((reply, Err(e)));
            return;
        }
        // The cart's packing as the last change left it: an operation on one item patches it.
        let before = found.and_then(|n| self.state.rendered_cart(n)).cloned();
        let (node, scratch, before) = (&mut self.node, &mut self.scratch, before.as_ref());
        let estimate = current
            .map_or(0, |s| s.bytes)
            .saturating_add(op.input_bytes());
        let current = current.map(|s| &*s.object);
        let mut slot = found;
        let applied = if op.grows() && estimate > MEASURE_OP_BYTES {
            // Near the limit: apply to a copy and measure it before keeping it.
            let mut copy = current.map_or_else(|| Object::new(key.kind), Clone::clone);
            let grows = op.grows();
            let next_tag = &mut || node.next_tag(now);
            let mut applied = ops::apply(op, &mut copy, now, next_tag, scratch, before);
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
                slot = Some(self.state.replace(&key, found, copy, bytes));
            }
            applied
        } else {
            let (n, object) = self.state.object_mut(&key, found);
            slot = Some(n);
            let applied = ops::apply(op, object, now, &mut || node.next_tag(now), scratch, before);
            if let Some((_, delta)) = &applied.tagged {
                self.state.add_bytes(n, delta.encoded_len());
            }
            applied
        };
        if let (Some(n), Ok(Output::Cart(packed))) = (slot, &applied.result) {
            // The answer is the cart as this operation left it: the view can share it, and the
            // next change to one of its items patches it.
            self.state
                .set_rendered(n, view::Committed::Cart(packed.clone()));
        }
        if let Some((tag, delta)) = applied.tagged {
            self.batch_local = true;
            self.state.record(slot, tag.dot, tag.stamp);
            let notice = match slot {
                Some(n) => Notice::Slot(n, ChangeSource::Local),
                None => Notice::Key(Change {
                    key: key.clone(),
                    source: ChangeSource::Local,
                }),
            };
            self.notify.push(notice);
            self.local.push(self.segment.deltas.len());
            self.segment.deltas.push(SegmentDelta::Decoded(LoggedDelta {
                origin: tag.dot.replica,
                seq: tag.dot.counter,
                stamp: tag.stamp,
                hops: 0,
                key,
                payload: MeshDelta(delta),
            }));
        }
        self.replies.push((reply, applied.result));
    }

    /// Applies every event the core handed out, in order.
    fn drain_events(&mut self) {
        while let Some(event) = self.node.poll_event() {
            match event {
                Event::Apply(delta, encoded) => {
                    let gossip::Delta {
                        origin,
                        seq,
                        stamp,
                        hops,
                        key,
                        payload,
                    } = delta;
                    // The store logs the delta in the bytes it arrived in, so the payload is
                    // joined itself, not a copy.
                    let (slot, logged) = match self.state.join(&key, payload.0) {
                        Ok(n) => (Some(n), SegmentDelta::Encoded(encoded)),
                        Err(e) => {
                            self.count_refusal(&e);
                            warn!(key = %key, origin = %origin, seq, error = %e, "refused a remote delta");
                            // The store logs what was applied: the dot, not the refused payload
                            // (which may not even fit in a log record).
                            let bottom = LoggedDelta {
                                origin,
                                seq,
                                stamp,
                                hops,
                                key: key.clone(),
                                payload: MeshDelta(Object::new(key.kind).to_delta()),
                            };
                            (self.state.find(&key), SegmentDelta::Decoded(bottom))
                        }
                    };
                    self.state
                        .record(slot, crdt_types::Dot::new(origin, seq), stamp);
                    self.shared
                        .counters
                        .remote_deltas
                        .fetch_add(1, Ordering::Relaxed);
                    let source = ChangeSource::Remote { origin, stamp };
                    self.notify.push(match slot {
                        Some(n) => Notice::Slot(n, source),
                        None => Notice::Key(Change { key, source }),
                    });
                    self.segment.deltas.push(logged);
                }
                Event::ApplyState { key, payload, from } => {
                    let source = ChangeSource::StateTransfer { from };
                    let notice = match self.state.join(&key, payload.0.clone()) {
                        Ok(n) => {
                            self.state.compact(n);
                            self.segment.states.push((key, payload));
                            Notice::Slot(n, source)
                        }
                        Err(e) => {
                            self.count_refusal(&e);
                            warn!(key = %key, from = %from, error = %e, "refused a transferred state");
                            match self.state.find(&key) {
                                Some(n) => Notice::Slot(n, source),
                                None => Notice::Key(Change { key, source }),
                            }
                        }
                    };
                    self.shared
                        .counters
                        .remote_states
                        .fetch_add(1, Ordering::Relaxed);
                    self.notify.push(notice);
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

    /// Starts a checkpoint when enough keys changed, enough was logged or enough time passed
    /// since the last one started, and none is in progress. Only between submissions (nothing
    /// applied since the last one), so the snapshot matches the log up to the last segment
    /// submitted; the commit thread writes it in chunks between appends, spread over half the
    /// time since the last one started (see [`Limits::checkpoint_interval`]).
    fn checkpoint_step(&mut self) {
        if self.checkpointing || !self.segment.is_empty() || !self.replies.is_empty() {
            return;
        }
        let unsaved = self.state.unsaved();
        let since = self.checkpoint_at.elapsed();
        let due = unsaved >= self.limits.checkpoint_keys
            || (unsaved > 0
                && (self.logged_since_checkpoint >= self.limits.checkpoint_log_entries
                    || since >= self.limits.checkpoint_interval));
        if !due {
            return;
        }
        self.checkpointing = true;
        self.checkpoint_at = std::time::Instant::now();
        self.logged_since_checkpoint = 0;
        let _ = self.jobs.send(Job::Checkpoint {
            snapshot: self.state.take_snapshot(),
            spread: since.min(self.limits.checkpoint_interval) / 2,
        });
    }

    /// Finishes the checkpoint in progress and checkpoints every key changed since, durably,
    /// so that the next start replays nothing; stops the commit thread.
    fn final_checkpoint(&mut self) -> Result<(), StoreError> {
        let (reply, answer) = std_mpsc::channel();
        let snapshot = self.state.take_snapshot();
        if self.jobs.send(Job::Close(snapshot, reply)).is_err() {
            return Ok(());
        }
        answer.recv().unwrap_or(Ok(()))
    }

    /// Leaves the cluster and hands the goodbye to the transport.
    fn leave(&mut self) {
        let now = now_ms();
        self.node.leave(now);
        self.flush_transmits(now);
        info!("left the mesh");
    }
}

#[cfg(test)]
mod tests {
    use crate::Mesh;
    use crate::certs::TlsIdentity;
    use crate::certs::write_cluster_certs;
    use crate::config::loopback_gossip_config;
    use std::path::Path;
    use std::sync::atomic::Ordering;
    use std::time::{Duration, Instant};

    async fn node(dir: &Path, id: &str, seed: Option<&Mesh>) -> Mesh {
        let certs = dir.join("certs");
        let identity = TlsIdentity::load(
            &certs.join(format!("{id}.pem")),
            &certs.join(format!("{id}.key")),
            &certs.join("ca.pem"),
        )
        .expect("identity");
        let builder = Mesh::builder()
            .node_id(id)
            .region(id)
            .gossip_addr(([127, 0, 0, 1], 0).into())
            .data_dir(dir.join(id))
            .tls(identity)
            .gossip_config(loopback_gossip_config(2));
        let builder = match seed {
            Some(s) => builder.seeds([s.local_addr()]),
            None => builder,
        };
        builder.start().await.expect("start")
    }

    /// The skus of `cart` on `m`.
    fn skus(m: &Mesh, cart: &str) -> Vec<String> {
        let view = m.cart(cart).expect("read");
        view.items.into_iter().map(|i| i.sku).collect()
    }

    /// Waits (up to 10 s) until `cart` on `m` holds `sku`.
    async fn shows(m: &Mesh, cart: &str, sku: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !skus(m, cart).iter().any(|s| s == sku) {
            assert!(Instant::now() < deadline, "{cart}/{sku} never showed");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn received_deltas_show_before_their_commit_and_a_local_write_only_once_durable() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_cluster_certs(&dir.path().join("certs"), &["a", "b"]).expect("certs");
        let a = node(dir.path(), "a", None).await;
        let b = node(dir.path(), "b", Some(&a)).await;
        a.cart_add("warm", "up", 1).await.expect("add on a");
        shows(&b, "warm", "up").await;

        // b's disk stalls: nothing it receives or writes is committed meanwhile.
        let shared = &b.inner.shared;
        shared.hold_appends.store(true, Ordering::SeqCst);
        let commits = shared.counters.commits.load(Ordering::SeqCst);
        let mut changes = b.subscribe(crate::ChangeFilter::all().with_prefix("c"));
        a.cart_add("c", "apple", 1).await.expect("add on a");
        // A received delta is read and notified without waiting for b's commit.
        shows(&b, "c", "apple").await;
        let change = tokio::time::timeout(Duration::from_secs(10), changes.recv())
            .await
            .expect("notified in time")
            .expect("a change");
        assert_eq!(change.key.id, "c");
        assert_eq!(shared.counters.commits.load(Ordering::SeqCst), commits);

        // A local write is neither answered nor shown before it is durable, and what b
        // receives after it waits with it (it may change the same keys).
        let writer = b.clone();
        let write = tokio::spawn(async move { writer.cart_add("c", "pear", 1).await });
        a.cart_add("d", "plum", 1).await.expect("add on a");
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(
            !write.is_finished(),
            "a write was answered before its commit"
        );
        assert_eq!(skus(&b, "c"), ["apple"]);
        assert!(skus(&b, "d").is_empty(), "d showed before the local write");

        shared.hold_appends.store(false, Ordering::SeqCst);
        let cart = write.await.expect("join").expect("add on b");
        assert_eq!(cart.items().count(), 2);
        shows(&b, "d", "plum").await;
        assert_eq!(skus(&b, "c"), ["apple", "pear"]);
        assert!(shared.counters.commits.load(Ordering::SeqCst) > commits);
        b.shutdown().await;
        a.shutdown().await;
    }
}
