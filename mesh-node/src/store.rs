//! The node's durable store: one redb database in the data directory that holds the CRDT state
//! of every key, the change index, the delta log, the applied causal context, the node's
//! identity and the peers it knew. It persists what the engine hands it and must not decide
//! anything about replication.
//!
//! Every record goes through `crdt_types::wire`, the one codec of statemesh, and everything read
//! back is decoded with errors: a record that does not decode makes the start fail with
//! [`StoreError::Corrupt`], never a panic and never a silent wipe.
//!
//! Tables (all values wire-encoded):
//! - `meta`: store format version, node id, replica id, the applied causal context, the highest
//!   HLC stamp issued or applied, and the change-cursor ceiling;
//! - `objects`: wire-encoded [`Key`] to the key's [`Object`] and its change cursor;
//! - `changes`: change cursor to key, the index gossip's state transfer walks;
//! - `delta_log`: one segment of deltas per commit, oldest trimmed first;
//! - `members`: peers seen in the membership, to rejoin through after a restart.
//!
//! Change cursors must never be reused across a crash (a peer in the middle of a state transfer
//! holds one), yet the engine hands them out before the commit that makes them durable. So the
//! store persists a *ceiling*: cursors are only handed out below it, a commit raises it well
//! ahead of use, and a restart resumes at the ceiling.

use crate::delta::LoggedDelta;
use crdt_types::wire::{self, WireError};
use crdt_types::{CausalContext, Key, Object, ReplicaId, Stamp};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// The store layout this build reads and writes. A data directory with another version is
/// refused at start-up.
pub const STORE_FORMAT_VERSION: u32 = 1;

/// The database file inside the data directory.
pub const DB_FILE: &str = "statemesh.redb";

/// How far a commit raises the change-cursor ceiling ahead of the cursors in use.
const CURSOR_LEASE: u64 = 1 << 20;

/// A delta-log segment is cut at this many encoded bytes (the codec refuses values over 4 MiB).
const SEGMENT_BYTES: usize = 1 << 20;

/// Memory redb may use for its page cache.
const CACHE_BYTES: usize = 64 << 20;

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const OBJECTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("objects");
const CHANGES: TableDefinition<u64, &[u8]> = TableDefinition::new("changes");
const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("delta_log");
const MEMBERS: TableDefinition<&str, &[u8]> = TableDefinition::new("members");

const META_FORMAT: &str = "format";
const META_NODE_ID: &str = "node_id";
const META_REPLICA: &str = "replica";
const META_APPLIED: &str = "applied";
const META_LAST_STAMP: &str = "last_stamp";
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
    /// Every key's state and change cursor.
    pub objects: HashMap<Key, (Object, u64)>,
    /// Every delta applied here, own ones included.
    pub applied: CausalContext,
    /// The highest HLC stamp issued or applied here.
    pub last_stamp: Option<Stamp>,
    /// The first change cursor this life may hand out.
    pub next_cursor: u64,
    /// The logged deltas, oldest first.
    pub log: Vec<LoggedDelta>,
    /// The peers known when the node stopped.
    pub peers: Vec<KnownPeer>,
}

/// Bounds of the persisted delta log (the gossip log's bounds, so a restart can restore it).
#[derive(Clone, Copy, Debug)]
pub struct LogLimits {
    /// At most this many deltas.
    pub max_entries: usize,
    /// At most this many encoded bytes of deltas.
    pub max_bytes: usize,
}

/// One key written by a commit.
#[derive(Debug)]
pub struct ObjectWrite<'a> {
    /// The key.
    pub key: &'a Key,
    /// Its state after the batch.
    pub object: &'a Object,
    /// Its change cursor after the batch.
    pub change: u64,
    /// Its change cursor as last committed (`None` for a new key), removed from the index.
    pub committed_change: Option<u64>,
}

