//! A cart's visible items packed in one shared heap block: what the read view holds for a
//! committed cart and what a cart write answers with ([`PackedCart`], public: the embedding
//! API's cart writes return it). It renders and unpacks and must not decide what is visible
//! beyond what [`Cart::items`] shows.
//!
//! A [`CartView`] is a vector of items that each own their sku, so building one for every
//! cart a commit changed (and for every write's answer) cost about ten allocations and as
//! many frees on the engine thread per change. Packed, a change costs one allocation; the
//! reader (or the caller that waits for the write) unpacks its own `CartView` on its own
//! thread, as it cloned the shared view before (BENCHMARKS "mesh-node"); a caller that only
//! waits for the acknowledgement, or reads a few items, unpacks nothing.
//!
//! Rendering a whole cart sums every counter entry of every item (`Counter::value`), which was
//! the largest single cost of a replica's engine. A change that can only have changed one
//! item (a local operation on one sku, or a received delta that adds fresh entries under one
//! sku, see [`only_sku`]) is rendered by [`PackedCart::patched`] instead: the cart's previous
//! packing with that one item's quantity summed again.

use crdt_types::{Cart, CartView, Item};
use std::cmp::Ordering;
use std::sync::Arc;

/// Bytes of an item's header: its quantity (`u64`, little endian) and its sku's length
/// (`u16`, little endian; a sku is at most `crdt_types::MAX_ID_BYTES` = 256 bytes).
const HEADER: usize = 10;

/// A cart as a commit left it: its visible items (quantity above zero) in sku order, packed
/// in one shared block (per item a header, then the sku's bytes). Cheap to clone and to
/// hand back from a write; [`PackedCart::items`] reads the items without allocating,
/// [`PackedCart::to_view`] makes the owned [`CartView`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackedCart(Arc<[u8]>);

impl Default for PackedCart {
    /// The empty cart.
    fn default() -> Self {
        PackedCart(Arc::from(&[][..]))
    }
}

/// The items of a [`PackedCart`] in sku order, as `(sku, quantity)`.
#[derive(Clone, Debug)]
pub struct Items<'a>(&'a [u8]);

impl<'a> Iterator for Items<'a> {
    type Item = (&'a str, u64);

    fn next(&mut self) -> Option<Self::Item> {
        let ((sku, bytes), rest) = next_item(self.0)?;
        self.0 = rest;
        let qty = u64::from_le_bytes(bytes[..8].try_into().unwrap_or_default());
        // Skus are packed from `&str`s; were one ever cut inside a character (only a sku
        // over 65,535 bytes could be), its valid prefix is shown.
        let sku = std::str::from_utf8(sku)
            .unwrap_or_else(|e| std::str::from_utf8(&sku[..e.valid_up_to()]).unwrap_or_default());
        Some((sku, qty))
    }
}

impl PackedCart {
    /// The visible items in sku order, as `(sku, quantity)`, read from the packing.
    pub fn items(&self) -> Items<'_> {
        Items(&self.0)
    }

    /// Whether the cart shows no item.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The cart as an owned [`CartView`] (a `String` per item).
    pub fn to_view(&self) -> CartView {
        CartView {
            items: self
                .items()
                .map(|(sku, qty)| Item {
                    sku: sku.to_owned(),
                    qty,
                })
                .collect(),
        }
    }

    /// Packs the items `cart` shows to readers, using `scratch` as the buffer it fills before
    /// copying it into the shared block (so the block is the one allocation).
    pub(crate) fn of(cart: &Cart, scratch: &mut Vec<u8>) -> Self {
        scratch.clear();
        // The items `Cart::items` shows, without a `String` for each; the tests below check
        // that unpacking gives exactly `Cart::view`.
        for (sku, qty) in cart.visible() {
            push_item(scratch, sku, qty);
        }
        PackedCart(Arc::from(&scratch[..]))
    }

    /// The packing of `cart` where `self` is the packing of `cart` before a change that can
    /// only have changed the item `sku` (added, changed, hidden or removed it): the other
    /// items' bytes are copied, only `sku`'s quantity is summed again. `scratch` as in
    /// [`PackedCart::of`].
    pub(crate) fn patched(&self, cart: &Cart, sku: &str, scratch: &mut Vec<u8>) -> Self {
        // Where `sku` goes: after the items that sort before it, in place of its own item if
        // it has one. Everything before and after is copied as it is.
        let (mut at, mut old) = (0, 0);
        let mut rest = &self.0[..];
        while let Some(((item_sku, bytes), tail)) = next_item(rest) {
            match item_sku.cmp(sku.as_bytes()) {
                Ordering::Less => at += bytes.len(),
                Ordering::Equal => {
                    old = bytes.len();
                    break;
                }
                Ordering::Greater => break,
            }
            rest = tail;
        }
        scratch.clear();
        scratch.extend_from_slice(&self.0[..at]);
        // Hidden or absent items are not packed (as `Cart::visible`).
        let qty = cart.quantity(sku);
        if qty > 0 {
            push_item(scratch, sku, qty);
        }
        scratch.extend_from_slice(&self.0[at + old..]);
        PackedCart(Arc::from(&scratch[..]))
    }
}

