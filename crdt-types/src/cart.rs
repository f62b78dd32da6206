//! `Cart`: the shopping cart of CONTRACT §1, an add-wins observed-remove map `sku -> Counter`.

use crate::dot_store::MAX_DROPS;
use crate::sku::Sku;
use crate::{
    Causal, CausalContext, Counter, DeltaCrdt, Dot, DotMap, DotStore, IdError, Lattice, Tag,
    VersionVector, validate_id,
};
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

/// The largest quantity one `add` or `set_quantity` accepts. Keeps every sum far from the
/// bounds of `i64` however many operations pile up.
pub const MAX_QUANTITY: u64 = 1_000_000_000;

/// Why a cart operation was refused. The cart is unchanged when an error is returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CartError {
    /// The sku is not 1 to 256 bytes of UTF-8 without control characters.
    #[error("invalid sku: {0}")]
    InvalidSku(#[from] IdError),
    /// `add` needs `n >= 1`.
    #[error("quantity to add must be at least 1")]
    ZeroQuantity,
    /// The quantity is over [`MAX_QUANTITY`].
    #[error("quantity {got} is over the limit of {max}")]
    QuantityTooLarge {
        /// The quantity asked for.
        got: u64,
        /// [`MAX_QUANTITY`].
        max: u64,
    },
    /// The tag's dot is already in the cart's context: the caller reused a sequence number,
    /// which would silently lose this operation on every other replica.
    #[error("dot {0:?} was already used on this cart")]
    DotReused(Dot),
}

/// A shopping cart (CONTRACT §1): each sku holds a [`Counter`] in an add-wins map.
///
/// - `add(n)` adds one counter entry `+n`; concurrent adds sum. On an item whose quantity is
///   `<= 0` (hidden, e.g. after concurrent decrements) it first drops the observed entries, so
///   the user who sees no item and adds `n` gets `n` (ARCHITECTURE.md).
/// - `set_quantity(q)` adds one entry `q - observed`; `q = 0` is `remove`.
/// - `remove` drops exactly the entries it observed, so an unseen concurrent add survives with
///   only its own increments; `clear` does so for every item.
///
/// Each mutator returns its delta, itself a `Cart`, merged anywhere with [`Lattice::join`].
/// Skus are kept inline (`Sku`), so a delta of one item owns no heap block for its key.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Cart(Causal<DotMap<Sku, Counter>>);

/// One visible line of a cart.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Item {
    /// The item's sku.
    pub sku: String,
    /// Its quantity, always at least 1.
    pub qty: u64,
}

/// What a reader sees of a cart: items with a positive quantity, sorted by sku. Serialised to
/// JSON by the HTTP layer; equal carts give byte-identical JSON on every node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CartView {
    /// The visible items, sorted by sku.
    pub items: Vec<Item>,
}

fn check_quantity(q: u64) -> Result<(), CartError> {
    if q > MAX_QUANTITY {
        return Err(CartError::QuantityTooLarge {
            got: q,
            max: MAX_QUANTITY,
        });
    }
    Ok(())
}

impl Cart {
    /// The empty cart.
    pub fn new() -> Self {
        Self::default()
    }

    fn check_dot(&self, tag: Tag) -> Result<(), CartError> {
        if self.0.context().contains(&tag.dot) {
            return Err(CartError::DotReused(tag.dot));
        }
        Ok(())
    }

    /// Records `tag`'s dot as seen, or refuses it if it was (nothing changes then): one
    /// context search for what [`Cart::check_dot`] then an insert would do.
    fn claim_dot(&mut self, tag: Tag) -> Result<(), CartError> {
        if !self.0.parts_mut().1.insert(tag.dot) {
            return Err(CartError::DotReused(tag.dot));
        }
        Ok(())
    }

    fn apply_local(&mut self, delta: Causal<DotMap<Sku, Counter>>) -> Cart {
        self.0.join(delta.clone());
        Cart(delta)
    }

