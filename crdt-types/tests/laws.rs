//! Lattice laws for every CRDT of the crate, from random operation sequences on 2 to 4
//! replicas: join is commutative, associative and idempotent, and any sequence of the deltas
//! applied in any order, with duplicates, gives the same state as merging the full states.

mod common;

use common::Replica;
use crdt_types::{
    AwMap, AwSet, Cart, Counter, DocDelta, DocEdit, Document, DotMap, DotSet, GCounter, Lattice,
    LwwRegister, MaxRegister, MvRegister, PNCounter, PathSegment, Session,
};
use proptest::prelude::*;
use proptest::sample::Index;
use std::fmt::Debug;

/// One CRDT under test: how to run an operation and how to merge states and deltas.
trait Model {
    type State: Clone + PartialEq + Debug;
    type Delta: Clone + Debug;
    type Op: Clone + Debug + 'static;

    fn ops() -> BoxedStrategy<Self::Op>;
    fn apply_op(
        state: &mut Self::State,
        replica: &mut Replica,
        op: &Self::Op,
    ) -> Option<Self::Delta>;
    fn join(state: &mut Self::State, other: Self::State);
    fn apply_delta(state: &mut Self::State, delta: Self::Delta);
    fn empty() -> Self::State;
}

#[derive(Clone, Debug)]
enum Step<Op> {
    Local { replica: usize, op: Op },
    Sync { from: usize, to: usize },
}

fn scenario<M: Model>() -> impl Strategy<Value = (usize, Vec<Step<M::Op>>)> {
    (2usize..=4).prop_flat_map(|n| {
        let step = prop_oneof![
            3 => (0..n, M::ops()).prop_map(|(replica, op)| Step::Local { replica, op }),
            1 => (0..n, 0..n).prop_map(|(from, to)| Step::Sync { from, to }),
        ];
        (Just(n), prop::collection::vec(step, 1..24))
    })
}

/// Replica ids that are neither small nor sequential.
const IDS: [u64; 4] = [0x9e37_79b9_7f4a_7c15, 7, 1 << 40, u64::MAX - 3];

fn joined<M: Model>(a: &M::State, b: &M::State) -> M::State {
    let mut out = a.clone();
    M::join(&mut out, b.clone());
    out
}

/// Equal as values and in every detail their `Debug` shows (for documents, the JSON too).
fn same<T: PartialEq + Debug>(a: &T, b: &T) -> bool {
    a == b && format!("{a:?}") == format!("{b:?}")
}

fn check<M: Model>(
    n: usize,
    steps: Vec<Step<M::Op>>,
    picks: [Index; 3],
    seed: u64,
) -> Result<(), TestCaseError> {
    let mut replicas: Vec<Replica> = IDS[..n].iter().map(|&id| Replica::new(id)).collect();
    let mut states = vec![M::empty(); n];
    let mut pool = vec![M::empty()];
    let mut deltas = Vec::new();
    for step in steps {
        match step {
            Step::Local { replica, op } => {
                replicas[replica].now_ms += 7;
                if let Some(d) = M::apply_op(&mut states[replica], &mut replicas[replica], &op) {
                    deltas.push(d);
                }
                pool.push(states[replica].clone());
            }
            Step::Sync { from, to } => {
                let s = states[from].clone();
                M::join(&mut states[to], s);
                pool.push(states[to].clone());
            }
        }
    }

    let [a, b, c] = picks.map(|i| i.get(&pool).clone());
    prop_assert!(
        same(&joined::<M>(&a, &b), &joined::<M>(&b, &a)),
        "not commutative"
    );
    prop_assert!(
        same(
            &joined::<M>(&joined::<M>(&a, &b), &c),
            &joined::<M>(&a, &joined::<M>(&b, &c))
        ),
        "not associative"
    );
    prop_assert!(same(&joined::<M>(&a, &a), &a), "not idempotent");
    let ab = joined::<M>(&a, &b);
    prop_assert!(same(&joined::<M>(&ab, &b), &ab), "not idempotent");

    let mut full = M::empty();
    for s in &states {
        M::join(&mut full, s.clone());
    }
    // Every delta once in a shuffled order, then a third of them again.
    let mut rng = seed | 1;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut order: Vec<usize> = (0..deltas.len()).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, (next() % (i as u64 + 1)) as usize);
    }
    for _ in 0..deltas.len() / 3 {
        let at = (next() % (order.len() as u64 + 1)) as usize;
        let which = (next() % deltas.len() as u64) as usize;
        order.insert(at, which);
    }
    let mut from_deltas = M::empty();
    for i in order {
        M::apply_delta(&mut from_deltas, deltas[i].clone());
    }
    prop_assert!(
        same(&from_deltas, &full),
        "deltas in any order differ from the merged states:\n{from_deltas:?}\n{full:?}"
    );
    Ok(())
}

