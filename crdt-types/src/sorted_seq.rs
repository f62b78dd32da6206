//! Decoding sequences and maps straight into the small vectors the stores and contexts keep,
//! noting whether the elements arrived strictly ascending (what every encoder here writes).
//!
//! Decoding through a `Vec` or a `BTreeMap` first and collecting it into the kept vector
//! allocated a heap block (a tree node for a map) for every store of a delta, even one that
//! keeps its one element inline; these visitors push each element where it stays. Input in
//! another order is still accepted and read as it was before: a map as a `BTreeMap` reads it
//! ([`sort_last_wins`]), a sequence sorted by the caller or refused.

use serde::Deserialize;
use serde::de::{Deserializer, MapAccess, SeqAccess, Visitor};
use smallvec::{Array, SmallVec};
use std::fmt;
use std::marker::PhantomData;

/// The most bytes reserved up front for a decoded sequence or map, whatever length its prefix
/// claims (as serde caps a `Vec`): a forged prefix cannot make the decoder allocate more.
const MAX_PREALLOCATED_BYTES: usize = 1 << 20;

/// How many elements of `T` to reserve for a claimed length `hint`.
fn cautious<T>(hint: Option<usize>) -> usize {
    hint.unwrap_or(0)
        .min(MAX_PREALLOCATED_BYTES / std::mem::size_of::<T>().max(1))
}

/// Decodes a sequence into a `SmallVec`, and tells whether its elements came strictly
/// ascending by `key`.
pub(crate) fn sorted_seq<'de, D, A, K>(
    deserializer: D,
    key: fn(&A::Item) -> K,
) -> Result<(SmallVec<A>, bool), D::Error>
where
    D: Deserializer<'de>,
    A: Array,
    A::Item: Deserialize<'de>,
    K: Ord,
{
    struct Visit<A: Array, K>(fn(&A::Item) -> K, PhantomData<A>);
    impl<'de, A, K> Visitor<'de> for Visit<A, K>
    where
        A: Array,
        A::Item: Deserialize<'de>,
        K: Ord,
    {
        type Value = (SmallVec<A>, bool);
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a sequence")
        }
        fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<Self::Value, S::Error> {
            let mut items: SmallVec<A> =
                SmallVec::with_capacity(cautious::<A::Item>(seq.size_hint()));
            let mut sorted = true;
            while let Some(item) = seq.next_element::<A::Item>()? {
                if let Some(last) = items.last() {
                    sorted &= (self.0)(last) < (self.0)(&item);
                }
                items.push(item);
            }
            Ok((items, sorted))
        }
    }
    deserializer.deserialize_seq(Visit(key, PhantomData))
}

/// Decodes a map into a `SmallVec` of its entries sorted by key, one entry per key, the last
/// value decoded for a key winning: what decoding a `BTreeMap` and collecting it gives, with
/// no tree built (entries that arrive sorted, as encoded, are only pushed).
pub(crate) fn sorted_map<'de, D, A, K, V>(deserializer: D) -> Result<SmallVec<A>, D::Error>
where
    D: Deserializer<'de>,
    A: Array<Item = (K, V)>,
    K: Deserialize<'de> + Ord,
    V: Deserialize<'de>,
{
    struct Visit<A>(PhantomData<A>);
    impl<'de, A, K, V> Visitor<'de> for Visit<A>
    where
        A: Array<Item = (K, V)>,
        K: Deserialize<'de> + Ord,
        V: Deserialize<'de>,
    {
        type Value = SmallVec<A>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a map")
        }
        fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
            let mut entries: SmallVec<A> =
                SmallVec::with_capacity(cautious::<(K, V)>(map.size_hint()));
            let mut sorted = true;
            while let Some((k, v)) = map.next_entry::<K, V>()? {
                if let Some((last, _)) = entries.last() {
                    sorted &= *last < k;
                }
                entries.push((k, v));
            }
            if !sorted {
                sort_last_wins(&mut entries);
            }
            Ok(entries)
        }
    }
    deserializer.deserialize_map(Visit(PhantomData))
}

/// Sorts `entries` by key and keeps one entry per key, with the value that came last: what
/// inserting them in turn into a `BTreeMap` keeps.
fn sort_last_wins<A: Array<Item = (K, V)>, K: Ord, V>(entries: &mut SmallVec<A>) {
    // Stable, so the entries of one key stay in the order they came.
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    entries.dedup_by(|later, kept| {
        later.0 == kept.0 && {
            std::mem::swap(&mut later.1, &mut kept.1);
            true
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn a_map_in_any_order_decodes_as_a_btree_map_does() {
        let inputs = [
            "{}",
            r#"{"3": 1}"#,
            r#"{"1": 5, "2": 6, "9": 0}"#,
            r#"{"9": 1, "2": 6, "1": 5}"#,
            r#"{"4": 1, "2": 6, "4": 7, "2": 0, "4": 3}"#,
        ];
        for input in inputs {
            let tree: BTreeMap<u64, u64> = serde_json::from_str(input).expect("decodes");
            let mut de = serde_json::Deserializer::from_str(input);
            let entries: SmallVec<[(u64, u64); 1]> = sorted_map(&mut de).expect("decodes");
            assert_eq!(
                entries.into_vec(),
                tree.into_iter().collect::<Vec<_>>(),
                "{input}"
            );
        }
    }

    #[test]
    fn a_sequence_tells_whether_it_was_strictly_ascending() {
        for (input, sorted) in [
            ("[]", true),
            ("[1, 2, 9]", true),
            ("[1, 1]", false),
            ("[2, 1]", false),
        ] {
            let mut de = serde_json::Deserializer::from_str(input);
            let (items, was): (SmallVec<[u64; 1]>, bool) =
                sorted_seq(&mut de, |x: &u64| *x).expect("decodes");
            assert_eq!(was, sorted, "{input}");
            let plain: Vec<u64> = serde_json::from_str(input).expect("decodes");
            assert_eq!(items.into_vec(), plain);
        }
    }
}