    /// Applies a local operation on the item `sku` in place: `op` changes its counter (an
    /// empty one if absent) exactly as joining the counter delta it returns would, and that
    /// delta, under `sku`, is the cart's (`None`: nothing changed). The caller records the
    /// operation's dot in the context. One key lookup, no delta joined or cloned.
    #[inline(always)]
    fn change_item(
        &mut self,
        sku: Sku,
        op: impl FnOnce(&mut Counter) -> Option<Causal<Counter>>,
    ) -> Option<Cart> {
        let (counter, context) = self.0.parts_mut().0.change(&sku, op)?.into_parts();
        Some(Cart(Causal::new(DotMap::single(sku, counter), context)))
    }

    /// Debug builds: a local operation left this cart as joining its `delta` into the cart it
    /// was `before` would.
    #[cfg(debug_assertions)]
    fn check_local(&self, before: Cart, delta: &Cart) {
        let mut joined = before;
        joined.join(delta.clone());
        debug_assert_eq!(
            *self, joined,
            "a local operation differs from its delta's join"
        );
    }

    /// Adds `n >= 1` of `sku` and returns the delta.
    pub fn add(&mut self, tag: Tag, sku: &str, n: u64) -> Result<Cart, CartError> {
        validate_id(sku)?;
        if n == 0 {
            return Err(CartError::ZeroQuantity);
        }
        check_quantity(n)?;
        #[cfg(debug_assertions)]
        let before = self.clone();
        self.claim_dot(tag)?;
        let amount = n as i64;
        let delta = self.change_item(Sku::from(sku), |counter| {
            let delta = if counter.value() > 0 {
                counter.increment_delta(tag, amount)
            } else {
                // Hidden (or absent): start over from what this node sees.
                let delta = counter.replace_delta(tag, amount);
                counter.clear();
                delta
            };
            counter.add_entry(tag.dot, amount);
            Some(delta)
        });
        let delta = delta.unwrap_or_default();
        #[cfg(debug_assertions)]
        self.check_local(before, &delta);
        Ok(delta)
    }

    /// Sets the quantity of `sku` to `q` as observed and returns the delta: one entry of
    /// `q - observed`, so concurrent changes from other nodes stay on top. `q = 0` removes
    /// the item; setting the quantity it already has is an empty delta.
    pub fn set_quantity(&mut self, tag: Tag, sku: &str, q: u64) -> Result<Cart, CartError> {
        validate_id(sku)?;
        check_quantity(q)?;
        if q == 0 {
            return self.remove(sku);
        }
        self.check_dot(tag)?;
        #[cfg(debug_assertions)]
        let before = self.clone();
        let delta = self.change_item(Sku::from(sku), |counter| {
            let amount = (i128::from(q) - i128::from(counter.value()))
                .clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64;
            if amount == 0 {
                return None;
            }
            let delta = counter.increment_delta(tag, amount);
            counter.add_entry(tag.dot, amount);
            Some(delta)
        });
        let Some(delta) = delta else {
            return Ok(Cart::default());
        };
        let new = self.0.parts_mut().1.insert(tag.dot);
        debug_assert!(new, "checked above");
        #[cfg(debug_assertions)]
        self.check_local(before, &delta);
        Ok(delta)
    }

    /// Removes `sku` as observed and returns the delta (empty if the cart has no entry for it).
    pub fn remove(&mut self, sku: &str) -> Result<Cart, CartError> {
        validate_id(sku)?;
        #[cfg(debug_assertions)]
        let before = self.clone();
        let delta = self.change_item(Sku::from(sku), |counter| {
            if counter.is_empty() {
                return None;
            }
            let delta = counter.reset_delta();
            counter.clear();
            Some(delta)
        });
        let delta = delta.unwrap_or_default();
        #[cfg(debug_assertions)]
        self.check_local(before, &delta);
        Ok(delta)
    }

    /// Removes every item as observed and returns the delta.
    pub fn clear(&mut self) -> Cart {
        let delta = self.0.store().clear_delta();
        self.apply_local(delta)
    }

