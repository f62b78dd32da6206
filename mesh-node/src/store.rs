//! The node's durable store: one redb database in the data directory holding a write-ahead log
//! of everything the node applied, checkpoints of every key's CRDT state, the node's identity
//! and the peers it knew. It persists what the engine hands it and must not decide anything
//! about replication or merging.
//!
//! Every record goes through `crdt_types::wire`, the one codec of statemesh, and everything read
//! back is decoded with errors: a record that does not decode makes the start fail with
//! [`StoreError::Corrupt`], never a panic and never a silent wipe.
//!
//! # Layout (all values wire-encoded)
//! - `meta`: store format version, node id, replica id, and as of the last checkpoint the
//!   applied causal context, the highest HLC stamp and the last log segment it covers; the
//!   change-cursor ceiling;
//! - `objects`: wire-encoded [`Key`] to the key's [`Object`] and its change cursor, as of a
//!   checkpoint;
//! - `log`: one [`Segment`] per commit: the deltas applied (local ones as their fields,
//!   received ones in the gossip encoding they arrived in, `gossip::messages::EncodedDelta`,
//!   not encoded again), the states joined from state transfers and the delivered vectors
//!   adopted;
//! - `members`: peers seen in the membership, to rejoin through after a restart.
//!
//! # Write path
//! A commit appends one segment (sequential). A segment holding a local write, or raising the
//! change-cursor ceiling, is committed with `Durability::Immediate` (one fsync): this is what
//! makes a batch of writes durable and acknowledged. A segment of remote deltas and states only
//! may be committed with `Durability::None` (the committer decides: see
//! [`crate::committer`]); it becomes durable with the next durable commit, since redb's commits
//! are ordered and a durable one persists every commit before it. Objects are written by
//! *checkpoints*, in chunks paced over time by the commit thread, with `Durability::None` too:
//! a key changed a hundred times between two checkpoints is written once, and no commit
//! rewrites random B-tree pages. A checkpoint covers the log up to the segment that was last
//! when it started; once its final chunk is written, the segments it covers may be trimmed
//! (the newest are kept, up to the gossip log's bounds, so a restarted node can still repair
//! peers from its log).
//!
//! # Durability invariants
//! - A local write is acknowledged only after a durable commit that contains it.
//! - A crash rolls the database back to a commit point of redb's (the last durable commit, or
//!   a later non-durable one), *as a whole*: objects, checkpoint mark, applied context, log
//!   and members of one commit together. The node restarts consistent and catches up on the
//!   lost remote deltas from its peers (anti-entropy: from their logs, or by state transfer
//!   if they trimmed them).
//! - The node's own dot counter never regresses: its own deltas are only in durable commits,
//!   and a durable commit also makes every received delta before it durable, so a local
//!   write made on top of received state persists that state with it.
//! - The change-cursor ceiling is raised only in durable commits, so no cursor is reused.
//! - Pages that non-durable commits free are reclaimed only once a durable commit follows
//!   (redb cannot free pages the last durable commit uses); the committer's periodic durable
//!   commit bounds how far the file grows meanwhile.
//!
//! # Recovery
//! Start-up reads the checkpointed objects and context, then hands the segments after the
//! checkpoint to the engine, which joins them again. Joins are idempotent, so a segment whose
//! effects a (partial, later) checkpoint already holds is harmless to replay.
//!
//! Change cursors must never be reused across a crash (a peer in the middle of a state transfer
//! holds one), yet the engine hands them out before the commit that makes them durable. So the
//! store persists a *ceiling*: cursors are only handed out below it, a commit raises it well
//! ahead of use, and a restart resumes at the ceiling.

use crate::delta::{LoggedDelta, MeshDelta};
use crdt_types::wire::{self, WireError};
use crdt_types::{CausalContext, Key, Object, ReplicaId, Stamp, VersionVector};
use gossip::messages::EncodedDelta;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// The store layout this build reads and writes. Version 2 logs each delta as a
/// [`SegmentDelta`] (its fields, or a received delta's gossip encoding, behind a variant tag);
/// a version 1 directory (the fields alone) is upgraded in place at start-up, and any other
/// version is refused.
pub const STORE_FORMAT_VERSION: u32 = 2;

/// The database file inside the data directory.
pub const DB_FILE: &str = "statemesh.redb";

/// How far a commit raises the change-cursor ceiling ahead of the cursors in use.
const CURSOR_LEASE: u64 = 1 << 20;

/// Memory redb may use for its page cache.
const CACHE_BYTES: usize = 64 << 20;

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const OBJECTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("objects");
const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
const MEMBERS: TableDefinition<&str, &[u8]> = TableDefinition::new("members");

const META_FORMAT: &str = "format";
const META_NODE_ID: &str = "node_id";
const META_REPLICA: &str = "replica";
const META_APPLIED: &str = "applied";
const META_LAST_STAMP: &str = "last_stamp";
const META_CHECKPOINT: &str = "checkpoint_segment";
const META_CURSOR_CEILING: &str = "cursor_ceiling";

/// Why the store could not be opened, read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The data directory or database file could not be created or opened.
    #[error("{path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Another process (or another node in this process) has the database open.
    #[error("{path} is already in use by another node")]
    InUse {
        /// The database file.
        path: PathBuf,
    },
    /// The database file is damaged or is not a statemesh store.
    #[error("{path} is corrupt or not a statemesh store: {detail}")]
    Corrupt {
        /// The database file.
        path: PathBuf,
        /// What was wrong.
        detail: String,
    },
    /// The data directory belongs to another node.
    #[error("{path} belongs to node {found:?}, not to {expected:?}: refusing to start on it")]
    ForeignNode {
        /// The database file.
        path: PathBuf,
        /// The node id recorded in the store.
        found: String,
        /// The node id this node was started with.
        expected: String,
    },
    /// The data directory was written by a build with another store layout.
    #[error(
        "{path} has store format version {found}; this build reads version {STORE_FORMAT_VERSION}"
    )]
    UnknownFormat {
        /// The database file.
        path: PathBuf,
        /// The version recorded in the store.
        found: u32,
    },
    /// The storage engine failed while reading or committing.
    #[error("storage engine: {0}")]
    Engine(#[from] redb::Error),
    /// A record could not be encoded (for instance an object over the codec's size limit).
    #[error("cannot encode a record: {0}")]
    Encode(WireError),
}