macro_rules! laws {
    ($name:ident, $model:ty, $cases:expr) => {
        proptest! {
            #![proptest_config(ProptestConfig {
                cases: $cases,
                failure_persistence: None,
                ..ProptestConfig::default()
            })]
            #[test]
            fn $name(
                (n, steps) in scenario::<$model>(),
                picks in [any::<Index>(), any::<Index>(), any::<Index>()],
                seed in any::<u64>(),
            ) {
                check::<$model>(n, steps, picks, seed)?;
            }
        }
    };
}

/// Models whose state is its own delta type, merged with `Lattice::join`.
macro_rules! lattice_model {
    () => {
        fn join(state: &mut Self::State, other: Self::State) {
            state.join(other);
        }
        fn apply_delta(state: &mut Self::State, delta: Self::Delta) {
            state.join(delta);
        }
        fn empty() -> Self::State {
            Default::default()
        }
    };
}

// ---------------------------------------------------------------------------------------------

struct GCounterModel;
impl Model for GCounterModel {
    type State = GCounter;
    type Delta = GCounter;
    type Op = u8;
    fn ops() -> BoxedStrategy<u8> {
        any::<u8>().boxed()
    }
    fn apply_op(s: &mut GCounter, r: &mut Replica, op: &u8) -> Option<GCounter> {
        Some(s.increment(r.tag(), u64::from(*op)))
    }
    lattice_model!();
}
laws!(gcounter_laws, GCounterModel, 64);

struct PNCounterModel;
impl Model for PNCounterModel {
    type State = PNCounter;
    type Delta = PNCounter;
    type Op = (bool, u8);
    fn ops() -> BoxedStrategy<(bool, u8)> {
        any::<(bool, u8)>().boxed()
    }
    fn apply_op(s: &mut PNCounter, r: &mut Replica, &(up, n): &(bool, u8)) -> Option<PNCounter> {
        Some(if up {
            s.increment(r.tag(), u64::from(n))
        } else {
            s.decrement(r.tag(), u64::from(n))
        })
    }
    lattice_model!();
}
laws!(pncounter_laws, PNCounterModel, 64);

struct LwwModel;
impl Model for LwwModel {
    type State = LwwRegister<u8>;
    type Delta = LwwRegister<u8>;
    type Op = u8;
    fn ops() -> BoxedStrategy<u8> {
        any::<u8>().boxed()
    }
    fn apply_op(s: &mut Self::State, r: &mut Replica, op: &u8) -> Option<Self::Delta> {
        Some(s.set(r.tag(), *op))
    }
    lattice_model!();
}
laws!(lww_register_laws, LwwModel, 64);

struct MaxModel;
impl Model for MaxModel {
    type State = MaxRegister<u8>;
    type Delta = MaxRegister<u8>;
    type Op = u8;
    fn ops() -> BoxedStrategy<u8> {
        any::<u8>().boxed()
    }
    fn apply_op(s: &mut Self::State, _: &mut Replica, op: &u8) -> Option<Self::Delta> {
        Some(s.raise(*op))
    }
    lattice_model!();
}
laws!(max_register_laws, MaxModel, 32);

struct MvModel;
impl Model for MvModel {
    type State = MvRegister<u8>;
    type Delta = MvRegister<u8>;
    type Op = u8;
    fn ops() -> BoxedStrategy<u8> {
        (0u8..4).boxed()
    }
    fn apply_op(s: &mut Self::State, r: &mut Replica, op: &u8) -> Option<Self::Delta> {
        Some(s.write(r.tag(), *op))
    }
    lattice_model!();
}
laws!(mv_register_laws, MvModel, 64);

#[derive(Clone, Debug)]
enum SetOp {
    Add(u8),
    Remove(u8),
    Clear,
}

struct AwSetModel;
impl Model for AwSetModel {
    type State = AwSet<u8>;
    type Delta = AwSet<u8>;
    type Op = SetOp;
    fn ops() -> BoxedStrategy<SetOp> {
        prop_oneof![
            4 => (0u8..5).prop_map(SetOp::Add),
            3 => (0u8..5).prop_map(SetOp::Remove),
            1 => Just(SetOp::Clear),
        ]
        .boxed()
    }
    fn apply_op(s: &mut Self::State, r: &mut Replica, op: &SetOp) -> Option<Self::Delta> {
        Some(match op {
            SetOp::Add(x) => s.add(r.tag(), *x),
            SetOp::Remove(x) => s.remove(x),
            SetOp::Clear => s.clear(),
        })
    }
    lattice_model!();
}
laws!(awset_laws, AwSetModel, 64);

