//! `Counter`: the embedded counter of the cart, one entry per increment dot.

use crate::{Causal, CausalContext, Dot, DotFun, DotProbe, DotStore, Drops, Tag};
use serde::{Deserialize, Serialize};
use std::fmt;

/// A counter embedded in an add-wins map (ARCHITECTURE.md, "Data types"): every change is its
/// own entry `dot -> amount` and the value is their sum.
///
/// Keeping entries per dot (rather than per replica, as a PN-counter does) is what makes
/// observed-remove exact: a remove covers precisely the increments it saw, so an increment
/// made concurrently on another node survives it, alone.
#[derive(Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Counter(DotFun<i64>);

impl fmt::Debug for Counter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Counter({} = ", self.value())?;
        self.0.fmt(f)?;
        write!(f, ")")
    }
}

impl Counter {
    /// The sum of the entries, saturating at the bounds of `i64`.
    pub fn value(&self) -> i64 {
        self.0.values().fold(0i64, |s, &v| s.saturating_add(v))
    }

    /// The entries `(dot, amount)` in dot order: which operation contributed what.
    pub fn entries(&self) -> impl Iterator<Item = (&Dot, &i64)> {
        self.0.iter()
    }

    /// The delta of adding `amount` (possibly negative) next to the entries seen.
    pub fn increment_delta(&self, tag: Tag, amount: i64) -> Causal<Counter> {
        let (store, context) = self.0.insert_delta(tag, amount).into_parts();
        Causal::new(Counter(store), context)
    }

    /// The delta of replacing every entry seen by one entry `amount`: the value becomes
    /// `amount` plus whatever was added concurrently.
    pub fn replace_delta(&self, tag: Tag, amount: i64) -> Causal<Counter> {
        let (store, context) = self.0.write_delta(tag, amount).into_parts();
        Causal::new(Counter(store), context)
    }

    /// The delta of dropping every entry seen (a remove of the item that holds the counter).
    pub fn reset_delta(&self) -> Causal<Counter> {
        Causal::new(Counter::default(), self.dots())
    }

    /// Adds the entry `dot -> amount` of a local operation whose dot this counter's context
    /// had not seen: in place, what joining its delta adds.
    #[inline]
    pub(crate) fn add_entry(&mut self, dot: Dot, amount: i64) {
        self.0.put_unseen_copy(dot, amount);
    }

    /// The counter's one entry, if it has exactly one.
    #[inline(always)]
    pub(crate) fn only_entry(&self) -> Option<(Dot, i64)> {
        self.0.only_entry().map(|(&d, &v)| (d, v))
    }

    /// The counter's one entry, if it has exactly one, held inline (no heap block).
    #[inline(always)]
    pub(crate) fn only_inline_entry(&self) -> Option<(Dot, i64)> {
        self.0.only_inline_entry().map(|(&d, &v)| (d, v))
    }

    /// Drops every entry: in place, what joining [`Counter::reset_delta`] drops.
    pub(crate) fn clear(&mut self) {
        self.0.clear();
    }
}

impl DotStore for Counter {
    #[inline]
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    #[inline]
    fn dot_count(&self) -> usize {
        self.0.dot_count()
    }

    #[inline]
    fn for_each_dot<F: FnMut(Dot)>(&self, f: &mut F) {
        self.0.for_each_dot(f);
    }

    #[inline]
    fn contains_dot(&self, dot: &Dot) -> bool {
        self.0.contains_dot(dot)
    }

    fn dots(&self) -> CausalContext {
        self.0.dots()
    }

    #[inline]
    fn holds_any(&self, probe: &DotProbe<'_>) -> bool {
        self.0.holds_any(probe)
    }

    #[inline]
    fn drop_held(&mut self, dots: &[Dot], found: &mut u64) {
        self.0.drop_held(dots, found);
    }

    #[inline]
    fn join_store(
        &mut self,
        ctx: &CausalContext,
        other: Self,
        other_ctx: &CausalContext,
        drops: Drops<'_>,
    ) -> bool {
        self.0.join_store(ctx, other.0, other_ctx, drops)
    }

    #[inline(always)]
    fn join_unseen(&mut self, other: Self) {
        self.0.join_unseen(other.0);
    }

    #[inline]
    fn remove_covered(&mut self, ctx: &CausalContext) {
        self.0.remove_covered(ctx);
    }
}