fn engine_err(e: impl Into<redb::Error>) -> StoreError {
    StoreError::Engine(e.into())
}

/// A peer seen in the membership, remembered so a restarted node can rejoin through it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnownPeer {
    /// Its node id.
    pub node_id: String,
    /// Its region.
    pub region: String,
    /// Its gossip address.
    pub addr: SocketAddr,
    /// The replica id it last had.
    pub replica: ReplicaId,
}

/// One commit's worth of log: everything a batch applied, in a form that can be joined again.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Segment {
    /// Deltas applied, local and remote, each with its dot and stamp.
    pub deltas: Vec<SegmentDelta>,
    /// Key states joined from state transfers.
    pub states: Vec<(Key, MeshDelta)>,
    /// Delivered vectors adopted at the end of state transfers.
    pub adopted: Vec<VersionVector>,
}

impl Segment {
    /// Whether the segment records nothing.
    pub fn is_empty(&self) -> bool {
        self.deltas.is_empty() && self.states.is_empty() && self.adopted.is_empty()
    }

    /// Empties the segment, keeping its allocations for the next batch.
    pub fn clear(&mut self) {
        self.deltas.clear();
        self.states.clear();
        self.adopted.clear();
    }
}

/// A log segment as store format 1 wrote it (its deltas as their fields, no variant tag):
/// read only to upgrade such a data directory ([`Store::upgrade`]).
#[derive(Deserialize)]
struct SegmentV1 {
    deltas: Vec<LoggedDelta>,
    states: Vec<(Key, MeshDelta)>,
    adopted: Vec<VersionVector>,
}

/// One delta of a [`Segment`], logged in the form it is in: a local delta as its fields,
/// a received one in the gossip encoding it arrived in (which gossip hands over with the
/// delta), copied rather than encoded again by the commit thread. Read back, both are
/// decoded to [`SegmentDelta::Decoded`] (see [`Store::open`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum SegmentDelta {
    /// A delta with its fields (a local one, which the engine publishes once it is durable;
    /// one read back from the log).
    Decoded(LoggedDelta),
    /// A received delta as it arrived (its hop count as received).
    Encoded(EncodedDelta),
}

impl SegmentDelta {
    /// The delta with its fields: decoded, with errors, if it is in its encoded form.
    pub fn decoded(self) -> Result<LoggedDelta, gossip::messages::DecodeError> {
        match self {
            SegmentDelta::Decoded(delta) => Ok(delta),
            SegmentDelta::Encoded(encoded) => encoded.decode(),
        }
    }
}

/// How an object is stored: its state and the change cursor of its last change.
#[derive(Serialize)]
struct StoredObjectRef<'a> {
    change: u64,
    object: &'a Object,
}

#[derive(Deserialize)]
struct StoredObject {
    change: u64,
    object: Object,
}

/// Everything a start-up reads back from the data directory.
#[derive(Debug)]
pub struct Loaded {
    /// The replica id of this data directory.
    pub replica: ReplicaId,
    /// Whether the data directory was created by this start.
    pub created: bool,
    /// Every key's checkpointed state and change cursor.
    pub objects: HashMap<Key, (Object, u64)>,
    /// The applied context as of the checkpoint.
    pub applied: CausalContext,
    /// The highest HLC stamp issued or applied, as of the checkpoint.
    pub last_stamp: Option<Stamp>,
    /// The first change cursor this life may hand out.
    pub next_cursor: u64,
    /// The segments written after the checkpoint, oldest first: to be joined again.
    pub replay: Vec<Segment>,
    /// Every logged delta (checkpointed or not), oldest first, for the gossip core's log.
    pub log: Vec<LoggedDelta>,
    /// The peers known when the node stopped.
    pub peers: Vec<KnownPeer>,
}

/// Bounds of the persisted delta log (the gossip log's bounds, so a restart can restore it).
#[derive(Clone, Copy, Debug)]
pub struct LogLimits {
    /// At most this many deltas.
    pub max_entries: usize,
    /// At most this many encoded bytes of segments.
    pub max_bytes: usize,
}

/// One key written by a checkpoint.
#[derive(Debug)]
pub struct ObjectWrite<'a> {
    /// The key.
    pub key: &'a Key,
    /// Its state.
    pub object: &'a Object,
    /// Its change cursor.
    pub change: u64,
}

/// What the last chunk of a checkpoint records: the state of the replica the checkpoint's
/// objects were taken at.
#[derive(Debug)]
pub struct CheckpointMark<'a> {
    /// The applied context then.
    pub applied: &'a CausalContext,
    /// The highest stamp then.
    pub last_stamp: Option<Stamp>,
    /// The last segment committed then: the checkpoint covers it and every earlier one.
    pub upto_segment: u64,
}

