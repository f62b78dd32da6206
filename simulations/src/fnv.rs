//! FNV-1a, the simulator's hash for maps that are only looked up, never iterated (a store's
//! key index, the network's per-link generators): neither a DoS-resistant hash nor an
//! iteration order matters there, and SipHash cost a share of every message.

use std::hash::Hasher;

/// The FNV-1a hasher (64 bits); use it as `BuildHasherDefault<Fnv>`.
#[derive(Default)]
pub struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for &b in bytes {
            h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}
