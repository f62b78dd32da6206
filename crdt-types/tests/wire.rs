//! The wire codec on the types the mesh moves: round trips, and untrusted bytes (random,
//! truncated, corrupted, oversized, forged length prefixes) refused without panicking or
//! allocating what they claim.

mod common;

use common::Replica;
use crdt_types::wire::{self, FORMAT_VERSION, MAX_ENCODED_BYTES, WireError};
use crdt_types::{
    Cart, CausalContext, DocEdit, Document, Dot, Kind, Object, ObjectDelta, PathSegment, ReplicaId,
    Session, VersionVector,
};
use proptest::prelude::*;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// Records the largest single allocation made on the current thread.
struct TrackingAlloc;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for TrackingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = LARGEST.try_with(|m| m.set(m.get().max(layout.size())));
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = LARGEST.try_with(|m| m.set(m.get().max(new_size)));
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: TrackingAlloc = TrackingAlloc;

/// One object of each kind, with content, and a delta of each kind.
fn samples() -> (Vec<Object>, Vec<ObjectDelta>) {
    let (mut ra, mut rb) = (Replica::new(0xabcdef), Replica::new(2));
    let mut cart = Cart::new();
    let mut deltas = vec![
        ObjectDelta::Cart(cart.add(ra.tag(), "apple", 3).unwrap()),
        ObjectDelta::Cart(cart.add(rb.tag(), "pear", 1).unwrap()),
    ];
    cart.set_quantity(ra.tag(), "apple", 1).unwrap();
    deltas.push(ObjectDelta::Cart(cart.remove("pear").unwrap()));
    let mut session = Session::new();
    session.set_user_id(ra.tag(), "alice").unwrap();
    deltas.push(ObjectDelta::Session(
        session
            .set_attr(ra.tag(), "theme", &serde_json::json!({"dark": true}))
            .unwrap(),
    ));
    session.touch(ra.tag(), 60_000).unwrap();
    let mut doc = Document::new();
    deltas.push(ObjectDelta::Doc(
        doc.apply_edits(
            ra.tag(),
            &[
                DocEdit::Set {
                    path: vec![PathSegment::Key("title".into())],
                    value: serde_json::json!("hello"),
                },
                DocEdit::Increment {
                    path: vec![PathSegment::Key("n".into())],
                    by: 4,
                },
            ],
        )
        .unwrap(),
    ));
    deltas.push(ObjectDelta::Session(Session::revoked()));
    let objects = vec![
        Object::Cart(cart),
        Object::Session(session),
        Object::Doc(doc),
        Object::new(Kind::Cart),
        Object::new(Kind::Doc),
    ];
    (objects, deltas)
}

#[test]
fn objects_and_deltas_round_trip() {
    let (objects, deltas) = samples();
    for o in &objects {
        let bytes = wire::encode(o).unwrap();
        assert_eq!(bytes[0], FORMAT_VERSION);
        assert_eq!(bytes.len(), o.encoded_len());
        let back: Object = wire::decode(&bytes).unwrap();
        assert_eq!(&back, o);
        assert_eq!(wire::encode(&back).unwrap(), bytes, "re-encoding is stable");
        let delta = o.to_delta();
        let back: ObjectDelta = wire::decode(&wire::encode(&delta).unwrap()).unwrap();
        assert_eq!(back, delta);
    }
    for d in &deltas {
        let bytes = wire::encode(d).unwrap();
        assert_eq!(bytes.len(), d.encoded_len());
        let back: ObjectDelta = wire::decode(&bytes).unwrap();
        assert_eq!(&back, d);
    }
    if let Object::Doc(doc) = &objects[2] {
        let back: Object = wire::decode(&wire::encode(&objects[2]).unwrap()).unwrap();
        let Object::Doc(back) = back else {
            panic!("kind changed")
        };
        assert_eq!(back.to_json(), doc.to_json());
    }
}