#[derive(Clone, Debug)]
enum NestedOp {
    /// Outer key, inner key, amount (counter) or flag add.
    Update(u8, u8, i8),
    RemoveInner(u8, u8),
    RemoveOuter(u8),
    Clear,
}

fn nested_ops() -> BoxedStrategy<NestedOp> {
    prop_oneof![
        5 => (0u8..3, 0u8..3, any::<i8>()).prop_map(|(a, b, n)| NestedOp::Update(a, b, n)),
        2 => (0u8..3, 0u8..3).prop_map(|(a, b)| NestedOp::RemoveInner(a, b)),
        2 => (0u8..3).prop_map(NestedOp::RemoveOuter),
        1 => Just(NestedOp::Clear),
    ]
    .boxed()
}

/// A map of maps of add-wins flags (a map of sets).
struct NestedSetMapModel;
impl Model for NestedSetMapModel {
    type State = AwMap<u8, DotMap<u8, DotSet>>;
    type Delta = AwMap<u8, DotMap<u8, DotSet>>;
    type Op = NestedOp;
    fn ops() -> BoxedStrategy<NestedOp> {
        nested_ops()
    }
    fn apply_op(s: &mut Self::State, r: &mut Replica, op: &NestedOp) -> Option<Self::Delta> {
        Some(match *op {
            NestedOp::Update(a, b, _) => s.update(r.tag(), a, |inner, t| {
                inner.update_delta(t, b, |flag, t| flag.add_delta(t))
            }),
            NestedOp::RemoveInner(a, b) => s.update(r.tag(), a, |inner, _| inner.remove_delta(&b)),
            NestedOp::RemoveOuter(a) => s.remove(&a),
            NestedOp::Clear => s.clear(),
        })
    }
    lattice_model!();
}
laws!(awmap_nested_set_laws, NestedSetMapModel, 64);

/// A map of maps of embedded counters.
struct NestedCounterMapModel;
impl Model for NestedCounterMapModel {
    type State = AwMap<u8, DotMap<u8, Counter>>;
    type Delta = AwMap<u8, DotMap<u8, Counter>>;
    type Op = NestedOp;
    fn ops() -> BoxedStrategy<NestedOp> {
        nested_ops()
    }
    fn apply_op(s: &mut Self::State, r: &mut Replica, op: &NestedOp) -> Option<Self::Delta> {
        Some(match *op {
            NestedOp::Update(a, b, n) => s.update(r.tag(), a, |inner, t| {
                inner.update_delta(t, b, |c, t| c.increment_delta(t, i64::from(n)))
            }),
            NestedOp::RemoveInner(a, b) => s.update(r.tag(), a, |inner, t| {
                inner.update_delta(t, b, |c, _| c.reset_delta())
            }),
            NestedOp::RemoveOuter(a) => s.remove(&a),
            NestedOp::Clear => s.clear(),
        })
    }
    lattice_model!();
}
laws!(awmap_nested_counter_laws, NestedCounterMapModel, 64);

#[derive(Clone, Debug)]
enum CartOp {
    Add(usize, u64),
    Set(usize, u64),
    Remove(usize),
    Clear,
}

const SKUS: [&str; 4] = ["apple", "pear", "kiwi", "sku-ü"];

/// Single-item cart operations on skus `0..skus`.
fn cart_ops(skus: usize) -> BoxedStrategy<CartOp> {
    prop_oneof![
        5 => (0..skus, 1u64..6).prop_map(|(s, n)| CartOp::Add(s, n)),
        3 => (0..skus, 0u64..6).prop_map(|(s, q)| CartOp::Set(s, q)),
        2 => (0..skus).prop_map(CartOp::Remove),
        1 => Just(CartOp::Clear),
    ]
    .boxed()
}

/// Applies `op`, naming sku `i` by `sku(i)`, and returns its delta.
fn apply_cart_op(
    s: &mut Cart,
    r: &mut Replica,
    op: &CartOp,
    sku: impl Fn(usize) -> String,
) -> Cart {
    match *op {
        CartOp::Add(i, n) => s.add(r.tag(), &sku(i), n).expect("valid add"),
        CartOp::Set(i, q) => s.set_quantity(r.tag(), &sku(i), q).expect("valid set"),
        CartOp::Remove(i) => s.remove(&sku(i)).expect("valid remove"),
        CartOp::Clear => s.clear(),
    }
}