/// The open store. One per data directory; redb's file lock enforces it.
pub struct Store {
    db: Database,
    path: PathBuf,
    ceiling: u64,
    limits: LogLimits,
    /// Per persisted segment, oldest first: (segment number, deltas, bytes).
    segments: VecDeque<(u64, usize, usize)>,
    log_entries: usize,
    log_bytes: usize,
    next_segment: u64,
    checkpointed: u64,
    /// When the oldest commit not yet made durable was made (`None`: every commit is durable).
    unsynced_since: Option<std::time::Instant>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .field("ceiling", &self.ceiling)
            .field("next_segment", &self.next_segment)
            .field("checkpointed", &self.checkpointed)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (or creates) the store in `dir` for node `node_id` and reads everything back.
    ///
    /// A fresh directory gets a new random replica id. A directory of another node, with an
    /// unknown format version, or whose records do not decode is an error; nothing is ever
    /// deleted to make a start succeed.
    pub fn open(
        dir: &Path,
        node_id: &str,
        limits: LogLimits,
    ) -> Result<(Store, Loaded), StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
            path: dir.to_owned(),
            source,
        })?;
        let path = dir.join(DB_FILE);
        // redb may panic on some damaged pages in debug builds; a damaged file must be a
        // start-up error, not a crash.
        let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            Store::open_file(&path, node_id, limits)
        }));
        match opened {
            Ok(result) => result,
            Err(panic) => {
                let detail = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_else(|| "the storage engine panicked".to_owned());
                Err(StoreError::Corrupt { path, detail })
            }
        }
    }

    fn open_file(
        path: &Path,
        node_id: &str,
        limits: LogLimits,
    ) -> Result<(Store, Loaded), StoreError> {
        let db = redb::Builder::new()
            .set_cache_size(CACHE_BYTES)
            .set_check_integrity_on_open(true)
            .create(path)
            .map_err(|e| match e {
                redb::DatabaseError::DatabaseAlreadyOpen => StoreError::InUse {
                    path: path.to_owned(),
                },
                redb::DatabaseError::Storage(redb::StorageError::Io(source))
                    if source.kind() != std::io::ErrorKind::InvalidData =>
                {
                    StoreError::Io {
                        path: path.to_owned(),
                        source,
                    }
                }
                other => StoreError::Corrupt {
                    path: path.to_owned(),
                    detail: other.to_string(),
                },
            })?;
        let mut store = Store {
            db,
            path: path.to_owned(),
            ceiling: 0,
            limits,
            segments: VecDeque::new(),
            log_entries: 0,
            log_bytes: 0,
            next_segment: 1,
            checkpointed: 0,
            unsynced_since: None,
        };
        let created = store.is_empty()?;
        if created {
            store.initialise(node_id)?;
        } else {
            store.upgrade()?;
        }
        let mut loaded = store.load(node_id)?;
        loaded.created = created;
        // This life hands out cursors from the old ceiling on: above anything a previous life
        // may have handed out before crashing.
        store.raise_ceiling(loaded.next_cursor)?;
        Ok((store, loaded))
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The number of the last segment committed (0 before the first).
    pub fn last_segment(&self) -> u64 {
        self.next_segment - 1
    }

    fn corrupt(&self, detail: String) -> StoreError {
        StoreError::Corrupt {
            path: self.path.clone(),
            detail,
        }
    }

    fn is_empty(&self) -> Result<bool, StoreError> {
        let txn = self.db.begin_read().map_err(engine_err)?;
        let mut tables = txn.list_tables().map_err(engine_err)?;
        Ok(tables.next().is_none())
    }

    fn initialise(&self, node_id: &str) -> Result<(), StoreError> {
        let replica = fresh_replica().map_err(|e| StoreError::Io {
            path: self.path.clone(),
            source: std::io::Error::other(format!("no randomness for a replica id: {e}")),
        })?;
        let txn = self.write(true)?;
        {
            let mut meta = txn.open_table(META).map_err(engine_err)?;
            put(&mut meta, META_FORMAT, &STORE_FORMAT_VERSION)?;
            put(&mut meta, META_NODE_ID, node_id)?;
            put(&mut meta, META_REPLICA, &replica)?;
            put(&mut meta, META_APPLIED, &CausalContext::new())?;
            put(&mut meta, META_CHECKPOINT, &0u64)?;
            put(&mut meta, META_CURSOR_CEILING, &1u64)?;
            txn.open_table(OBJECTS).map_err(engine_err)?;
            txn.open_table(LOG).map_err(engine_err)?;
            txn.open_table(MEMBERS).map_err(engine_err)?;
        }
        txn.commit().map_err(engine_err)?;
        tracing::info!(path = %self.path.display(), node = node_id, replica = %replica, "created a new data directory");
        Ok(())
    }

    /// Rewrites a data directory of the previous store format (1: each logged delta as its
    /// fields, untagged) in this build's format, in one durable transaction: a crash during
    /// the upgrade leaves it at format 1, to be upgraded on the next start. Any other format
    /// is left for [`Store::load`] to accept or refuse.
    fn upgrade(&mut self) -> Result<(), StoreError> {
        let path = self.path.clone();
        let corrupt = |detail: String| StoreError::Corrupt {
            path: path.clone(),
            detail,
        };
        let txn = self.write(true)?;
        let segments = {
            let mut meta = match txn.open_table(META) {
                Ok(t) => t,
                // No meta table: `load` says so.
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(()),
                Err(e) => return Err(engine_err(e)),
            };
            let format: u32 = required(&meta, META_FORMAT, &corrupt)?;
            if format != 1 {
                return Ok(());
            }
            let mut log = txn.open_table(LOG).map_err(engine_err)?;
            let mut rewritten = Vec::new();
            for entry in log.iter().map_err(engine_err)? {
                let (n, bytes) = entry.map_err(engine_err)?;
                let n = n.value();
                let old: SegmentV1 = wire::decode(bytes.value())
                    .map_err(|e| corrupt(format!("format 1 log segment {n}: {e}")))?;
                let segment = Segment {
                    deltas: old.deltas.into_iter().map(SegmentDelta::Decoded).collect(),
                    states: old.states,
                    adopted: old.adopted,
                };
                rewritten.push((n, wire::encode(&segment).map_err(StoreError::Encode)?));
            }
            for (n, bytes) in &rewritten {
                log.insert(*n, bytes.as_slice()).map_err(engine_err)?;
            }
            put(&mut meta, META_FORMAT, &STORE_FORMAT_VERSION)?;
            rewritten.len()
        };
        self.commit(txn, true)?;
        tracing::info!(path = %self.path.display(), segments, from = 1, to = STORE_FORMAT_VERSION, "upgraded the data directory's store format");
        Ok(())
    }

    fn load(&mut self, node_id: &str) -> Result<Loaded, StoreError> {
        let txn = self.db.begin_read().map_err(engine_err)?;
        let meta = match txn.open_table(META) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => {
                return Err(self.corrupt("it has no meta table".into()));
            }
            Err(e) => return Err(engine_err(e)),
        };
        let path = self.path.clone();
        let corrupt = |detail: String| StoreError::Corrupt {
            path: path.clone(),
            detail,
        };
        let format: u32 = required(&meta, META_FORMAT, &corrupt)?;
        if format != STORE_FORMAT_VERSION {
            return Err(StoreError::UnknownFormat {
                path: self.path.clone(),
                found: format,
            });
        }
        let found: String = required(&meta, META_NODE_ID, &corrupt)?;
        if found != node_id {
            return Err(StoreError::ForeignNode {
                path: self.path.clone(),
                found,
                expected: node_id.to_owned(),
            });
        }
        let replica: ReplicaId = required(&meta, META_REPLICA, &corrupt)?;
        let applied: CausalContext = required(&meta, META_APPLIED, &corrupt)?;
        let checkpointed: u64 = required(&meta, META_CHECKPOINT, &corrupt)?;
        let next_cursor: u64 = required(&meta, META_CURSOR_CEILING, &corrupt)?;
        let last_stamp: Option<Stamp> = match meta.get(META_LAST_STAMP).map_err(engine_err)? {
            None => None,
            Some(v) => {
                Some(wire::decode(v.value()).map_err(|e| corrupt(format!("last stamp: {e}")))?)
            }
        };

        let objects_table = txn.open_table(OBJECTS).map_err(engine_err)?;
        let mut objects = HashMap::new();
        for entry in objects_table.iter().map_err(engine_err)? {
            let (k, v) = entry.map_err(engine_err)?;
            let key: Key =
                wire::decode(k.value()).map_err(|e| corrupt(format!("object key: {e}")))?;
            let stored: StoredObject =
                wire::decode(v.value()).map_err(|e| corrupt(format!("object {key}: {e}")))?;
            if stored.object.kind() != key.kind {
                return Err(corrupt(format!(
                    "object {key} holds a {:?}",
                    stored.object.kind()
                )));
            }
            if stored.change == 0 || stored.change >= next_cursor {
                return Err(corrupt(format!(
                    "object {key} has change cursor {} outside 1..{next_cursor}",
                    stored.change
                )));
            }
            objects.insert(key, (stored.object, stored.change));
        }

        let log_table = txn.open_table(LOG).map_err(engine_err)?;
        let mut log = Vec::new();
        let mut replay = Vec::new();
        for entry in log_table.iter().map_err(engine_err)? {
            let (n, bytes) = entry.map_err(engine_err)?;
            let n = n.value();
            let Segment {
                deltas,
                states,
                adopted,
            } = wire::decode(bytes.value())
                .map_err(|e| corrupt(format!("log segment {n}: {e}")))?;
            // Every delta is decoded here, so one that does not decode fails the start.
            let deltas = deltas
                .into_iter()
                .map(SegmentDelta::decoded)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| corrupt(format!("log segment {n}: {e}")))?;
            self.segments
                .push_back((n, deltas.len(), bytes.value().len()));
            self.log_entries += deltas.len();
            self.log_bytes += bytes.value().len();
            self.next_segment = n + 1;
            log.extend(deltas.iter().cloned());
            if n > checkpointed {
                replay.push(Segment {
                    deltas: deltas.into_iter().map(SegmentDelta::Decoded).collect(),
                    states,
                    adopted,
                });
            }
        }
        self.next_segment = self.next_segment.max(checkpointed + 1);
        self.checkpointed = checkpointed;

        let members = txn.open_table(MEMBERS).map_err(engine_err)?;
        let mut peers = Vec::new();
        for entry in members.iter().map_err(engine_err)? {
            let (_, v) = entry.map_err(engine_err)?;
            let peer: KnownPeer =
                wire::decode(v.value()).map_err(|e| corrupt(format!("member: {e}")))?;
            peers.push(peer);
        }
        Ok(Loaded {
            replica,
            created: false,
            objects,
            applied,
            last_stamp,
            next_cursor,
            replay,
            log,
            peers,
        })
    }

    /// Makes sure cursors from `next_cursor` on are covered by the persisted ceiling (a replay
    /// at start-up hands out cursors before any commit).
    pub fn ensure_cursor_ceiling(&mut self, next_cursor: u64) -> Result<(), StoreError> {
        if self.cursor_covered(next_cursor) {
            return Ok(());
        }
        self.raise_ceiling(next_cursor)
    }

    /// Persists a ceiling a lease above `next_cursor`.
    fn raise_ceiling(&mut self, next_cursor: u64) -> Result<(), StoreError> {
        let txn = self.write(true)?;
        {
            let mut meta = txn.open_table(META).map_err(engine_err)?;
            self.ceiling = next_cursor.saturating_add(CURSOR_LEASE);
            put(&mut meta, META_CURSOR_CEILING, &self.ceiling)?;
        }
        self.commit(txn, true)
    }

    /// Whether cursors up to `next_cursor` are safely below the persisted ceiling.
    pub fn cursor_covered(&self, next_cursor: u64) -> bool {
        cursor_covered_by(self.ceiling, next_cursor)
    }

    /// The persisted change-cursor ceiling.
    pub fn ceiling(&self) -> u64 {
        self.ceiling
    }

    /// Appends one segment (and remembers `peers`, raises the cursor ceiling if `next_cursor`
    /// nears it) in one transaction. With `durable` (`Durability::Immediate`), when this
    /// returns `Ok` the batch survives a crash, together with every commit before it;
    /// otherwise (`Durability::None`) it becomes durable with the next durable commit, and a
    /// crash before then loses it whole. A commit that raises the ceiling is always durable.
    /// Returns whether the commit was durable.
    pub fn append(
        &mut self,
        segment: &Segment,
        peers: &[KnownPeer],
        next_cursor: u64,
        durable: bool,
    ) -> Result<bool, StoreError> {
        let started = std::time::Instant::now();
        let raise = !self.cursor_covered(next_cursor);
        // A raised ceiling must never go backwards in a crash (ARCHITECTURE "Store").
        let durable = durable || raise;
        let txn = self.write(durable)?;
        let mut written = Vec::new();
        let mut new_ceiling = None;
        {
            if !segment.is_empty() {
                let mut log = txn.open_table(LOG).map_err(engine_err)?;
                for (deltas, bytes) in encode_segment(segment)? {
                    let number = self.next_segment + written.len() as u64;
                    log.insert(number, bytes.as_slice()).map_err(engine_err)?;
                    written.push((number, deltas, bytes.len()));
                }
            }
            if raise {
                let ceiling = next_cursor.saturating_add(CURSOR_LEASE);
                let mut meta = txn.open_table(META).map_err(engine_err)?;
                put(&mut meta, META_CURSOR_CEILING, &ceiling)?;
                new_ceiling = Some(ceiling);
            }
            if !peers.is_empty() {
                let mut members = txn.open_table(MEMBERS).map_err(engine_err)?;
                for peer in peers {
                    let addr = peer.addr.to_string();
                    let value = wire::encode(peer).map_err(StoreError::Encode)?;
                    members
                        .insert(addr.as_str(), value.as_slice())
                        .map_err(engine_err)?;
                }
            }
        }
        self.commit(txn, durable)?;
        if let Some(c) = new_ceiling {
            self.ceiling = c;
        }
        for s in written {
            self.segments.push_back(s);
            self.log_entries += s.1;
            self.log_bytes += s.2;
            self.next_segment = s.0 + 1;
        }
        tracing::trace!(
            deltas = segment.deltas.len(),
            states = segment.states.len(),
            micros = started.elapsed().as_micros() as u64,
            durable,
            "appended a log segment"
        );
        Ok(durable)
    }

    /// Makes every commit so far durable (one empty durable transaction), if any is not.
    pub fn sync(&mut self) -> Result<(), StoreError> {
        if self.unsynced_since.is_none() {
            return Ok(());
        }
        let txn = self.write(true)?;
        self.commit(txn, true)
    }

    /// When the oldest commit that is not durable yet was made (`None` when all are).
    pub fn unsynced_since(&self) -> Option<std::time::Instant> {
        self.unsynced_since
    }

    /// Writes one chunk of a checkpoint; with `mark`, the last one: it records the context the
    /// checkpoint was taken at, after which [`Store::trim`] may remove the segments it covers.
    ///
    /// Written with `Durability::None` unless `durable`: the chunk becomes durable with the
    /// next [`Store::append`], and a crash before then only means more to replay.
    pub fn checkpoint(
        &mut self,
        objects: &[ObjectWrite<'_>],
        mark: Option<CheckpointMark<'_>>,
        durable: bool,
    ) -> Result<(), StoreError> {
        let started = std::time::Instant::now();
        let txn = self.write(durable)?;
        {
            let mut table = txn.open_table(OBJECTS).map_err(engine_err)?;
            for w in objects {
                let key = object_key(w.key)?;
                let value = match wire::encode(&StoredObjectRef {
                    change: w.change,
                    object: w.object,
                }) {
                    Ok(v) => v,
                    Err(e @ WireError::TooLarge { .. }) => {
                        // The engine keeps objects under the record limit (ARCHITECTURE
                        // "Store"); should one slip past it, the node keeps running and the
                        // key keeps its previous checkpoint.
                        tracing::error!(key = %w.key, error = %e, "an object is over the record limit: not checkpointed");
                        continue;
                    }
                    Err(e) => return Err(StoreError::Encode(e)),
                };
                table
                    .insert(key.as_slice(), value.as_slice())
                    .map_err(engine_err)?;
            }
            if let Some(mark) = &mark {
                let mut meta = txn.open_table(META).map_err(engine_err)?;
                put(&mut meta, META_APPLIED, mark.applied)?;
                if let Some(stamp) = mark.last_stamp {
                    put(&mut meta, META_LAST_STAMP, &stamp)?;
                }
                put(&mut meta, META_CHECKPOINT, &mark.upto_segment)?;
            }
        }
        self.commit(txn, durable)?;
        if let Some(mark) = mark {
            self.checkpointed = mark.upto_segment;
        }
        tracing::debug!(
            objects = objects.len(),
            micros = started.elapsed().as_micros() as u64,
            "wrote a checkpoint chunk"
        );
        Ok(())
    }

    /// A write transaction: fsynced at commit with `durable`, otherwise made durable by the
    /// next durable one (`Durability::None`: a crash before then loses it whole, never part).
    fn write(&self, durable: bool) -> Result<redb::WriteTransaction, StoreError> {
        let mut txn = self.db.begin_write().map_err(engine_err)?;
        let durability = if durable {
            Durability::Immediate
        } else {
            Durability::None
        };
        txn.set_durability(durability).map_err(engine_err)?;
        Ok(txn)
    }

    /// Commits `txn`, opened by [`Store::write`] with `durable`, and keeps track of whether
    /// every commit so far is durable.
    fn commit(&mut self, txn: redb::WriteTransaction, durable: bool) -> Result<(), StoreError> {
        txn.commit().map_err(engine_err)?;
        if durable {
            self.unsynced_since = None;
        } else if self.unsynced_since.is_none() {
            self.unsynced_since = Some(std::time::Instant::now());
        }
        Ok(())
    }

    /// Whether [`Store::trim`] has work: the oldest segment is covered by the last completed
    /// checkpoint and the log is over its bounds.
    pub fn trimmable(&self) -> bool {
        self.segments
            .front()
            .is_some_and(|&(n, _, _)| self.may_trim(n, self.log_entries, self.log_bytes))
    }

    /// Whether segment `n`, the oldest left, may be trimmed with the log at `entries` deltas
    /// and `bytes`: the last completed checkpoint covers it and the log is over its bounds.
    fn may_trim(&self, n: u64, entries: usize, bytes: usize) -> bool {
        let over = entries > self.limits.max_entries || bytes > self.limits.max_bytes;
        over && n <= self.checkpointed
    }

    /// Removes up to `max` of the oldest segments that the last completed checkpoint covers,
    /// while the log is over its bounds (the gossip log's, so the newest are kept for repairs).
    /// In small steps between appends, so no commit waits for a whole checkpoint's worth of
    /// deletions. Written with `Durability::None` unless `durable`, like a checkpoint chunk: a
    /// crash before the next append only leaves segments that the next start trims again.
    pub fn trim(&mut self, max: usize, durable: bool) -> Result<usize, StoreError> {
        let txn = self.write(durable)?;
        let mut trimmed = 0;
        {
            let mut log = txn.open_table(LOG).map_err(engine_err)?;
            let (mut entries, mut bytes) = (self.log_entries, self.log_bytes);
            for &(n, e, b) in &self.segments {
                if trimmed == max || !self.may_trim(n, entries, bytes) {
                    break;
                }
                log.remove(n).map_err(engine_err)?;
                entries -= e;
                bytes -= b;
                trimmed += 1;
            }
        }
        self.commit(txn, durable)?;
        // The accounting follows once the commit succeeded.
        for _ in 0..trimmed {
            if let Some((_, e, b)) = self.segments.pop_front() {
                self.log_entries -= e;
                self.log_bytes -= b;
            }
        }
        Ok(trimmed)
    }
}