#[test]
fn contexts_decode_to_their_canonical_form() {
    // A context encoded with its cloud not folded (as a foreign or old encoder might) decodes
    // equal to the folded one, so equality and re-encoding do not depend on the sender.
    let r = ReplicaId(9);
    let folded: CausalContext = [1, 2, 3, 5].map(|c| Dot::new(r, c)).into_iter().collect();
    let unfolded = serde_json::json!({
        "vv": {"9": 1},
        "cloud": [[9, 1], [9, 2], [9, 3], [9, 5]],
    });
    let decoded: CausalContext = serde_json::from_value(unfolded).unwrap();
    assert_eq!(decoded, folded);
    let zeros: VersionVector = serde_json::from_value(serde_json::json!({"9": 0})).unwrap();
    assert_eq!(zeros, VersionVector::new());
}

#[test]
fn inline_stores_and_clouds_encode_like_the_vectors_they_decode_from() {
    // Dot sets, dot functions, maps and context clouds keep one element inline; the bytes
    // must stay those of a `Vec` (and a `BTreeMap` for maps) at every length.
    use crdt_types::{Counter, DotFun, DotMap, DotSet};
    use std::collections::BTreeMap;
    #[derive(serde::Serialize)]
    struct ContextRepr {
        vv: BTreeMap<ReplicaId, u64>,
        cloud: Vec<Dot>,
    }
    let (a, b) = (ReplicaId(3), ReplicaId(7));
    for n in 0..4u64 {
        let dots: Vec<Dot> = (0..n).map(|i| Dot::new(a, 2 * i + 5)).collect();
        let set: DotSet = wire::decode(&wire::encode(&dots).unwrap()).unwrap();
        assert_eq!(wire::encode(&set).unwrap(), wire::encode(&dots).unwrap());
        let entries: Vec<(Dot, i64)> = dots.iter().map(|&d| (d, d.counter as i64)).collect();
        let fun: DotFun<i64> = wire::decode(&wire::encode(&entries).unwrap()).unwrap();
        assert_eq!(wire::encode(&fun).unwrap(), wire::encode(&entries).unwrap());
        let map: BTreeMap<String, Vec<(Dot, i64)>> = (0..n)
            .map(|i| (format!("sku-{i}"), entries[..=i as usize].to_vec()))
            .collect();
        let dmap: DotMap<String, Counter> = wire::decode(&wire::encode(&map).unwrap()).unwrap();
        assert_eq!(wire::encode(&dmap).unwrap(), wire::encode(&map).unwrap());
        let repr = ContextRepr {
            vv: BTreeMap::from([(b, 4)]),
            cloud: dots.clone(),
        };
        let cc: CausalContext = wire::decode(&wire::encode(&repr).unwrap()).unwrap();
        assert_eq!(wire::encode(&cc).unwrap(), wire::encode(&repr).unwrap());
        assert_eq!(
            serde_json::to_value(&cc).unwrap(),
            serde_json::to_value(&repr).unwrap()
        );
    }
}

#[test]
fn oversized_input_is_refused_before_decoding() {
    let big = vec![FORMAT_VERSION; MAX_ENCODED_BYTES + 1];
    assert!(matches!(
        wire::decode::<ObjectDelta>(&big),
        Err(WireError::TooLarge { .. })
    ));
    let (_, deltas) = samples();
    let bytes = wire::encode(&deltas[0]).unwrap();
    assert!(matches!(
        wire::decode_with_limit::<ObjectDelta>(&bytes, bytes.len() - 1),
        Err(WireError::TooLarge { .. })
    ));
    assert!(wire::decode_with_limit::<ObjectDelta>(&bytes, bytes.len()).is_ok());
}

#[test]
fn wrong_version_empty_and_trailing_bytes_are_refused() {
    let (_, deltas) = samples();
    let mut bytes = wire::encode(&deltas[0]).unwrap();
    assert!(matches!(
        wire::decode::<ObjectDelta>(&[]),
        Err(WireError::Empty)
    ));
    bytes[0] = FORMAT_VERSION + 1;
    assert!(matches!(
        wire::decode::<ObjectDelta>(&bytes),
        Err(WireError::Version(_))
    ));
    bytes[0] = FORMAT_VERSION;
    bytes.push(0);
    assert!(matches!(
        wire::decode::<ObjectDelta>(&bytes),
        Err(WireError::Trailing(1))
    ));
}

