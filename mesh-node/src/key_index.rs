//! The engine's key index: every key it holds to its slot number, one hash table per kind
//! with short ids stored in the table itself. It maps and must not hold anything else.
//!
//! The engine looks a key up for every applied delta and local write. With the keys behind
//! pointers (`Arc<Key>`, then the id's heap block) a lookup among tens of thousands of keys
//! missed the cache about four times (control bytes, bucket, key, id bytes); with the id in
//! the bucket it misses about twice (BENCHMARKS "mesh-node").

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

/// Key to slot number.
#[derive(Debug, Default)]
pub(crate) struct KeyIndex {
    /// One table per [`Kind`], in the order of [`table`].
    tables: [HashMap<StoredId, usize>; 3],
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
        index.tables[table(Kind::Cart)].reserve(n);
        index
    }

    /// The slot number of `key`, if it was inserted.
    pub(crate) fn get(&self, key: &Key) -> Option<usize> {
        self.tables[table(key.kind)].get(key.id.as_str()).copied()
    }

    /// Maps `key` to slot `n`.
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
}