/// What one commit writes, atomically.
#[derive(Debug, Default)]
pub struct Batch<'a> {
    /// The keys the batch changed.
    pub objects: Vec<ObjectWrite<'a>>,
    /// The deltas the batch applied or made, for the delta log.
    pub log: &'a [LoggedDelta],
    /// The applied context after the batch, if it changed.
    pub applied: Option<&'a CausalContext>,
    /// The highest stamp issued or applied after the batch.
    pub last_stamp: Option<Stamp>,
    /// The next change cursor the engine will hand out.
    pub next_cursor: u64,
    /// Peers to remember.
    pub peers: Vec<KnownPeer>,
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
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .field("ceiling", &self.ceiling)
            .field("log_entries", &self.log_entries)
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
        let corrupt = |detail: String| StoreError::Corrupt {
            path: path.to_owned(),
            detail,
        };
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
                other => corrupt(other.to_string()),
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
        };
        let created = store.is_empty()?;
        if created {
            store.initialise(node_id)?;
        }
        let mut loaded = store.load(node_id)?;
        loaded.created = created;
        // This life hands out cursors from the old ceiling on: above anything a previous life
        // may have handed out before crashing.
        store.ceiling = loaded.next_cursor;
        store.raise_ceiling(loaded.next_cursor)?;
        Ok((store, loaded))
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
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
        let mut txn = self.db.begin_write().map_err(engine_err)?;
        txn.set_durability(Durability::Immediate)
            .map_err(engine_err)?;
        {
            let mut meta = txn.open_table(META).map_err(engine_err)?;
            put(&mut meta, META_FORMAT, &STORE_FORMAT_VERSION)?;
            put(&mut meta, META_NODE_ID, node_id)?;
            put(&mut meta, META_REPLICA, &replica)?;
            put(&mut meta, META_APPLIED, &CausalContext::new())?;
            put(&mut meta, META_CURSOR_CEILING, &1u64)?;
            txn.open_table(OBJECTS).map_err(engine_err)?;
            txn.open_table(CHANGES).map_err(engine_err)?;
            txn.open_table(LOG).map_err(engine_err)?;
            txn.open_table(MEMBERS).map_err(engine_err)?;
        }
        txn.commit().map_err(engine_err)?;
        tracing::info!(path = %self.path.display(), node = node_id, replica = %replica, "created a new data directory");
        Ok(())
    }

    fn load(&mut self, node_id: &str) -> Result<Loaded, StoreError> {
        let path = self.path.clone();
        let corrupt = |detail: String| StoreError::Corrupt {
            path: path.clone(),
            detail,
        };
        let txn = self.db.begin_read().map_err(engine_err)?;
        let meta = match txn.open_table(META) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => {
                return Err(corrupt("it has no meta table".into()));
            }
            Err(e) => return Err(engine_err(e)),
        };
        let format: u32 = required(&meta, META_FORMAT, &corrupt)?;
        if format != STORE_FORMAT_VERSION {
            return Err(StoreError::UnknownFormat {
                path: path.clone(),
                found: format,
            });
        }
        let found: String = required(&meta, META_NODE_ID, &corrupt)?;
        if found != node_id {
            return Err(StoreError::ForeignNode {
                path: path.clone(),
                found,
                expected: node_id.to_owned(),
            });
        }
        let replica: ReplicaId = required(&meta, META_REPLICA, &corrupt)?;
        let applied: CausalContext = required(&meta, META_APPLIED, &corrupt)?;
        let next_cursor: u64 = required(&meta, META_CURSOR_CEILING, &corrupt)?;
        let last_stamp: Option<Stamp> = match get(&meta, META_LAST_STAMP)? {
            None => None,
            Some(s) => Some(s.map_err(|e| corrupt(format!("last stamp: {e}")))?),
        };

        let open = |name: TableDefinition<'static, &'static [u8], &'static [u8]>| {
            txn.open_table(name).map_err(engine_err)
        };
        let objects_table = open(OBJECTS)?;
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
            if stored.change >= next_cursor {
                return Err(corrupt(format!(
                    "object {key} has change cursor {} at or above the ceiling {next_cursor}",
                    stored.change
                )));
            }
            objects.insert(key, (stored.object, stored.change));
        }
        let changes = txn.open_table(CHANGES).map_err(engine_err)?;
        let mut indexed = 0usize;
        for entry in changes.iter().map_err(engine_err)? {
            let (c, k) = entry.map_err(engine_err)?;
            let key: Key =
                wire::decode(k.value()).map_err(|e| corrupt(format!("change index: {e}")))?;
            match objects.get(&key) {
                Some((_, change)) if *change == c.value() => indexed += 1,
                _ => {
                    return Err(corrupt(format!(
                        "change index entry {} names {key}, which is not at that cursor",
                        c.value()
                    )));
                }
            }
        }
        if indexed != objects.len() {
            return Err(corrupt(format!(
                "the change index holds {indexed} keys, the objects table {}",
                objects.len()
            )));
        }

        let log_table = txn.open_table(LOG).map_err(engine_err)?;
        let mut log = Vec::new();
        for entry in log_table.iter().map_err(engine_err)? {
            let (n, bytes) = entry.map_err(engine_err)?;
            let segment: Vec<LoggedDelta> = wire::decode(bytes.value())
                .map_err(|e| corrupt(format!("delta log segment {}: {e}", n.value())))?;
            self.segments
                .push_back((n.value(), segment.len(), bytes.value().len()));
            self.log_entries += segment.len();
            self.log_bytes += bytes.value().len();
            self.next_segment = n.value() + 1;
            log.extend(segment);
        }

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
            log,
            peers,
        })
    }

    /// Makes sure cursors up to `next_cursor` plus a lease are below the persisted ceiling.
    fn raise_ceiling(&mut self, next_cursor: u64) -> Result<(), StoreError> {
        let mut txn = self.db.begin_write().map_err(engine_err)?;
        txn.set_durability(Durability::Immediate)
            .map_err(engine_err)?;
        {
            let mut meta = txn.open_table(META).map_err(engine_err)?;
            self.ceiling = next_cursor.saturating_add(CURSOR_LEASE);
            put(&mut meta, META_CURSOR_CEILING, &self.ceiling)?;
        }
        txn.commit().map_err(engine_err)
    }

    /// The highest change cursor the engine may hand out before the next commit raises it.
    pub fn cursor_ceiling(&self) -> u64 {
        self.ceiling
    }

    /// Writes one batch in one durable transaction (`Durability::Immediate`): when this
    /// returns `Ok`, the batch survives a crash.
    pub fn commit(&mut self, batch: Batch<'_>) -> Result<(), StoreError> {
        let mut txn = self.db.begin_write().map_err(engine_err)?;
        txn.set_durability(Durability::Immediate)
            .map_err(engine_err)?;
        let mut new_ceiling = None;
        let mut new_segments = Vec::new();
        let mut trimmed = 0;
        {
            let mut objects = txn.open_table(OBJECTS).map_err(engine_err)?;
            let mut changes = txn.open_table(CHANGES).map_err(engine_err)?;
            for w in &batch.objects {
                let key = wire::encode(w.key).map_err(StoreError::Encode)?;
                let value = wire::encode(&StoredObjectRef {
                    change: w.change,
                    object: w.object,
                })
                .map_err(StoreError::Encode)?;
                objects
                    .insert(key.as_slice(), value.as_slice())
                    .map_err(engine_err)?;
                if let Some(old) = w.committed_change {
                    changes.remove(old).map_err(engine_err)?;
                }
                changes
                    .insert(w.change, key.as_slice())
                    .map_err(engine_err)?;
            }

            let mut log = txn.open_table(LOG).map_err(engine_err)?;
            for chunk in segments(batch.log) {
                let bytes = wire::encode(chunk).map_err(StoreError::Encode)?;
                let n = self.next_segment + new_segments.len() as u64;
                log.insert(n, bytes.as_slice()).map_err(engine_err)?;
                new_segments.push((n, chunk.len(), bytes.len()));
            }
            // Trim the oldest segments beyond the bounds (the in-memory accounting is updated
            // only once the commit succeeded).
            let mut entries = self.log_entries + new_segments.iter().map(|s| s.1).sum::<usize>();
            let mut bytes = self.log_bytes + new_segments.iter().map(|s| s.2).sum::<usize>();
            for &(n, e, b) in self.segments.iter().chain(new_segments.iter()) {
                if entries <= self.limits.max_entries && bytes <= self.limits.max_bytes {
                    break;
                }
                log.remove(n).map_err(engine_err)?;
                entries -= e;
                bytes -= b;
                trimmed += 1;
            }

            let mut meta = txn.open_table(META).map_err(engine_err)?;
            if let Some(applied) = batch.applied {
                put(&mut meta, META_APPLIED, applied)?;
            }
            if let Some(stamp) = batch.last_stamp {
                put(&mut meta, META_LAST_STAMP, &stamp)?;
            }
            if batch.next_cursor.saturating_add(CURSOR_LEASE / 2) > self.ceiling {
                let ceiling = batch.next_cursor.saturating_add(CURSOR_LEASE);
                put(&mut meta, META_CURSOR_CEILING, &ceiling)?;
                new_ceiling = Some(ceiling);
            }

            let mut members = txn.open_table(MEMBERS).map_err(engine_err)?;
            for peer in &batch.peers {
                let addr = peer.addr.to_string();
                let value = wire::encode(peer).map_err(StoreError::Encode)?;
                members
                    .insert(addr.as_str(), value.as_slice())
                    .map_err(engine_err)?;
            }
        }
        txn.commit().map_err(engine_err)?;

        if let Some(c) = new_ceiling {
            self.ceiling = c;
        }
        for s in new_segments {
            self.segments.push_back(s);
            self.log_entries += s.1;
            self.log_bytes += s.2;
            self.next_segment = s.0 + 1;
        }
        for _ in 0..trimmed {
            if let Some((_, e, b)) = self.segments.pop_front() {
                self.log_entries -= e;
                self.log_bytes -= b;
            }
        }
        Ok(())
    }
}