/// The invariants every cart operation keeps, on the state and the delta it made.
fn checked_cart_delta(s: &Cart, d: Cart) -> Option<Cart> {
    assert!(s.is_well_formed() && d.is_well_formed());
    assert!(s.view().items.iter().all(|i| i.qty > 0));
    Some(d)
}

struct CartModel;
impl Model for CartModel {
    type State = Cart;
    type Delta = Cart;
    type Op = CartOp;
    fn ops() -> BoxedStrategy<CartOp> {
        cart_ops(SKUS.len())
    }
    fn apply_op(s: &mut Cart, r: &mut Replica, op: &CartOp) -> Option<Cart> {
        let d = apply_cart_op(s, r, op, |i| SKUS[i].to_owned());
        checked_cart_delta(s, d)
    }
    lattice_model!();
}
laws!(cart_laws, CartModel, 96);

/// Carts large enough for the key index a map keeps from 16 keys on, with skus past the
/// 22 bytes a key stores inline: `Fill` adds a run of items in one delta group.
const WIDE_SKUS: usize = 40;

fn wide_sku(i: usize) -> String {
    if i.is_multiple_of(3) {
        format!("a-sku-long-enough-to-live-on-the-heap-{i}")
    } else {
        format!("sku-{i}")
    }
}

#[derive(Clone, Debug)]
enum WideCartOp {
    Fill(usize, usize),
    Item(CartOp),
}

struct WideCartModel;
impl Model for WideCartModel {
    type State = Cart;
    type Delta = Cart;
    type Op = WideCartOp;
    fn ops() -> BoxedStrategy<WideCartOp> {
        prop_oneof![
            2 => (0..WIDE_SKUS, 16usize..=WIDE_SKUS).prop_map(|(s, n)| WideCartOp::Fill(s, n)),
            11 => cart_ops(WIDE_SKUS).prop_map(WideCartOp::Item),
        ]
        .boxed()
    }
    fn apply_op(s: &mut Cart, r: &mut Replica, op: &WideCartOp) -> Option<Cart> {
        let d = match op {
            WideCartOp::Fill(start, n) => {
                let mut group = Cart::default();
                for i in 0..*n {
                    let sku = wide_sku((start + i) % WIDE_SKUS);
                    group.join(s.add(r.tag(), &sku, 1).expect("valid add"));
                }
                group
            }
            WideCartOp::Item(op) => apply_cart_op(s, r, op, wide_sku),
        };
        checked_cart_delta(s, d)
    }
    lattice_model!();
}
laws!(wide_cart_laws, WideCartModel, 48);

#[derive(Clone, Debug)]
enum SessionOp {
    User(u8),
    Attr(u8, i8),
    Touch(u32),
    Revoke,
}

struct SessionModel;
impl Model for SessionModel {
    type State = Session;
    type Delta = Session;
    type Op = SessionOp;
    fn ops() -> BoxedStrategy<SessionOp> {
        prop_oneof![
            3 => (0u8..3).prop_map(SessionOp::User),
            5 => (0u8..3, any::<i8>()).prop_map(|(k, v)| SessionOp::Attr(k, v)),
            3 => (0u32..100_000).prop_map(SessionOp::Touch),
            1 => Just(SessionOp::Revoke),
        ]
        .boxed()
    }
    fn apply_op(s: &mut Session, r: &mut Replica, op: &SessionOp) -> Option<Session> {
        match *op {
            SessionOp::User(u) => s.set_user_id(r.tag(), &format!("user-{u}")).ok(),
            SessionOp::Attr(k, v) => s
                .set_attr(r.tag(), &format!("k{k}"), &serde_json::json!({ "v": v }))
                .ok(),
            SessionOp::Touch(ttl) => s.touch(r.tag(), u64::from(ttl)).ok(),
            SessionOp::Revoke => Some(s.revoke()),
        }
    }
    lattice_model!();
}
laws!(session_laws, SessionModel, 96);

#[derive(Clone, Debug)]
enum DocOp {
    Set(u8, i64),
    Delete(u8),
    Increment(i64),
    Insert(usize, u8),
}