#[test]
fn forged_huge_length_prefixes_are_refused_without_allocating() {
    // bincode's varint: 253 announces a little-endian u64.
    let huge = |prefix: &[u8]| {
        let mut b = vec![FORMAT_VERSION];
        b.extend_from_slice(prefix);
        b.push(253);
        b.extend_from_slice(&u64::MAX.to_le_bytes());
        b
    };
    let big_but_plausible = {
        let mut b = vec![FORMAT_VERSION, 2, 253];
        b.extend_from_slice(&(1u64 << 40).to_le_bytes());
        b
    };
    // ObjectDelta::Cart with one item whose sku claims 15 MB (u32 varint, marker 252).
    let mut long_string = vec![FORMAT_VERSION, 0, 1, 252];
    long_string.extend_from_slice(&15_000_000u32.to_le_bytes());
    let inputs = [
        huge(&[0]),             // ObjectDelta::Cart: the map of items
        huge(&[2]),             // ObjectDelta::Doc: the list of changes
        huge(&[2, 1]),          // ... the first change's bytes
        huge(&[1, 0, 0, 0, 0]), // ObjectDelta::Session: the attribute map
        big_but_plausible,
        long_string,
    ];
    for input in &inputs {
        LARGEST.with(|m| m.set(0));
        let delta = wire::decode::<ObjectDelta>(input);
        let object = wire::decode::<Object>(input);
        let largest = LARGEST.with(Cell::get);
        assert!(delta.is_err() && object.is_err(), "{input:?}");
        // serde preallocates at most 1 MiB for a sequence, whatever its prefix claims.
        assert!(
            largest <= 1 << 20,
            "decoding {input:?} allocated {largest} bytes at once"
        );
    }
}

/// A valid encoding of a sample object (`true`) or delta (`false`).
fn any_encoding() -> impl Strategy<Value = (Vec<u8>, bool)> {
    let (objects, deltas) = samples();
    let mut encodings: Vec<(Vec<u8>, bool)> = objects
        .iter()
        .map(|o| (wire::encode(o).unwrap(), true))
        .collect();
    encodings.extend(deltas.iter().map(|d| (wire::encode(d).unwrap(), false)));
    prop::sample::select(encodings)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..256), versioned: bool) {
        let mut bytes = body;
        if versioned && !bytes.is_empty() {
            bytes[0] = FORMAT_VERSION;
        }
        let _ = wire::decode::<Object>(&bytes);
        let _ = wire::decode::<ObjectDelta>(&bytes);
    }

    #[test]
    fn truncated_encodings_are_refused(
        (bytes, is_object) in any_encoding(),
        cut in any::<prop::sample::Index>(),
    ) {
        let prefix = &bytes[..cut.index(bytes.len())];
        if is_object {
            prop_assert!(wire::decode::<Object>(prefix).is_err());
            let _ = wire::decode::<ObjectDelta>(prefix);
        } else {
            prop_assert!(wire::decode::<ObjectDelta>(prefix).is_err());
            let _ = wire::decode::<Object>(prefix);
        }
    }

    #[test]
    fn corrupted_encodings_never_panic(
        (bytes, _) in any_encoding(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut bytes = bytes;
        for (at, x) in flips {
            let i = at.index(bytes.len());
            bytes[i] ^= x;
        }
        if let Ok(ObjectDelta::Cart(c)) = wire::decode::<ObjectDelta>(&bytes) {
            // Whatever decodes must still be safe to merge (or refused as malformed).
            let mut o = Object::new(Kind::Cart);
            let _ = o.apply(ObjectDelta::Cart(c));
        }
        if let Ok(ObjectDelta::Doc(d)) = wire::decode::<ObjectDelta>(&bytes) {
            let mut o = Object::new(Kind::Doc);
            let _ = o.apply(ObjectDelta::Doc(d));
        }
        if let Ok(Object::Doc(d)) = wire::decode::<Object>(&bytes) {
            let _ = d.to_json();
        }
    }
}

