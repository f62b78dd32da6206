//! The commit thread: owns the [`Store`] and writes what the engine hands it, in order, so the
//! engine applies the next batch while the previous one is being made durable (a pipeline of
//! depth one: the engine submits a batch only once the previous commit is done, so each commit
//! carries everything applied while the previous one synced).
//!
//! Jobs run in submission order: log appends (one transaction each; answered with
//! [`Done::Appended`]), checkpoints (written chunk by chunk between appends, answered with
//! [`Done::Checkpointed`]) and the final checkpoint at shutdown. A checkpoint's chunks are
//! spread evenly over its `spread` (a chunk is written when the schedule says it is due and no
//! job is waiting), so an append waits for at most one small chunk, and seldom. A checkpoint's snapshot is
//! taken by the engine between two submissions, so it matches every segment appended before its
//! job: the thread records the last segment when the job arrives, then puts the snapshot in the
//! table's order on a thread of its own (tens of milliseconds for tens of thousands of keys,
//! which appends would otherwise wait for) and starts writing once it is sorted. Once a checkpoint is
//! complete, the log segments it covers beyond the log's bounds are trimmed in small steps, one
//! after each append. The first error is
//! reported as [`Done::Failed`] and stops the thread (the engine then stops: fail-stop).
//!
//! # Which commits are durable
//! An append that holds a local write (or raises the change-cursor ceiling) is committed
//! durably (`Durability::Immediate`, one fsync): its callers are answered only then. An append
//! of remote deltas and states only is committed with `Durability::None` and answered at
//! once: those deltas are durable at their origins, and a crash only makes this node fetch
//! them again (store docs, "Durability invariants"). So a replica's commit, which is what
//! its subscribers and read view see, no longer waits for an fsync. Every durable commit makes
//! the commits before it durable too, and `sync_every` bounds how long a commit stays
//! non-durable: the first append after that is durable, and with no append the thread commits
//! an empty durable transaction when it is due. This also bounds the pages redb keeps
//! unreclaimed while commits are not durable. A `sync_every` of zero makes every append
//! durable (the behaviour before replica commits became non-durable).

use crate::engine::Shared;
use crate::state::Snapshot;
use crate::store::{CheckpointMark, KnownPeer, Segment, Store, StoreError};
use crate::write_stages::micros;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc as tmpsc;

/// Log segments removed per trimming step, one step after each append (an append adds one
/// segment, or a few for a large batch). A step of 16 took 2 to 4.6 ms under load.
const TRIM_STEP: usize = 4;

/// How often the thread looks whether a checkpoint's snapshot is sorted, between jobs.
const SORT_POLL: Duration = Duration::from_millis(1);

/// What the engine asks of the commit thread.
pub(crate) enum Job {
    /// Append one segment (and remember `peers`, raise the cursor ceiling if needed); durably
    /// if it holds a `local` write.
    Append {
        segment: Segment,
        peers: Vec<KnownPeer>,
        next_cursor: u64,
        local: bool,
    },
    /// Start a checkpoint of these objects, written in chunks between appends, evenly over
    /// `spread` (the last chunk is due when it ends).
    Checkpoint {
        /// The objects and the context they were taken at.
        snapshot: Snapshot,
        /// How long the checkpoint may take.
        spread: Duration,
    },
    /// Finish the checkpoint in progress, write `Snapshot` durably as a final checkpoint, answer
    /// and stop.
    Close(Snapshot, mpsc::Sender<Result<(), StoreError>>),
}

/// What the commit thread reports back.
#[derive(Debug)]
pub(crate) enum Done {
    /// One [`Job::Append`] is committed (durably if it held a local write); the persisted
    /// change-cursor ceiling is now `ceiling`.
    /// The segment comes back: the engine publishes its local deltas from it (no copy of them
    /// waits for the commit) and reuses its allocations. `started` and `ended` bound the
    /// append on this thread (for [`crate::WriteStages`]).
    Appended {
        ceiling: u64,
        segment: Segment,
        started: Instant,
        ended: Instant,
    },
    /// The checkpoint in progress is complete.
    Checkpointed,
    /// A write failed; the thread stopped.
    Failed(StoreError),
}

