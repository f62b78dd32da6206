//! A cart's visible items packed in one shared heap block: what the read view holds for a
//! committed cart and what a cart write answers with. It renders and unpacks and must not
//! decide what is visible beyond what [`Cart::items`] shows.
//!
//! A [`CartView`] is a vector of items that each own their sku, so building one for every
//! cart a commit changed (and for every write's answer) cost about ten allocations and as
//! many frees on the engine thread per change. Packed, a change costs one allocation; the
//! reader (or the caller that waits for the write) unpacks its own `CartView` on its own
//! thread, as it cloned the shared view before (BENCHMARKS "mesh-node").

use crdt_types::{Cart, CartView, Item};
use std::sync::Arc;

/// Bytes of an item's header: its quantity (`u64`, little endian) and its sku's length
/// (`u16`, little endian; a sku is at most `crdt_types::MAX_ID_BYTES` = 256 bytes).
const HEADER: usize = 10;

/// A cart's visible items in sku order, packed: per item its [`HEADER`], then the sku's bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PackedCart(Arc<[u8]>);

impl PackedCart {
    /// Packs the items `cart` shows to readers, using `scratch` as the buffer it fills before
    /// copying it into the shared block (so the block is the one allocation).
    pub(crate) fn of(cart: &Cart, scratch: &mut Vec<u8>) -> Self {
        scratch.clear();
        // The items `Cart::items` shows, without a `String` for each; the tests below check
        // that unpacking gives exactly `Cart::view`.
        for (sku, qty) in cart.visible() {
            // Skus are validated to at most 256 bytes; a longer one could only come from a bug,
            // and is then cut at a byte boundary rather than mis-framing the items after it.
            let len = u16::try_from(sku.len()).unwrap_or(u16::MAX);
            scratch.extend_from_slice(&qty.to_le_bytes());
            scratch.extend_from_slice(&len.to_le_bytes());
            scratch.extend_from_slice(&sku.as_bytes()[..usize::from(len)]);
        }
        PackedCart(Arc::from(&scratch[..]))
    }

    /// The reader's view of the packed items.
    pub(crate) fn view(&self) -> CartView {
        let mut items = Vec::new();
        let mut rest = &self.0[..];
        while let Some((header, tail)) = rest.split_first_chunk::<HEADER>() {
            let (qty, len) = header.split_at(8);
            let qty = u64::from_le_bytes(qty.try_into().unwrap_or_default());
            let len = usize::from(u16::from_le_bytes(len.try_into().unwrap_or_default()));
            let Some((sku, tail)) = tail.split_at_checked(len) else {
                break;
            };
            rest = tail;
            items.push(Item {
                sku: String::from_utf8_lossy(sku).into_owned(),
                qty,
            });
        }
        CartView { items }
    }
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

    #[test]
    fn unpacks_to_the_carts_own_view() {
        let mut scratch = Vec::new();
        let mut cart = Cart::new();
        assert_eq!(PackedCart::of(&cart, &mut scratch).view(), cart.view());
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
            assert_eq!(packed.view(), c.view());
        }
        assert_eq!(
            PackedCart::of(&cart, &mut scratch).view().items.len(),
            3,
            "apple, b and the long sku"
        );
    }
}
