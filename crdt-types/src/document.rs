//! `Document`: a JSON-like Automerge document whose deltas are Automerge changes, plus the
//! JSON edit language the HTTP API exposes.

use crate::{Lattice, ReplicaId, Tag};
use automerge::transaction::{CommitOptions, Transactable};
use automerge::{ActorId, Automerge, Change, ChangeHash, ObjId, ObjType, Prop, ROOT, ReadDoc};
use automerge::{ScalarValue, Value};
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;

/// How deep an edit may reach: path segments plus nesting of the value written.
pub const MAX_EDIT_DEPTH: usize = 64;

/// Why a document operation was refused. The document is unchanged when an edit batch fails.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DocError {
    /// Delta bytes that are not an Automerge change.
    #[error("invalid change: {0}")]
    InvalidChange(String),
    /// Automerge refused to apply a change (a forged history); the change is dropped.
    #[error("change rejected: {0}")]
    Rejected(String),
    /// The path does not lead to an object of the kind the edit needs.
    #[error("path {path}: {reason}")]
    Path {
        /// The path as JSON.
        path: String,
        /// What went wrong there.
        reason: String,
    },
    /// The edit is nested deeper than [`MAX_EDIT_DEPTH`].
    #[error("edit is nested deeper than {MAX_EDIT_DEPTH} levels")]
    TooDeep,
    /// Automerge refused an edit.
    #[error("edit failed: {0}")]
    Edit(String),
}

/// One step of a path into a document: a map key or a list index. In JSON a path is an array
/// of strings and non-negative integers, e.g. `["items", 0, "name"]`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PathSegment {
    /// A key of a map.
    Key(String),
    /// An index into a list.
    Index(usize),
}

impl From<&PathSegment> for Prop {
    fn from(seg: &PathSegment) -> Prop {
        match seg {
            PathSegment::Key(k) => Prop::Map(k.clone()),
            PathSegment::Index(i) => Prop::Seq(*i),
        }
    }
}

/// One edit of a document, as the HTTP API receives it (JSON only: the value is a
/// `serde_json::Value`, which the binary wire format cannot carry; edits never travel, their
/// Automerge change does). Tagged by `op`:
/// `{"op":"set","path":["a"],"value":1}`, `{"op":"delete","path":["a"]}`,
/// `{"op":"insert","path":["list"],"index":0,"value":"x"}`,
/// `{"op":"increment","path":["n"],"by":2}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum DocEdit {
    /// Writes `value` at `path` (a map key, or an existing list index). Objects and arrays
    /// become Automerge maps and lists; strings are scalar strings.
    Set {
        /// Where to write; must not be empty.
        path: Vec<PathSegment>,
        /// What to write.
        value: serde_json::Value,
    },
    /// Deletes the map key or list element at `path`. Deleting an absent map key does nothing.
    Delete {
        /// What to delete; must not be empty.
        path: Vec<PathSegment>,
    },
    /// Inserts `value` into the list at `path` before position `index` (`index` = length
    /// appends).
    Insert {
        /// The list.
        path: Vec<PathSegment>,
        /// Position, at most the list's length.
        index: usize,
        /// What to insert.
        value: serde_json::Value,
    },
    /// Adds `by` to the counter at `path`; an absent map key becomes a counter holding `by`.
    /// Concurrent increments of one counter add up. (Two nodes that each *create* the same
    /// counter concurrently conflict like any concurrent set: Automerge keeps one.)
    Increment {
        /// The counter.
        path: Vec<PathSegment>,
        /// The amount, possibly negative.
        by: i64,
    },
}

/// The delta of a document: Automerge changes, each in its binary encoding. Applying a delta
/// twice, out of order or before its dependencies is safe: changes wait until their
/// dependencies arrive and duplicates are ignored.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DocDelta {
    /// Encoded Automerge changes.
    pub changes: Vec<Vec<u8>>,
}

impl DocDelta {
    /// Whether the delta carries no change.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }
}