/// The reply of a [`Job::Close`] and what to answer.
type Closed = (mpsc::Sender<Result<(), StoreError>>, Result<(), StoreError>);

/// A checkpoint being written, chunk by chunk.
struct Checkpoint {
    snapshot: Snapshot,
    /// The last log segment the snapshot matches.
    upto: u64,
    /// Objects written so far.
    written: usize,
    /// When it started.
    started: Instant,
    /// How long it may take: object `i` is due at `started + spread * i / len`.
    spread: Duration,
}

/// A checkpoint whose snapshot is being put in table order on its own thread.
struct Sorting {
    sorted: std::thread::JoinHandle<Snapshot>,
    /// The last log segment the snapshot matches (recorded when its job arrived).
    upto: u64,
    spread: Duration,
}

impl Checkpoint {
    /// How long until the next unwritten object is due (zero when it is due now).
    fn next_due_in(&self) -> Duration {
        let len = self.snapshot.objects.len().max(1);
        let at = self.spread.mul_f64(self.written as f64 / len as f64);
        at.saturating_sub(self.started.elapsed())
    }
}

/// Starts the commit thread over `store`.
pub(crate) fn spawn(
    name: &str,
    store: Store,
    shared: Arc<Shared>,
    chunk: usize,
    sync_every: Duration,
) -> std::io::Result<(mpsc::Sender<Job>, tmpsc::UnboundedReceiver<Done>)> {
    let (jobs, job_rx) = mpsc::channel();
    let (done_tx, done) = tmpsc::unbounded_channel();
    let span = tracing::Span::current();
    std::thread::Builder::new()
        .name(format!("store-{name}"))
        .spawn(move || {
            let _entered = span.enter();
            let mut committer = Committer {
                store,
                shared,
                chunk: chunk.max(1),
                sync_every,
                checkpoint: None,
                sorting: None,
                done: done_tx,
            };
            match committer.run(&job_rx) {
                Ok(None) => {}
                Ok(Some((reply, result))) => {
                    // Close the database before answering: a restart may follow at once.
                    drop(committer);
                    let _ = reply.send(result);
                }
                Err(e) => {
                    tracing::error!(error = %e, "the store failed: the commit thread stops");
                    let _ = committer.done.send(Done::Failed(e));
                }
            }
        })?;
    Ok((jobs, done))
}

struct Committer {
    store: Store,
    shared: Arc<Shared>,
    chunk: usize,
    /// The longest a commit stays non-durable (zero: every append is durable).
    sync_every: Duration,
    checkpoint: Option<Checkpoint>,
    /// The next checkpoint, while its snapshot is sorted (never together with `checkpoint`).
    sorting: Option<Sorting>,
    done: tmpsc::UnboundedSender<Done>,
}