    /// The visible quantity of `sku` (0 when absent or hidden).
    pub fn quantity(&self, sku: &str) -> u64 {
        self.0
            .store()
            .get(&Sku::from(sku))
            .map_or(0, |c| u64::try_from(c.value()).unwrap_or(0))
    }

    /// The visible items, sorted by sku, quantities positive.
    pub fn items(&self) -> impl Iterator<Item = Item> + '_ {
        self.visible().map(|(sku, qty)| Item {
            sku: sku.to_owned(),
            qty,
        })
    }

    /// The visible items as `(sku, quantity)` without allocating, in the order of [`Cart::items`]:
    /// the skus whose quantity is positive. For readers that render the items themselves.
    pub fn visible(&self) -> impl Iterator<Item = (&str, u64)> {
        self.0.store().iter().filter_map(|(sku, c)| {
            let qty = u64::try_from(c.value()).ok().filter(|&q| q > 0)?;
            Some((sku.as_str(), qty))
        })
    }

    /// The reader's view (see [`CartView`]).
    pub fn view(&self) -> CartView {
        CartView {
            items: self.items().collect(),
        }
    }

    /// Every sku with entries, visible or hidden, with its counter: what `inspect` shows.
    pub fn counters(&self) -> impl Iterator<Item = (&str, &Counter)> {
        self.0.store().iter().map(|(k, v)| (k.as_str(), v))
    }

    /// The causal context.
    pub fn context(&self) -> &CausalContext {
        self.0.context()
    }

    /// Whether nothing was ever seen (no item, no context).
    pub fn is_bottom(&self) -> bool {
        self.0.is_bottom()
    }

    /// Whether the context covers every entry's dot; checked before merging untrusted input.
    pub fn is_well_formed(&self) -> bool {
        self.0.is_well_formed()
    }

    /// Folds a causally stable vector into the context (see [`Causal::compact`]).
    pub fn compact(&mut self, stable: &VersionVector) {
        self.0.compact(stable);
    }
}

impl Cart {
    /// The sku, dot and amount of a delta that is one add to one item (most deltas a node
    /// receives): one entry, whose dot is the whole context, everything held inline, so the
    /// delta owns no heap block and dropping it does nothing (see [`Lattice::join`]).
    #[inline(always)]
    fn one_add(&self) -> Option<(&Sku, Dot, i64)> {
        let dot = self.0.context().only_inline_dot()?;
        let (sku, counter) = self.0.store().only_inline_entry()?;
        let (entry, amount) = counter.only_inline_entry()?;
        (entry == dot && sku.is_inline()).then_some((sku, dot, amount))
    }

    /// The key and entry of a delta that lists one key, holds at most one entry under it and
    /// names at most [`MAX_DROPS`] dots, all in its context's cloud (a remove, an add on a
    /// hidden item): the deltas [`Cart::join_one_key`] joins. (A one-add is one too.)
    #[inline]
    fn one_key(&self) -> Option<(&Sku, Option<(Dot, i64)>)> {
        let context = self.0.context();
        if !context.vv().is_empty() || context.cloud_dots().len() > MAX_DROPS {
            return None;
        }
        let (sku, counter) = self.0.store().only_entry()?;
        match counter.dot_count() {
            0 => Some((sku, None)),
            1 => Some((sku, counter.only_entry())),
            _ => None,
        }
    }