/// Appends one item: its [`HEADER`], then the sku's bytes.
fn push_item(scratch: &mut Vec<u8>, sku: &str, qty: u64) {
    // Skus are validated to at most 256 bytes; a longer one could only come from a bug, and
    // is then cut at a byte boundary rather than mis-framing the items after it.
    let len = u16::try_from(sku.len()).unwrap_or(u16::MAX);
    scratch.extend_from_slice(&qty.to_le_bytes());
    scratch.extend_from_slice(&len.to_le_bytes());
    scratch.extend_from_slice(&sku.as_bytes()[..usize::from(len)]);
}

/// The first item packed in `packed`, as its sku's bytes and the item's whole bytes (header
/// and sku), and the items after it; `None` at the end.
type NextItem<'a> = Option<((&'a [u8], &'a [u8]), &'a [u8])>;

/// Splits the first item off `packed` (see [`NextItem`]).
fn next_item(packed: &[u8]) -> NextItem<'_> {
    let (header, tail) = packed.split_first_chunk::<HEADER>()?;
    let len = usize::from(u16::from_le_bytes([header[8], header[9]]));
    let sku = tail.get(..len)?;
    let (item, rest) = packed.split_at(HEADER + len);
    Some(((sku, item), rest))
}

/// The one item a received cart delta can change in `cart`, if the delta shows that without
/// rendering the cart: it holds entries under one sku only, its context names only those
/// entries' dots (so it removes nothing), and `cart` has seen none of them. Then no entry of
/// another item is dropped (`cart`'s entries carry dots of `cart`'s context, and the delta
/// drops only entries whose dots its context names) and none is added, so only that sku's
/// quantity can differ after the join. Anything else (a remove, an add to a hidden item that
/// drops what it observed, a duplicate) answers `None`: render the whole cart.
pub(crate) fn only_sku<'a>(cart: &Cart, delta: &'a Cart) -> Option<&'a str> {
    /// Contexts naming more dots than this are not enumerated (a delta of one operation
    /// names one).
    const MAX_DOTS: u64 = 4;
    let mut counters = delta.counters();
    let (sku, counter) = counters.next()?;
    if counters.next().is_some() || delta.context().dot_count() > MAX_DOTS {
        return None;
    }
    delta
        .context()
        .dots()
        .all(|dot| !cart.context().contains(&dot) && counter.entries().any(|(d, _)| *d == dot))
        .then_some(sku)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crdt_types::{Dot, ReplicaId, Stamp, Tag};

    fn tag(replica: u64, seq: u64) -> Tag {
        let replica = ReplicaId(replica);
        Tag {
            dot: Dot::new(replica, seq),
            stamp: Stamp {
                hlc: seq << 22,
                replica,
            },
        }
    }

    /// A small deterministic generator (the tests need no seed from outside).
    struct Lcg(u64);

    impl Lcg {
        fn below(&mut self, n: u64) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (self.0 >> 33) % n
        }
    }

    const SKUS: [&str; 5] = [
        "apple",
        "b",
        "pear",
        "a-sku-longer-than-twenty-two-bytes",
        "zz",
    ];

    /// One random operation on `cart` with `tag`: the sku it touched (`None` for a clear) and
    /// its delta.
    fn random_op(rng: &mut Lcg, cart: &mut Cart, tag: Tag) -> (Option<&'static str>, Cart) {
        let sku = SKUS[rng.below(SKUS.len() as u64) as usize];
        match rng.below(20) {
            0..=13 => (
                Some(sku),
                cart.add(tag, sku, 1 + rng.below(3)).expect("add"),
            ),
            14..=16 => {
                let q = rng.below(4);
                (Some(sku), cart.set_quantity(tag, sku, q).expect("set"))
            }
            17 | 18 => (Some(sku), cart.remove(sku).expect("remove")),
            _ => (None, cart.clear()),
        }
    }

    #[test]
    fn patching_the_changed_item_packs_what_rendering_the_cart_packs() {
        let mut scratch = Vec::new();
        let mut rng = Lcg(7);
        // Two writers; a third cart receives both writers' deltas, shuffled and sometimes
        // twice (a duplicate).
        let mut writers = [Cart::new(), Cart::new()];
        let mut packed = [
            PackedCart::of(&writers[0], &mut scratch),
            PackedCart::of(&writers[1], &mut scratch),
        ];
        let mut sent: Vec<Cart> = Vec::new();
        let mut receiver = Cart::new();
        let mut received = PackedCart::of(&receiver, &mut scratch);
        let (mut patched, mut rendered) = (0, 0);
        for seq in 1..=3000u64 {
            let w = rng.below(2) as usize;
            let (sku, delta) = random_op(&mut rng, &mut writers[w], tag(w as u64 + 1, seq));
            // A local operation on one sku patches the writer's own packing.
            packed[w] = match sku {
                Some(sku) => packed[w].patched(&writers[w], sku, &mut scratch),
                None => PackedCart::of(&writers[w], &mut scratch),
            };
            assert_eq!(packed[w], PackedCart::of(&writers[w], &mut scratch));
            sent.push(delta);
            // Deliver a random delta sent so far (some more than once, some late).
            while !sent.is_empty() && rng.below(3) != 0 {
                let i = rng.below(sent.len() as u64) as usize;
                let delta = if rng.below(8) == 0 {
                    sent[i].clone()
                } else {
                    sent.swap_remove(i)
                };
                let sku = only_sku(&receiver, &delta).map(str::to_owned);
                crdt_types::Lattice::join(&mut receiver, delta);
                received = match sku {
                    Some(sku) => {
                        patched += 1;
                        received.patched(&receiver, &sku, &mut scratch)
                    }
                    None => {
                        rendered += 1;
                        PackedCart::of(&receiver, &mut scratch)
                    }
                };
                assert_eq!(received, PackedCart::of(&receiver, &mut scratch));
                assert_eq!(received.to_view(), receiver.view());
            }
        }
        assert!(
            patched > 1000,
            "patched {patched} of {}",
            patched + rendered
        );
        assert!(
            rendered > 100,
            "rendered {rendered} of {}",
            patched + rendered
        );
    }

    #[test]
    fn only_a_fresh_add_to_one_item_is_patched() {
        let mut cart = Cart::new();
        let mut other = Cart::new();
        let add = other.add(tag(2, 1), "apple", 2).expect("add");
        assert_eq!(only_sku(&cart, &add), Some("apple"));
        crdt_types::Lattice::join(&mut cart, add.clone());
        // Seen already: a duplicate is rendered.
        assert_eq!(only_sku(&cart, &add), None);
        let remove = other.remove("apple").expect("remove");
        assert_eq!(only_sku(&cart, &remove), None);
        // An add to a hidden item drops the entries it observed.
        other.add(tag(2, 2), "b", 3).expect("add");
        let mut two = other.clone();
        other.set_quantity(tag(2, 3), "b", 1).expect("set");
        two.set_quantity(tag(3, 1), "b", 1).expect("set");
        crdt_types::Lattice::join(&mut other, two);
        assert_eq!(other.quantity("b"), 0, "hidden at -1");
        let readd = other.add(tag(2, 4), "b", 1).expect("add");
        assert!(readd.context().dot_count() > 1);
        assert_eq!(only_sku(&cart, &readd), None);
        let mut both = other.add(tag(2, 5), "apple", 1).expect("add");
        crdt_types::Lattice::join(&mut both, other.add(tag(2, 6), "pear", 1).expect("add"));
        assert_eq!(only_sku(&cart, &both), None, "two items");
    }

    #[test]
    fn unpacks_to_the_carts_own_view() {
        let mut scratch = Vec::new();
        let mut cart = Cart::new();
        assert_eq!(PackedCart::of(&cart, &mut scratch).to_view(), cart.view());
        assert!(PackedCart::of(&cart, &mut scratch).is_empty());
        assert_eq!(PackedCart::of(&cart, &mut scratch), PackedCart::default());
        cart.add(tag(1, 1), "apple", 3).expect("add");
        cart.add(tag(1, 2), "b", 1).expect("add");
        cart.add(tag(1, 3), &"z".repeat(256), 7).expect("add");
        cart.add(tag(1, 4), "pear", 2).expect("add");
        cart.remove("pear").expect("remove");
        cart.add(tag(1, 5), "b", 2).expect("add");
        // Concurrent decrements on two replicas: "b" at 3 set to 1 on each is hidden at -1,
        // "apple" at 3 set to 2 and 1 shows 0 and is hidden too.
        let mut other = cart.clone();
        other.set_quantity(tag(2, 1), "b", 1).expect("set");
        other.set_quantity(tag(2, 2), "apple", 2).expect("set");
        let mut hidden = cart.clone();
        hidden.set_quantity(tag(1, 6), "b", 1).expect("set");
        hidden.set_quantity(tag(1, 7), "apple", 1).expect("set");
        crdt_types::Lattice::join(&mut hidden, other);
        assert_eq!(hidden.view().items.len(), 1, "only the long sku is visible");
        for c in [&cart, &hidden] {
            let packed = PackedCart::of(c, &mut scratch);
            assert_eq!(packed.to_view(), c.view());
        }
        let packed = PackedCart::of(&cart, &mut scratch);
        assert!(!packed.is_empty());
        let long = "z".repeat(256);
        assert_eq!(
            packed.items().collect::<Vec<_>>(),
            vec![("apple", 3), ("b", 3), (long.as_str(), 7)],
            "apple, b and the long sku"
        );
    }
}
