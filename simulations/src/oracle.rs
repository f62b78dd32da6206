//! The oracle: an independent statement of CONTRACT §1 that says what every key must hold.
//!
//! For every acknowledged operation it records what the operation did and which earlier
//! operations on the same key its origin replica had observed when it issued it. From that
//! alone it computes the value any set of operations must produce, without calling a CRDT
//! join: a cart item's quantity is the sum of the increments that no remove covers, where a
//! remove covers exactly the increments its origin had observed (add wins); a session
//! attribute is the write with the greatest `(HLC stamp, replica)`; a revoke wins over
//! everything. The CRDT code is then judged against this.
//!
//! A remove covers the increments its origin *held*: observed and not already removed there.
//! Once every operation is delivered this is the same as "everything it observed" (whatever
//! removed the rest is delivered too); on a replica that has the remove but not yet what
//! its origin had seen before it, it is what a delta-state remove does.

use crate::queue::Millis;
use crdt_types::{Dot, Key, Stamp};
use rustc_hash::FxBuildHasher;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;

/// Index of an operation in the oracle's log.
pub type OpId = u32;

/// A user-level operation of CONTRACT §1, as the workload issued it.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// `add(sku, n)`.
    CartAdd {
        /// Item.
        sku: String,
        /// Increment, >= 1.
        n: u64,
    },
    /// `set_quantity(sku, qty)`; 0 is a remove.
    CartSet {
        /// Item.
        sku: String,
        /// Wanted quantity.
        qty: u64,
    },
    /// `remove(sku)`.
    CartRemove {
        /// Item.
        sku: String,
    },
    /// `clear()`.
    CartClear,
    /// Creates or updates a session (`PUT /v1/sessions/{id}`).
    SessionPut {
        /// New owner, if given.
        user_id: Option<String>,
        /// Attributes written (each a last-writer-wins register).
        attrs: BTreeMap<String, Value>,
        /// New expiry, if a TTL was given: the HLC wall time of the write plus the TTL.
        expires_at_ms: Option<i64>,
    },
    /// Extends a session's expiry.
    SessionTouch {
        /// The HLC wall time of the touch plus the TTL.
        expires_at_ms: i64,
    },
    /// `revoke()` (logout).
    SessionRevoke,
}

impl Op {
    /// Whether this operation is on a cart (else on a session).
    pub fn is_cart(&self) -> bool {
        matches!(
            self,
            Op::CartAdd { .. } | Op::CartSet { .. } | Op::CartRemove { .. } | Op::CartClear
        )
    }
}

/// Which increments a cart operation removes (among those its origin had observed).
#[derive(Clone, Debug, PartialEq, Eq)]
enum Covers {
    Nothing,
    Sku(String),
    All,
}

/// One acknowledged operation and what its origin had seen.
#[derive(Clone, Debug)]
pub struct OpRecord {
    /// The key it changed.
    pub key: Key,
    /// What it did.
    pub op: Op,
    /// Its dot (origin replica, delta sequence number).
    pub dot: Dot,
    /// Its HLC stamp.
    pub stamp: Stamp,
    /// The node slot that issued it.
    pub origin: usize,
    /// When it was acknowledged.
    pub issued_at: Millis,
    /// Earlier operations on the same key the origin had observed, ascending.
    pub observed: Vec<OpId>,
    /// For cart increments: the amount of the counter entry it made (0 if none).
    amount: i64,
    /// For cart removals: which items it removes.
    covers: Covers,
    /// For cart removals: the increments it removes, ascending. Exactly the entries of the
    /// covered items its origin held when it removed them: observed, and not removed already.
    covered: Vec<OpId>,
}

/// What a key must read as.
#[derive(Clone, Debug, PartialEq)]
pub enum View {
    /// Visible cart items (quantity > 0) by sku.
    Cart(BTreeMap<String, i64>),
    /// A session, or `None` when it is revoked or was never created.
    Session(Option<SessionView>),
}

/// The readable fields of a live session.
#[derive(Clone, Debug, PartialEq)]
pub struct SessionView {
    /// Owner (the last write that set it).
    pub user_id: Option<String>,
    /// Attributes, each the last write by `(stamp, replica)`.
    pub attrs: BTreeMap<String, Value>,
    /// The greatest expiry written.
    pub expires_at_ms: Option<i64>,
}