    /// The causal join of a delta of [`Cart::one_key`]'s shape, `other_ctx` its context: the
    /// dots it names but does not hold are dropped from the item `sku` (looked for under every
    /// item only if that one did not hold them all), its entry is added if unseen, and the
    /// contexts are joined only if one of those dots was unseen here.
    fn join_one_key(&mut self, sku: &Sku, entry: Option<(Dot, i64)>, other_ctx: &CausalContext) {
        let cloud = other_ctx.cloud_dots();
        let rest: SmallVec<[Dot; 16]>;
        let drops = match entry {
            None => cloud,
            Some((dot, _)) => {
                rest = cloud.iter().copied().filter(|d| *d != dot).collect();
                &rest
            }
        };
        let (store, context) = self.0.parts_mut();
        let entry = entry.map(|(dot, amount)| (dot, amount, !context.contains(&dot)));
        if store.join_one_key(context, sku, entry, other_ctx, drops) {
            debug_assert!(
                drops.iter().all(|d| context.contains(d)),
                "a covered dot is missing from the context"
            );
            if let Some((dot, _, true)) = entry {
                context.insert(dot);
            }
        } else {
            context.join(other_ctx);
        }
    }
}

impl Lattice for Cart {
    #[inline]
    fn join(&mut self, other: Self) {
        if let Some((sku, dot, amount)) = other.one_add() {
            // The causal join of a one-add delta, in one context search and one key lookup:
            // seen already, nothing changes (a duplicate, or an entry removed here since);
            // else the entry is added, and nothing here is removed.
            let (store, context) = self.0.parts_mut();
            if context.insert(dot) {
                store.add_unseen(sku, dot, amount);
            }
            // `one_add` found every part of the delta inline: it owns no heap block, so
            // forgetting it frees nothing and skips its drop's tests of where each part lives.
            std::mem::forget(other);
            return;
        }
        if let Some((sku, entry)) = other.one_key() {
            self.join_one_key(sku, entry, other.0.context());
            return;
        }
        self.0.join_general(other.0);
    }
}

