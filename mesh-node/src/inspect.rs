//! `inspect`: a key's internals on this node (value, causal context, contributions, recent
//! deltas), shaped for `GET /v1/inspect/{kind}/{id}`. It reads and describes; it must not
//! change anything.

use crate::delta::{LoggedDelta, MeshDelta};
use crdt_types::{CausalContext, Dot, Key, Object, ReplicaId, Stamp};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

/// At most this many recent deltas are listed.
pub const MAX_RECENT_DELTAS: usize = 32;

/// A key's internals on this node.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Inspection {
    /// `kind/id`.
    pub key: String,
    /// The value as a reader sees it (`null` for an absent session).
    pub value: serde_json::Value,
    /// The key's local change cursor (`null` if never written here).
    pub change_cursor: Option<u64>,
    /// The key's causal context (carts; empty for other kinds).
    pub context: ContextView,
    /// What makes up the value: for a cart, every counter entry with its origin; for other
    /// kinds, the origins of the logged deltas.
    pub contributions: Vec<Contribution>,
    /// The deltas still in this node's delta log that touched the key, newest first.
    pub recent_deltas: Vec<DeltaSummary>,
}

/// A causal context: per replica, every dot up to the count, plus dots above it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ContextView {
    /// Replica (hex) to its contiguous count.
    pub vv: BTreeMap<String, u64>,
    /// Out-of-order dots as `replica:seq`.
    pub cloud: Vec<String>,
}

/// Who made a dot: the replica and, when this node knows it, its node and region.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Origin {
    /// The replica id (hex).
    pub replica: String,
    /// The node id of that replica, if known.
    pub node_id: Option<String>,
    /// Its region, if known.
    pub region: Option<String>,
}

/// An HLC stamp, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct StampView {
    /// The raw 64-bit hybrid logical clock value.
    pub hlc: u64,
    /// Its physical part, Unix ms.
    pub wall_ms: i64,
    /// Its logical counter.
    pub logical: u64,
}

impl From<Stamp> for StampView {
    fn from(s: Stamp) -> Self {
        StampView {
            hlc: s.hlc,
            wall_ms: s.wall_ms(),
            logical: s.logical(),
        }
    }
}

/// One part of a key's value and where it came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Contribution {
    /// The cart item it belongs to (carts only).
    pub sku: Option<String>,
    /// The increment it adds (carts only).
    pub amount: Option<i64>,
    /// Who made it.
    pub origin: Origin,
    /// The origin's delta sequence number.
    pub seq: u64,
    /// Its HLC stamp, when the delta is still in the log.
    pub stamp: Option<StampView>,
}

/// One logged delta that touched the key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DeltaSummary {
    /// Who made it.
    pub origin: Origin,
    /// The origin's delta sequence number.
    pub seq: u64,
    /// Its HLC stamp at the origin.
    pub stamp: StampView,
    /// How many links it crossed to get here (0: made here).
    pub hops: u32,
    /// Its encoded size in bytes.
    pub bytes: usize,
}

/// Who the replicas are, as far as this node knows.
pub(crate) type Directory = HashMap<ReplicaId, (String, String)>;

fn origin(directory: &Directory, replica: ReplicaId) -> Origin {
    let known = directory.get(&replica);
    Origin {
        replica: replica.to_string(),
        node_id: known.map(|k| k.0.clone()),
        region: known.map(|k| k.1.clone()),
    }
}

fn context_view(cc: &CausalContext) -> ContextView {
    ContextView {
        vv: cc.vv().iter().map(|(r, n)| (r.to_string(), n)).collect(),
        cloud: cc
            .cloud()
            .map(|d| format!("{}:{}", d.replica, d.counter))
            .collect(),
    }
}

/// The reader's value of an object as JSON.
pub(crate) fn value_json(object: &Object, now_ms: i64) -> serde_json::Value {
    let value = match object {
        Object::Cart(c) => serde_json::to_value(c.view()),
        Object::Session(s) => serde_json::to_value(s.view(now_ms)),
        Object::Doc(d) => Ok(d.to_json()),
    };
    value.unwrap_or(serde_json::Value::Null)
}

/// Describes `key` from its object, its cursor and the deltas of the log.
pub(crate) fn inspect(
    key: &Key,
    object: &Object,
    change_cursor: Option<u64>,
    log: impl Iterator<Item = LoggedDelta>,
    directory: &Directory,
    now_ms: i64,
) -> Inspection {
    let mine: Vec<LoggedDelta> = log.filter(|d| &d.key == key).collect();
    let stamps: HashMap<Dot, Stamp> = mine.iter().map(|d| (d.dot(), d.stamp)).collect();
    let mut recent: Vec<&LoggedDelta> = mine.iter().collect();
    recent.sort_by_key(|d| std::cmp::Reverse(d.stamp));
    let recent_deltas = recent
        .into_iter()
        .take(MAX_RECENT_DELTAS)
        .map(|d| DeltaSummary {
            origin: origin(directory, d.origin),
            seq: d.seq,
            stamp: d.stamp.into(),
            hops: d.hops,
            bytes: gossip::Payload::encoded_len(&d.payload as &MeshDelta),
        })
        .collect();
    let (context, contributions) = match object {
        Object::Cart(cart) => {
            let contributions = cart
                .counters()
                .flat_map(|(sku, counter)| {
                    counter
                        .entries()
                        .map(move |(dot, amount)| (sku, *dot, *amount))
                })
                .map(|(sku, dot, amount)| Contribution {
                    sku: Some(sku.to_owned()),
                    amount: Some(amount),
                    origin: origin(directory, dot.replica),
                    seq: dot.counter,
                    stamp: stamps.get(&dot).map(|s| (*s).into()),
                })
                .collect();
            (context_view(cart.context()), contributions)
        }
        Object::Session(_) | Object::Doc(_) => {
            let contributions = mine
                .iter()
                .map(|d| Contribution {
                    sku: None,
                    amount: None,
                    origin: origin(directory, d.origin),
                    seq: d.seq,
                    stamp: Some(d.stamp.into()),
                })
                .collect();
            (ContextView::default(), contributions)
        }
    };
    Inspection {
        key: key.to_string(),
        value: value_json(object, now_ms),
        change_cursor,
        context,
        contributions,
        recent_deltas,
    }
}