impl Lattice for DocDelta {
    /// The union of both change sets (kept sorted, without duplicates).
    fn join(&mut self, other: Self) {
        self.changes.extend(other.changes);
        self.changes.sort_unstable();
        self.changes.dedup();
    }
}

/// A replicated JSON-like document (CONTRACT §1 "Documents"): an Automerge document plus the
/// changes received before their dependencies.
///
/// Built on [`Automerge`] with one explicit transaction per edit batch rather than on
/// `AutoCommit`, whose reads and `save` need `&mut self`: a `Document` is serialised, compared
/// and rendered through `&self`. The actor of every change is the editing replica's id.
///
/// Serialises as the saved document bytes plus the pending changes; two documents are equal
/// when they hold the same changes (same heads, same pending set).
#[derive(Clone, Default)]
pub struct Document {
    /// Boxed: an `Automerge` is several kilobytes inline, and `Object` holds a `Document`.
    doc: Box<Automerge>,
    /// Changes whose dependencies have not all arrived, by hash. Kept here (not in
    /// Automerge's own queue) so they are visible to equality and survive serialisation.
    pending: BTreeMap<ChangeHash, Change>,
}

/// The Automerge actor of a replica: its id in big-endian bytes.
pub fn actor_id(replica: ReplicaId) -> ActorId {
    ActorId::from(replica.0.to_be_bytes().as_slice())
}

impl Document {
    /// The empty document.
    pub fn new() -> Self {
        Self::default()
    }

    /// The current heads (sorted): the changes no other applied change depends on.
    pub fn heads(&self) -> Vec<ChangeHash> {
        let mut h = self.doc.get_heads();
        h.sort_unstable();
        h
    }

    /// The number of changes waiting for their dependencies.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Whether no change has been seen.
    pub fn is_empty(&self) -> bool {
        self.doc.is_empty() && self.pending.is_empty()
    }

    /// Applies `edits` as one Automerge change by the tag's replica, at the tag's wall time,
    /// and returns the delta (that change; empty if the edits changed nothing). All or
    /// nothing: on error the document is unchanged.
    pub fn apply_edits(&mut self, tag: Tag, edits: &[DocEdit]) -> Result<DocDelta, DocError> {
        let before = self.doc.get_heads();
        self.doc.set_actor(actor_id(tag.dot.replica));
        let seconds = tag.stamp.wall_ms().div_euclid(1000);
        let result = self.doc.transact_with(
            |_| CommitOptions::default().with_time(seconds),
            |tx| {
                for edit in edits {
                    apply_edit(tx, edit)?;
                }
                Ok::<(), DocError>(())
            },
        );
        match result {
            Ok(_) => Ok(self.delta_since(&before)),
            Err(failure) => Err(failure.error),
        }
    }

    /// The changes not reachable from `heads` (those a peer at `heads` lacks).
    pub fn delta_since(&self, heads: &[ChangeHash]) -> DocDelta {
        DocDelta {
            changes: self
                .doc
                .get_changes(heads)
                .iter()
                .map(|c| c.raw_bytes().to_vec())
                .collect(),
        }
    }

    /// Every change, applied and pending: the full state as a delta.
    pub fn full_delta(&self) -> DocDelta {
        let mut delta = self.delta_since(&[]);
        delta
            .changes
            .extend(self.pending.values().map(|c| c.raw_bytes().to_vec()));
        delta
    }

    /// Merges a delta. Every change is decoded and its checksum verified before anything is
    /// applied, so bytes that are not an intact change leave the document unchanged and return
    /// [`DocError::InvalidChange`].
    pub fn apply(&mut self, delta: DocDelta) -> Result<(), DocError> {
        let changes = delta
            .changes
            .into_iter()
            .map(parse_change)
            .collect::<Result<Vec<_>, _>>()?;
        self.integrate(changes)
    }

    /// Merges the changes of another document. Fails only if Automerge refuses a change the
    /// other document holds (a forged history); the refused changes are dropped.
    pub fn merge(&mut self, other: Document) -> Result<(), DocError> {
        let mut changes = self.doc.get_changes_added(&other.doc);
        changes.extend(other.pending.into_values());
        self.integrate(changes)
    }

