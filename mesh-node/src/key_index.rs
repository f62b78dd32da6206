//! The key index: every key to its slot number, one hash table per kind with short ids stored
//! in the table itself, growing without a pause. It maps and must not hold anything else. The
//! engine's state and the read view each keep one.
//!
//! The engine looks a key up for every applied delta and local write. With the keys behind
//! pointers (`Arc<Key>`, then the id's heap block) a lookup among tens of thousands of keys
//! missed the cache about four times (control bytes, bucket, key, id bytes); with the id in
//! the bucket it misses about twice (BENCHMARKS "mesh-node").
//!
//! A hash table that is full rehashes every entry into one twice its size within one insert:
//! at 28,672 keys the read view's table took 18 ms on a loaded origin and 65 to 72 ms (8 to
//! 15 ms of CPU) on the replicas, every node at about the same moment (each holds the same
//! keys), holding up the engine loop and the view's readers (BENCHMARKS "mesh-node"). So a
//! full table is set aside instead, still searched, and its entries move into the new table
//! a few per insert.

use crdt_types::{Key, Kind};
use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};

/// Ids up to this many bytes are stored in the bucket (with their length, a 32-byte id).
const INLINE: usize = 30;

/// An id as the index stores it: inline when short, else on the heap. Hashed and compared
/// exactly as the `str` it holds, so the table is searched with a `&str`.
#[derive(Clone, Debug)]
enum StoredId {
    /// `bytes[..len]` is the id.
    Inline { len: u8, bytes: [u8; INLINE] },
    /// Longer than [`INLINE`] bytes.
    Heap(Box<str>),
}

impl StoredId {
    fn new(id: &str) -> Self {
        match u8::try_from(id.len()) {
            Ok(len) if id.len() <= INLINE => {
                let mut bytes = [0u8; INLINE];
                bytes[..id.len()].copy_from_slice(id.as_bytes());
                StoredId::Inline { len, bytes }
            }
            _ => StoredId::Heap(id.into()),
        }
    }

    fn as_str(&self) -> &str {
        match self {
            // Only ever copied from a `&str` (above), so always valid UTF-8.
            StoredId::Inline { len, bytes } => {
                std::str::from_utf8(&bytes[..usize::from(*len)]).unwrap_or_default()
            }
            StoredId::Heap(s) => s,
        }
    }
}

impl Borrow<str> for StoredId {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq for StoredId {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for StoredId {}

impl Hash for StoredId {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // As `str` hashes: `Borrow<str>` requires the same hash.
        self.as_str().hash(state);
    }
}

/// Entries moved from a table set aside into its successor per insert: the move is done
/// long before the successor (twice the size) fills up.
const MOVES_PER_INSERT: usize = 4;

/// One kind's table.
#[derive(Debug, Default)]
struct Table {
    /// Where new ids go.
    current: HashMap<StoredId, usize>,
    /// The table `current` replaced when it filled up, searched after `current` until each
    /// of its entries has moved (then emptied).
    previous: HashMap<StoredId, usize>,
    /// Entries of `previous` still to move into `current`.
    moving: Vec<(StoredId, usize)>,
}

impl Table {
    fn get(&self, id: &str) -> Option<usize> {
        self.current
            .get(id)
            .or_else(|| self.previous.get(id))
            .copied()
    }

    /// Inserts an id not in the table.
    fn insert(&mut self, id: StoredId, n: usize) {
        // Nothing is ever removed, so a table holding `capacity()` ids rehashes on the next
        // insert.
        if self.current.len() == self.current.capacity() {
            self.set_aside();
        }
        self.current.insert(id, n);
        for _ in 0..MOVES_PER_INSERT {
            let Some((id, n)) = self.moving.pop() else {
                if !self.previous.is_empty() {
                    self.previous = HashMap::new();
                }
                break;
            };
            self.current.insert(id, n);
        }
    }

    /// Replaces the full `current` with an empty table twice its size, and lists its entries
    /// to move (a copy of the buckets, without hashing anything).
    fn set_aside(&mut self) {
        // Normally done long ago; if not, the rest moves now.
        for (id, n) in self.moving.drain(..) {
            self.current.insert(id, n);
        }
        let bigger = HashMap::with_capacity((2 * self.current.capacity()).max(16));
        self.previous = std::mem::replace(&mut self.current, bigger);
        self.moving = self
            .previous
            .iter()
            .map(|(id, &n)| (id.clone(), n))
            .collect();
    }
}

/// Key to slot number.
#[derive(Debug, Default)]
pub(crate) struct KeyIndex {
    /// One table per [`Kind`], in the order of [`table`].
    tables: [Table; 3],
}

/// The table of `kind`.
fn table(kind: Kind) -> usize {
    match kind {
        Kind::Cart => 0,
        Kind::Session => 1,
        Kind::Doc => 2,
    }
}

impl KeyIndex {
    /// An empty index with room for `n` carts.
    pub(crate) fn with_capacity(n: usize) -> Self {
        let mut index = KeyIndex::default();
        index.tables[table(Kind::Cart)].current.reserve(n);
        index
    }

    /// The slot number of `key`, if it was inserted.
    pub(crate) fn get(&self, key: &Key) -> Option<usize> {
        self.tables[table(key.kind)].get(key.id.as_str())
    }

    /// Maps `key`, which is not in the index, to slot `n`.
    pub(crate) fn insert(&mut self, key: &Key, n: usize) {
        self.tables[table(key.kind)].insert(StoredId::new(&key.id), n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_short_and_long_ids_of_each_kind_apart() {
        let mut index = KeyIndex::with_capacity(4);
        let ids = [
            "a",
            "cart-19999",
            &"x".repeat(30),
            &"y".repeat(31),
            &"é".repeat(128),
        ];
        let mut n = 0;
        for kind in [Kind::Cart, Kind::Session, Kind::Doc] {
            for id in ids {
                index.insert(&Key::new(kind, id), n);
                n += 1;
            }
        }
        let mut n = 0;
        for kind in [Kind::Cart, Kind::Session, Kind::Doc] {
            for id in ids {
                assert_eq!(index.get(&Key::new(kind, id)), Some(n), "{kind:?} {id}");
                n += 1;
            }
        }
        assert_eq!(index.get(&Key::new(Kind::Cart, "b")), None);
        assert_eq!(index.get(&Key::new(Kind::Cart, "x".repeat(29))), None);
        assert_eq!(index.get(&Key::new(Kind::Cart, "")), None);
    }

    #[test]
    fn finds_every_key_while_a_full_table_moves_into_a_bigger_one() {
        let mut index = KeyIndex::with_capacity(0);
        let key = |i: usize| Key::new(Kind::Cart, format!("cart-{i}"));
        let (mut set_aside, mut capacity) = (0, 0);
        for i in 0..50_000 {
            index.insert(&key(i), i);
            let cart = &index.tables[table(Kind::Cart)];
            if cart.current.capacity() != capacity {
                capacity = cart.current.capacity();
                set_aside += 1;
            }
            // Every key inserted so far, at every step of a move.
            if i % 997 == 0 || !cart.moving.is_empty() && i % 7 == 0 {
                for j in (0..=i).step_by(13).chain([i]) {
                    assert_eq!(index.get(&key(j)), Some(j), "key {j} after {i}");
                }
            }
            assert_eq!(index.get(&key(i + 1)), None);
        }
        assert!(set_aside >= 10, "tables set aside: {set_aside}");
        let cart = &index.tables[table(Kind::Cart)];
        assert!(cart.moving.is_empty() && cart.previous.is_empty());
        assert_eq!(cart.current.len(), 50_000);
    }
}