impl Committer {
    /// Runs jobs until the queue closes (`None`) or a [`Job::Close`] (its reply and result).
    fn run(&mut self, jobs: &mpsc::Receiver<Job>) -> Result<Option<Closed>, StoreError> {
        loop {
            self.sorted(false)?;
            // A waiting job first; otherwise wait for one until the next timed work is due:
            // the sort's poll, the next checkpoint chunk, the periodic durable commit.
            let timed = [
                self.sorting.as_ref().map(|_| SORT_POLL),
                self.checkpoint.as_ref().map(Checkpoint::next_due_in),
                self.sync_due_in(),
            ]
            .into_iter()
            .flatten()
            .min();
            let job = match jobs.try_recv() {
                Ok(job) => Some(job),
                Err(mpsc::TryRecvError::Disconnected) => return Ok(None),
                Err(mpsc::TryRecvError::Empty) => match timed {
                    Some(wait) if wait.is_zero() => None,
                    Some(wait) => match jobs.recv_timeout(wait) {
                        Ok(job) => Some(job),
                        Err(mpsc::RecvTimeoutError::Timeout) => None,
                        Err(mpsc::RecvTimeoutError::Disconnected) => return Ok(None),
                    },
                    None => match jobs.recv() {
                        Ok(job) => Some(job),
                        Err(_) => return Ok(None),
                    },
                },
            };
            match job {
                None => {
                    if self.sync_due_in().is_some_and(|d| d.is_zero()) {
                        self.store.sync()?;
                        self.shared
                            .counters
                            .durable_commits
                            .fetch_add(1, Ordering::Relaxed);
                    }
                    if self
                        .checkpoint
                        .as_ref()
                        .is_some_and(|cp| cp.next_due_in().is_zero())
                    {
                        self.checkpoint_chunk(false)?;
                    }
                }
                Some(Job::Append {
                    segment,
                    peers,
                    next_cursor,
                    local,
                }) => {
                    #[cfg(test)]
                    while self.shared.hold_appends.load(Ordering::SeqCst) {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    let started = Instant::now();
                    let durable = local
                        || self.sync_every.is_zero()
                        || self.sync_due_in().is_some_and(|d| d.is_zero());
                    let durable = self.store.append(&segment, &peers, next_cursor, durable)?;
                    let c = &self.shared.counters;
                    c.commits.fetch_add(1, Ordering::Relaxed);
                    if durable {
                        c.durable_commits.fetch_add(1, Ordering::Relaxed);
                    }
                    let ended = Instant::now();
                    c.commit_micros
                        .fetch_add(micros(ended - started), Ordering::Relaxed);
                    let _ = self.done.send(Done::Appended {
                        ceiling: self.store.ceiling(),
                        segment,
                        started,
                        ended,
                    });
                    // One trimming step per append: the log shrinks faster than it grows,
                    // and the work is spread like the appends.
                    if self.store.trimmable() {
                        self.store.trim(TRIM_STEP, false)?;
                    }
                }
                Some(Job::Checkpoint {
                    mut snapshot,
                    spread,
                }) => {
                    // The engine starts one only after the previous one was reported done.
                    self.sorted(true)?;
                    while self.checkpoint.is_some() {
                        self.checkpoint_chunk(false)?;
                    }
                    let upto = self.store.last_segment();
                    let sorted = std::thread::Builder::new()
                        .name("checkpoint-sort".into())
                        .spawn(move || {
                            snapshot.sort_in_table_order();
                            snapshot
                        })
                        .map_err(|source| StoreError::Io {
                            path: self.store.path().to_owned(),
                            source,
                        })?;
                    self.sorting = Some(Sorting {
                        sorted,
                        upto,
                        spread,
                    });
                }
                Some(Job::Close(snapshot, reply)) => {
                    let result = self.close(snapshot);
                    return Ok(Some((reply, result)));
                }
            }
        }
    }

    /// How long until the periodic durable commit is due (zero: due now), or `None` while
    /// every commit is durable or when every append is (a `sync_every` of zero).
    fn sync_due_in(&self) -> Option<Duration> {
        if self.sync_every.is_zero() {
            // Every append is durable; checkpoint chunks become durable with the next one.
            return None;
        }
        let since = self.store.unsynced_since()?;
        Some(self.sync_every.saturating_sub(since.elapsed()))
    }

    /// Starts writing the checkpoint whose snapshot was being sorted, once the sort is done
    /// (waiting for it with `wait`).
    fn sorted(&mut self, wait: bool) -> Result<(), StoreError> {
        if !self
            .sorting
            .as_ref()
            .is_some_and(|s| wait || s.sorted.is_finished())
        {
            return Ok(());
        }
        let Some(Sorting {
            sorted,
            upto,
            spread,
        }) = self.sorting.take()
        else {
            return Ok(());
        };
        let snapshot = sorted.join().map_err(|_| StoreError::Io {
            path: self.store.path().to_owned(),
            source: std::io::Error::other("the checkpoint's sort thread panicked"),
        })?;
        tracing::info!(
            objects = snapshot.objects.len(),
            spread_ms = spread.as_millis() as u64,
            "checkpoint started"
        );
        self.checkpoint = Some(Checkpoint {
            snapshot,
            upto,
            written: 0,
            started: Instant::now(),
            spread,
        });
        Ok(())
    }

    /// Writes the next chunk of the checkpoint in progress (all of it with `whole`).
    fn checkpoint_chunk(&mut self, whole: bool) -> Result<(), StoreError> {
        let Some(cp) = &mut self.checkpoint else {
            return Ok(());
        };
        let to = if whole {
            cp.snapshot.objects.len()
        } else {
            cp.written + self.chunk
        };
        let writes = cp.snapshot.writes(cp.written, to);
        let last = to >= cp.snapshot.objects.len();
        let mark = last.then_some(CheckpointMark {
            applied: &cp.snapshot.applied,
            last_stamp: cp.snapshot.last_stamp,
            upto_segment: cp.upto,
        });
        let started = Instant::now();
        self.store.checkpoint(&writes, mark, false)?;
        cp.written = to;
        let c = &self.shared.counters;
        c.checkpoint_micros.fetch_add(
            u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        if last {
            tracing::info!(
                objects = cp.snapshot.objects.len(),
                took_ms = cp.started.elapsed().as_millis() as u64,
                "checkpoint done"
            );
            self.checkpoint = None;
            c.checkpoints.fetch_add(1, Ordering::Relaxed);
            let _ = self.done.send(Done::Checkpointed);
        }
        Ok(())
    }

    /// Finishes the checkpoint in progress and checkpoints `snapshot` durably, so that the next
    /// start replays nothing.
    fn close(&mut self, mut snapshot: Snapshot) -> Result<(), StoreError> {
        self.sorted(true)?;
        self.checkpoint_chunk(true)?;
        snapshot.sort_in_table_order();
        let writes = snapshot.writes(0, snapshot.objects.len());
        let mark = CheckpointMark {
            applied: &snapshot.applied,
            last_stamp: snapshot.last_stamp,
            upto_segment: self.store.last_segment(),
        };
        self.store.checkpoint(&writes, Some(mark), true)?;
        self.store.trim(usize::MAX, true).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crdt_types::{Cart, CausalContext, Key, Kind, Object};

    fn checkpoint(len: usize, spread: Duration, written: usize) -> Checkpoint {
        let objects = (0..len)
            .map(|i| {
                (
                    Arc::new(Key::new(Kind::Cart, format!("c{i}"))),
                    Arc::new(Object::Cart(Cart::default())),
                    1,
                )
            })
            .collect();
        Checkpoint {
            snapshot: Snapshot {
                objects,
                applied: CausalContext::default(),
                last_stamp: None,
            },
            upto: 0,
            written,
            started: Instant::now(),
            spread,
        }
    }

    #[test]
    fn a_checkpoints_objects_fall_due_evenly_over_its_spread() {
        let spread = Duration::from_secs(100);
        // The first chunk is due at once, the object half-way through at half the spread.
        assert_eq!(checkpoint(1000, spread, 0).next_due_in(), Duration::ZERO);
        let half = checkpoint(1000, spread, 500).next_due_in();
        assert!(
            half > Duration::from_secs(49) && half <= Duration::from_secs(50),
            "{half:?}"
        );
        let last = checkpoint(1000, spread, 999).next_due_in();
        assert!(last > Duration::from_secs(98) && last <= spread, "{last:?}");
        // No spread: everything is due now.
        assert_eq!(
            checkpoint(1000, Duration::ZERO, 500).next_due_in(),
            Duration::ZERO
        );
    }
}