    fn has_change(&self, hash: &ChangeHash) -> bool {
        self.doc
            .get_missing_deps(std::slice::from_ref(hash))
            .is_empty()
    }

    /// Adds `incoming` to the pending set, then applies every pending change whose
    /// dependencies are all present, in dependency order, as one batch.
    fn integrate(&mut self, incoming: Vec<Change>) -> Result<(), DocError> {
        for c in incoming {
            let h = c.hash();
            if !self.pending.contains_key(&h) && !self.has_change(&h) {
                self.pending.insert(h, c);
            }
        }
        if self.pending.is_empty() {
            return Ok(());
        }
        // Kahn's algorithm over the pending changes; one whose dependency is neither applied
        // nor pending gets an extra count that never clears, and so does all that follows it.
        let mut waiting: HashMap<ChangeHash, usize> = HashMap::new();
        let mut dependents: HashMap<ChangeHash, Vec<ChangeHash>> = HashMap::new();
        let mut ready = VecDeque::new();
        for (h, c) in &self.pending {
            let mut n = 0;
            for d in c.deps() {
                if self.pending.contains_key(d) {
                    n += 1;
                    dependents.entry(*d).or_default().push(*h);
                } else if !self.has_change(d) {
                    n += 1;
                }
            }
            if n == 0 {
                ready.push_back(*h);
            } else {
                waiting.insert(*h, n);
            }
        }
        let mut order = Vec::new();
        while let Some(h) = ready.pop_front() {
            for dep in dependents.remove(&h).unwrap_or_default() {
                if let Some(n) = waiting.get_mut(&dep) {
                    *n -= 1;
                    if *n == 0 {
                        waiting.remove(&dep);
                        ready.push_back(dep);
                    }
                }
            }
            order.push(h);
        }
        if order.is_empty() {
            return Ok(());
        }
        let batch: Vec<Change> = order
            .iter()
            .filter_map(|h| self.pending.remove(h))
            .collect();
        if self.apply_guarded(&batch).is_ok() {
            return Ok(());
        }
        // Something in the batch is refused: apply one by one. A refused change is dropped,
        // as on every node (refusal depends only on the change and its dependencies); what
        // depends on it stays pending.
        let mut first_error = None;
        for c in batch {
            if self.has_change(&c.hash()) {
                continue;
            }
            if !self.doc.get_missing_deps(c.deps()).is_empty() {
                self.pending.insert(c.hash(), c);
                continue;
            }
            if let Err(e) = self.apply_guarded(std::slice::from_ref(&c)) {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Applies `changes` (all dependencies present) all or nothing. Automerge 0.12 can panic
    /// on a well-checksummed but forged change (it unwraps actor lookups while importing), so
    /// the apply runs under `catch_unwind` against a copy of the document, which is restored
    /// on an error or a panic: a bad change is refused, never a crash or a torn document.
    fn apply_guarded(&mut self, changes: &[Change]) -> Result<(), DocError> {
        let backup = self.doc.clone();
        let doc = &mut self.doc;
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            doc.apply_changes(changes.iter().cloned())
        }));
        let error = match outcome {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => DocError::Rejected(e.to_string()),
            Err(_) => DocError::Rejected("automerge panicked applying the change".into()),
        };
        self.doc = backup;
        Err(error)
    }

    /// The document as JSON: maps as objects (keys sorted), lists as arrays, text as strings,
    /// counters as numbers. Conflicting values resolve as Automerge resolves them, the same on
    /// every node, so equal documents render byte-identical JSON.
    pub fn to_json(&self) -> serde_json::Value {
        render_object(&self.doc, &ROOT, ObjType::Map, 0)
    }
}

impl fmt::Debug for Document {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Document")
            .field("heads", &self.heads())
            .field("pending", &self.pending.keys().collect::<Vec<_>>())
            .field("json", &self.to_json())
            .finish()
    }
}

