//! `MaxRegister<T>`: a register whose join is the maximum.

use crate::{DeltaCrdt, Lattice};
use serde::{Deserialize, Serialize};

/// A register that only grows: the join keeps the greater value. Used for a session's expiry,
/// where concurrent extensions take the maximum (CONTRACT §1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MaxRegister<T>(T);

impl<T: Ord + Copy> MaxRegister<T> {
    /// The register holding `value`.
    pub fn new(value: T) -> Self {
        MaxRegister(value)
    }

    /// Raises the register to at least `value` and returns the delta (the new value).
    pub fn raise(&mut self, value: T) -> Self {
        self.0 = self.0.max(value);
        MaxRegister(self.0)
    }

    /// The current value.
    pub fn get(&self) -> T {
        self.0
    }
}

impl<T: Ord> Lattice for MaxRegister<T> {
    fn join(&mut self, other: Self) {
        if other.0 > self.0 {
            self.0 = other.0;
        }
    }
}

impl<T: Ord + Copy + Default + Serialize> DeltaCrdt for MaxRegister<T> {}