/// The `objects` table's key for `key`. The table is ordered by these bytes, so a checkpoint
/// written in this order touches each B-tree leaf in one chunk only.
pub(crate) fn object_key(key: &Key) -> Result<Vec<u8>, StoreError> {
    wire::encode(key).map_err(StoreError::Encode)
}

/// Whether cursors up to `next_cursor` are safely below a persisted `ceiling` (a commit raises
/// the ceiling when they are not).
pub fn cursor_covered_by(ceiling: u64, next_cursor: u64) -> bool {
    next_cursor.saturating_add(CURSOR_LEASE / 2) <= ceiling
}

/// A segment record is split when its encoding passes this size (the codec refuses values
/// over 4 MiB).
const SEGMENT_BYTES: usize = 2 << 20;

/// Encodes a segment as one record or, when it is too large, as several (halving until each
/// fits): `(deltas in the record, encoded record)`.
fn encode_segment(segment: &Segment) -> Result<Vec<(usize, Vec<u8>)>, StoreError> {
    match wire::encode(segment) {
        Ok(bytes) if bytes.len() <= SEGMENT_BYTES => {
            return Ok(vec![(segment.deltas.len(), bytes)]);
        }
        Ok(_) | Err(WireError::TooLarge { .. }) => {}
        Err(e) => return Err(StoreError::Encode(e)),
    }
    let items = segment.deltas.len() + segment.states.len();
    if items <= 1 {
        // One delta or state over the limit: it cannot be stored.
        return wire::encode(segment)
            .map(|bytes| vec![(segment.deltas.len(), bytes)])
            .map_err(StoreError::Encode);
    }
    let (mut first, mut second) = (Segment::default(), Segment::default());
    let half_d = segment.deltas.len() / 2;
    let half_s = segment.states.len() / 2;
    first.deltas.extend_from_slice(&segment.deltas[..half_d]);
    second.deltas.extend_from_slice(&segment.deltas[half_d..]);
    first.states.extend_from_slice(&segment.states[..half_s]);
    second.states.extend_from_slice(&segment.states[half_s..]);
    second.adopted.extend_from_slice(&segment.adopted);
    let mut out = encode_segment(&first)?;
    out.extend(encode_segment(&second)?);
    Ok(out)
}