impl PartialEq for Document {
    fn eq(&self, other: &Self) -> bool {
        self.heads() == other.heads() && self.pending.keys().eq(other.pending.keys())
    }
}

impl Eq for Document {}

impl Lattice for Document {
    /// Merges every change of `other`. A change Automerge refuses (only possible for a
    /// forged history) is dropped rather than failing the join.
    fn join(&mut self, other: Self) {
        let _refused_changes_are_dropped = self.merge(other);
    }
}

impl crate::DeltaCrdt for Document {}

/// The encoded shape of a [`Document`].
#[derive(Serialize, Deserialize)]
struct DocumentRepr {
    saved: Vec<u8>,
    pending: Vec<Vec<u8>>,
}

impl Serialize for Document {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        DocumentRepr {
            saved: self.doc.save(),
            pending: self
                .pending
                .values()
                .map(|c| c.raw_bytes().to_vec())
                .collect(),
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Document {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let repr = DocumentRepr::deserialize(deserializer)?;
        let doc = if repr.saved.is_empty() {
            Automerge::new()
        } else {
            // A fresh document: if Automerge panics on forged bytes, nothing is left torn.
            std::panic::catch_unwind(|| Automerge::load(&repr.saved))
                .map_err(|_| D::Error::custom("automerge panicked loading the document"))?
                .map_err(D::Error::custom)?
        };
        let doc = Box::new(doc);
        let mut pending = BTreeMap::new();
        for bytes in repr.pending {
            let c = parse_change(bytes).map_err(D::Error::custom)?;
            pending.insert(c.hash(), c);
        }
        Ok(Document { doc, pending })
    }
}

/// Decodes one change and checks its checksum (the first four bytes of its hash, stored after
/// the magic bytes), which Automerge's own parser does not verify.
fn parse_change(bytes: Vec<u8>) -> Result<Change, DocError> {
    let claimed: Option<[u8; 4]> = bytes.get(4..8).and_then(|s| s.try_into().ok());
    let change = Change::from_bytes(bytes).map_err(|e| DocError::InvalidChange(e.to_string()))?;
    if claimed.as_ref().map(|c| &c[..]) != Some(&change.hash().0[..4]) {
        return Err(DocError::InvalidChange("checksum mismatch".into()));
    }
    Ok(change)
}

// ---------------------------------------------------------------------------------------------
// Edits

fn path_error(path: &[PathSegment], reason: impl Into<String>) -> DocError {
    DocError::Path {
        path: serde_json::to_string(path).unwrap_or_default(),
        reason: reason.into(),
    }
}

fn edit_error(e: automerge::AutomergeError) -> DocError {
    DocError::Edit(e.to_string())
}

/// Follows `path` from the root to an object.
fn resolve<T: ReadDoc>(doc: &T, path: &[PathSegment]) -> Result<(ObjId, ObjType), DocError> {
    let mut obj = ROOT;
    let mut typ = ObjType::Map;
    for (i, seg) in path.iter().enumerate() {
        let here = &path[..=i];
        check_segment(&path[..i], typ, seg)?;
        match doc.get(&obj, Prop::from(seg)).map_err(edit_error)? {
            Some((Value::Object(t), id)) => {
                obj = id;
                typ = t;
            }
            Some((Value::Scalar(_), _)) => return Err(path_error(here, "is not an object")),
            None => return Err(path_error(here, "does not exist")),
        }
    }
    Ok((obj, typ))
}

/// Checks that `seg` addresses into an object of type `typ` (keys for maps, indexes for lists).
fn check_segment(at: &[PathSegment], typ: ObjType, seg: &PathSegment) -> Result<(), DocError> {
    match (typ, seg) {
        (ObjType::Map | ObjType::Table, PathSegment::Key(_)) => Ok(()),
        (ObjType::List, PathSegment::Index(_)) => Ok(()),
        (ObjType::Text, _) => Err(path_error(at, "is text, which edits cannot address")),
        (ObjType::Map | ObjType::Table, PathSegment::Index(_)) => {
            Err(path_error(at, "is a map, addressed with an index"))
        }
        (ObjType::List, PathSegment::Key(_)) => {
            Err(path_error(at, "is a list, addressed with a key"))
        }
    }
}

/// Splits a non-empty path into its parent object and last segment, checking the segment.
fn parent<'p, T: ReadDoc>(
    doc: &T,
    path: &'p [PathSegment],
) -> Result<(ObjId, ObjType, &'p PathSegment), DocError> {
    let (last, init) = path
        .split_last()
        .ok_or_else(|| path_error(path, "must not be empty"))?;
    let (obj, typ) = resolve(doc, init)?;
    check_segment(init, typ, last)?;
    if let (ObjType::List, PathSegment::Index(i)) = (typ, last) {
        let len = doc.length(&obj);
        if *i >= len {
            return Err(path_error(
                path,
                format!("index out of range (length {len})"),
            ));
        }
    }
    Ok((obj, typ, last))
}