/// The log of acknowledged operations and the semantics that evaluate it.
#[derive(Default)]
pub struct Oracle {
    ops: Vec<OpRecord>,
    by_key: BTreeMap<Key, Vec<OpId>>,
    /// Looked up only, never iterated (once per applied delta: FxHash, not SipHash).
    by_dot: HashMap<Dot, OpId, FxBuildHasher>,
}

impl Oracle {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every recorded operation, in issue order.
    pub fn ops(&self) -> &[OpRecord] {
        &self.ops
    }

    /// One operation.
    pub fn op(&self, id: OpId) -> &OpRecord {
        &self.ops[id as usize]
    }

    /// The operations on `key`, in issue order.
    pub fn key_ops(&self, key: &Key) -> &[OpId] {
        self.by_key.get(key).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Every key that has operations, in key order.
    pub fn keys(&self) -> impl Iterator<Item = &Key> {
        self.by_key.keys()
    }

    /// The operation with this dot, if one was recorded.
    pub fn by_dot(&self, dot: &Dot) -> Option<OpId> {
        self.by_dot.get(dot).copied()
    }

    /// The operations on `key` for which `seen(dot)` holds: what a replica whose causal
    /// context is `seen` has observed of the key.
    pub fn observed(&self, key: &Key, seen: impl Fn(&Dot) -> bool) -> Vec<OpId> {
        self.key_ops(key)
            .iter()
            .copied()
            .filter(|&id| seen(&self.ops[id as usize].dot))
            .collect()
    }

    /// Records an acknowledged operation; `observed` are the earlier operations on the same
    /// key its origin had observed when it issued it.
    #[allow(clippy::too_many_arguments)]
    pub fn record(
        &mut self,
        key: Key,
        op: Op,
        dot: Dot,
        stamp: Stamp,
        origin: usize,
        issued_at: Millis,
        mut observed: Vec<OpId>,
    ) -> OpId {
        observed.sort_unstable();
        let (amount, covers) = match &op {
            Op::CartAdd { sku, n } => {
                // A hidden item (quantity <= 0) is dropped first, so the user gets exactly n.
                let before = self.cart_quantity(&observed, sku);
                let covers = if before <= 0 {
                    Covers::Sku(sku.clone())
                } else {
                    Covers::Nothing
                };
                (*n as i64, covers)
            }
            Op::CartSet { sku, qty: 0 } => (0, Covers::Sku(sku.clone())),
            Op::CartSet { sku, qty } => {
                let before = self.cart_quantity(&observed, sku);
                (*qty as i64 - before, Covers::Nothing)
            }
            Op::CartRemove { sku } => (0, Covers::Sku(sku.clone())),
            Op::CartClear => (0, Covers::All),
            _ => (0, Covers::Nothing),
        };
        let covered: Vec<OpId> = observed
            .iter()
            .copied()
            .filter(|&e| {
                let sku = match &self.ops[e as usize].op {
                    Op::CartAdd { sku, .. } | Op::CartSet { sku, .. } => sku,
                    _ => return false,
                };
                let applies = match &covers {
                    Covers::Nothing => false,
                    Covers::All => true,
                    Covers::Sku(s) => s == sku,
                };
                applies && !self.removed_within(e, &observed)
            })
            .collect();
        let id = self.ops.len() as OpId;
        let prev = self.by_dot.insert(dot, id);
        assert!(prev.is_none(), "dot {dot:?} issued twice");
        self.by_key.entry(key.clone()).or_default().push(id);
        self.ops.push(OpRecord {
            key,
            op,
            dot,
            stamp,
            origin,
            issued_at,
            observed,
            amount,
            covers,
            covered,
        });
        id
    }

    /// Whether the increment `entry` is removed by some operation in `set`.
    fn removed_within(&self, entry: OpId, set: &[OpId]) -> bool {
        set.iter()
            .any(|&r| self.ops[r as usize].covered.binary_search(&entry).is_ok())
    }

    /// The raw counter sum of `sku` over `set` (may be <= 0, then the item is hidden).
    fn cart_quantity(&self, set: &[OpId], sku: &str) -> i64 {
        set.iter()
            .filter(|&&id| {
                let rec = &self.ops[id as usize];
                matches!(&rec.op, Op::CartAdd { sku: s, .. } | Op::CartSet { sku: s, .. } if s == sku)
                    && rec.amount != 0
            })
            .filter(|&&id| !self.removed_within(id, set))
            .map(|&id| self.ops[id as usize].amount)
            .sum()
    }

    /// What `key` must read as once exactly the operations in `set` (ascending) are applied.
    pub fn expected(&self, key: &Key, set: &[OpId]) -> View {
        let cart = match self.key_ops(key).first() {
            Some(&first) => self.ops[first as usize].op.is_cart(),
            None => matches!(key.kind, crdt_types::Kind::Cart),
        };
        if cart {
            let skus: BTreeSet<&str> = set
                .iter()
                .filter_map(|&id| match &self.ops[id as usize].op {
                    Op::CartAdd { sku, .. } | Op::CartSet { sku, .. } => Some(sku.as_str()),
                    _ => None,
                })
                .collect();
            let items = skus
                .into_iter()
                .map(|s| (s.to_string(), self.cart_quantity(set, s)))
                .filter(|(_, q)| *q > 0)
                .collect();
            return View::Cart(items);
        }
        let recs = || set.iter().map(|&id| &self.ops[id as usize]);
        if recs().any(|r| r.op == Op::SessionRevoke) {
            return View::Session(None);
        }
        let mut view = SessionView {
            user_id: None,
            attrs: BTreeMap::new(),
            expires_at_ms: None,
        };
        let mut user_stamp = None;
        let mut attr_stamps: BTreeMap<&str, Stamp> = BTreeMap::new();
        let mut exists = false;
        for r in recs() {
            match &r.op {
                Op::SessionPut {
                    user_id,
                    attrs,
                    expires_at_ms,
                } => {
                    exists = true;
                    if let Some(u) = user_id
                        && user_stamp < Some(r.stamp)
                    {
                        user_stamp = Some(r.stamp);
                        view.user_id = Some(u.clone());
                    }
                    for (k, v) in attrs {
                        if attr_stamps.get(k.as_str()).is_none_or(|s| *s < r.stamp) {
                            attr_stamps.insert(k, r.stamp);
                            view.attrs.insert(k.clone(), v.clone());
                        }
                    }
                    if let Some(e) = expires_at_ms {
                        view.expires_at_ms = view.expires_at_ms.max(Some(*e));
                    }
                }
                Op::SessionTouch { expires_at_ms } => {
                    exists = true;
                    view.expires_at_ms = view.expires_at_ms.max(Some(*expires_at_ms));
                }
                _ => {}
            }
        }
        View::Session(exists.then_some(view))
    }

    /// Whether some operation in `set` removed `sku` from the cart `key` (for telling a
    /// resurrection from another wrong value).
    pub fn sku_was_removed(&self, set: &[OpId], sku: &str) -> bool {
        set.iter().any(|&id| match &self.ops[id as usize].covers {
            Covers::All => true,
            Covers::Sku(s) => s == sku,
            Covers::Nothing => false,
        })
    }

    /// A short human trace of the operations on `key`: for a failing run's report.
    pub fn trace(&self, key: &Key, node_name: &dyn Fn(usize) -> String, epoch: Millis) -> String {
        let mut out = String::new();
        for &id in self.key_ops(key) {
            let r = &self.ops[id as usize];
            let seen: Vec<String> = r.observed.iter().map(|o| format!("#{o}")).collect();
            let _ = writeln!(
                out,
                "  #{id} t={}ms {} {:?} {:?} observed [{}]",
                r.issued_at.saturating_sub(epoch),
                node_name(r.origin),
                r.dot,
                r.op,
                seen.join(" ")
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crdt_types::{Kind, ReplicaId};

    fn dot(r: u64, c: u64) -> Dot {
        Dot::new(ReplicaId(r), c)
    }

    fn stamp(hlc: u64, r: u64) -> Stamp {
        Stamp {
            hlc,
            replica: ReplicaId(r),
        }
    }

    fn add(sku: &str, n: u64) -> Op {
        Op::CartAdd { sku: sku.into(), n }
    }

    fn cart(items: &[(&str, i64)]) -> View {
        View::Cart(items.iter().map(|(s, q)| (s.to_string(), *q)).collect())
    }

    #[test]
    fn a_remove_keeps_the_concurrent_add_it_had_not_observed() {
        let mut o = Oracle::new();
        let k = Key::new(Kind::Cart, "c");
        let a = o.record(k.clone(), add("x", 2), dot(1, 1), stamp(1, 1), 0, 0, vec![]);
        let b = o.record(k.clone(), add("x", 3), dot(2, 1), stamp(1, 2), 1, 0, vec![]);
        // Node 1 removes x having seen only its own add.
        let r = o.record(
            k.clone(),
            Op::CartRemove { sku: "x".into() },
            dot(1, 2),
            stamp(2, 1),
            0,
            0,
            vec![a],
        );
        assert_eq!(o.expected(&k, &[a, b, r]), cart(&[("x", 3)]));
        assert_eq!(o.expected(&k, &[a, r]), cart(&[]));
        assert!(o.sku_was_removed(&[r], "x"));
    }

    #[test]
    fn set_quantity_applies_the_difference_and_concurrent_changes_stay_on_top() {
        let mut o = Oracle::new();
        let k = Key::new(Kind::Cart, "c");
        let a = o.record(k.clone(), add("x", 5), dot(1, 1), stamp(1, 1), 0, 0, vec![]);
        let s = o.record(
            k.clone(),
            Op::CartSet {
                sku: "x".into(),
                qty: 2,
            },
            dot(1, 2),
            stamp(2, 1),
            0,
            0,
            vec![a],
        );
        let c = o.record(
            k.clone(),
            add("x", 1),
            dot(2, 1),
            stamp(2, 2),
            1,
            0,
            vec![a],
        );
        assert_eq!(o.expected(&k, &[a, s]), cart(&[("x", 2)]));
        assert_eq!(o.expected(&k, &[a, s, c]), cart(&[("x", 3)]));
        // Two concurrent set_quantity(0 < q) from 5 down: both decrements apply; hidden item.
        let s2 = o.record(
            k.clone(),
            Op::CartSet {
                sku: "x".into(),
                qty: 1,
            },
            dot(3, 1),
            stamp(3, 3),
            2,
            0,
            vec![a],
        );
        assert_eq!(o.expected(&k, &[a, s, s2]), cart(&[]));
        // Adding to the hidden item drops what was observed: the user gets exactly n.
        let a2 = o.record(
            k.clone(),
            add("x", 4),
            dot(1, 3),
            stamp(4, 1),
            0,
            0,
            vec![a, s, s2],
        );
        assert_eq!(o.expected(&k, &[a, s, s2, a2]), cart(&[("x", 4)]));
    }

    #[test]
    fn session_attributes_are_last_writer_wins_and_revoke_wins() {
        let mut o = Oracle::new();
        let k = Key::new(Kind::Session, "s");
        let put = |u: Option<&str>, attr: i64, exp: Option<i64>| Op::SessionPut {
            user_id: u.map(Into::into),
            attrs: [("a".to_string(), Value::from(attr))].into(),
            expires_at_ms: exp,
        };
        let p1 = o.record(
            k.clone(),
            put(Some("u"), 1, Some(100)),
            dot(1, 1),
            stamp(5, 1),
            0,
            0,
            vec![],
        );
        let p2 = o.record(
            k.clone(),
            put(None, 2, None),
            dot(2, 1),
            stamp(9, 2),
            1,
            0,
            vec![p1],
        );
        let p3 = o.record(
            k.clone(),
            put(None, 3, Some(50)),
            dot(3, 1),
            stamp(7, 3),
            2,
            0,
            vec![p1],
        );
        match o.expected(&k, &[p1, p2, p3]) {
            View::Session(Some(v)) => {
                assert_eq!(v.user_id.as_deref(), Some("u"));
                assert_eq!(v.attrs["a"], Value::from(2));
                assert_eq!(v.expires_at_ms, Some(100));
            }
            v => panic!("{v:?}"),
        }
        let r = o.record(
            k.clone(),
            Op::SessionRevoke,
            dot(3, 2),
            stamp(8, 3),
            2,
            0,
            vec![p1, p3],
        );
        assert_eq!(o.expected(&k, &[p1, p2, p3, r]), View::Session(None));
    }
}