fn put<T: Serialize + ?Sized>(
    table: &mut redb::Table<&str, &[u8]>,
    key: &str,
    value: &T,
) -> Result<(), StoreError> {
    let bytes = wire::encode(value).map_err(StoreError::Encode)?;
    table.insert(key, bytes.as_slice()).map_err(engine_err)?;
    Ok(())
}

/// Reads and decodes a meta record that must be there.
fn required<T: serde::de::DeserializeOwned>(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
    corrupt: &impl Fn(String) -> StoreError,
) -> Result<T, StoreError> {
    match table.get(key).map_err(engine_err)? {
        None => Err(corrupt(format!("no {key} record"))),
        Some(v) => wire::decode(v.value()).map_err(|e| corrupt(format!("{key} record: {e}"))),
    }
}

/// A random, non-zero replica id from the operating system's generator (0 is the stand-in
/// replica gossip uses for seeds).
fn fresh_replica() -> Result<ReplicaId, rand::rngs::SysError> {
    use rand::TryRng;
    loop {
        let id = rand::rngs::SysRng.try_next_u64()?;
        if id != 0 {
            return Ok(ReplicaId(id));
        }
    }
}

/// A random seed for the gossip core's generator.
pub(crate) fn random_seed() -> Result<u64, rand::rngs::SysError> {
    use rand::TryRng;
    rand::rngs::SysRng.try_next_u64()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crdt_types::{Cart, Dot, Kind, ObjectDelta, Tag};

    fn delta(seq: u64, sku_bytes: usize) -> SegmentDelta {
        let replica = ReplicaId(7);
        let tag = Tag {
            dot: Dot::new(replica, seq),
            stamp: Stamp {
                hlc: seq << 22,
                replica,
            },
        };
        let mut cart = Cart::new();
        let sku = format!("{seq:0>width$}", width = sku_bytes.clamp(1, 256));
        let d = cart.add(tag, &sku, 1).expect("add");
        SegmentDelta::Decoded(LoggedDelta {
            origin: replica,
            seq,
            stamp: tag.stamp,
            hops: 0,
            key: Key::new(Kind::Cart, format!("c{seq}")),
            payload: MeshDelta(ObjectDelta::Cart(d)),
        })
    }

    /// The deltas with their fields, whichever form they are in.
    fn decoded(deltas: Vec<SegmentDelta>) -> Vec<LoggedDelta> {
        deltas
            .into_iter()
            .map(|d| d.decoded().expect("decodes"))
            .collect()
    }

    #[test]
    fn a_segment_over_the_record_size_is_split_and_reads_back_whole() {
        // ~20k deltas of ~300 bytes: about 6 MiB, over the codec's 4 MiB limit.
        let segment = Segment {
            deltas: (1..=20_000).map(|s| delta(s, 256)).collect(),
            states: Vec::new(),
            adopted: vec![VersionVector::from_iter([(ReplicaId(7), 3)])],
        };
        let records = encode_segment(&segment).expect("encode");
        assert!(records.len() > 1, "split into {} records", records.len());
        let mut deltas = Vec::new();
        let mut adopted = Vec::new();
        for (n, bytes) in &records {
            assert!(bytes.len() <= SEGMENT_BYTES);
            let part: Segment = wire::decode(bytes).expect("decode");
            assert_eq!(part.deltas.len(), *n);
            deltas.extend(part.deltas);
            adopted.extend(part.adopted);
        }
        assert_eq!(decoded(deltas), decoded(segment.deltas));
        assert_eq!(adopted, segment.adopted);
    }

    #[test]
    fn trimming_removes_only_checkpointed_segments_beyond_the_bounds_in_steps() {
        let dir = tempfile::tempdir().expect("tempdir");
        let limits = LogLimits {
            max_entries: 10,
            max_bytes: usize::MAX,
        };
        let (mut store, _) = Store::open(dir.path(), "n", limits).expect("open");
        // Ten segments of three deltas each: 30 entries, bounds of 10.
        for i in 0..10u64 {
            let segment = Segment {
                deltas: (1..=3).map(|s| delta(i * 3 + s, 8)).collect(),
                ..Segment::default()
            };
            store.append(&segment, &[], 1, true).expect("append");
        }
        // Nothing is covered by a checkpoint yet: nothing may go.
        assert!(!store.trimmable());
        assert_eq!(store.trim(usize::MAX, false).expect("trim"), 0);
        // A checkpoint covering the first six segments (18 entries).
        let applied = CausalContext::default();
        let mark = CheckpointMark {
            applied: &applied,
            last_stamp: None,
            upto_segment: store.segments[5].0,
        };
        store
            .checkpoint(&[], Some(mark), false)
            .expect("checkpoint");
        assert!(store.trimmable());
        // Steps of two: the bounds would allow going down to 10 entries, but only covered
        // segments go, so six are removed (12 entries left) and the covered rest stays.
        assert_eq!(store.trim(2, false).expect("trim"), 2);
        assert_eq!(store.trim(2, false).expect("trim"), 2);
        assert_eq!(store.trim(2, false).expect("trim"), 2);
        assert!(!store.trimmable());
        assert_eq!(store.trim(2, true).expect("trim"), 0);
        assert_eq!(store.log_entries, 12);
        drop(store);
        // What is left reads back: the four newest segments, none replayed past the mark.
        let (_, loaded) = Store::open(dir.path(), "n", limits).expect("reopen");
        let seqs: Vec<u64> = loaded.log.iter().map(|d| d.seq).collect();
        assert_eq!(seqs, (19..=30).collect::<Vec<_>>());
        assert_eq!(loaded.replay.len(), 4);
    }

    /// What the disk holds after a crash of the process, taken while the store is open: the
    /// file as the kernel has it (what a killed process leaves), in a directory of its own.
    fn crash_image(store: &Store, into: &Path) -> PathBuf {
        std::fs::create_dir_all(into).expect("mkdir");
        std::fs::copy(store.path(), into.join(DB_FILE)).expect("copy");
        into.to_owned()
    }

    fn logged_seqs(dir: &Path, limits: LogLimits) -> Vec<u64> {
        let (_, loaded) = Store::open(dir, "n", limits).expect("open the crash image");
        loaded.log.iter().map(|d| d.seq).collect()
    }

    #[test]
    fn a_crash_loses_non_durable_appends_whole_and_a_durable_commit_keeps_every_earlier_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let limits = LogLimits {
            max_entries: usize::MAX,
            max_bytes: usize::MAX,
        };
        let (mut store, _) = Store::open(&dir.path().join("live"), "n", limits).expect("open");
        let segment = |from: u64| Segment {
            deltas: (from..from + 3).map(|s| delta(s, 8)).collect(),
            ..Segment::default()
        };
        assert!(store.append(&segment(1), &[], 1, true).expect("append"));
        assert_eq!(store.unsynced_since(), None);
        // Two appends of received deltas only: not durable.
        assert!(!store.append(&segment(4), &[], 1, false).expect("append"));
        assert!(!store.append(&segment(7), &[], 1, false).expect("append"));
        assert!(store.unsynced_since().is_some());
        let lost = crash_image(&store, &dir.path().join("crash-1"));
        // A durable append (a local write's) makes the two before it durable too.
        assert!(store.append(&segment(10), &[], 1, true).expect("append"));
        let kept = crash_image(&store, &dir.path().join("crash-2"));
        // A non-durable append, then the periodic sync.
        assert!(!store.append(&segment(13), &[], 1, false).expect("append"));
        store.sync().expect("sync");
        assert_eq!(store.unsynced_since(), None);
        let synced = crash_image(&store, &dir.path().join("crash-3"));
        // An append that raises the change-cursor ceiling is durable whatever it is asked.
        let near_ceiling = store.ceiling();
        assert!(
            store
                .append(&segment(16), &[], near_ceiling, false)
                .expect("append")
        );
        assert!(store.ceiling() > near_ceiling);
        drop(store);

        // Rolled back to the last durable commit as a whole: the log, and the ceiling with it.
        assert_eq!(logged_seqs(&lost, limits), (1..=3).collect::<Vec<_>>());
        assert_eq!(logged_seqs(&kept, limits), (1..=12).collect::<Vec<_>>());
        assert_eq!(logged_seqs(&synced, limits), (1..=15).collect::<Vec<_>>());
        let (reopened, loaded) =
            Store::open(&dir.path().join("live"), "n", limits).expect("reopen");
        assert_eq!(loaded.log.len(), 18);
        // The restart resumes cursors at the raised ceiling.
        assert!(loaded.next_cursor > near_ceiling);
        drop(reopened);
    }

    #[test]
    fn a_received_delta_is_logged_in_the_bytes_it_arrived_in_and_reads_back_as_its_fields() {
        let SegmentDelta::Decoded(local) = delta(1, 8) else {
            unreachable!("the helper makes decoded deltas")
        };
        let received = LoggedDelta {
            hops: 2,
            ..local.clone()
        };
        let encoded = EncodedDelta::new(&received).expect("encode");
        let segment = Segment {
            deltas: vec![
                SegmentDelta::Decoded(local.clone()),
                SegmentDelta::Encoded(encoded.clone()),
            ],
            ..Segment::default()
        };
        let bytes = wire::encode(&segment).expect("encode");
        // Each is written in its form: the received one as the bytes it arrived in.
        let read: Segment = wire::decode(&bytes).expect("decode");
        assert_eq!(read.deltas, segment.deltas);
        assert_eq!(decoded(read.deltas), vec![local, received]);
    }

    /// Rewrites the meta format record of the store in `dir`, and puts `log` records.
    fn rewrite_raw(dir: &Path, format: u32, log: &[(u64, Vec<u8>)]) {
        let db = Database::open(dir.join(DB_FILE)).expect("db");
        let txn = db.begin_write().expect("txn");
        {
            let mut meta = txn.open_table(META).expect("meta");
            put(&mut meta, META_FORMAT, &format).expect("put");
            let mut table = txn.open_table(LOG).expect("log");
            for (n, bytes) in log {
                table.insert(*n, bytes.as_slice()).expect("insert");
            }
        }
        txn.commit().expect("commit");
    }

    const UNBOUNDED: LogLimits = LogLimits {
        max_entries: usize::MAX,
        max_bytes: usize::MAX,
    };

    #[test]
    fn a_store_of_an_unknown_format_version_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        drop(Store::open(dir.path(), "n", UNBOUNDED).expect("open"));
        rewrite_raw(dir.path(), 3, &[]);
        match Store::open(dir.path(), "n", UNBOUNDED) {
            Err(StoreError::UnknownFormat { found: 3, .. }) => {}
            other => panic!("a version 3 store was not refused: {other:?}"),
        }
    }

    #[test]
    fn a_format_1_store_is_upgraded_in_place_and_keeps_its_log() {
        /// Format 1's segment, as that build encoded it.
        #[derive(Serialize)]
        struct V1<'a> {
            deltas: &'a [LoggedDelta],
            states: Vec<(Key, MeshDelta)>,
            adopted: Vec<VersionVector>,
        }
        let dir = tempfile::tempdir().expect("tempdir");
        drop(Store::open(dir.path(), "n", UNBOUNDED).expect("open"));
        let deltas = decoded(vec![delta(1, 8), delta(2, 300)]);
        let vv: VersionVector = [(ReplicaId(9), 4)].into_iter().collect();
        let v1 = V1 {
            deltas: &deltas,
            states: Vec::new(),
            adopted: vec![vv.clone()],
        };
        rewrite_raw(dir.path(), 1, &[(1, wire::encode(&v1).expect("encode"))]);
        // Format 2 reads format 1's bytes wrongly or not at all: the upgrade is what works.
        assert!(wire::decode::<Segment>(&wire::encode(&v1).expect("encode")).is_err());

        for life in 0..2 {
            let (store, loaded) = Store::open(dir.path(), "n", UNBOUNDED).expect("open");
            assert_eq!(loaded.log, deltas, "life {life}");
            assert_eq!(loaded.replay.len(), 1, "life {life}");
            let replayed = &loaded.replay[0];
            assert_eq!(decoded(replayed.deltas.clone()), deltas, "life {life}");
            assert_eq!(replayed.adopted, vec![vv.clone()], "life {life}");
            assert_eq!(store.last_segment(), 1, "life {life}");
            drop(store);
        }
        let db = Database::open(dir.path().join(DB_FILE)).expect("db");
        let txn = db.begin_read().expect("txn");
        let meta = txn.open_table(META).expect("meta");
        let corrupt = |detail: String| -> StoreError { panic!("{detail}") };
        let format: u32 = required(&meta, META_FORMAT, &corrupt).expect("format");
        assert_eq!(format, STORE_FORMAT_VERSION);
    }

    #[test]
    fn a_small_segment_is_one_record() {
        let segment = Segment {
            deltas: (1..=10).map(|s| delta(s, 8)).collect(),
            ..Segment::default()
        };
        let records = encode_segment(&segment).expect("encode");
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].0, 10);
    }
}