impl DeltaCrdt for Cart {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ReplicaId, Stamp};

    fn tag(replica: u64, seq: u64) -> Tag {
        Tag {
            dot: Dot::new(ReplicaId(replica), seq),
            stamp: Stamp {
                hlc: seq,
                replica: ReplicaId(replica),
            },
        }
    }

    #[test]
    fn the_one_add_join_is_the_general_join() {
        // Three writers' deltas (adds, sets, removes over six skus, so items are added,
        // hidden, removed and re-added), each joined into a receiver by `Cart::join` and by
        // the general join, in an order with gaps and duplicates.
        let mut writers = [Cart::new(), Cart::new(), Cart::new()];
        let mut seqs = [0u64; 3];
        let mut deltas = Vec::new();
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..600 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let w = (x % 3) as usize;
            let sku = format!("sku-{}", (x >> 8) % 6);
            seqs[w] += 1;
            let t = tag(w as u64 * 0x9e37_79b9 + 7, seqs[w]);
            let delta = match (x >> 16) % 10 {
                0..6 => writers[w].add(t, &sku, 1 + (x >> 24) % 3),
                6..8 => writers[w].set_quantity(t, &sku, (x >> 24) % 4),
                _ => writers[w].remove(&sku),
            };
            deltas.push(delta.expect("valid operation"));
            if (x >> 32).is_multiple_of(8) {
                let other = writers[(w + 1) % 3].clone();
                writers[w].join(other);
            }
        }
        let (mut fast, mut general) = (Cart::new(), Cart::new());
        let mut one_adds = 0;
        for (i, delta) in deltas.iter().enumerate() {
            // Every fifth delta twice, every seventh held back until the end.
            let times = if i % 5 == 0 { 2 } else { 1 };
            if i % 7 == 3 {
                continue;
            }
            for _ in 0..times {
                one_adds += usize::from(delta.one_add().is_some());
                fast.join(delta.clone());
                general.0.join_general(delta.0.clone());
                assert_eq!(fast, general, "after delta {i}");
            }
        }
        for delta in deltas.iter().skip(3).step_by(7) {
            fast.join(delta.clone());
            general.0.join_general(delta.0.clone());
        }
        assert_eq!(fast, general);
        assert_eq!(fast.view(), general.view());
        assert!(one_adds > 200, "{one_adds} one-add deltas");
    }

    /// One writer's operation: `(writer, sku, kind, amount, sync)`; `kind` 0-5 add, 6-7
    /// set_quantity, 8 remove, 9 a remove sent under the wrong sku (a buggy peer's hint).
    type Step = (usize, u8, u8, u64, bool);

    /// The deltas of `steps` by three writers, each syncing with the next when `sync` says.
    fn deltas_of(steps: &[Step]) -> Vec<Cart> {
        let mut writers = [Cart::new(), Cart::new(), Cart::new()];
        let mut seqs = [0u64; 3];
        let mut deltas = Vec::new();
        for &(w, sku, kind, amount, sync) in steps {
            let name = format!("sku-{sku}");
            seqs[w] += 1;
            let t = tag(w as u64 * 0x9e37_79b9 + 7, seqs[w]);
            let delta = match kind {
                0..6 => writers[w].add(t, &name, 1 + amount % 3),
                6..8 => writers[w].set_quantity(t, &name, amount % 4),
                8 => writers[w].remove(&name),
                _ => writers[w].remove(&name).map(|d| {
                    let (_, context) = d.0.into_parts();
                    let wrong = Sku::from(format!("sku-{}", (sku + 1) % 5).as_str());
                    Cart(Causal::new(
                        DotMap::single(wrong, Counter::default()),
                        context,
                    ))
                }),
            };
            deltas.push(delta.expect("valid operation"));
            if sync {
                let other = writers[(w + 1) % 3].clone();
                writers[w].join(other);
            }
        }
        deltas
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 128,
            failure_persistence: None,
            ..Default::default()
        })]

        /// `Cart::join`'s one-key path (removes, adds on hidden items, wrong hints) and
        /// one-add path give what the general join gives, delta by delta, whatever the
        /// delivery order, duplicates and gaps.
        #[test]
        fn the_fast_joins_are_the_general_join(
            steps in proptest::collection::vec(
                (0usize..3, 0u8..5, 0u8..10, 0u64..8, proptest::bool::weighted(0.3)),
                1..80,
            ),
            order in proptest::collection::vec(0usize..1000, 0..120),
        ) {
            let deltas = deltas_of(&steps);
            let (mut fast, mut general) = (Cart::new(), Cart::new());
            // Every delta in turn, each followed by one picked at random (late, or again).
            let picks = order.iter().map(|i| i % deltas.len());
            for (i, j) in (0..deltas.len()).zip(picks.chain(std::iter::repeat(usize::MAX))) {
                for d in [Some(i), (j != usize::MAX).then_some(j)].into_iter().flatten() {
                    fast.join(deltas[d].clone());
                    general.0.join_general(deltas[d].0.clone());
                    proptest::prop_assert_eq!(&fast, &general, "after delta {}", d);
                    proptest::prop_assert_eq!(format!("{fast:?}"), format!("{general:?}"));
                }
            }
        }
    }

    #[test]
    fn the_one_key_path_takes_removes_and_adds_on_hidden_items() {
        // The shapes `Cart::one_key` is for, made by operations (no dot is its replica's
        // first, which a context keeps in its vector, not its cloud).
        let mut a = Cart::new();
        let mut b = Cart::new();
        a.add(tag(1, 4), "x", 2).expect("valid add");
        b.join(a.clone());
        let remove = b.remove("x").expect("valid remove");
        assert!(remove.one_add().is_none());
        assert!(matches!(remove.one_key(), Some((_, None))));
        // `a` decrements below zero concurrently, then adds on the hidden item.
        a.set_quantity(tag(1, 5), "x", 1).expect("valid set");
        b.add(tag(2, 4), "x", 1).expect("valid add");
        b.set_quantity(tag(2, 5), "x", 0).expect("valid set");
        let mut c = a.clone();
        c.join(b.clone());
        assert_eq!(c.quantity("x"), 0);
        let hidden_add = c.add(tag(3, 5), "x", 4).expect("valid add");
        assert!(hidden_add.one_add().is_none());
        assert!(matches!(hidden_add.one_key(), Some((_, Some(_)))));
        assert_eq!(c.quantity("x"), 4);
    }
}