fn apply_edit<T: Transactable>(tx: &mut T, edit: &DocEdit) -> Result<(), DocError> {
    match edit {
        DocEdit::Set { path, value } => {
            check_depth(path.len(), value)?;
            let (obj, _, last) = parent(tx, path)?;
            put_value(tx, &obj, Prop::from(last), value)
        }
        DocEdit::Delete { path } => {
            if path.len() > MAX_EDIT_DEPTH {
                return Err(DocError::TooDeep);
            }
            let (obj, _, last) = parent(tx, path)?;
            if tx
                .get(&obj, Prop::from(last))
                .map_err(edit_error)?
                .is_none()
            {
                return Ok(());
            }
            tx.delete(&obj, Prop::from(last)).map_err(edit_error)
        }
        DocEdit::Insert { path, index, value } => {
            check_depth(path.len() + 1, value)?;
            let (obj, typ) = resolve(tx, path)?;
            if typ != ObjType::List {
                return Err(path_error(path, "is not a list"));
            }
            let len = tx.length(&obj);
            if *index > len {
                return Err(path_error(
                    path,
                    format!("index {index} past the end ({len})"),
                ));
            }
            insert_value(tx, &obj, *index, value)
        }
        DocEdit::Increment { path, by } => {
            if path.len() > MAX_EDIT_DEPTH {
                return Err(DocError::TooDeep);
            }
            let (obj, _, last) = parent(tx, path)?;
            match tx.get(&obj, Prop::from(last)).map_err(edit_error)? {
                Some((Value::Scalar(s), _)) if matches!(s.as_ref(), ScalarValue::Counter(_)) => tx
                    .increment(&obj, Prop::from(last), *by)
                    .map_err(edit_error),
                Some(_) => Err(path_error(path, "is not a counter")),
                None => tx
                    .put(&obj, Prop::from(last), ScalarValue::counter(*by))
                    .map_err(edit_error),
            }
        }
    }
}

fn check_depth(path_len: usize, value: &serde_json::Value) -> Result<(), DocError> {
    fn depth(v: &serde_json::Value, limit: usize) -> usize {
        if limit == 0 {
            return 1;
        }
        match v {
            serde_json::Value::Array(a) => {
                1 + a.iter().map(|v| depth(v, limit - 1)).max().unwrap_or(0)
            }
            serde_json::Value::Object(m) => {
                1 + m.values().map(|v| depth(v, limit - 1)).max().unwrap_or(0)
            }
            _ => 0,
        }
    }
    if path_len + depth(value, MAX_EDIT_DEPTH) > MAX_EDIT_DEPTH {
        return Err(DocError::TooDeep);
    }
    Ok(())
}

/// The scalar for a JSON scalar, or `None` for arrays and objects.
fn scalar(value: &serde_json::Value) -> Option<ScalarValue> {
    use serde_json::Value as J;
    Some(match value {
        J::Null => ScalarValue::Null,
        J::Bool(b) => ScalarValue::Boolean(*b),
        J::Number(n) => {
            if let Some(i) = n.as_i64() {
                ScalarValue::Int(i)
            } else if let Some(u) = n.as_u64() {
                ScalarValue::Uint(u)
            } else {
                ScalarValue::F64(n.as_f64().unwrap_or(0.0))
            }
        }
        J::String(s) => ScalarValue::Str(s.as_str().into()),
        J::Array(_) | J::Object(_) => return None,
    })
}