#[test]
fn a_forged_change_that_makes_automerge_panic_is_refused_and_the_document_stays_intact() {
    let (mut ra, mut rb) = (Replica::new(1), Replica::new(2));
    let set = |k: &str, v: i64| DocEdit::Set {
        path: vec![PathSegment::Key(k.into())],
        value: v.into(),
    };
    let mut other = Document::new();
    other.apply_edits(rb.tag(), &[set("x", 1)]).unwrap();
    let second = other.apply_edits(rb.tag(), &[set("x", 2)]).unwrap();
    // Re-encode the second change without its dependency: a valid checksum, an actor the
    // receiver has never seen at sequence 2. Automerge 0.12 unwraps the actor lookup.
    let mut expanded = automerge::Change::from_bytes(second.changes[0].clone())
        .unwrap()
        .decode();
    expanded.deps.clear();
    expanded.hash = None;
    let forged = automerge::Change::from(expanded).raw_bytes().to_vec();

    let mut doc = Document::new();
    doc.apply_edits(ra.tag(), &[set("a", 1)]).unwrap();
    let before = doc.clone();
    let result = doc.apply(crdt_types::DocDelta {
        changes: vec![forged],
    });
    assert!(
        matches!(result, Err(crdt_types::DocError::Rejected(_))),
        "{result:?}"
    );
    assert_eq!(doc, before, "refused and not kept pending");
    assert_eq!(doc.to_json(), before.to_json());
    // Still a working document: edits and the state round trip.
    doc.apply_edits(ra.tag(), &[set("b", 2)]).unwrap();
    let back: Document = wire::decode(&wire::encode(&doc).unwrap()).unwrap();
    assert_eq!(back.to_json(), serde_json::json!({"a": 1, "b": 2}));
}

/// A state keeps the entry of a removed item as a free slot for when it comes back: the slot
/// is not encoded, compared, hashed or shown, while a remove delta still names its item.
#[test]
fn a_removed_items_slot_is_invisible_and_reused() {
    use crdt_types::Lattice;
    let mut r = Replica::new(3);
    let mut origin = Cart::new();
    let deltas = [
        origin.add(r.tag(), "apple", 1).unwrap(),
        origin.add(r.tag(), "pear", 2).unwrap(),
        origin.remove("pear").unwrap(),
    ];
    let mut receiver = Cart::new();
    for d in deltas.iter().cloned() {
        receiver.join(d);
    }
    // The same state, decoded (so no slot).
    let plain: Cart = wire::decode(&wire::encode(&receiver).unwrap()).unwrap();
    assert_eq!(receiver, plain);
    assert_eq!(
        wire::encode(&receiver).unwrap(),
        wire::encode(&plain).unwrap()
    );
    assert_eq!(format!("{receiver:?}"), format!("{plain:?}"));
    let remove = wire::encode(&deltas[2]).unwrap();
    assert!(
        remove.windows(4).any(|w| w == b"pear"),
        "the remove names its item"
    );
    assert!(
        !wire::encode(&receiver)
            .unwrap()
            .windows(4)
            .any(|w| w == b"pear")
    );

    let mut again = origin.clone();
    let add = again.add(r.tag(), "pear", 4).unwrap();
    receiver.join(add.clone());
    let mut plain_again = plain;
    plain_again.join(add);
    assert_eq!(receiver.quantity("pear"), 4);
    assert_eq!(
        wire::encode(&receiver).unwrap(),
        wire::encode(&plain_again).unwrap()
    );
}

/// A map written as its pairs in the order given, repeats included: what an encoder other
/// than ours might send.
struct PairsAsMap<K, V>(Vec<(K, V)>);

impl<K: serde::Serialize, V: serde::Serialize> serde::Serialize for PairsAsMap<K, V> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(k, v)| (k, v)))
    }
}

/// The shape of `ObjectDelta::Cart` on the wire, with every map and sequence as sent.
#[derive(serde::Serialize)]
enum LooseDelta<M, C> {
    Cart { store: M, context: C },
}

#[derive(serde::Serialize)]
struct LooseContext {
    vv: PairsAsMap<ReplicaId, u64>,
    cloud: Vec<Dot>,
}

type LooseItems = Vec<(String, Vec<(Dot, i64)>)>;