/// Splits deltas into runs of at most [`SEGMENT_BYTES`] encoded bytes (at least one each).
fn segments(log: &[LoggedDelta]) -> impl Iterator<Item = &[LoggedDelta]> {
    let mut rest = log;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut bytes = 0;
        let mut n = 0;
        while n < rest.len() && (n == 0 || bytes + rest[n].encoded_len() <= SEGMENT_BYTES) {
            bytes += rest[n].encoded_len();
            n += 1;
        }
        let (head, tail) = rest.split_at(n);
        rest = tail;
        Some(head)
    })
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

/// Reads and decodes a meta record: `None` if absent, `Some(Err)` if it does not decode.
fn get<T: serde::de::DeserializeOwned>(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
) -> Result<Option<Result<T, WireError>>, StoreError> {
    let value = table.get(key).map_err(engine_err)?;
    Ok(value.map(|v| wire::decode(v.value())))
}

fn required<T: serde::de::DeserializeOwned>(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
    corrupt: &impl Fn(String) -> StoreError,
) -> Result<T, StoreError> {
    match get(table, key)? {
        None => Err(corrupt(format!("no {key} record"))),
        Some(Err(e)) => Err(corrupt(format!("{key} record: {e}"))),
        Some(Ok(v)) => Ok(v),
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