struct DocumentModel;
impl Model for DocumentModel {
    type State = Document;
    type Delta = DocDelta;
    type Op = DocOp;
    fn ops() -> BoxedStrategy<DocOp> {
        prop_oneof![
            3 => (0u8..3, -5i64..5).prop_map(|(k, v)| DocOp::Set(k, v)),
            1 => (0u8..3).prop_map(DocOp::Delete),
            2 => (-3i64..4).prop_map(DocOp::Increment),
            2 => (0usize..3, any::<u8>()).prop_map(|(i, v)| DocOp::Insert(i, v)),
        ]
        .boxed()
    }
    fn apply_op(s: &mut Document, r: &mut Replica, op: &DocOp) -> Option<DocDelta> {
        let key = |k: &str| vec![PathSegment::Key(k.to_owned())];
        let edits = match *op {
            DocOp::Set(k, v) => vec![DocEdit::Set {
                path: key(&format!("k{k}")),
                value: v.into(),
            }],
            DocOp::Delete(k) => vec![DocEdit::Delete {
                path: key(&format!("k{k}")),
            }],
            DocOp::Increment(by) => vec![DocEdit::Increment {
                path: key("count"),
                by,
            }],
            DocOp::Insert(i, v) => {
                let mut edits = Vec::new();
                if s.to_json().get("list").is_none() {
                    edits.push(DocEdit::Set {
                        path: key("list"),
                        value: serde_json::json!([]),
                    });
                }
                let len = s.to_json()["list"].as_array().map_or(0, Vec::len);
                edits.push(DocEdit::Insert {
                    path: key("list"),
                    index: i.min(len),
                    value: v.into(),
                });
                edits
            }
        };
        s.apply_edits(r.tag(), &edits).ok()
    }
    fn join(s: &mut Document, other: Document) {
        s.join(other);
    }
    fn apply_delta(s: &mut Document, d: DocDelta) {
        s.apply(d).expect("deltas of real edits apply");
    }
    fn empty() -> Document {
        Document::new()
    }
}
laws!(document_laws, DocumentModel, 24);

// ---------------------------------------------------------------------------------------------
// Causal contexts: the join is set union, in canonical form, whatever the cloud sizes.

fn dot_sets() -> impl Strategy<Value = Vec<(u8, u64)>> {
    prop::collection::vec((0u8..3, 1u64..40), 0..60)
}

fn context_of(dots: &[(u8, u64)]) -> crdt_types::CausalContext {
    dots.iter()
        .map(|&(r, c)| crdt_types::Dot::new(crdt_types::ReplicaId(u64::from(r) * 1000 + 1), c))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn causal_context_join_is_canonical_set_union(a in dot_sets(), b in dot_sets(), stable in (0u64..30, 0u64..30)) {
        let (ca, cb) = (context_of(&a), context_of(&b));
        let mut joined = ca.clone();
        joined.join(&cb);
        let union: Vec<(u8, u64)> = a.iter().chain(b.iter()).copied().collect();
        prop_assert_eq!(&joined, &context_of(&union));
        let mut other_way = cb.clone();
        other_way.join(&ca);
        prop_assert_eq!(&joined, &other_way);
        prop_assert_eq!(joined.dot_count(), joined.dots().count() as u64);
        for (r, c) in union {
            prop_assert!(joined.contains(&crdt_types::Dot::new(crdt_types::ReplicaId(u64::from(r) * 1000 + 1), c)));
        }
        // Folding in a stable vector covers exactly what it claims, for mentioned replicas.
        let vv: crdt_types::VersionVector = [(crdt_types::ReplicaId(1), stable.0), (crdt_types::ReplicaId(1001), stable.1)].into_iter().collect();
        let mut compacted = joined.clone();
        compacted.compact_stable(&vv);
        for d in joined.dots() {
            prop_assert!(compacted.contains(&d));
        }
        let decoded: crdt_types::CausalContext = crdt_types::wire::decode(&crdt_types::wire::encode(&compacted).unwrap()).unwrap();
        prop_assert_eq!(decoded, compacted);
    }
}

/// A delta's key is only a hint of where its removals live: a remove that names the wrong key
/// (here a buggy peer that minted the same dot under another sku) still removes the dot
/// wherever the receiver holds it, as the full-state join does.
#[test]
fn a_remove_naming_the_wrong_key_still_removes_the_dots_it_covers() {
    let (mut honest, mut buggy) = (Replica::new(7), Replica::new(7));
    let mut receiver = Cart::new();
    receiver.add(honest.tag(), "apple", 2).expect("valid add");
    let mut peer = Cart::new();
    peer.add(buggy.tag(), "pear", 3).expect("valid add");
    let remove = peer.remove("pear").expect("valid remove");

    let mut by_delta = receiver.clone();
    by_delta.join(remove);
    let mut by_state = receiver.clone();
    by_state.join(peer);
    assert_eq!(by_delta.quantity("apple"), 0);
    assert_eq!(by_delta, by_state);
    assert!(by_delta.view().items.is_empty());
}
