//! `LwwRegister<T>`: a last-writer-wins register ordered by HLC [`Stamp`].

use crate::{DeltaCrdt, Lattice, Stamp, Tag};
use serde::{Deserialize, Serialize};

/// A register whose value is the one written with the greatest [`Stamp`] (HLC time, then
/// replica id: CONTRACT §1). The delta of a write is the register holding just that write.
///
/// Two writes never share a stamp; should a forged pair do so, the greater value wins, so
/// the join stays a lattice whatever arrives.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LwwRegister<T> {
    stamp: Stamp,
    value: Option<T>,
}

impl<T> Default for LwwRegister<T> {
    fn default() -> Self {
        LwwRegister {
            stamp: Stamp::default(),
            value: None,
        }
    }
}

impl<T: Ord + Clone> LwwRegister<T> {
    /// The register holding `value` written at `stamp`.
    pub fn new(stamp: Stamp, value: T) -> Self {
        LwwRegister {
            stamp,
            value: Some(value),
        }
    }

    /// Writes `value` at the tag's stamp and returns the delta. A write stamped at or below
    /// the current one loses (and leaves the register unchanged), exactly as it would remotely.
    pub fn set(&mut self, tag: Tag, value: T) -> Self {
        let delta = LwwRegister::new(tag.stamp, value);
        self.join(delta.clone());
        delta
    }

    /// The current value, if ever written.
    pub fn get(&self) -> Option<&T> {
        self.value.as_ref()
    }

    /// The stamp of the current value (`Stamp::default()` if never written).
    pub fn stamp(&self) -> Stamp {
        self.stamp
    }
}

impl<T: Ord> Lattice for LwwRegister<T> {
    fn join(&mut self, other: Self) {
        if (other.stamp, &other.value) > (self.stamp, &self.value) {
            *self = other;
        }
    }
}

impl<T: Ord + Clone + Serialize> DeltaCrdt for LwwRegister<T> {}