/// A cart delta as any encoder could write it: items in any order and repeated, each item's
/// entries sorted or not, the context's vector (zeros too) and cloud in any order.
fn loose_cart() -> impl Strategy<Value = (LooseItems, Vec<(ReplicaId, u64)>, Vec<Dot>)> {
    let dot = (1u64..4, 0u64..12).prop_map(|(r, c)| Dot::new(ReplicaId(r), c));
    let items = prop::collection::vec(
        (
            "[ab]{0,2}",
            prop::collection::vec((dot.clone(), -3i64..4), 0..3),
        ),
        0..4,
    );
    let vv = prop::collection::vec(
        (1u64..4, 0u64..6).prop_map(|(r, c)| (ReplicaId(r), c)),
        0..4,
    );
    (items, vv, prop::collection::vec(dot, 0..4))
}

/// What the decoder made of such bytes before it decoded into the kept vectors directly
/// (through a `BTreeMap` for each map, a `Vec` for each sequence), as the canonical encoding
/// of the result, or `None` where it refused them.
fn read_as_before(items: &LooseItems, vv: &[(ReplicaId, u64)], cloud: &[Dot]) -> Option<Vec<u8>> {
    use std::collections::BTreeMap;
    // A dot function must come strictly sorted.
    if items
        .iter()
        .any(|(_, e)| e.windows(2).any(|w| w[0].0 >= w[1].0))
    {
        return None;
    }
    let store: BTreeMap<String, Vec<(Dot, i64)>> = items.iter().cloned().collect();
    let vv: BTreeMap<ReplicaId, u64> = vv.iter().copied().collect();
    // Vector entries and cloud dots, folded into the canonical context.
    let context: CausalContext = vv
        .iter()
        .flat_map(|(&r, &n)| (1..=n).map(move |c| Dot::new(r, c)))
        .chain(cloud.iter().copied())
        .collect();
    Some(
        wire::encode(&LooseDelta::Cart {
            store,
            context: &context,
        })
        .unwrap(),
    )
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 1024,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn cart_deltas_in_any_order_decode_as_they_did_through_trees_and_vecs(
        (items, vv, cloud) in loose_cart(),
    ) {
        let bytes = wire::encode(&LooseDelta::Cart {
            store: PairsAsMap(items.clone()),
            context: LooseContext { vv: PairsAsMap(vv.clone()), cloud: cloud.clone() },
        })
        .unwrap();
        let decoded = wire::decode::<ObjectDelta>(&bytes);
        let expected = read_as_before(&items, &vv, &cloud);
        prop_assert_eq!(decoded.is_ok(), expected.is_some(), "{:?}", decoded);
        if let (Ok(delta), Some(expected)) = (decoded, expected) {
            let again = wire::encode(&delta).unwrap();
            prop_assert_eq!(&again, &expected);
            prop_assert_eq!(wire::decode::<ObjectDelta>(&again).unwrap(), delta);
        }
    }

    #[test]
    fn carts_made_by_operations_round_trip(ops in prop::collection::vec((0u8..3, 0u8..4, 1u64..4), 0..40)) {
        // Deltas and states made by real operations, from two replicas joined now and then.
        let (mut ra, mut rb) = (Replica::new(0x9e37_79b9_7f4a_7c15), Replica::new(5));
        let (mut a, mut b) = (Cart::new(), Cart::new());
        for (i, &(op, sku, n)) in ops.iter().enumerate() {
            let (cart, r) = if i % 3 == 0 { (&mut b, &mut rb) } else { (&mut a, &mut ra) };
            let sku = format!("sku-{sku}");
            let delta = match op {
                0 => cart.add(r.tag(), &sku, n).unwrap(),
                1 => cart.set_quantity(r.tag(), &sku, n - 1).unwrap(),
                _ => cart.remove(&sku).unwrap(),
            };
            let d = ObjectDelta::Cart(delta);
            let bytes = wire::encode(&d).unwrap();
            prop_assert_eq!(bytes.len(), d.encoded_len());
            prop_assert_eq!(&wire::decode::<ObjectDelta>(&bytes).unwrap(), &d);
            if i % 7 == 6 {
                use crdt_types::Lattice;
                a.join(b.clone());
            }
        }
        for state in [a, b] {
            let o = Object::Cart(state);
            let bytes = wire::encode(&o).unwrap();
            prop_assert_eq!(bytes.len(), o.encoded_len());
            let back: Object = wire::decode(&bytes).unwrap();
            prop_assert_eq!(wire::encode(&back).unwrap(), bytes);
            prop_assert_eq!(back, o);
        }
    }
}
