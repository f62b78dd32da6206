//! The invariants a run must keep, judged against the [`Oracle`]: convergence (every replica
//! of every key equal, and equal to the oracle), no lost acknowledged write, no resurrection,
//! revoke wins, read-your-writes at the origin. Checkers read the real stores and report;
//! they never repair anything.

use crate::delivery::Deliveries;
use crate::node::SimNode;
use crate::oracle::{OpId, Oracle, SessionView, View};
use crate::queue::EPOCH_MS;
use crdt_types::{Key, Object, ReplicaId};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// What a reader of `obj` sees, in the oracle's terms. Sessions are compared by their raw
/// fields (as if read before any expiry), so the comparison does not depend on when it runs.
pub fn view_of(obj: &Object) -> View {
    match obj {
        Object::Cart(c) => View::Cart(c.items().map(|i| (i.sku, i.qty as i64)).collect()),
        Object::Session(s) => View::Session(s.view(i64::MIN).and_then(|v| {
            let never_written = v.user_id.is_none() && v.attrs.is_empty() && v.expires_at_ms == 0;
            (!never_written).then(|| SessionView {
                user_id: v.user_id,
                attrs: v.attrs,
                expires_at_ms: (v.expires_at_ms != 0).then_some(v.expires_at_ms),
            })
        })),
        // The workload does not write documents.
        Object::Doc(_) => View::Cart(BTreeMap::new()),
    }
}

/// The outcome of the end-of-run checks.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Verdict {
    /// Acknowledged updates missing from some member replica, plus `(key, sku)` pairs some
    /// replica shows with less than the oracle's quantity.
    pub lost_writes: u64,
    /// Removed items or revoked sessions visible on some replica.
    pub resurrections: u64,
    /// Revoked sessions visible on some replica (also resurrections).
    pub revoke_violations: u64,
    /// Keys where some replica differs from the oracle.
    pub divergent_keys: u64,
    /// Updates that died with their origin's data directory before any other node had them.
    pub writes_lost_with_data_dir: u64,
    /// One line per failing key (the first few), with a short trace.
    pub failures: Vec<String>,
}

/// How many failing keys get a full trace in the report.
const TRACED_KEYS: usize = 3;

/// Checks the member nodes (`members`, slots into `nodes`) against the oracle at the end of a
/// run.
pub fn check_final(
    oracle: &Oracle,
    nodes: &[SimNode],
    members: &[usize],
    deliveries: &Deliveries,
) -> Verdict {
    let mut v = Verdict::default();
    let lost_replicas: Vec<ReplicaId> = nodes
        .iter()
        .flat_map(|n| n.lost_replicas.iter().copied())
        .collect();
    let name = |slot: usize| nodes[slot].name.clone();
    for key in oracle.keys() {
        // Updates that no member holds and whose origin lost its data directory were lost by
        // the fault itself: the oracle leaves them out.
        let mut set: Vec<OpId> = Vec::new();
        for &id in oracle.key_ops(key) {
            let op = oracle.op(id);
            let held = members.iter().any(|&m| nodes[m].store.has_applied(&op.dot));
            if !held && lost_replicas.contains(&op.dot.replica) {
                v.writes_lost_with_data_dir += 1;
            } else {
                set.push(id);
            }
        }
        // Lost writes: an update some member never got.
        for &id in &set {
            if deliveries.observers(id) as usize == members.len() {
                continue;
            }
            let dot = oracle.op(id).dot;
            if members.iter().any(|&m| !nodes[m].store.has_applied(&dot)) {
                v.lost_writes += 1;
            }
        }
        let expected = oracle.expected(key, &set);
        // Group the replicas by what they show. A replica whose object equals the first
        // object of a group shows that group's view (a view is a function of the object), so
        // its view is built only when its object is new: in a converged cluster once per key,
        // not once per replica and key.
        let mut shown: Vec<(View, Vec<usize>)> = Vec::new();
        let mut firsts: Vec<Option<&Object>> = Vec::new();
        for &m in members {
            let object = nodes[m].store.get(key);
            if let Some(g) = firsts.iter().position(|&first| first == object) {
                shown[g].1.push(m);
                continue;
            }
            let view = object
                .map(view_of)
                .unwrap_or_else(|| view_of(&Object::new(key.kind)));
            match shown.iter_mut().find(|(w, _)| *w == view) {
                Some((_, who)) => who.push(m),
                None => {
                    shown.push((view, vec![m]));
                    firsts.push(object);
                }
            }
        }
        if shown.iter().all(|(w, _)| *w == expected) {
            continue;
        }
        v.divergent_keys += 1;
        for (view, _) in shown.iter().filter(|(w, _)| *w != expected) {
            match (view, &expected) {
                (View::Cart(got), View::Cart(want)) => {
                    for (sku, q) in got {
                        let wanted = want.get(sku).copied().unwrap_or(0);
                        if wanted == 0 && oracle.sku_was_removed(&set, sku) {
                            v.resurrections += 1;
                        } else if *q < wanted {
                            v.lost_writes += 1;
                        }
                    }
                    v.lost_writes += want.keys().filter(|s| !got.contains_key(*s)).count() as u64;
                }
                (View::Session(Some(_)), View::Session(None)) => {
                    v.resurrections += 1;
                    v.revoke_violations += 1;
                }
                (View::Session(None), View::Session(Some(_))) => v.lost_writes += 1,
                _ => {}
            }
        }
        if v.failures.len() < TRACED_KEYS {
            v.failures
                .push(describe_divergence(oracle, key, &expected, &shown, &name));
        }
    }
    v
}

fn describe_divergence(
    oracle: &Oracle,
    key: &Key,
    expected: &View,
    shown: &[(View, Vec<usize>)],
    name: &dyn Fn(usize) -> String,
) -> String {
    let mut s = format!("key {key} diverged: oracle expects {expected:?}\n");
    for (view, who) in shown {
        let mark = if view == expected { "ok " } else { "BAD" };
        let _ = writeln!(
            s,
            "  {mark} {} replica(s) (e.g. {}) show {view:?}",
            who.len(),
            name(who[0])
        );
    }
    s.push_str("  operations on the key (origin, dot, op, what its origin had observed):\n");
    s.push_str(&oracle.trace(key, name, EPOCH_MS));
    s
}