fn put_value<T: Transactable>(
    tx: &mut T,
    obj: &ObjId,
    prop: Prop,
    value: &serde_json::Value,
) -> Result<(), DocError> {
    if let Some(s) = scalar(value) {
        return tx.put(obj, prop, s).map_err(edit_error);
    }
    let typ = if value.is_array() {
        ObjType::List
    } else {
        ObjType::Map
    };
    let child = tx.put_object(obj, prop, typ).map_err(edit_error)?;
    fill_object(tx, &child, value)
}

fn insert_value<T: Transactable>(
    tx: &mut T,
    list: &ObjId,
    index: usize,
    value: &serde_json::Value,
) -> Result<(), DocError> {
    if let Some(s) = scalar(value) {
        return tx.insert(list, index, s).map_err(edit_error);
    }
    let typ = if value.is_array() {
        ObjType::List
    } else {
        ObjType::Map
    };
    let child = tx.insert_object(list, index, typ).map_err(edit_error)?;
    fill_object(tx, &child, value)
}

/// Writes the entries of a JSON array or object into a freshly created list or map.
fn fill_object<T: Transactable>(
    tx: &mut T,
    obj: &ObjId,
    value: &serde_json::Value,
) -> Result<(), DocError> {
    match value {
        serde_json::Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                insert_value(tx, obj, i, v)?;
            }
        }
        serde_json::Value::Object(map) => {
            // Sorted, so the change's bytes do not depend on serde_json's map order.
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            for (k, v) in entries {
                put_value(tx, obj, Prop::Map(k.clone()), v)?;
            }
        }
        _ => {}
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Rendering

/// Deeper objects than this render as `null` (documents built by edits stay far shallower).
const MAX_RENDER_DEPTH: usize = 256;

fn render_object(doc: &Automerge, obj: &ObjId, typ: ObjType, depth: usize) -> serde_json::Value {
    if depth > MAX_RENDER_DEPTH {
        return serde_json::Value::Null;
    }
    match typ {
        ObjType::Map | ObjType::Table => {
            let mut keys: Vec<String> = doc.keys(obj).collect();
            keys.sort();
            let mut out = serde_json::Map::new();
            for k in keys {
                if let Ok(Some((v, id))) = doc.get(obj, k.as_str()) {
                    out.insert(k, render_value(doc, v, &id, depth));
                }
            }
            serde_json::Value::Object(out)
        }
        ObjType::List => {
            let len = doc.length(obj);
            let items = (0..len)
                .filter_map(|i| doc.get(obj, i).ok().flatten())
                .map(|(v, id)| render_value(doc, v, &id, depth))
                .collect();
            serde_json::Value::Array(items)
        }
        ObjType::Text => serde_json::Value::String(doc.text(obj).unwrap_or_default()),
    }
}

fn render_value(doc: &Automerge, value: Value<'_>, id: &ObjId, depth: usize) -> serde_json::Value {
    match value {
        Value::Object(t) => render_object(doc, id, t, depth + 1),
        Value::Scalar(s) => render_scalar(&s),
    }
}

fn render_scalar(s: &ScalarValue) -> serde_json::Value {
    use serde_json::Value as J;
    match s {
        ScalarValue::Bytes(b) => J::Array(b.iter().map(|&x| J::from(x)).collect()),
        ScalarValue::Str(s) => J::String(s.to_string()),
        ScalarValue::Int(i) => J::from(*i),
        ScalarValue::Uint(u) => J::from(*u),
        ScalarValue::F64(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
        ScalarValue::Counter(c) => J::from(i64::from(c)),
        ScalarValue::Timestamp(t) => J::from(*t),
        ScalarValue::Boolean(b) => J::Bool(*b),
        ScalarValue::Unknown { .. } | ScalarValue::Null => J::Null,
    }
}
