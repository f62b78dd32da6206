//! `KeyIndex`: where each key of a large sorted map sits, by hash, so a join finds the entry a
//! delta names in one probe instead of a binary search. Never encoded, compared or hashed; it
//! holds positions only, never keys or values.

use std::hash::{Hash, Hasher};

/// Maps of at least this many entries get an index; below, a binary search (two steps) is
/// as cheap. (At 16, the cart bench's 10-item merges cost 961 instructions each by
/// callgrind, at 4 798: a binary search over ten skus costs more than the probe.)
pub(crate) const INDEXED_FROM: usize = 4;

/// An empty slot of the table.
const EMPTY: u32 = u32::MAX;

/// An open-addressing table of entry positions, at most half full, probed linearly; a hit is
/// confirmed by comparing the key at that position, so a stale index can only miss, never
/// mislead. The map follows an inserted key ([`KeyIndex::inserted`]), drops the index when
/// entries are removed (rare: a slot trim, a delta's hint) and rebuilds it on its next join.
#[derive(Clone, Debug)]
pub(crate) struct KeyIndex {
    slots: Box<[u32]>,
}

/// A multiplicative hash over 8-byte words: cheap for the short keys of a cart.
#[derive(Default)]
struct KeyHasher(u64);

impl KeyHasher {
    #[inline]
    fn mix(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

/// The little-endian word of the 8 bytes at `at` (`bytes` has them).
#[inline]
fn le_word(bytes: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(w)
}

impl Hasher for KeyHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let n = bytes.len();
        if let Some(last) = bytes.last_chunk::<8>() {
            // Whole words, the last one overlapping the one before when `n` is no multiple
            // of 8 (a short key, e.g. a 9-byte sku, is two words: no loop over its bytes).
            if let Some(first) = bytes.first_chunk::<8>()
                && n <= 16
            {
                self.mix(u64::from_le_bytes(*first));
            } else {
                let mut at = 0;
                while at + 8 < n {
                    self.mix(le_word(bytes, at));
                    at += 8;
                }
            }
            self.mix(u64::from_le_bytes(*last));
        } else {
            let tail = (bytes.iter().rev()).fold(0u64, |t, &b| t << 8 | u64::from(b));
            self.mix(tail);
        }
        self.mix(n as u64);
    }

    #[inline]
    fn write_u8(&mut self, n: u8) {
        self.mix(u64::from(n));
    }

    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.mix(n);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

#[inline]
fn hash_of<K: Hash>(key: &K) -> u64 {
    let mut h = KeyHasher::default();
    key.hash(&mut h);
    h.finish()
}

impl KeyIndex {
    /// The index of `entries`' keys (distinct).
    pub(crate) fn build<K: Hash, V>(entries: &[(K, V)]) -> Self {
        let size = (entries.len() * 2).next_power_of_two();
        let mut slots = vec![EMPTY; size].into_boxed_slice();
        let mask = size - 1;
        for (i, (k, _)) in entries.iter().enumerate() {
            let mut j = hash_of(k) as usize & mask;
            while slots[j] != EMPTY {
                j = (j + 1) & mask;
            }
            // Maps are far smaller than 2^32 entries (a key costs more than a byte).
            slots[j] = i as u32;
        }
        KeyIndex { slots }
    }

    /// Follows the insertion of the entry at `i` (the ones from `i` on moved up by one):
    /// `entries` is the slice after it. One pass over the table, cheaper than the entries'
    /// own move; rebuilt (larger) once the table would be more than half full.
    pub(crate) fn inserted<K: Hash, V>(&mut self, entries: &[(K, V)], i: usize) {
        if entries.len() * 2 > self.slots.len() {
            *self = Self::build(entries);
            return;
        }
        let at = i as u32;
        for s in self.slots.iter_mut() {
            if *s != EMPTY && *s >= at {
                *s += 1;
            }
        }
        let mask = self.slots.len() - 1;
        let mut j = hash_of(&entries[i].0) as usize & mask;
        while self.slots[j] != EMPTY {
            j = (j + 1) & mask;
        }
        self.slots[j] = at;
    }

    /// The position of `key` in `entries` (the slice the index was built from), if present.
    #[inline(always)]
    pub(crate) fn find<K: Hash + Eq, V>(&self, entries: &[(K, V)], key: &K) -> Option<usize> {
        let mask = self.slots.len() - 1;
        let mut j = hash_of(key) as usize & mask;
        loop {
            let i = self.slots[j] as usize;
            match entries.get(i) {
                None => return None,
                Some((k, _)) if k == key => return Some(i),
                Some(_) => j = (j + 1) & mask,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_every_key_at_its_position_and_misses_absent_ones() {
        let entries: Vec<(String, u32)> = (0..40).map(|i| (format!("sku-{i:03}"), i)).collect();
        let index = KeyIndex::build(&entries);
        for (i, (k, _)) in entries.iter().enumerate() {
            assert_eq!(index.find(&entries, k), Some(i));
        }
        assert_eq!(index.find(&entries, &"sku-040".to_owned()), None);
        assert_eq!(index.find(&entries, &String::new()), None);
        // Followed through insertions, before, between and after the keys, past its size.
        let mut grown = entries.clone();
        let mut index = KeyIndex::build(&grown);
        for (n, key) in [
            "sku-", "sku-0005", "sku-999", "a", "sku-0200", "z", "sku-012",
        ]
        .iter()
        .cycle()
        .zip(0..40)
        .map(|(k, n)| (n, format!("{k}{n}")))
        {
            let i = grown.partition_point(|(k, _)| *k < key);
            grown.insert(i, (key, n));
            index.inserted(&grown, i);
            for (i, (k, _)) in grown.iter().enumerate() {
                assert_eq!(index.find(&grown, k), Some(i), "{k} after {n} insertions");
            }
        }
        let index = KeyIndex::build(&entries);
        // Built for other positions (a stale index): a key that moved is missed, never
        // reported where another key sits.
        let shifted: Vec<(String, u32)> = entries[1..].to_vec();
        for (k, _) in &shifted {
            let found = index.find(&shifted, k);
            assert!(found.is_none_or(|i| shifted[i].0 == *k), "{k}");
        }
    }
}
